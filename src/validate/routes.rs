//! The rules of managed routes: `trafficRouting.managedRoutes` and the `setHeaderRoute` and
//! `setMirrorRoute` steps. What a spec can make weir write is bounded: the number of routes,
//! of matches and of headers, the length of values and regular expressions.

use std::collections::BTreeSet;

use super::names::{NameRule, check_name};
use super::violation::Report;
use crate::api::rollout::{
    CanaryStep, GatewayRouteKind, ManagedRouteName, RouteMatch, StringMatch, TrafficRouting,
};

/// At most this many managed routes per Rollout.
pub const MAX_MANAGED_ROUTES: usize = 8;
/// At most this many objects or routes in each list a router names: `httpRoutes`,
/// `grpcRoutes`, `stableIngresses`, `ingresses`, `virtualServices` and each VirtualService's
/// `routes`, `tlsRoutes` and `tcpRoutes`. Each is read (and maybe written) every reconcile.
pub const MAX_ROUTES: usize = 16;
/// weir adds a step's header matches to the split rule's own, so a step alone must stay
/// within Gateway API's bound (the router checks the sum against the live route).
pub use crate::api::contract::GATEWAY_API_MAX_HEADERS as MAX_GATEWAY_HEADERS;
/// At most this many entries in one step's `match` (and headers in one mirror match block).
pub const MAX_MATCHES: usize = 16;
/// The longest header name, and the longest exact or prefix value.
pub const MAX_VALUE_LENGTH: usize = 1024;
/// The longest regular expression.
pub const MAX_REGEX_LENGTH: usize = 256;
/// The most memory one compiled regular expression may take (regex's own size limit).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

const AT: &str = "spec.strategy.canary.trafficRouting.managedRoutes";

pub(super) fn check_managed_routes(report: &mut Report, routing: &TrafficRouting) {
    if routing.managed_routes.is_empty() {
        return;
    }
    // Istio and Gateway API's HTTPRoutes carry them; with several routers, each must.
    let carries = routing.istio.is_some() || routing.gateway().is_some();
    let cannot: Vec<String> = [
        ("nginx", routing.nginx.is_some()),
        ("smi", routing.smi.is_some()),
        ("alb", routing.alb.is_some()),
    ]
    .into_iter()
    .filter(|(_, named)| *named)
    .map(|(name, _)| name.to_owned())
    .collect();
    let cannot = if cannot.is_empty() && !carries {
        routing
            .unsupported
            .keys()
            .find(|k| k.as_str() != "managedRoutes")
            .cloned()
            .into_iter()
            .collect()
    } else {
        cannot
    };
    if !cannot.is_empty() || !carries {
        let router = if cannot.is_empty() {
            "chosen".to_owned()
        } else {
            cannot.join(" and ")
        };
        report.invalid(
            AT,
            format!("the {router} router cannot carry header or mirror routes (istio and gatewayAPI can): remove managedRoutes and the setHeaderRoute and setMirrorRoute steps, or route with istio or gatewayAPI alone"),
        );
    }
    if let Some(gateway) = routing.gateway() {
        let takes_headers = gateway
            .routes()
            .iter()
            .any(|r| r.kind == GatewayRouteKind::Http && r.use_header_routes);
        if !takes_headers {
            report.invalid(
                gateway_field(routing),
                "no HTTPRoute takes the header routes of managedRoutes (GRPCRoutes cannot): set useHeaderRoutes: true on an entry of httpRoutes, or name the route in httpRoute",
            );
        }
    }
    if routing.managed_routes.len() > MAX_MANAGED_ROUTES {
        report.invalid(
            AT,
            format!(
                "lists {} routes; weir manages at most {MAX_MANAGED_ROUTES}",
                routing.managed_routes.len()
            ),
        );
    }
    let weighted: BTreeSet<&str> = routing
        .istio
        .iter()
        .flat_map(|istio| istio.all_virtual_services())
        .flat_map(|service| service.routes.iter().map(String::as_str))
        .collect();
    let mut seen = BTreeSet::new();
    for (index, route) in routing.managed_routes.iter().enumerate() {
        report.unsupported(&format!("{AT}[{index}]"), route);
        let field = format!("{AT}[{index}].name");
        check_name(report, &field, &route.name, NameRule::Dns1123Label);
        if !seen.insert(route.name.as_str()) {
            report.invalid(&field, format!("route {} is listed twice", route.name));
        }
        if weighted.contains(route.name.as_str()) {
            report.invalid(
                &field,
                format!("{} is a route of virtualService.routes, which carries the weights; weir removes every managed route when a canary ends, so give the managed route another name", route.name),
            );
        }
    }
}

