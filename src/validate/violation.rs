//! What every rule reports: a `Violation`, collected in a `Report`.

use std::fmt;

use crate::api::schema::KeepsUnknownFields;

/// What is wrong with a field, in a small fixed set so it can label Events and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ViolationKind {
    /// The field must be set.
    Required,
    /// The value is not acceptable.
    Invalid,
    /// weir does not support this field yet; it is reported rather than ignored.
    Unsupported,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Violation {
    pub kind: ViolationKind,
    /// The field's path from the object's root: `spec.strategy.canary.steps[2].setWeight`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Collects violations under a path, so each rule states only its own field name.
#[derive(Default)]
pub(super) struct Report {
    pub(super) violations: Vec<Violation>,
}

impl Report {
    pub(super) fn add(
        &mut self,
        kind: ViolationKind,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.violations.push(Violation {
            kind,
            field: field.into(),
            message: message.into(),
        });
    }
    pub(super) fn required(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.add(ViolationKind::Required, field, message);
    }
    pub(super) fn invalid(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.add(ViolationKind::Invalid, field, message);
    }
    /// Names every field of `object` weir does not read, with a "did you mean" for a near
    /// miss of one it does.
    pub(super) fn unsupported<T: KeepsUnknownFields>(&mut self, at: &str, object: T) {
        let fields = object.unknown_fields();
        if fields.is_empty() {
            return;
        }
        let known = T::known_fields();
        for name in fields.keys() {
            // A field weir knows from Argo gets its own advice; any other may be a typo.
            let hint =
                unsupported_hint(at, name).unwrap_or_else(|| match did_you_mean(name, &known) {
                    Some(near) => format!("did you mean {near}? Correct its spelling"),
                    None => "remove it, or check its spelling against `kubectl explain`".into(),
                });
            self.add(
                ViolationKind::Unsupported,
                format!("{at}.{name}"),
                format!("weir does not support this field yet; {hint}"),
            );
        }
    }
    pub(super) fn finish(mut self) -> Vec<Violation> {
        self.violations.sort();
        self.violations.dedup();
        self.violations
    }
}

/// The known field `name` is most likely a misspelling of: one or two edits away (a
/// transposition counts as one), or differing only in case.
pub fn did_you_mean<'k>(name: &str, known: &'k [String]) -> Option<&'k str> {
    let lower = name.to_ascii_lowercase();
    known
        .iter()
        .map(|k| {
            let distance = if k.to_ascii_lowercase() == lower {
                0
            } else {
                strsim::damerau_levenshtein(name, k)
            };
            (distance, k)
        })
        .filter(|(distance, k)| *distance <= max_edits(name.len().min(k.len())))
        .min()
        .map(|(_, k)| k.as_str())
}

/// Edits that still read as a misspelling: one for short names, two from six letters on.
fn max_edits(len: usize) -> usize {
    if len < 6 { 1 } else { 2 }
}

/// What to do instead, for fields users bring from Argo Rollouts.
fn unsupported_hint(at: &str, name: &str) -> Option<String> {
    let router = at.ends_with("trafficRouting");
    let gateway = at.ends_with("gatewayAPI");
    Some(match name {
        _ if at.ends_with("trafficRouting.plugins") => format!("weir builds in the argoproj-labs/gatewayAPI plugin only, not {name}; route with it, alb, gatewayAPI, istio, nginx or smi"),
        "tcpRoute" | "tcpRoutes" | "tlsRoute" | "tlsRoutes" if gateway => "weir sets the weights of HTTPRoutes and GRPCRoutes only; remove it".into(),
        "httpRouteSelector" | "grpcRouteSelector" | "tcpRouteSelector" | "tlsRouteSelector" if gateway => "name the routes in httpRoutes or grpcRoutes instead of selecting them by label".into(),
        "disableInProgressLabel" | "inProgressLabelKey" | "inProgressLabelValue" if gateway => "weir labels no route: weir-sync keeps a route's live weights when it applies it from Git; remove it".into(),
        _ if router => format!("the {name} router is not built yet; weir routes traffic with alb, gatewayAPI, istio, nginx or smi, or by replica ratio when trafficRouting is omitted"),
        "serviceAccountName" if at == "spec.decryption" => "weir decrypts with the age identities of secretRef only (no KMS, so no workload identity); remove it".into(),
        _ => return None,
    })
}
