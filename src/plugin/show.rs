//! What `kubectl weir list` and `get` print. Pure: the objects and the clock go in, text
//! comes out, so the output is snapshot-tested for fixed objects.

use std::collections::BTreeMap;
use std::fmt::Write;

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;

use crate::api::analysis::{AnalysisPhase, AnalysisRun, Measurement};
use crate::api::contract::{POD_TEMPLATE_HASH_LABEL, STEP_LABEL};
use crate::api::experiment::Experiment;
use crate::api::rollout::{CanaryStep, Rollout, RolloutPhase};
use crate::time::from_k8s;
use crate::traffic::RouterView;

/// Everything `get` shows about one Rollout.
#[derive(Clone, Debug)]
pub struct Observed {
    pub rollout: Rollout,
    pub replica_sets: Vec<ReplicaSet>,
    pub runs: Vec<AnalysisRun>,
    /// The Experiments of its experiment steps.
    pub experiments: Vec<Experiment>,
    /// Commit subjects by revision, from the managing GitSync's history.
    pub subjects: BTreeMap<String, String>,
    /// What each router carries now, read from the routers themselves.
    pub routers: Vec<RouterView>,
    /// What could not be read (no permission), said at the end of the view.
    pub notes: Vec<String>,
}

/// A Git revision as people read it (seven characters; a revision set by hand may be any
/// text, so this cuts at a character, never inside one).
pub fn short(revision: &str) -> &str {
    revision
        .char_indices()
        .nth(7)
        .map_or(revision, |(at, _)| &revision[..at])
}

/// Age the way kubectl prints it: 45s, 12m, 5h, 3d.
pub fn age(since: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let seconds = (now - since).num_seconds().max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// Columns padded like kubectl's tables: three spaces between, no trailing blanks.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            text.push_str(cell);
            if i < last {
                let pad = width.saturating_sub(cell.chars().count()) + 3;
                text.push_str(&" ".repeat(pad));
            }
        }
        text.trim_end().to_owned()
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.clone()));
    }
    out.push('\n');
    out
}

pub fn phase(rollout: &Rollout) -> String {
    let status = rollout.status.as_ref();
    match status.and_then(|s| s.phase) {
        Some(phase) => format!("{phase:?}"),
        None => "Pending".into(),
    }
}

fn steps(rollout: &Rollout) -> &[CanaryStep] {
    rollout
        .spec
        .strategy
        .canary
        .as_ref()
        .map_or(&[], |c| c.steps.as_slice())
}

/// `i/n`: the step being carried out (counted from 1, as the controller's messages do), of
/// how many; blue-green has no steps.
pub fn step_of(rollout: &Rollout) -> String {
    if rollout.spec.strategy.blue_green.is_some() {
        return "blue-green".into();
    }
    let total = steps(rollout).len();
    let index = rollout
        .status
        .as_ref()
        .and_then(|s| s.current_step_index)
        .unwrap_or(0)
        .max(0) as usize;
    format!("{}/{total}", (index + 1).min(total))
}

/// The stable and canary versions: the Git revision when known, else the pod-template hash.
pub fn versions(rollout: &Rollout) -> (String, String) {
    let status = rollout.status.clone().unwrap_or_default();
    let pick = |revision: Option<String>, hash: Option<String>| match (revision, hash) {
        (Some(revision), _) => short(&revision).to_owned(),
        (None, Some(hash)) => hash,
        (None, None) => "-".into(),
    };
    let canary_is_stable = status.canary_rs == status.stable_rs;
    let stable = pick(status.stable_revision, status.stable_rs);
    let canary = if canary_is_stable {
        "-".into()
    } else {
        pick(status.canary_revision, status.canary_rs)
    };
    (stable, canary)
}

fn weight(rollout: &Rollout) -> String {
    rollout
        .status
        .as_ref()
        .and_then(|s| s.canary_weight)
        .map_or("-".into(), |w| format!("{w}%"))
}

/// `kubectl weir list`.
pub fn list(rollouts: &[Rollout], all_namespaces: bool, now: DateTime<Utc>) -> String {
    if rollouts.is_empty() {
        return "No Rollouts found.\n".into();
    }
    let mut header = vec!["NAME", "PHASE", "STEP", "WEIGHT", "STABLE", "CANARY", "AGE"];
    if all_namespaces {
        header.insert(0, "NAMESPACE");
    }
    let rows: Vec<Vec<String>> = rollouts
        .iter()
        .map(|rollout| {
            let (stable, canary) = versions(rollout);
            let created = rollout
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or("-".into(), |t| age(from_k8s(t), now));
            let mut row = vec![
                rollout.name_any(),
                phase(rollout),
                step_of(rollout),
                weight(rollout),
                stable,
                canary,
                created,
            ];
            if all_namespaces {
                row.insert(0, rollout.namespace().unwrap_or_default());
            }
            row
        })
        .collect();
    table(&header, &rows)
}