/// The rules of a `setHeaderRoute` or `setMirrorRoute` step at `at`, whose routes must be
/// among `managed`.
pub(super) fn check_route_step(
    report: &mut Report,
    at: &str,
    step: &CanaryStep,
    managed: &[ManagedRouteName],
    gateway: bool,
) {
    let listed = |name: &str| managed.iter().any(|m| m.name == name);
    let unlisted = |name: &str| {
        format!(
            "names route {name:?}, which spec.strategy.canary.trafficRouting.managedRoutes does not list: add {{name: {name}}} there (managed routes need trafficRouting with istio or gatewayAPI)"
        )
    };
    if let Some(header) = &step.set_header_route {
        let at = format!("{at}.setHeaderRoute");
        report.unsupported(&at, header);
        if !listed(&header.name) {
            report.invalid(format!("{at}.name"), unlisted(&header.name));
        }
        if gateway && header.matches.len() > MAX_GATEWAY_HEADERS {
            report.invalid(
                format!("{at}.match"),
                format!("has {} header matches; Gateway API takes at most {MAX_GATEWAY_HEADERS} headers in an HTTPRoute match, counting the split rule's own: match on fewer headers", header.matches.len()),
            );
        } else {
            check_count(report, &format!("{at}.match"), header.matches.len());
        }
        for (index, entry) in header.matches.iter().enumerate() {
            let at = format!("{at}.match[{index}]");
            report.unsupported(&at, entry);
            check_header_name(report, &format!("{at}.headerName"), &entry.header_name);
            check_string_match(report, &format!("{at}.headerValue"), &entry.header_value);
            let regex = entry.header_value.regex.as_deref();
            if let Some(prefix) = regex.filter(|_| gateway).and_then(anchored_prefix) {
                report.invalid(
                    format!("{at}.headerValue.regex"),
                    format!("is a prefix match, which weir writes on HTTPRoutes as this very regex; write prefix: {prefix:?} instead, so the route reads back as the step wrote it"),
                );
            }
        }
    }
    if let Some(mirror) = &step.set_mirror_route {
        let at = format!("{at}.setMirrorRoute");
        report.unsupported(&at, mirror);
        if !listed(&mirror.name) {
            report.invalid(format!("{at}.name"), unlisted(&mirror.name));
        }
        if let Some(percentage) = mirror.percentage.filter(|p| !(0..=100).contains(p)) {
            report.invalid(
                format!("{at}.percentage"),
                format!("{percentage} is not a percentage from 0 to 100"),
            );
        }
        check_count(report, &format!("{at}.match"), mirror.matches.len());
        for (index, block) in mirror.matches.iter().enumerate() {
            let at = format!("{at}.match[{index}]");
            report.unsupported(&at, block);
            if block.method.is_none() && block.path.is_none() && block.headers.is_empty() {
                report.required(
                    &at,
                    "a match block needs method, path or headers (it would mirror every request); to remove the route, leave out match",
                );
            }
            if let Some(method) = &block.method {
                check_string_match(report, &format!("{at}.method"), method);
            }
            if let Some(path) = &block.path {
                check_string_match(report, &format!("{at}.path"), path);
            }
            check_count(report, &format!("{at}.headers"), block.headers.len());
            for (name, value) in &block.headers {
                check_header_name(report, &format!("{at}.headers"), name);
                check_string_match(report, &format!("{at}.headers.{name}"), value);
            }
            if gateway {
                check_gateway_mirror_block(report, &at, block);
            }
        }
    }
}

