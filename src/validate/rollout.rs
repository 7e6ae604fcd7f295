//! The rules of a Rollout.

use std::collections::{BTreeMap, BTreeSet};

use super::analysis::{check_args, check_run_settings, check_template_names};
use super::names::{NameRule, check_name, label_value_ok, qualified_name_problem};
use super::routes;
use super::selector::check_selector;
use super::violation::{Report, Violation};
use crate::api::contract::{POD_TEMPLATE_HASH_LABEL, alb_action_annotation};
use crate::api::rollout::{
    AlbRouting, AnalysisTemplateRef, BlueGreenStrategy, CanaryStep, GatewayApiRouting,
    IstioRouting, NginxRouting, PodMetadata, RolloutSpec, SetCanaryScale, SmiRouting, StepAnalysis,
    TrafficRouting,
};
use crate::duration;

pub fn rollout(spec: &RolloutSpec) -> Vec<Violation> {
    let mut report = Report::default();
    report.unsupported("spec", spec);
    if spec.replicas.is_some_and(|r| r < 0) {
        report.invalid("spec.replicas", "must be 0 or more");
    }
    check_selector(
        &mut report,
        "spec",
        &spec.selector,
        spec.template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.as_ref()),
    );
    if spec.progress_deadline_seconds <= spec.min_ready_seconds {
        report.invalid(
            "spec.progressDeadlineSeconds",
            format!(
                "must be greater than spec.minReadySeconds ({}), or no pod could ever count as progress",
                spec.min_ready_seconds
            ),
        );
    }
    report.unsupported("spec.strategy", &spec.strategy);
    let canary = match (&spec.strategy.canary, &spec.strategy.blue_green) {
        (Some(_), Some(_)) => {
            report.invalid(
                "spec.strategy.blueGreen",
                "a Rollout has exactly one strategy: remove canary or blueGreen",
            );
            return report.finish();
        }
        (None, Some(blue_green)) => {
            check_blue_green(&mut report, blue_green);
            check_ephemeral_metadata(
                &mut report,
                spec,
                "spec.strategy.blueGreen",
                [
                    ("activeMetadata", &blue_green.active_metadata),
                    ("previewMetadata", &blue_green.preview_metadata),
                ],
            );
            return report.finish();
        }
        (None, None) => {
            report.required(
                "spec.strategy.canary",
                "a Rollout needs a strategy: canary (it may have no steps) or blueGreen",
            );
            return report.finish();
        }
        (Some(canary), None) => canary,
    };
    let at = "spec.strategy.canary";
    report.unsupported(at, canary);
    check_ephemeral_metadata(
        &mut report,
        spec,
        at,
        [
            ("stableMetadata", &canary.stable_metadata),
            ("canaryMetadata", &canary.canary_metadata),
        ],
    );
    for (field, service) in [
        ("stableService", &canary.stable_service),
        ("canaryService", &canary.canary_service),
    ] {
        if let Some(name) = service {
            check_name(
                &mut report,
                &format!("{at}.{field}"),
                name,
                NameRule::Dns1035Label,
            );
        }
    }
    if let (Some(stable), Some(canary_service)) = (&canary.stable_service, &canary.canary_service)
        && stable == canary_service
    {
        report.invalid(
            format!("{at}.canaryService"),
            "must differ from stableService: weir points each at a different version",
        );
    }
    if let Some(routing) = &canary.traffic_routing {
        check_traffic_routing(&mut report, routing);
        if let Some(root) = routing.smi.as_ref().and_then(|s| s.root_service.as_ref())
            && canary.canary_service.as_ref() == Some(root)
        {
            report.invalid(
                format!("{at}.trafficRouting.smi.rootService"),
                "must differ from canaryService: the root Service is what clients call, and the TrafficSplit divides it between stableService and canaryService",
            );
        }
        // The ALB action is annotated as `<prefix>/actions.<service>`, whose name part may
        // have 63 characters.
        if let Some(alb) = &routing.alb {
            let (field, service) = match &alb.root_service {
                Some(root) => ("trafficRouting.alb.rootService", Some(root)),
                None => ("stableService", canary.stable_service.as_ref()),
            };
            if let Some(service) = service
                && alb_action_annotation(Some(""), service).len() > 64
            {
                report.invalid(
                    format!("{at}.{field}"),
                    "may have at most 55 characters with trafficRouting.alb: the Ingress annotation actions.<name> that weir sets may have at most 63",
                );
            }
        }
        // Subset-level Istio splits inside one Service by DestinationRule subsets; every
        // other router sends each share to a Service of its own (with several routers, each
        // of the others needs both).
        let subset_level = routing
            .istio
            .as_ref()
            .is_some_and(|istio| istio.destination_rule.is_some())
            && routing.gateway().is_none()
            && routing.nginx.is_none()
            && routing.smi.is_none()
            && routing.alb.is_none();
        for (field, service) in [
            ("stableService", &canary.stable_service),
            ("canaryService", &canary.canary_service),
        ] {
            if service.is_none() && !subset_level {
                report.required(format!("{at}.{field}"), "trafficRouting sends each share of traffic to a Service: name both stableService and canaryService (or, for Istio, route by subsets with trafficRouting.istio.destinationRule)");
            }
        }
    }
    let managed = canary
        .traffic_routing
        .as_ref()
        .map(|r| r.managed_routes.as_slice())
        .unwrap_or_default();
    for (index, step) in canary.steps.iter().enumerate() {
        check_step(&mut report, &format!("{at}.steps[{index}]"), step);
        if let Some(experiment) = &step.experiment {
            let context = super::experiment::StepContext {
                pod_labels: spec
                    .template
                    .metadata
                    .as_ref()
                    .and_then(|m| m.labels.as_ref()),
                ports: spec.declares_ports(),
                canary_weight: crate::api::rollout::step_weight(&canary.steps, index),
                no_weights: experiment_weights_refused(canary.traffic_routing.as_deref()),
                services: [&canary.stable_service, &canary.canary_service]
                    .into_iter()
                    .flatten()
                    .map(String::as_str)
                    .collect(),
            };
            super::experiment::check_step(
                &mut report,
                &format!("{at}.steps[{index}].experiment"),
                experiment,
                &context,
            );
        }
        let gateway = canary
            .traffic_routing
            .as_ref()
            .is_some_and(|r| r.gateway().is_some());
        let at_step = format!("{at}.steps[{index}]");
        routes::check_route_step(&mut report, &at_step, step, managed, gateway);
        if step.set_canary_scale.is_some() && canary.traffic_routing.is_none() {
            report.invalid(
                format!("{at}.steps[{index}].setCanaryScale"),
                "needs trafficRouting: without a router the replica ratio is the traffic ratio, so the canary's scale follows its weight",
            );
        }
    }
    if let Some(background) = &canary.analysis {
        let at = format!("{at}.analysis");
        report.unsupported(&at, background);
        check_template_refs(&mut report, &at, &background.templates);
        check_args(&mut report, &format!("{at}.args"), &background.args);
        check_run_settings(
            &mut report,
            &at,
            &background.dry_run,
            &background.measurement_retention,
            background.analysis_run_metadata.as_ref(),
        );
        if let Some(start) = background.starting_step
            && (start < 0 || start as usize > canary.steps.len())
        {
            report.invalid(
                format!("{at}.startingStep"),
                format!(
                    "must be between 0 and the number of steps ({})",
                    canary.steps.len()
                ),
            );
        }
    }
    report.finish()
}

