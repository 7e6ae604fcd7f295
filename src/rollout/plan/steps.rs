//! What a canary step asks for: its weight, its pods, its description.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::rollout::{CanaryStep, ManagedRouteName, RouteMatch};
use crate::traffic::ManagedRoute;

pub use crate::api::rollout::step_weight;

/// Pods the canary needs for `weight` at step `index`: `setCanaryScale` (the last at or before
/// the index) overrides, else `ceil(replicas * weight / 100)`.
pub fn canary_pods(
    steps: &[CanaryStep],
    index: usize,
    replicas: i32,
    weight: i32,
    router: bool,
) -> i32 {
    let by_weight =
        |w: i32| ((i64::from(replicas.max(0)) * i64::from(w.clamp(0, 100)) + 99) / 100) as i32;
    if !router || index >= steps.len() {
        return by_weight(weight);
    }
    let scale = steps[..=index]
        .iter()
        .rev()
        .find_map(|s| s.set_canary_scale.as_ref());
    match scale {
        Some(s) if s.match_traffic_weight != Some(true) => match (s.replicas, s.weight) {
            (Some(r), _) => r.max(0),
            (None, Some(w)) => by_weight(w),
            (None, None) => by_weight(weight),
        },
        _ => by_weight(weight),
    }
}

/// The managed routes step `index` asks for, highest precedence first (`managed`'s order):
/// for each name, the last `setHeaderRoute` or `setMirrorRoute` naming it at or before the
/// index, unless that one has no `match` (which removes it). None once all steps are done.
/// A name `managed` does not list is never a route (validation refuses the step).
pub fn managed_routes_at(
    steps: &[CanaryStep],
    managed: &[ManagedRouteName],
    index: usize,
) -> Vec<(String, ManagedRoute)> {
    if index >= steps.len() {
        return Vec::new();
    }
    let mut routes: Vec<(String, ManagedRoute)> = Vec::new();
    for entry in managed {
        if routes.iter().any(|(name, _)| *name == entry.name) {
            continue;
        }
        let last = steps[..=index].iter().rev().find_map(|step| {
            if let Some(header) = step
                .set_header_route
                .as_ref()
                .filter(|h| h.name == entry.name)
            {
                return Some(
                    (!header.matches.is_empty())
                        .then(|| ManagedRoute::Header(header.matches.clone())),
                );
            }
            let mirror = step
                .set_mirror_route
                .as_ref()
                .filter(|m| m.name == entry.name)?;
            Some((!mirror.matches.is_empty()).then(|| ManagedRoute::Mirror {
                percentage: mirror.percentage.unwrap_or(100).clamp(0, 100),
                matches: mirror.matches.iter().map(RouteMatch::canonical).collect(),
            }))
        });
        if let Some(Some(route)) = last {
            routes.push((entry.name.clone(), route));
        }
    }
    routes
}

/// One canary step in words, for Events, the status and `kubectl weir`: what it sets, in the
/// order it is carried out, then what it waits for.
pub fn describe_step(step: &CanaryStep) -> String {
    let mut sets = Vec::new();
    if let Some(weight) = step.set_weight {
        sets.push(format!("setWeight {weight}%"));
    }
    if let Some(scale) = &step.set_canary_scale {
        sets.push(match (scale.replicas, scale.weight) {
            (Some(replicas), _) => format!("setCanaryScale {replicas} replicas"),
            (None, Some(weight)) => format!("setCanaryScale {weight}%"),
            _ => "setCanaryScale matchTrafficWeight".into(),
        });
    }
    if let Some(header) = &step.set_header_route {
        sets.push(format!("setHeaderRoute {}", header.name));
    }
    if let Some(mirror) = &step.set_mirror_route {
        sets.push(format!("setMirrorRoute {}", mirror.name));
    }
    let waits = if let Some(pause) = &step.pause {
        Some(match &pause.duration {
            Some(IntOrString::Int(seconds)) => format!("pause {seconds}s"),
            Some(IntOrString::String(text)) => format!("pause {text}"),
            None => "pause (until promoted)".into(),
        })
    } else if let Some(experiment) = &step.experiment {
        let names: Vec<&str> = experiment
            .templates
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        Some(format!("experiment {}", names.join(", ")))
    } else {
        step.analysis.as_ref().map(|analysis| {
            let names: Vec<&str> = analysis
                .templates
                .iter()
                .map(|t| t.template_name.as_str())
                .collect();
            format!("analysis {}", names.join(", "))
        })
    };
    match (sets.is_empty(), waits) {
        (true, None) => "(unsupported step)".into(),
        (true, Some(waits)) => waits,
        (false, None) => sets.join(", "),
        (false, Some(waits)) => format!("{}, then {waits}", sets.join(", ")),
    }
}
