//! Semantic validation of weir's resources: the rules a CRD schema cannot express. Pure: the
//! controller (as status conditions) and `kubectl weir lint` (offline) report the same
//! violations, each naming the field and what to do.

mod analysis;
mod experiment;
mod gitsync;
mod names;
mod notification;
mod rollout;
mod routes;
mod selector;
mod violation;

use crate::api::analysis::{AnalysisRunSpec, AnalysisTemplateSpec};
use crate::api::experiment::ExperimentSpec;
use crate::api::gitsync::GitSyncSpec;
use crate::api::notification::{NotificationRuleSpec, NotifierSpec};
use crate::api::rollout::RolloutSpec;
pub use names::label_value_ok;

pub use analysis::{
    MAX_QUERY_TIMEOUT_SECONDS, analysis_run, analysis_template, cluster_analysis_template,
    placeholders,
};
pub use experiment::{experiment, template_hash_references};
pub use gitsync::{SHA_LEN, git_sync, is_full_sha};
pub use notification::{REASONS, notification_rule, notifier};
pub use rollout::rollout;
pub use violation::{Violation, ViolationKind};

/// The violations of one of weir's objects (`weir.dev/*`, by its `kind`), as the controllers
/// would find them; None for any other object. Err: its spec is not one weir reads.
pub fn object(object: &serde_json::Value) -> Option<Result<Vec<Violation>, String>> {
    if !object["apiVersion"]
        .as_str()
        .is_some_and(|v| v.starts_with("weir.dev/"))
    {
        return None;
    }
    object_as(object["kind"].as_str().unwrap_or_default(), &object["spec"])
}