/// `strategy.blueGreen`: the active Service is required, the preview differs from it, and
/// each analysis names its templates and gives well-formed arguments.
fn check_blue_green(report: &mut Report, blue_green: &BlueGreenStrategy) {
    let at = "spec.strategy.blueGreen";
    report.unsupported(at, blue_green);
    match &blue_green.active_service {
        None => report.required(
            format!("{at}.activeService"),
            "name the Service users reach: weir points it at the active version and switches it at promotion",
        ),
        Some(name) => check_name(
            report,
            &format!("{at}.activeService"),
            name,
            NameRule::Dns1035Label,
        ),
    }
    if let Some(preview) = &blue_green.preview_service {
        check_name(
            report,
            &format!("{at}.previewService"),
            preview,
            NameRule::Dns1035Label,
        );
        if blue_green.active_service.as_ref() == Some(preview) {
            report.invalid(
                format!("{at}.previewService"),
                "must differ from activeService: the preview reaches the new version before users do",
            );
        }
    }
    for (field, analysis) in [
        ("prePromotionAnalysis", &blue_green.pre_promotion_analysis),
        ("postPromotionAnalysis", &blue_green.post_promotion_analysis),
    ] {
        if let Some(analysis) = analysis {
            let at = format!("{at}.{field}");
            check_step_analysis(report, &at, analysis);
        }
    }
    for (field, metadata) in [
        ("activeMetadata", &blue_green.active_metadata),
        ("previewMetadata", &blue_green.preview_metadata),
    ] {
        if let Some(metadata) = metadata {
            report.unsupported(&format!("{at}.{field}"), metadata);
        }
    }
    if let Some(anti) = &blue_green.anti_affinity {
        let at = format!("{at}.antiAffinity");
        report.unsupported(&at, anti);
        let preferred = &anti.preferred_during_scheduling_ignored_during_execution;
        let required = &anti.required_during_scheduling_ignored_during_execution;
        if preferred.is_some() == required.is_some() {
            report.invalid(
                at.clone(),
                "set exactly one of preferredDuringSchedulingIgnoredDuringExecution and requiredDuringSchedulingIgnoredDuringExecution",
            );
        }
        if let Some(preferred) = preferred {
            report.unsupported(
                &format!("{at}.preferredDuringSchedulingIgnoredDuringExecution"),
                preferred,
            );
        }
        if let Some(required) = required {
            report.unsupported(
                &format!("{at}.requiredDuringSchedulingIgnoredDuringExecution"),
                required,
            );
        }
        if let Some(preferred) = preferred
            && !(1..=100).contains(&preferred.weight)
        {
            report.invalid(
                format!("{at}.preferredDuringSchedulingIgnoredDuringExecution.weight"),
                "must be between 1 and 100",
            );
        }
    }
    for (field, value) in [
        ("autoPromotionSeconds", blue_green.auto_promotion_seconds),
        ("previewReplicaCount", blue_green.preview_replica_count),
        (
            "scaleDownDelayRevisionLimit",
            blue_green.scale_down_delay_revision_limit,
        ),
        (
            "scaleDownDelaySeconds",
            Some(blue_green.scale_down_delay_seconds),
        ),
        (
            "abortScaleDownDelaySeconds",
            Some(blue_green.abort_scale_down_delay_seconds),
        ),
    ] {
        if value.is_some_and(|v| v < 0) {
            report.invalid(format!("{at}.{field}"), "must be 0 or more");
        }
    }
}

