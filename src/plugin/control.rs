//! The operator's controls: which patch each command applies to a Rollout, what will happen
//! next, and when a command makes no sense. Pure; the patches are the ones documented on
//! `RolloutStatus` (status fields) and `spec.paused`.

use kube::ResourceExt;
use serde_json::{Value, json};

use super::show::step_text;
use crate::api::contract::GITSYNC_ANNOTATION;
use crate::api::rollout::Rollout;

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
    let Some(status) = rollout.status.clone() else {
        return Err(format!(
            "{name} has no status yet: the controller has not picked it up (is it running for this namespace?)"
        ));
    };
    if !matches!(control, Control::Pause | Control::Resume)
        && status.observed_generation != rollout.metadata.generation
    {
        return Err(format!(
            "the controller has not seen {name}'s latest spec yet; try again in a moment"
        ));
    }
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
    let phase = status
        .phase
        .map_or("Pending".to_owned(), |p| format!("{p:?}"));
    // A canary is in flight while its template is not the stable one.
    let in_flight = status.canary_rs.is_some() && canary != stable;
    let no_canary = || format!("{name} has no canary in progress ({phase}, on {stable})");
    let managed = rollout.annotations().get(GITSYNC_ANNOTATION).cloned();
    match control {
        Control::Promote { full } => {
            if status.abort {
                return Err(format!(
                    "{name} is aborted: nothing to promote; `kubectl weir retry {name}` starts its canary again"
                ));
            }
            if !in_flight {
                return Err(format!("{}: nothing to promote", no_canary()));
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
            if rollout.spec.strategy.blue_green.is_some() {
                if status.pause_conditions.is_empty() {
                    return Err(format!(
                        "{name} is not paused before its switch; --full skips its analysis and pauses"
                    ));
                }
                return Ok(Change {
                    part: Part::Status,
                    patch: json!({"status": {"pauseConditions": null}}),
                    next: format!(
                        "{name}: promoted; {canary} takes the active Service once all its pods are available"
                    ),
                });
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
            if !in_flight {
                return Err(format!("{}: nothing to abort", no_canary()));
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
                next: format!("{name}: the canary of {canary} starts again from step 1"),
            })
        }
        Control::Pause => {
            if rollout.spec.paused {
                return Err(format!("{name} is paused already"));
            }
            let held = if in_flight {
                format!(
                    "it stays at step {} with its traffic as it is",
                    (index + 1).min(steps.len())
                )
            } else {
                "a new template will wait before its first step".to_owned()
            };
            Ok(Change {
                part: Part::Spec,
                patch: json!({"spec": {"paused": true}}),
                next: format!("{name}: paused; {held} until `kubectl weir resume {name}`"),
            })
        }
        Control::Resume => {
            if !rollout.spec.paused {
                return Err(format!("{name} is not paused by spec.paused"));
            }
            let then = if in_flight {
                format!("it goes on from step {}", (index + 1).min(steps.len()))
            } else {
                "new templates go through their steps again".to_owned()
            };
            Ok(Change {
                part: Part::Spec,
                patch: json!({"spec": {"paused": false}}),
                next: format!("{name}: resumed; {then}"),
            })
        }
    }
}

