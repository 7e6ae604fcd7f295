//! The operator's controls: which patch each command applies to a Rollout, what will happen
//! next, and when a command makes no sense. Pure; the patches are the ones documented on
//! `RolloutStatus` (status fields) and `spec.paused`.

use kube::ResourceExt;
use serde_json::{Value, json};

use super::show::step_text;
use crate::api::rollout::{Rollout, RolloutPhase};
use crate::gitops::inventory::OWNER_ANNOTATION;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    Promote { full: bool },
    Abort,
    Retry,
    Pause,
    Resume,
}

/// Which part of the Rollout a patch goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Spec,
    Status,
}

/// A merge patch, and what it will make the controller do.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub part: Part,
    pub patch: Value,
    pub next: String,
}

/// The change for `control`, or why it makes no sense for this Rollout now.
pub fn change(control: Control, rollout: &Rollout) -> Result<Change, String> {
    let name = rollout.name_any();
    let status = rollout.status.clone().unwrap_or_default();
    let steps = rollout
        .spec
        .strategy
        .canary
        .as_ref()
        .map(|c| c.steps.clone())
        .unwrap_or_default();
    let index = status.current_step_index.unwrap_or(0).max(0) as usize;
    let canary = status.canary_rs.clone().unwrap_or_default();
    let stable = status.stable_rs.clone().unwrap_or_default();
    let healthy = status.phase == Some(RolloutPhase::Healthy) || canary == stable;
    let managed = rollout.annotations().get(OWNER_ANNOTATION).cloned();
    match control {
        Control::Promote { full } => {
            if status.abort {
                return Err(format!(
                    "{name} is aborted: nothing to promote; `kubectl weir retry {name}` starts its canary again"
                ));
            }
            if healthy {
                return Err(format!(
                    "{name} is Healthy on {stable}: there is no canary to promote"
                ));
            }
            if full {
                return Ok(Change {
                    part: Part::Status,
                    patch: json!({"status": {"promoteFull": true}}),
                    next: format!(
                        "{name}: promoted fully; the remaining steps are skipped and {canary} becomes stable once its pods are ready"
                    ),
                });
            }
            if rollout.spec.paused {
                return Err(format!(
                    "{name} is paused by spec.paused: `kubectl weir resume {name}` lets it go on"
                ));
            }
            if status.pause_conditions.is_empty() {
                let at = steps.get(index).map_or("its last step".into(), |s| {
                    format!("step {} ({})", index + 1, step_text(s))
                });
                return Err(format!(
                    "{name} is not paused (it is at {at}); --full skips every remaining step"
                ));
            }
            let then = steps
                .get(index + 1)
                .map_or(format!("the canary {canary} becomes stable"), |s| {
                    format!("it goes on to step {} ({})", index + 2, step_text(s))
                });
            Ok(Change {
                part: Part::Status,
                patch: json!({"status": {"pauseConditions": null}}),
                next: format!("{name}: promoted past step {}; {then}", index + 1),
            })
        }
        Control::Abort => {
            if status.abort {
                return Err(format!("{name} is aborted already"));
            }
            if healthy {
                return Err(format!(
                    "{name} is Healthy on {stable}: there is no canary to abort"
                ));
            }
            let git = match &managed {
                Some(owner) => format!(
                    "; GitSync {owner} rejects the revision and re-applies the last good one"
                ),
                None => String::new(),
            };
            Ok(Change {
                part: Part::Status,
                patch: json!({"status": {"abort": true}}),
                next: format!(
                    "{name}: aborted; traffic returns to the stable version {stable} at once{git}"
                ),
            })
        }
        Control::Retry => {
            if !status.abort {
                return Err(format!("{name} is not aborted: there is nothing to retry"));
            }
            Ok(Change {
                part: Part::Status,
                patch: json!({"status": {"abort": false}}),
                next: format!("{name}: the canary of {canary} starts again from step 0"),
            })
        }
        Control::Pause => {
            if rollout.spec.paused {
                return Err(format!("{name} is paused already"));
            }
            Ok(Change {
                part: Part::Spec,
                patch: json!({"spec": {"paused": true}}),
                next: format!(
                    "{name}: paused; it stays at step {} with its traffic as it is until `kubectl weir resume {name}`",
                    index + 1
                ),
            })
        }
        Control::Resume => {
            if !rollout.spec.paused {
                return Err(format!("{name} is not paused by spec.paused"));
            }
            Ok(Change {
                part: Part::Spec,
                patch: json!({"spec": {"paused": false}}),
                next: format!("{name}: resumed; it goes on from step {}", index + 1),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(status: Value) -> Rollout {
        serde_json::from_value(json!({
            "apiVersion": "weir.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "web:2"}]}},
                "strategy": {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}, {"setWeight": 60}]}}},
            "status": status
        }))
        .expect("a Rollout")
    }

    fn paused() -> Rollout {
        rollout(
            json!({"phase": "Paused", "currentStepIndex": 1, "stableRS": "aaa",
            "canaryRS": "bbb", "canaryWeight": 20,
            "pauseConditions": [{"reason": "CanaryPauseStep", "startTime": "2026-01-01T00:00:00Z"}]}),
        )
    }

    #[test]
    fn each_control_is_its_documented_patch() {
        let cases = [
            (
                Control::Promote { full: false },
                json!({"status": {"pauseConditions": null}}),
            ),
            (
                Control::Promote { full: true },
                json!({"status": {"promoteFull": true}}),
            ),
            (Control::Abort, json!({"status": {"abort": true}})),
            (Control::Pause, json!({"spec": {"paused": true}})),
        ];
        for (control, patch) in cases {
            let change = change(control, &paused()).expect("makes sense");
            assert_eq!(change.patch, patch, "{control:?}");
        }
        let promoted = change(Control::Promote { full: false }, &paused()).expect("promote");
        assert_eq!(
            promoted.next,
            "web: promoted past step 2; it goes on to step 3 (setWeight 60%)"
        );
    }

    #[test]
    fn controls_that_make_no_sense_say_why() {
        let healthy = rollout(json!({"phase": "Healthy", "stableRS": "aaa", "canaryRS": "aaa"}));
        let aborted = rollout(
            json!({"phase": "Degraded", "abort": true, "stableRS": "aaa",
            "canaryRS": "bbb", "currentStepIndex": 0}),
        );
        let progressing = rollout(json!({"phase": "Progressing", "stableRS": "aaa",
            "canaryRS": "bbb", "currentStepIndex": 0}));
        let refused = |control, rollout: &Rollout| change(control, rollout).expect_err("refused");
        assert!(refused(Control::Promote { full: false }, &healthy).contains("no canary"));
        assert!(
            refused(Control::Promote { full: true }, &aborted).contains("kubectl weir retry web")
        );
        assert!(refused(Control::Abort, &healthy).contains("no canary to abort"));
        assert!(refused(Control::Retry, &healthy).contains("not aborted"));
        assert!(refused(Control::Resume, &healthy).contains("not paused"));
        assert!(
            refused(Control::Promote { full: false }, &progressing)
                .contains("not paused (it is at step 1 (setWeight 20%)); --full")
        );
        assert_eq!(
            change(Control::Retry, &aborted).map(|c| c.patch),
            Ok(json!({"status": {"abort": false}}))
        );
    }
}