/// The most labels, and the most annotations, one ephemeral metadata may put on pods.
pub const MAX_EPHEMERAL_ENTRIES: usize = 64;
/// The most bytes of annotation keys and values one ephemeral metadata may add: pods share
/// 256 KiB of annotations, and weir records what it added on the ReplicaSet as well.
pub const MAX_EPHEMERAL_ANNOTATION_BYTES: usize = 32 * 1024;

/// Ephemeral metadata (blue-green's `activeMetadata`/`previewMetadata`, canary's
/// `stableMetadata`/`canaryMetadata`) of the strategy at `strategy`: valid keys and values,
/// bounded, and only keys weir can take off again: never the pod-template hash, nor a key the
/// template sets itself (taking it off would take the user's away, and a selector label with
/// it).
fn check_ephemeral_metadata(
    report: &mut Report,
    spec: &RolloutSpec,
    strategy: &str,
    fields: [(&str, &Option<PodMetadata>); 2],
) {
    let template = spec.template.metadata.as_ref();
    let empty = BTreeMap::new();
    let own_labels = template.and_then(|m| m.labels.as_ref()).unwrap_or(&empty);
    let own_annotations = template
        .and_then(|m| m.annotations.as_ref())
        .unwrap_or(&empty);
    for (field, metadata) in fields {
        let Some(PodMetadata {
            labels,
            annotations,
            ..
        }) = metadata
        else {
            continue;
        };
        let at = format!("{strategy}.{field}");
        for (what, entries, own) in [
            ("labels", labels, own_labels),
            ("annotations", annotations, own_annotations),
        ] {
            let at = format!("{at}.{what}");
            if entries.len() > MAX_EPHEMERAL_ENTRIES {
                report.invalid(
                    at.clone(),
                    format!(
                        "has {} entries; at most {MAX_EPHEMERAL_ENTRIES} are allowed",
                        entries.len()
                    ),
                );
                continue;
            }
            for (key, value) in entries {
                let field = format!("{at}[{key}]");
                if let Some(problem) = qualified_name_problem(key) {
                    report.invalid(field.clone(), format!("is not a valid key: {problem}"));
                } else if key == POD_TEMPLATE_HASH_LABEL {
                    report.invalid(
                        field.clone(),
                        "is weir's own: it tells versions apart and is never changed",
                    );
                } else if own.contains_key(key) {
                    report.invalid(
                        field.clone(),
                        format!(
                            "spec.template.metadata.{what} sets {key:?} already: ephemeral metadata only adds keys, which it takes off again"
                        ),
                    );
                }
                if what == "labels" && !label_value_ok(value) {
                    report.invalid(
                        field,
                        format!(
                            "{value:?} is not a valid label value (at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)"
                        ),
                    );
                }
            }
            let bytes: usize = entries.iter().map(|(k, v)| k.len() + v.len()).sum();
            if what == "annotations" && bytes > MAX_EPHEMERAL_ANNOTATION_BYTES {
                report.invalid(
                    at,
                    format!(
                        "holds {bytes} bytes; at most {MAX_EPHEMERAL_ANNOTATION_BYTES} are allowed"
                    ),
                );
            }
        }
    }
}