/// One canary step in words: the planner's own description, so Events and the plugin agree.
pub fn step_text(step: &CanaryStep) -> String {
    crate::rollout::plan::describe_step(step)
}

/// Twenty cells: `#` for the canary's share, `.` for the stable's.
pub fn bar(canary_weight: i32) -> String {
    let weight = canary_weight.clamp(0, 100);
    let filled = ((weight + 2) / 5) as usize;
    format!("[{}{}]", "#".repeat(filled), ".".repeat(20 - filled))
}

fn revision_line(
    label: &str,
    revision: Option<&str>,
    subjects: &BTreeMap<String, String>,
) -> String {
    match revision {
        Some(revision) => match subjects.get(revision) {
            Some(subject) => format!("{label} {} {subject:?}", short(revision)),
            None => format!("{label} {}", short(revision)),
        },
        None => format!("{label} -"),
    }
}

fn run_rows(runs: &[AnalysisRun]) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for run in runs {
        let status = run.status.clone().unwrap_or_default();
        let run_phase = status.phase.map_or("Pending".into(), |p| format!("{p:?}"));
        // The label counts from 0; people (and the step list) count from 1.
        let step = match run.labels().get(STEP_LABEL) {
            Some(index) => index
                .parse::<usize>()
                .map_or_else(|_| index.clone(), |i| (i + 1).to_string()),
            None => "-".into(),
        };
        if status.metric_results.is_empty() {
            rows.push(vec![
                run.name_any(),
                step,
                run_phase,
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
            continue;
        }
        for (i, metric) in status.metric_results.iter().enumerate() {
            let latest = metric.measurements.last();
            let (run_name, step, run_phase) = if i == 0 {
                (run.name_any(), step.clone(), run_phase.clone())
            } else {
                (String::new(), String::new(), String::new())
            };
            rows.push(vec![
                run_name,
                step,
                run_phase,
                metric.name.clone(),
                latest.map_or_else(|| "-".into(), latest_value),
                latest.map_or("-".into(), |m| verdict(m.phase)),
            ]);
        }
    }
    rows
}

/// A measurement's value; a judge's as the effect with what it rests on:
/// `1.212x p=0.0004 n=14/14` (canary against baseline, canary and baseline samples).
fn latest_value(measurement: &Measurement) -> String {
    let figure = |key: &str| measurement.metadata.get(key).map(String::as_str);
    match (figure("effect"), figure("pValue")) {
        (Some(effect), Some(p)) => format!(
            "{effect}x p={} n={}/{}",
            p.parse::<f64>()
                .map_or_else(|_| p.to_owned(), |p| format!("{p:.4}")),
            figure("canarySamples").unwrap_or("?"),
            figure("baselineSamples").unwrap_or("?"),
        ),
        _ => measurement.value.clone().unwrap_or_else(|| "-".into()),
    }
}

fn verdict(phase: AnalysisPhase) -> String {
    format!("{phase:?}")
}

/// Each experiment: its step, phase, templates (`name hash ready/desired`) and analyses'
/// phases.
fn experiment_rows(experiments: &[Experiment]) -> Vec<Vec<String>> {
    experiments
        .iter()
        .map(|experiment| {
            let status = experiment.status.clone().unwrap_or_default();
            let step = experiment
                .labels()
                .get(STEP_LABEL)
                .and_then(|s| s.parse::<usize>().ok())
                .map_or("-".into(), |s| (s + 1).to_string());
            let phase = status.phase.map_or("Pending".into(), |p| format!("{p:?}"));
            let templates: Vec<String> = status
                .template_statuses
                .iter()
                .map(|t| {
                    format!(
                        "{} {} {}/{}",
                        t.name,
                        t.pod_template_hash.as_deref().unwrap_or("-"),
                        t.available_replicas,
                        t.replicas
                    )
                })
                .collect();
            let analyses: Vec<String> = status
                .analysis_runs
                .iter()
                .map(|a| {
                    let phase = a.phase.map_or("Pending".into(), |p| format!("{p:?}"));
                    format!("{} {phase}", a.name)
                })
                .collect();
            let or_dash = |list: Vec<String>| {
                if list.is_empty() {
                    "-".to_owned()
                } else {
                    list.join(", ")
                }
            };
            vec![
                experiment.name_any(),
                step,
                phase,
                or_dash(templates),
                or_dash(analyses),
            ]
        })
        .collect()
}

pub fn condition_rows(conditions: &[Condition]) -> Vec<Vec<String>> {
    conditions
        .iter()
        .map(|c| {
            vec![
                c.type_.clone(),
                c.status.clone(),
                c.reason.clone(),
                c.message.clone(),
            ]
        })
        .collect()
}

/// Each router's live weight and managed routes; what could not be read says why.
fn router_rows(routers: &[RouterView]) -> Vec<Vec<String>> {
    routers
        .iter()
        .map(|router| {
            let weight = match &router.weight {
                Ok(Some(weight)) => format!("{weight}%"),
                Ok(None) => "not set".to_owned(),
                Err(error) => format!("unreadable: {error}"),
            };
            let routes = match &router.managed_routes {
                Ok(routes) if routes.is_empty() => "-".to_owned(),
                Ok(routes) => routes.join(", "),
                Err(error) => format!("unreadable: {error}"),
            };
            vec![router.label.clone(), weight, routes]
        })
        .collect()
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// `kubectl weir get NAME`: the rollout at a glance.
pub fn get(observed: &Observed, now: DateTime<Utc>) -> String {
    let rollout = &observed.rollout;
    let status = rollout.status.clone().unwrap_or_default();
    let mut out = String::new();
    let field = |out: &mut String, name: &str, value: &str| {
        let label = if name.is_empty() {
            String::new()
        } else {
            format!("{name}:")
        };
        let _ = writeln!(out, "{label:<13}{value}");
    };
    field(&mut out, "Name", &rollout.name_any());
    field(
        &mut out,
        "Namespace",
        &rollout.namespace().unwrap_or_default(),
    );
    let mut phase_text = phase(rollout);
    if status.abort {
        phase_text.push_str(" (aborted)");
    }
    if rollout.spec.paused {
        phase_text.push_str(" (paused by spec.paused)");
    }
    field(&mut out, "Phase", &phase_text);
    if let Some(message) = &status.message {
        field(&mut out, "Message", message);
    }
    field(
        &mut out,
        "Revisions",
        &revision_line(
            "stable",
            status.stable_revision.as_deref(),
            &observed.subjects,
        ),
    );
    if status.canary_rs != status.stable_rs || status.canary_revision != status.stable_revision {
        field(
            &mut out,
            "",
            &revision_line(
                "canary",
                status.canary_revision.as_deref(),
                &observed.subjects,
            ),
        );
    }
    let canary_weight = status.canary_weight.unwrap_or(0);
    // An experiment's Services take their shares from the stable's.
    let experiments: i32 = observed
        .routers
        .iter()
        .map(|r| {
            r.experiment_shares
                .values()
                .map(|s| (*s).max(0))
                .sum::<i32>()
        })
        .max()
        .unwrap_or(0);
    let experiment_text = if experiments > 0 {
        format!("  experiments {experiments}%")
    } else {
        String::new()
    };
    field(
        &mut out,
        "Traffic",
        &format!(
            "{} stable {}%  canary {canary_weight}%{experiment_text}",
            bar(canary_weight),
            (100 - canary_weight.clamp(0, 100) - experiments).max(0)
        ),
    );
    if !observed.routers.is_empty() {
        let _ = writeln!(out, "Routers:");
        out.push_str(&indent(&table(
            &["ROUTER", "CANARY", "MANAGED ROUTES"],
            &router_rows(&observed.routers),
        )));
    }
    let current = status.current_step_index.unwrap_or(0).max(0) as usize;
    let steps = steps(rollout);
    if steps.is_empty() {
        field(
            &mut out,
            "Steps",
            "none (a new template becomes stable at once)",
        );
    } else {
        let _ = writeln!(out, "Steps:");
        for (i, step) in steps.iter().enumerate() {
            let mark = match i.cmp(&current) {
                std::cmp::Ordering::Less => "[x]",
                std::cmp::Ordering::Equal if status.phase != Some(RolloutPhase::Healthy) => "[>]",
                std::cmp::Ordering::Equal => "[x]",
                std::cmp::Ordering::Greater => "[ ]",
            };
            let _ = writeln!(out, "  {mark} {}  {}", i + 1, step_text(step));
        }
    }
    let _ = writeln!(out, "ReplicaSets:");
    if observed.replica_sets.is_empty() {
        let _ = writeln!(out, "  none");
    } else {
        let mut replica_sets = observed.replica_sets.clone();
        replica_sets.sort_by_key(|rs| std::cmp::Reverse(rs.metadata.creation_timestamp.clone()));
        let rows: Vec<Vec<String>> = replica_sets
            .iter()
            .map(|rs| {
                let hash = rs
                    .labels()
                    .get(POD_TEMPLATE_HASH_LABEL)
                    .cloned()
                    .unwrap_or_default();
                let role = match (
                    Some(&hash) == status.stable_rs.as_ref(),
                    Some(&hash) == status.canary_rs.as_ref(),
                ) {
                    (true, _) => "stable",
                    (false, true) => "canary",
                    _ => "old",
                };
                let desired = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
                let ready = rs
                    .status
                    .as_ref()
                    .and_then(|s| s.ready_replicas)
                    .unwrap_or(0);
                let created = rs
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map_or("-".into(), |t| age(from_k8s(t), now));
                vec![
                    rs.name_any(),
                    role.into(),
                    format!("{ready}/{desired}"),
                    created,
                ]
            })
            .collect();
        out.push_str(&indent(&table(&["NAME", "ROLE", "READY", "AGE"], &rows)));
    }
    if !observed.runs.is_empty() {
        let _ = writeln!(out, "Analysis:");
        let mut runs = observed.runs.clone();
        runs.sort_by_key(|r| r.metadata.creation_timestamp.clone());
        out.push_str(&indent(&table(
            &["RUN", "STEP", "PHASE", "METRIC", "LATEST", "VERDICT"],
            &run_rows(&runs),
        )));
    }
    if !observed.experiments.is_empty() {
        let _ = writeln!(out, "Experiments:");
        let mut experiments = observed.experiments.clone();
        experiments.sort_by_key(|e| e.metadata.creation_timestamp.clone());
        out.push_str(&indent(&table(
            &["EXPERIMENT", "STEP", "PHASE", "TEMPLATES", "ANALYSES"],
            &experiment_rows(&experiments),
        )));
        for experiment in &experiments {
            if let Some(message) = experiment.status.as_ref().and_then(|s| s.message.as_ref()) {
                let _ = writeln!(out, "  {}: {message}", experiment.name_any());
            }
        }
    }
    if !status.conditions.is_empty() {
        let _ = writeln!(out, "Conditions:");
        out.push_str(&indent(&table(
            &["TYPE", "STATUS", "REASON", "MESSAGE"],
            &condition_rows(&status.conditions),
        )));
    }
    for note in &observed.notes {
        let _ = writeln!(out, "Note: {note}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blue_green_rollout_shows_its_strategy_for_a_step() {
        let rollout = |strategy: serde_json::Value, index: i32| -> Rollout {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "weir.dev/v1alpha1", "kind": "Rollout", "metadata": {"name": "web"},
                "spec": {"selector": {}, "template": {}, "strategy": strategy},
                "status": {"currentStepIndex": index}
            }))
            .expect("rollout")
        };
        let blue_green = rollout(
            serde_json::json!({"blueGreen": {"activeService": "web"}}),
            2,
        );
        assert_eq!(step_of(&blue_green), "blue-green");
        let canary = rollout(
            serde_json::json!({"canary": {"steps": [{"setWeight": 10}, {"pause": {}}]}}),
            1,
        );
        assert_eq!(step_of(&canary), "2/2");
    }

    #[test]
    fn the_bar_has_twenty_cells_for_any_weight() {
        assert_eq!(bar(0), "[....................]");
        assert_eq!(bar(20), "[####................]");
        assert_eq!(bar(100), "[####################]");
        for weight in -10..=110 {
            assert_eq!(bar(weight).chars().count(), 22, "{weight}");
        }
    }

    #[test]
    fn a_short_revision_never_cuts_a_character() {
        assert_eq!(short("5407b173496e"), "5407b17");
        assert_eq!(short("abc"), "abc");
        assert_eq!(short("résumé12"), "résumé1");
        assert_eq!(short("ééééééééé"), "ééééééé");
    }

    #[test]
    fn ages_read_like_kubectl() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
        let ago = |s: i64| age(now - chrono::Duration::seconds(s), now);
        assert_eq!(
            [
                ago(5),
                ago(119),
                ago(120),
                ago(7199),
                ago(7200),
                ago(200_000)
            ],
            ["5s", "119s", "2m", "119m", "2h", "2d"].map(String::from)
        );
    }
}