/// The violations of a `spec` of weir's kind `kind`; None for a kind weir does not check.
/// A value that does not parse is a violation at its field, and the rest is still checked
/// (without it); Err only when the spec cannot be read at all, naming the first field.
pub fn object_as(kind: &str, spec: &serde_json::Value) -> Option<Result<Vec<Violation>, String>> {
    fn check<T: serde::de::DeserializeOwned>(
        spec: &serde_json::Value,
        rules: impl Fn(&T) -> Vec<Violation>,
    ) -> Result<Vec<Violation>, String> {
        let (parsed, mut violations, removed) = parse_keep_going::<T>(spec);
        match parsed {
            Some(parsed) => {
                // A part left out for not parsing is not also "required".
                let unparsed: Vec<String> = violations.iter().map(|v| v.field.clone()).collect();
                let left_out = |v: &Violation| {
                    v.kind == ViolationKind::Required
                        && unparsed.iter().any(|field| {
                            field
                                .strip_prefix(v.field.as_str())
                                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
                        })
                };
                // The rules saw the spec without the entries left out: their fields are
                // moved back to what the user wrote.
                let found = rules(&parsed).into_iter().map(|v| Violation {
                    field: written_path(&v.field, &removed),
                    ..v
                });
                violations.extend(found.filter(|v| !left_out(v)));
                violations.sort();
                violations.dedup();
                Ok(violations)
            }
            None => Err(violations
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")),
        }
    }
    Some(match kind {
        "Rollout" => check::<RolloutSpec>(spec, rollout),
        "AnalysisTemplate" => check::<AnalysisTemplateSpec>(spec, analysis_template),
        "ClusterAnalysisTemplate" => check::<AnalysisTemplateSpec>(spec, cluster_analysis_template),
        // Checked as a template: a run's metrics and arguments follow the same rules.
        "AnalysisRun" => check::<AnalysisRunSpec>(spec, analysis_run),
        "Experiment" => check::<ExperimentSpec>(spec, experiment),
        "GitSync" => check::<GitSyncSpec>(spec, git_sync),
        "Notifier" => check::<NotifierSpec>(spec, notifier),
        "NotificationRule" => check::<NotificationRuleSpec>(spec, notification_rule),
        _ => return None,
    })
}

/// `spec` read as weir reads it, leaving out the values that do not parse (which
/// [`object_as`] reports); None when it cannot be read even without them.
pub fn read_leniently<T: serde::de::DeserializeOwned>(spec: &serde_json::Value) -> Option<T> {
    parse_keep_going(spec).0
}

/// Entries left out of lists while reading: the list's path as written, and the index the
/// entry had there.
type LeftOut = Vec<(String, usize)>;

/// Most values that do not parse, each at its field. None for the spec when it cannot be read
/// even without them (a required field missing at the top).
fn parse_keep_going<T: serde::de::DeserializeOwned>(
    spec: &serde_json::Value,
) -> (Option<T>, Vec<Violation>, LeftOut) {
    // Each round leaves out one value; a spec has only so many.
    const MAX_ROUNDS: usize = 64;
    let mut current = spec.clone();
    let mut violations = Vec::new();
    let mut removed = LeftOut::new();
    for _ in 0..MAX_ROUNDS {
        let error = match serde_path_to_error::deserialize::<_, T>(current.clone()) {
            Ok(parsed) => return (Some(parsed), violations, removed),
            Err(error) => error,
        };
        let mut current_field = String::from("spec");
        let mut list = None;
        for segment in error.path().iter() {
            match segment {
                serde_path_to_error::Segment::Seq { index } => {
                    list = Some((written_path(&current_field, &removed), *index));
                    current_field.push_str(&format!("[{index}]"));
                }
                other => {
                    list = None;
                    current_field.push_str(&format!(".{other}"));
                }
            }
        }
        let field = written_path(&current_field, &removed);
        violations.push(Violation {
            kind: ViolationKind::Invalid,
            field: field.clone(),
            message: format!("does not parse: {}", error.inner()),
        });
        if !leave_out(&mut current, error.path()) {
            return (None, violations, removed);
        }
        // The whole entry went: remember where it was as written.
        if let Some((list, _)) = list
            && let Some(index) = field
                .strip_prefix(&format!("{list}["))
                .and_then(|rest| rest.strip_suffix(']'))
                .and_then(|index| index.parse().ok())
        {
            removed.push((list, index));
        }
    }
    (None, violations, removed)
}

/// `field`, a path into the spec read with some list entries left out, as the user wrote it:
/// each index moved past the entries left out before it.
fn written_path(field: &str, removed: &[(String, usize)]) -> String {
    let mut written = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(open) = rest.find('[') {
        let Some(close) = rest[open..].find(']').map(|c| open + c) else {
            break;
        };
        written.push_str(&rest[..open]);
        let index_text = &rest[open + 1..close];
        rest = &rest[close + 1..];
        let Ok(mut index) = index_text.parse::<usize>() else {
            written.push_str(&format!("[{index_text}]"));
            continue;
        };
        let mut gone: Vec<usize> = removed
            .iter()
            .filter(|(list, _)| *list == written)
            .map(|(_, at)| *at)
            .collect();
        gone.sort_unstable();
        for at in gone {
            if at <= index {
                index += 1;
            }
        }
        written.push_str(&format!("[{index}]"));
    }
    written.push_str(rest);
    written
}

/// Removes the value at `path` (a key, or an element of a list); false when there is nothing
/// to remove (the spec itself).
fn leave_out(value: &mut serde_json::Value, path: &serde_path_to_error::Path) -> bool {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = path.iter().collect();
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut at = value;
    for segment in parents {
        at = match segment {
            Segment::Seq { index } => match at.get_mut(*index) {
                Some(next) => next,
                None => return false,
            },
            Segment::Map { key } => match at.get_mut(key.as_str()) {
                Some(next) => next,
                None => return false,
            },
            _ => return false,
        };
    }
    match last {
        Segment::Map { key } => at
            .as_object_mut()
            .and_then(|object| object.remove(key.as_str()))
            .is_some(),
        Segment::Seq { index } => match at.as_array_mut() {
            Some(items) if *index < items.len() => {
                items.remove(*index);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod unknown_field_tests;