fn check_traffic_routing(report: &mut Report, routing: &TrafficRouting) {
    let at = "spec.strategy.canary.trafficRouting";
    report.unsupported(at, routing);
    let plugin_gateway = routing
        .plugins
        .as_ref()
        .and_then(|plugins| plugins.gateway_api.as_ref());
    // Several routers are allowed (Argo's "multiple providers"): each is set and verified.
    let routers: Vec<&str> = [
        ("alb", routing.alb.is_some()),
        ("gatewayAPI", routing.gateway_api.is_some()),
        ("plugins.argoproj-labs/gatewayAPI", plugin_gateway.is_some()),
        ("istio", routing.istio.is_some()),
        ("nginx", routing.nginx.is_some()),
        ("smi", routing.smi.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    if routing.gateway_api.is_some() && plugin_gateway.is_some() {
        report.invalid(
            at,
            "names Gateway API twice, as gatewayAPI and as plugins.argoproj-labs/gatewayAPI: keep one of them (either takes several routes)",
        );
    }
    if let Some(gateway) = &routing.gateway_api {
        check_gateway(report, &format!("{at}.gatewayAPI"), gateway);
    }
    if let Some(plugins) = &routing.plugins {
        report.unsupported(&format!("{at}.plugins"), plugins);
    }
    if let Some(gateway) = plugin_gateway {
        check_gateway(
            report,
            &format!("{at}.plugins.argoproj-labs/gatewayAPI"),
            gateway,
        );
    }
    if let Some(istio) = &routing.istio {
        check_istio(report, &format!("{at}.istio"), istio);
    }
    routes::check_managed_routes(report, routing);
    if let Some(nginx) = &routing.nginx {
        check_nginx(report, &format!("{at}.nginx"), nginx);
    }
    if let Some(smi) = &routing.smi {
        check_smi(report, &format!("{at}.smi"), smi);
    }
    if let Some(alb) = &routing.alb {
        check_alb(report, &format!("{at}.alb"), alb);
    }
    let unknown_plugins = routing
        .plugins
        .as_ref()
        .is_some_and(|plugins| !plugins.unsupported.is_empty());
    if routers.is_empty() && routing.unsupported.is_empty() && !unknown_plugins {
        report.required(
            format!("{at}.gatewayAPI"),
            "name a router (alb, gatewayAPI, istio, nginx or smi), or omit trafficRouting to split traffic by replica count",
        );
    }
}

/// Gateway API routes, as weir's `gatewayAPI` or the argoproj-labs plugin's configuration.
fn check_gateway(report: &mut Report, at: &str, gateway: &GatewayApiRouting) {
    report.unsupported(at, gateway);
    for (index, route) in gateway.http_routes.iter().enumerate() {
        report.unsupported(&format!("{at}.httpRoutes[{index}]"), route);
    }
    for (index, route) in gateway.grpc_routes.iter().enumerate() {
        report.unsupported(&format!("{at}.grpcRoutes[{index}]"), route);
    }
    let routes = gateway.routes();
    if routes.is_empty() {
        report.required(
            format!("{at}.httpRoute"),
            "name the route whose stable and canary backendRefs carry the weights: httpRoute, httpRoutes, grpcRoute or grpcRoutes",
        );
    }
    routes::check_route_count(
        report,
        &format!("{at}.httpRoutes"),
        "HTTPRoutes",
        gateway.http_routes.len(),
    );
    routes::check_route_count(
        report,
        &format!("{at}.grpcRoutes"),
        "GRPCRoutes",
        gateway.grpc_routes.len(),
    );
    let mut seen = BTreeSet::new();
    for route in &routes {
        let field = format!("{at}.{}", route.field);
        let field = if route.field.ends_with(']') {
            format!("{field}.name")
        } else {
            field
        };
        check_name(report, &field, route.name, NameRule::Dns1123Subdomain);
        if !seen.insert((route.kind.kind(), route.name)) {
            report.invalid(
                field,
                format!(
                    "{} {} is named twice; name each route once",
                    route.kind.kind(),
                    route.name
                ),
            );
        }
    }
    if let Some(namespace) = &gateway.namespace {
        check_name(
            report,
            &format!("{at}.namespace"),
            namespace,
            NameRule::Dns1123Label,
        );
    }
}

fn check_nginx(report: &mut Report, at: &str, nginx: &NginxRouting) {
    report.unsupported(at, nginx);
    match (&nginx.stable_ingress, nginx.stable_ingresses.is_empty()) {
        (None, true) => report.required(
            format!("{at}.stableIngress"),
            "name the Ingress that sends to the stableService (or several in stableIngresses)",
        ),
        (Some(_), false) => report.invalid(
            format!("{at}.stableIngresses"),
            "takes the place of stableIngress: set one of them, not both",
        ),
        _ => {}
    }
    if let Some(name) = &nginx.stable_ingress {
        check_name(
            report,
            &format!("{at}.stableIngress"),
            name,
            NameRule::Dns1123Subdomain,
        );
    }
    routes::check_route_count(
        report,
        &format!("{at}.stableIngresses"),
        "Ingresses",
        nginx.stable_ingresses.len(),
    );
    let mut seen = BTreeSet::new();
    for (index, name) in nginx.stable_ingresses.iter().enumerate() {
        check_name(
            report,
            &format!("{at}.stableIngresses[{index}]"),
            name,
            NameRule::Dns1123Subdomain,
        );
        if !seen.insert(name) {
            report.invalid(
                format!("{at}.stableIngresses[{index}]"),
                format!("{name:?} is listed twice; list each Ingress once"),
            );
        }
    }
    if let Some(prefix) = &nginx.annotation_prefix {
        check_name(
            report,
            &format!("{at}.annotationPrefix"),
            prefix,
            NameRule::Dns1123Subdomain,
        );
    }
    for key in nginx.additional_ingress_annotations.keys() {
        if key.is_empty() || key.contains('/') {
            report.invalid(
                format!("{at}.additionalIngressAnnotations"),
                format!(
                    "key {key:?} must be a bare name (canary-by-header): weir puts it under annotationPrefix; full keys go in canaryIngressAnnotations"
                ),
            );
        } else if matches!(key.as_str(), "canary" | "canary-weight") {
            report.invalid(
                format!("{at}.additionalIngressAnnotations"),
                format!("key {key:?} is set by weir from the steps; remove it"),
            );
        }
    }
    for key in nginx.canary_ingress_annotations.keys() {
        let name = key.rsplit('/').next().unwrap_or(key);
        if key.is_empty() || name.is_empty() {
            report.invalid(
                format!("{at}.canaryIngressAnnotations"),
                format!("key {key:?} is not an annotation key; write prefix/name or name"),
            );
        }
    }
}

fn check_alb(report: &mut Report, at: &str, alb: &AlbRouting) {
    report.unsupported(at, alb);
    match (&alb.ingress, alb.ingresses.is_empty()) {
        (None, true) => report.required(
            format!("{at}.ingress"),
            "name the Ingress whose path sends to the rootService (else the stableService) with port use-annotation (or several in ingresses)",
        ),
        (Some(_), false) => report.invalid(
            format!("{at}.ingresses"),
            "takes the place of ingress: set one of them, not both",
        ),
        _ => {}
    }
    if let Some(name) = &alb.ingress {
        check_name(
            report,
            &format!("{at}.ingress"),
            name,
            NameRule::Dns1123Subdomain,
        );
    }
    routes::check_route_count(
        report,
        &format!("{at}.ingresses"),
        "Ingresses",
        alb.ingresses.len(),
    );
    let mut seen = BTreeSet::new();
    for (index, name) in alb.ingresses.iter().enumerate() {
        check_name(
            report,
            &format!("{at}.ingresses[{index}]"),
            name,
            NameRule::Dns1123Subdomain,
        );
        if !seen.insert(name) {
            report.invalid(
                format!("{at}.ingresses[{index}]"),
                format!("{name:?} is listed twice; list each Ingress once"),
            );
        }
    }
    if !(1..=65535).contains(&alb.service_port) {
        report.invalid(
            format!("{at}.servicePort"),
            "must be the port (1 to 65535) the stable and canary Services listen on",
        );
    }
    if let Some(root) = &alb.root_service {
        check_name(
            report,
            &format!("{at}.rootService"),
            root,
            NameRule::Dns1035Label,
        );
    }
    if let Some(prefix) = &alb.annotation_prefix {
        check_name(
            report,
            &format!("{at}.annotationPrefix"),
            prefix,
            NameRule::Dns1123Subdomain,
        );
    }
    if let Some(sticky) = &alb.stickiness_config {
        report.unsupported(&format!("{at}.stickinessConfig"), sticky);
        if sticky.enabled && !(1..=604_800).contains(&sticky.duration_seconds) {
            report.invalid(
                format!("{at}.stickinessConfig.durationSeconds"),
                "must be between 1 and 604800 seconds (7 days), the range AWS allows",
            );
        }
    }
}

fn check_smi(report: &mut Report, at: &str, smi: &SmiRouting) {
    report.unsupported(at, smi);
    if let Some(root) = &smi.root_service {
        check_name(
            report,
            &format!("{at}.rootService"),
            root,
            NameRule::Dns1035Label,
        );
    }
    if let Some(name) = &smi.traffic_split_name {
        check_name(
            report,
            &format!("{at}.trafficSplitName"),
            name,
            NameRule::Dns1123Subdomain,
        );
    }
}

fn check_istio(report: &mut Report, at: &str, istio: &IstioRouting) {
    report.unsupported(at, istio);
    match (&istio.virtual_service, istio.virtual_services.is_empty()) {
        (None, true) => report.required(
            format!("{at}.virtualService"),
            "name the VirtualService whose routes carry the weights (or several in virtualServices)",
        ),
        (Some(_), false) => report.invalid(
            format!("{at}.virtualServices"),
            "set either virtualService or virtualServices, not both",
        ),
        _ => {}
    }
    routes::check_route_count(
        report,
        &format!("{at}.virtualServices"),
        "VirtualServices",
        istio.virtual_services.len(),
    );
    let mut seen = BTreeSet::new();
    let single = istio
        .virtual_service
        .iter()
        .map(|v| (format!("{at}.virtualService"), v));
    let several = istio
        .virtual_services
        .iter()
        .enumerate()
        .map(|(index, v)| (format!("{at}.virtualServices[{index}]"), v));
    for (field, service) in single.chain(several) {
        report.unsupported(&field, service);
        check_name(
            report,
            &format!("{field}.name"),
            &service.name,
            NameRule::Dns1123Subdomain,
        );
        if !seen.insert(service.name.as_str()) {
            report.invalid(
                format!("{field}.name"),
                format!("VirtualService {} is named twice", service.name),
            );
        }
        for (list, what, count) in [
            ("routes", "routes", service.routes.len()),
            ("tlsRoutes", "TLS routes", service.tls_routes.len()),
            ("tcpRoutes", "TCP routes", service.tcp_routes.len()),
        ] {
            routes::check_route_count(report, &format!("{field}.{list}"), what, count);
        }
        let mut routes = BTreeSet::new();
        for (index, route) in service.routes.iter().enumerate() {
            if route.is_empty() {
                report.invalid(
                    format!("{field}.routes[{index}]"),
                    "a route name cannot be empty",
                );
            } else if !routes.insert(route.as_str()) {
                report.invalid(
                    format!("{field}.routes[{index}]"),
                    format!("route {route} is named twice"),
                );
            }
        }
        for (index, tls) in service.tls_routes.iter().enumerate() {
            let at = format!("{field}.tlsRoutes[{index}]");
            report.unsupported(&at, tls);
            if tls.port.is_none() && tls.sni_hosts.is_empty() {
                report.required(at.clone(), "pick the TLS route by port, sniHosts or both");
            }
            check_port(report, &format!("{at}.port"), tls.port);
        }
        for (index, tcp) in service.tcp_routes.iter().enumerate() {
            let at = format!("{field}.tcpRoutes[{index}]");
            report.unsupported(&at, tcp);
            if tcp.port.is_none() {
                report.required(format!("{at}.port"), "pick the TCP route by its port");
            }
            check_port(report, &format!("{at}.port"), tcp.port);
        }
    }
    if let Some(rule) = &istio.destination_rule {
        let at = format!("{at}.destinationRule");
        report.unsupported(&at, rule);
        check_name(
            report,
            &format!("{at}.name"),
            &rule.name,
            NameRule::Dns1123Subdomain,
        );
        for (field, subset) in [
            ("stableSubsetName", &rule.stable_subset_name),
            ("canarySubsetName", &rule.canary_subset_name),
        ] {
            if subset.is_empty() {
                report.required(
                    format!("{at}.{field}"),
                    "name the subset of the DestinationRule",
                );
            }
        }
        if !rule.stable_subset_name.is_empty() && rule.stable_subset_name == rule.canary_subset_name
        {
            report.invalid(
                format!("{at}.canarySubsetName"),
                "must differ from stableSubsetName: weir points each subset at a different version",
            );
        }
    }
}

fn check_port(report: &mut Report, at: &str, port: Option<i64>) {
    if let Some(port) = port.filter(|p| !(1..=65535).contains(p)) {
        report.invalid(at, format!("{port} is not a port from 1 to 65535"));
    }
}

/// Why an experiment template's weight cannot be routed, as Argo Rollouts refuses one
/// without traffic routing; None when the routers carry such weights (Gateway API alone).
fn experiment_weights_refused(routing: Option<&TrafficRouting>) -> Option<&'static str> {
    let Some(routing) = routing else {
        return Some(
            "needs trafficRouting: an experiment's share of traffic is set on the routers; without them, leave weight out",
        );
    };
    let others = routing.istio.is_some()
        || routing.nginx.is_some()
        || routing.alb.is_some()
        || routing.smi.is_some();
    if routing.gateway().is_none() || others {
        return Some(
            "weir sets an experiment's share on Gateway API routes only (gatewayAPI, or the argoproj-labs/gatewayAPI plugin, alone); leave weight out, or route with Gateway API",
        );
    }
    None
}

fn check_step(report: &mut Report, at: &str, step: &CanaryStep) {
    report.unsupported(at, step);
    // As in Argo Rollouts: at most one of setWeight, pause and analysis; setCanaryScale,
    // setHeaderRoute and setMirrorRoute may come with any of them (and with each other),
    // and are in place before the step's pause or analysis begins.
    let exclusive = [
        step.set_weight.is_some(),
        step.pause.is_some(),
        step.analysis.is_some(),
        step.experiment.is_some(),
    ];
    let beside = [
        step.set_canary_scale.is_some(),
        step.set_header_route.is_some(),
        step.set_mirror_route.is_some(),
    ];
    let exclusive = exclusive.iter().filter(|set| **set).count();
    if exclusive + beside.iter().filter(|set| **set).count() == 0 && step.unsupported.is_empty() {
        report.required(at, "a step needs one of setWeight, pause, analysis, experiment, setCanaryScale, setHeaderRoute or setMirrorRoute");
    }
    if exclusive > 1 {
        report.invalid(at, "a step takes at most one of setWeight, pause, analysis and experiment (setCanaryScale, setHeaderRoute and setMirrorRoute may come with it); split it into several steps");
    }
    if let Some(weight) = step.set_weight
        && !(0..=100).contains(&weight)
    {
        report.invalid(
            format!("{at}.setWeight"),
            format!("{weight} is not a percentage from 0 to 100"),
        );
    }
    if let Some(pause) = &step.pause {
        report.unsupported(&format!("{at}.pause"), pause);
    }
    if let Some(duration) = step.pause.as_ref().and_then(|p| p.duration.as_ref())
        && let Err(error) = duration::parse_int_or_string(duration)
    {
        report.invalid(format!("{at}.pause.duration"), error.to_string());
    }
    if let Some(analysis) = &step.analysis {
        check_step_analysis(report, &format!("{at}.analysis"), analysis);
    }
    if let Some(scale) = &step.set_canary_scale {
        check_canary_scale(report, &format!("{at}.setCanaryScale"), scale);
    }
}

/// A step's (or blue-green's) analysis: its templates, arguments and run settings.
fn check_step_analysis(report: &mut Report, at: &str, analysis: &StepAnalysis) {
    report.unsupported(at, analysis);
    check_template_refs(report, at, &analysis.templates);
    check_args(report, &format!("{at}.args"), &analysis.args);
    check_run_settings(
        report,
        at,
        &analysis.dry_run,
        &analysis.measurement_retention,
        analysis.analysis_run_metadata.as_ref(),
    );
}

fn check_canary_scale(report: &mut Report, at: &str, scale: &SetCanaryScale) {
    report.unsupported(at, scale);
    let set = [
        scale.replicas.is_some(),
        scale.weight.is_some(),
        scale.match_traffic_weight.is_some(),
    ];
    if set.iter().filter(|s| **s).count() != 1 {
        report.invalid(
            at,
            "takes exactly one of replicas, weight or matchTrafficWeight",
        );
    }
    if scale.replicas.is_some_and(|r| r < 0) {
        report.invalid(format!("{at}.replicas"), "must be 0 or more");
    }
    if let Some(weight) = scale.weight.filter(|w| !(0..=100).contains(w)) {
        report.invalid(
            format!("{at}.weight"),
            format!("{weight} is not a percentage from 0 to 100"),
        );
    }
    if scale.match_traffic_weight == Some(false) {
        report.invalid(
            format!("{at}.matchTrafficWeight"),
            "can only be true; to scale by a fixed amount use replicas or weight",
        );
    }
}

fn check_template_refs(report: &mut Report, at: &str, templates: &[AnalysisTemplateRef]) {
    if templates.is_empty() {
        report.required(
            format!("{at}.templates"),
            "name at least one AnalysisTemplate",
        );
    }
    check_template_names(report, &format!("{at}.templates"), templates);
}