/// `kubectl weir promote gitsync/NAME [--revision R]`: the revision to approve for a GitSync
/// whose promotion asks for a person, and the patch that approves it. Without `revision`,
/// the one its status says waits; a prefix must be of that one; a full SHA may be any
/// revision good upstream (the controller checks).
pub fn approve_promotion(
    sync: &crate::api::gitsync::GitSync,
    revision: Option<&str>,
) -> Result<(String, Value), String> {
    let name = format!(
        "{}/{}",
        sync.namespace().unwrap_or_default(),
        sync.name_any()
    );
    let Some(promotion) = &sync.spec.promotion else {
        return Err(format!(
            "GitSync {name} has no spec.promotion: it applies its ref's head, with nothing to approve"
        ));
    };
    if promotion.approval.as_deref() != Some("Manual") {
        return Err(format!(
            "GitSync {name} promotes without approval (spec.promotion.approval is not Manual): revisions good upstream go once they have soaked"
        ));
    }
    let waiting = sync
        .status
        .as_ref()
        .and_then(|s| s.promotion.as_ref())
        .map(|p| p.revision.as_str())
        .filter(|r| !r.is_empty());
    let chosen = match (revision, waiting) {
        (Some(r), _) if crate::validate::is_full_sha(r) => r.to_owned(),
        (Some(r), Some(w)) if !r.is_empty() && w.starts_with(r) => w.to_owned(),
        (Some(r), _) => {
            return Err(format!(
                "{r:?} is neither a full SHA nor the start of the revision GitSync {name} waits for ({})",
                waiting.unwrap_or("none")
            ));
        }
        (None, Some(w)) => w.to_owned(),
        (None, None) => {
            return Err(format!(
                "GitSync {name} waits for no approval now; name a revision with --revision"
            ));
        }
    };
    let patch = json!({"metadata": {"annotations": {
        crate::api::contract::PROMOTE_REVISION_ANNOTATION: chosen
    }}});
    Ok((chosen, patch))
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
    fn a_blue_green_promote_says_what_comes_next() {
        let mut held = paused();
        held.spec.strategy = serde_json::from_value(
            json!({"blueGreen": {"activeService": "web-active", "previewService": "web-preview"}}),
        )
        .expect("strategy");
        let promoted = change(Control::Promote { full: false }, &held).expect("promote");
        assert_eq!(promoted.patch, json!({"status": {"pauseConditions": null}}));
        assert_eq!(
            promoted.next,
            "web: promoted; bbb takes the active Service once all its pods are available"
        );
        held.status
            .as_mut()
            .expect("status")
            .pause_conditions
            .clear();
        assert_eq!(
            change(Control::Promote { full: false }, &held).expect_err("refused"),
            "web is not paused before its switch; --full skips its analysis and pauses"
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
        assert_eq!(
            refused(Control::Promote { full: false }, &healthy),
            "web has no canary in progress (Healthy, on aaa): nothing to promote"
        );
        assert!(
            refused(Control::Promote { full: true }, &aborted).contains("kubectl weir retry web")
        );
        assert!(refused(Control::Abort, &healthy).ends_with("nothing to abort"));
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
        // A deadline with no canary leaves canary == stable but not Healthy: still nothing
        // to abort, and it says which phase it is in.
        let stuck = rollout(json!({"phase": "Degraded", "stableRS": "aaa", "canaryRS": "aaa"}));
        assert_eq!(
            refused(Control::Abort, &stuck),
            "web has no canary in progress (Degraded, on aaa): nothing to abort"
        );
        let new = serde_json::from_value::<Rollout>(json!({
            "apiVersion": "weir.dev/v1alpha1", "kind": "Rollout", "metadata": {"name": "web"},
            "spec": {"selector": {}, "template": {}, "strategy": {}}
        }))
        .expect("a Rollout");
        assert!(refused(Control::Abort, &new).starts_with("web has no status yet"));
        let mut unseen = paused();
        unseen.metadata.generation = Some(7);
        assert!(refused(Control::Promote { full: false }, &unseen).contains("latest spec"));
    }

    #[test]
    fn pause_and_resume_say_what_they_hold() {
        let healthy = rollout(
            json!({"phase": "Healthy", "stableRS": "aaa", "canaryRS": "aaa",
            "currentStepIndex": 3}),
        );
        let paused_healthy = change(Control::Pause, &healthy).expect("pause");
        assert_eq!(
            paused_healthy.next,
            "web: paused; a new template will wait before its first step until `kubectl weir resume web`"
        );
        let pausing = change(Control::Pause, &paused()).expect("pause");
        assert!(
            pausing.next.contains("stays at step 2 "),
            "{}",
            pausing.next
        );
        let mut held = paused();
        held.spec.paused = true;
        let resumed = change(Control::Resume, &held).expect("resume");
        assert_eq!(resumed.patch, json!({"spec": {"paused": false}}));
        assert_eq!(resumed.next, "web: resumed; it goes on from step 2");
        assert!(change(Control::Pause, &held).is_err());
    }
}