/// Gateway API's HTTP methods (an HTTPRoute matches a method exactly, one of these).
const GATEWAY_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// What an HTTPRoute match can carry of a `setMirrorRoute` match block at `at`, so that the
/// rule weir writes is valid and reads back as the block.
fn check_gateway_mirror_block(report: &mut Report, at: &str, block: &RouteMatch) {
    if let Some(method) = &block.method {
        let exact = method
            .exact
            .as_deref()
            .filter(|_| method.prefix.is_none() && method.regex.is_none());
        if !exact.is_some_and(|m| GATEWAY_METHODS.contains(&m)) {
            report.invalid(
                format!("{at}.method"),
                format!("Gateway API matches a method exactly, one of {}: write method: {{exact: GET}} (or another of them)", GATEWAY_METHODS.join(", ")),
            );
        }
    }
    if let Some(path) = &block.path {
        for (field, text) in [("exact", &path.exact), ("prefix", &path.prefix)] {
            if text.as_deref().is_some_and(|t| !t.starts_with('/')) {
                report.invalid(
                    format!("{at}.path.{field}"),
                    "a Gateway API path starts with /",
                );
            }
        }
    }
    for (name, value) in &block.headers {
        if let Some(prefix) = value.regex.as_deref().and_then(anchored_prefix) {
            report.invalid(
                format!("{at}.headers.{name}.regex"),
                format!("is a prefix match, which weir writes on HTTPRoutes as this very regex; write prefix: {prefix:?} instead, so the route reads back as the step wrote it"),
            );
        }
    }
}

/// Refuses a list `at` of `count` `what`s (`HTTPRoutes`) longer than [`MAX_ROUTES`].
pub(super) fn check_route_count(report: &mut Report, at: &str, what: &str, count: usize) {
    if count > MAX_ROUTES {
        report.invalid(
            at,
            format!("lists {count} {what}; weir routes at most {MAX_ROUTES} per list: split the Rollout's traffic over fewer of them"),
        );
    }
}

fn check_count(report: &mut Report, at: &str, count: usize) {
    if count > MAX_MATCHES {
        report.invalid(
            at,
            format!("has {count} entries; weir writes at most {MAX_MATCHES}"),
        );
    }
}

/// An HTTP header name is a token (RFC 9110): letters, digits and ``!#$%&'*+-.^_`|~``.
fn check_header_name(report: &mut Report, at: &str, name: &str) {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || name.len() > MAX_VALUE_LENGTH || !name.chars().all(token) {
        report.invalid(
            at,
            format!(
                "{:?} is not an HTTP header name (1 to {MAX_VALUE_LENGTH} letters, digits or !#$%&'*+-.^_`|~)",
                truncated(name)
            ),
        );
    }
}

fn check_string_match(report: &mut Report, at: &str, value: &StringMatch) {
    report.unsupported(at, value);
    let set = [&value.exact, &value.prefix, &value.regex];
    if set.iter().filter(|v| v.is_some()).count() != 1 {
        report.invalid(at, "takes exactly one of exact, prefix or regex");
    }
    for (field, text) in [("exact", &value.exact), ("prefix", &value.prefix)] {
        if let Some(text) = text.as_ref().filter(|t| t.len() > MAX_VALUE_LENGTH) {
            report.invalid(
                format!("{at}.{field}"),
                format!(
                    "is {} bytes long; weir writes at most {MAX_VALUE_LENGTH}",
                    text.len()
                ),
            );
        }
    }
    if let Some(regex) = &value.regex {
        if regex.len() > MAX_REGEX_LENGTH {
            report.invalid(
                format!("{at}.regex"),
                format!(
                    "is {} bytes long; weir writes regular expressions of at most {MAX_REGEX_LENGTH}",
                    regex.len()
                ),
            );
        } else if let Err(error) = regex::RegexBuilder::new(regex)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
        {
            report.invalid(
                format!("{at}.regex"),
                format!("is not a regular expression (RE2 syntax): {error}"),
            );
        }
    }
}

/// The prefix a regex of the form `^PREFIX.*` (PREFIX escaped) matches: how weir writes a
/// `prefix` header match on an HTTPRoute, which has no prefix match.
fn anchored_prefix(regex: &str) -> Option<String> {
    let inner = regex.strip_prefix('^')?.strip_suffix(".*")?;
    let mut prefix = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        prefix.push(if c == '\\' { chars.next()? } else { c });
    }
    (regex::escape(&prefix) == inner).then_some(prefix)
}

/// Where a Rollout's Gateway API routing is written.
fn gateway_field(routing: &TrafficRouting) -> &'static str {
    if routing.gateway_api.is_some() {
        "spec.strategy.canary.trafficRouting.gatewayAPI"
    } else {
        "spec.strategy.canary.trafficRouting.plugins.argoproj-labs/gatewayAPI"
    }
}

fn truncated(text: &str) -> String {
    text.chars().take(64).collect()
}
