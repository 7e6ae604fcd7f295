//! The dashboard's pages, rendered from the objects the server watches. Pure: objects, the
//! clock and the form token go in, HTML comes out, every piece of text escaped.
//!
//! Each page is a `<main>` fragment; [`document`] wraps it for a first load, and the live
//! script swaps in the fragment the server sends on each change.

use std::fmt::Write;

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Event;
use kube::ResourceExt;

use super::action::Action;
use super::chart::{Chart, svg};
use super::html::escape;
use super::page::{self, RolloutRow, path_segment};
use super::series::{self, Noted};
use super::threshold;
use crate::api::analysis::{AnalysisPhase, AnalysisRun};
use crate::api::contract::POD_TEMPLATE_HASH_LABEL;
use crate::api::gitsync::GitSync;
use crate::api::rollout::Rollout;
use crate::gitops::delivery::{self, Window, median};
use crate::plugin::show;

/// The whole page around a `<main>` fragment. The live script (served by the dashboard
/// itself) keeps the fragment current; without it the page is complete as it is.
pub fn document(title: &str, scope: &str, main: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{title} · weir</title><style>{STYLE}</style>\
         <script src=\"/live.js\" defer></script></head><body>\
         <nav><strong>weir</strong> <a href=\"/\">Rollouts</a> <a href=\"/gitsyncs\">GitSyncs</a> \
         <span class=\"scope\">{scope}</span></nav><main id=\"main\">{main}</main></body></html>",
        title = escape(title),
        scope = escape(scope),
    )
}

const STYLE: &str = "body{font-family:sans-serif;margin:1em 2em;color:#222}\
nav{margin-bottom:1em}nav a{margin-right:1em}.scope{color:#666}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}\
.timeline li{margin:.3em 0}.rejected,.failed{color:#b00}.stable{color:#070}.rolledback,.reverted{color:#a60}\
form.inline{display:inline}button{margin-right:.4em}.failure{color:#b00}.note{color:#666}";

/// A list of Rollouts as the plugin's `list` reads them.
pub fn rollouts(rollouts: &[Rollout], notes: &[String]) -> String {
    let rows: Vec<RolloutRow> = rollouts
        .iter()
        .map(|rollout| {
            let (stable, canary) = show::versions(rollout);
            RolloutRow {
                namespace: rollout.namespace().unwrap_or_default(),
                name: rollout.name_any(),
                phase: show::phase(rollout),
                step: show::step_of(rollout),
                weight: rollout
                    .status
                    .as_ref()
                    .and_then(|s| s.canary_weight)
                    .unwrap_or(0)
                    .clamp(0, 100) as u32,
                stable,
                canary,
            }
        })
        .collect();
    format!(
        "<h1>Rollouts</h1>{}{}",
        page::rollouts(&rows),
        notes_list(notes)
    )
}

/// An Event as the charts and tables need it: when it first happened (the step it marks),
/// its reason and its words.
pub fn noted(event: &Event) -> Noted {
    let at = crate::runtime::event_time(event).unwrap_or(0);
    Noted {
        at,
        reason: event.reason.clone().unwrap_or_default(),
        message: event.message.clone().unwrap_or_default(),
    }
}

/// What one Rollout's page shows.
pub struct RolloutPage<'a> {
    pub rollout: &'a Rollout,
    pub replica_sets: &'a [&'a ReplicaSet],
    pub runs: &'a [&'a AnalysisRun],
    pub events: &'a [Event],
    /// The weights the dashboard saw while it watched.
    pub seen: &'a [(i64, f64)],
    /// The form token every button posts.
    pub token: &'a str,
    pub notes: &'a [String],
    pub now: DateTime<Utc>,
}

pub fn rollout(page: &RolloutPage) -> String {
    let rollout = page.rollout;
    let namespace = rollout.namespace().unwrap_or_default();
    let name = rollout.name_any();
    let status = rollout.status.clone().unwrap_or_default();
    let (stable, canary) = show::versions(rollout);
    let mut out = format!("<h1>Rollout {}/{}</h1>", escape(&namespace), escape(&name));
    let _ = write!(
        out,
        "<dl id=\"summary\"><dt>Phase</dt><dd id=\"phase\">{}</dd><dt>Step</dt><dd id=\"step\">{}</dd>\
         <dt>Weight</dt><dd id=\"weight\">{}%</dd><dt>Stable</dt><dd>{}</dd><dt>Canary</dt><dd>{}</dd>{}</dl>",
        escape(&show::phase(rollout)),
        escape(&show::step_of(rollout)),
        status.canary_weight.unwrap_or(0),
        escape(&stable),
        escape(&canary),
        status
            .message
            .as_deref()
            .map(|m| format!("<dt>Message</dt><dd>{}</dd>", escape(m)))
            .unwrap_or_default(),
    );
    out.push_str(&buttons(&namespace, &name, page.token));

    let steps = rollout
        .spec
        .strategy
        .canary
        .as_ref()
        .map_or(&[][..], |c| c.steps.as_slice());
    if !steps.is_empty() {
        let described: Vec<String> = steps.iter().map(show::step_text).collect();
        let current = status
            .current_step_index
            .and_then(|i| usize::try_from(i).ok());
        out.push_str("<h2>Steps</h2>");
        out.push_str(&page::steps(&described, current));
    }

    let noted: Vec<Noted> = page.events.iter().map(noted).collect();
    let weight_chart = Chart {
        title: format!("canary weight of {name} (%)"),
        points: series::points(&noted, steps, page.seen),
        threshold: None,
        marks: series::marks(&noted),
        failing: Vec::new(),
        stepped: true,
    };
    out.push_str("<h2>Weight</h2><figure id=\"weight-chart\">");
    out.push_str(&svg(&weight_chart));
    out.push_str("</figure>");

    out.push_str("<h2>Analysis</h2>");
    let charts = analysis_charts(page.runs);
    if charts.is_empty() {
        out.push_str("<p>No analysis runs.</p>");
    }
    for (run, chart) in charts {
        let _ = write!(
            out,
            "<figure class=\"analysis-chart\" data-run=\"{}\">{}</figure>",
            escape(&run),
            svg(&chart)
        );
    }

    out.push_str("<h2>ReplicaSets</h2>");
    let rows: Vec<Vec<String>> = page
        .replica_sets
        .iter()
        .map(|rs| {
            let status = rs.status.clone().unwrap_or_default();
            vec![
                rs.name_any(),
                rs.labels()
                    .get(POD_TEMPLATE_HASH_LABEL)
                    .cloned()
                    .unwrap_or_default(),
                rs.spec
                    .as_ref()
                    .and_then(|s| s.replicas)
                    .unwrap_or(0)
                    .to_string(),
                status.ready_replicas.unwrap_or(0).to_string(),
            ]
        })
        .collect();
    out.push_str(&table(&["Name", "Hash", "Desired", "Ready"], &rows));

    out.push_str("<h2>Conditions</h2>");
    out.push_str(&table(
        &["Type", "Status", "Reason", "Message"],
        &show::condition_rows(&status.conditions),
    ));
    out.push_str("<h2>Events</h2>");
    out.push_str(&events(page.events, page.now));
    out.push_str(&notes_list(page.notes));
    out
}

/// One chart per metric of each run, oldest run first: the measurements against the
/// threshold its success (or failure) condition names, the failed ones in red.
fn analysis_charts(runs: &[&AnalysisRun]) -> Vec<(String, Chart)> {
    let mut ordered: Vec<&&AnalysisRun> = runs.iter().collect();
    ordered.sort_by_key(|run| (run.metadata.creation_timestamp.clone(), run.name_any()));
    let mut charts = Vec::new();
    for run in ordered {
        let status = run.status.clone().unwrap_or_default();
        for result in &status.metric_results {
            let metric = run
                .spec
                .template
                .metrics
                .iter()
                .find(|m| m.name == result.name);
            let threshold = metric.and_then(|m| {
                m.success_condition
                    .as_deref()
                    .and_then(threshold::from_condition)
                    .or_else(|| {
                        m.failure_condition
                            .as_deref()
                            .and_then(threshold::from_condition)
                            .map(|(value, label)| (value, format!("fails {label}")))
                    })
                    .or_else(|| m.provider.judge.as_ref().map(threshold::of_judge))
            });
            let mut points = Vec::new();
            let mut failing = Vec::new();
            for measurement in &result.measurements {
                let Some(value) = measurement.value.as_deref().and_then(first_number) else {
                    continue;
                };
                let at = measurement
                    .finished_at
                    .as_ref()
                    .unwrap_or(&measurement.started_at)
                    .0
                    .as_second();
                if measurement.phase == AnalysisPhase::Failed {
                    failing.push(points.len());
                }
                points.push((at, value));
            }
            charts.push((
                run.name_any(),
                Chart {
                    title: format!("{} / {} ({:?})", run.name_any(), result.name, result.phase),
                    points,
                    threshold,
                    marks: Vec::new(),
                    failing,
                    stepped: false,
                },
            ));
        }
    }
    charts
}

/// The first number of a measurement as recorded (`[0.97]` for a vector, `0.97` for a
/// scalar, `[0.9,0.8]` for several series).
pub fn first_number(value: &str) -> Option<f64> {
    let inner = value.trim().trim_start_matches('[').trim_end_matches(']');
    let first = inner.split(',').next()?.trim();
    first.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// The six buttons, each a form posting to the confirmation page.
fn buttons(namespace: &str, name: &str, token: &str) -> String {
    let mut out = String::from("<div id=\"controls\">");
    for action in Action::ALL {
        let _ = write!(
            out,
            "<form class=\"inline\" method=\"post\" action=\"{}\">\
             <input type=\"hidden\" name=\"token\" value=\"{}\">\
             <button type=\"submit\" name=\"action\" value=\"{}\">{}</button></form>",
            action_path(namespace, name, action),
            escape(token),
            action.slug(),
            action.label()
        );
    }
    out.push_str("</div>");
    out
}

fn action_path(namespace: &str, name: &str, action: Action) -> String {
    format!(
        "/rollouts/{}/{}/{}",
        escape(&path_segment(namespace)),
        escape(&path_segment(name)),
        action.slug()
    )
}

/// Asks before acting: what the action does, a button that does it, and a way back.
pub fn confirm(namespace: &str, name: &str, action: Action, token: &str) -> String {
    format!(
        "<h1>{label} {ns}/{name}?</h1><p>{label} {consequence}.</p>\
         <form method=\"post\" action=\"{path}\"><input type=\"hidden\" name=\"token\" value=\"{token}\">\
         <input type=\"hidden\" name=\"confirmed\" value=\"yes\">\
         <button type=\"submit\" id=\"confirm\">Yes, {lower}</button></form>\
         <p><a href=\"{back}\">No, back to {name}</a></p>",
        label = action.label(),
        lower = action.label().to_lowercase(),
        ns = escape(namespace),
        name = escape(name),
        consequence = action.consequence(),
        path = action_path(namespace, name, action),
        token = escape(token),
        back = rollout_path(namespace, name),
    )
}

/// What became of an action: the plugin's words for what happens next, or why it was
/// refused.
pub fn acted(namespace: &str, name: &str, outcome: &Result<String, String>) -> String {
    let said = match outcome {
        Ok(next) => format!("<p id=\"result\">{}</p>", escape(next)),
        Err(why) => format!("<p id=\"result\" class=\"failure\">{}</p>", escape(why)),
    };
    format!(
        "<h1>{}/{}</h1>{said}<p><a id=\"back\" href=\"{}\">Back to {}</a></p>",
        escape(namespace),
        escape(name),
        rollout_path(namespace, name),
        escape(name)
    )
}

fn rollout_path(namespace: &str, name: &str) -> String {
    format!(
        "/rollouts/{}/{}",
        escape(&path_segment(namespace)),
        escape(&path_segment(name))
    )
}

fn gitsync_path(namespace: &str, name: &str) -> String {
    format!(
        "/gitsyncs/{}/{}",
        escape(&path_segment(namespace)),
        escape(&path_segment(name))
    )
}

/// A table with a header row; every cell escaped.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    if rows.is_empty() {
        return "<p>None.</p>".into();
    }
    let mut out = String::from("<table><thead><tr>");
    for cell in header {
        let _ = write!(out, "<th>{}</th>", escape(cell));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{}</td>", escape(cell));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

fn events(events: &[Event], now: DateTime<Utc>) -> String {
    let mut noted: Vec<(Noted, String)> = events
        .iter()
        .map(|e| (noted(e), e.type_.clone().unwrap_or_default()))
        .collect();
    noted.sort_by_key(|(n, _)| std::cmp::Reverse(n.at));
    let rows: Vec<Vec<String>> = noted
        .into_iter()
        .map(|(n, kind)| {
            let at = DateTime::from_timestamp(n.at, 0).unwrap_or(now);
            vec![show::age(at, now), kind, n.reason, n.message]
        })
        .collect();
    table(&["Age", "Type", "Reason", "Message"], &rows)
}

fn notes_list(notes: &[String]) -> String {
    notes
        .iter()
        .map(|n| format!("<p class=\"note\">{}</p>", escape(n)))
        .collect()
}

/// The four delivery figures over `window`, as a table row's cells.
fn figure_cells(sync: &GitSync, window: Window) -> Vec<String> {
    let figures = delivery::figures(
        &delivery::outcomes(&sync.status.clone().unwrap_or_default()),
        window,
    );
    let seconds = |values: &[i64]| match median(values) {
        Some(median) => duration_text(median),
        None => "-".into(),
    };
    vec![
        figures.per_day(window).map_or("-".into(), |per_day| {
            format!("{per_day:.2}/day ({})", figures.deployments)
        }),
        seconds(&figures.lead_times),
        figures.failure_rate().map_or("-".into(), |rate| {
            format!(
                "{:.0}% ({}/{})",
                rate * 100.0,
                figures.failures,
                figures.deployments
            )
        }),
        match (median(&figures.restore_times), figures.unrestored) {
            (Some(median), 0) => duration_text(median),
            (Some(median), open) => format!("{} ({open} not restored)", duration_text(median)),
            (None, 0) => "-".into(),
            (None, open) => format!("{open} not restored"),
        },
    ]
}

const FIGURE_HEADER: [&str; 4] = [
    "Deployments",
    "Lead time (median)",
    "Change failure rate",
    "Time to restore (median)",
];

fn duration_text(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 2 * 86_400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn window_text(window: Window) -> String {
    duration_text(window.to - window.from)
}

pub fn gitsyncs(syncs: &[GitSync], window: Window, notes: &[String]) -> String {
    let mut out = format!(
        "<h1>GitSyncs</h1><p>Delivery figures over the last {}.</p>",
        window_text(window)
    );
    if syncs.is_empty() {
        out.push_str("<p>No GitSyncs.</p>");
    } else {
        out.push_str("<table id=\"gitsyncs\"><thead><tr><th>Namespace</th><th>Name</th><th>Applied</th><th>Good</th><th>Rejected</th>");
        for header in FIGURE_HEADER {
            let _ = write!(out, "<th>{header}</th>");
        }
        out.push_str("</tr></thead><tbody>");
        for sync in syncs {
            let status = sync.status.clone().unwrap_or_default();
            let namespace = sync.namespace().unwrap_or_default();
            let revision = |r: &Option<String>| r.as_deref().map_or("-", show::short).to_owned();
            let _ = write!(
                out,
                "<tr><td>{}</td><td><a href=\"{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td>",
                escape(&namespace),
                gitsync_path(&namespace, &sync.name_any()),
                escape(&sync.name_any()),
                escape(&revision(&status.last_applied_revision)),
                escape(&revision(&status.last_good_revision)),
                status.rejected_revisions.len()
            );
            for cell in figure_cells(sync, window) {
                let _ = write!(out, "<td>{}</td>", escape(&cell));
            }
            out.push_str("</tr>");
        }
        out.push_str("</tbody></table>");
    }
    out.push_str(&notes_list(notes));
    out
}

/// One entry of a GitSync's timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub at: i64,
    /// `applied`, `rolledback`, `pinned`, `failed`, `stable`, `rejected` or `reverted`: the
    /// CSS class too.
    pub kind: &'static str,
    pub text: String,
}

/// What became of each revision, newest first: applied (or failed to render or apply),
/// stable, rejected with its reason and deciding metric, weir's revert, the last good one
/// applied again, a revision held by hand.
pub fn timeline(sync: &GitSync) -> Vec<Entry> {
    let status = sync.status.clone().unwrap_or_default();
    let subject = |revision: &str| {
        status
            .history
            .iter()
            .find(|r| r.revision == revision && !r.subject.is_empty())
            .map(|r| format!(" {:?}", r.subject))
            .unwrap_or_default()
    };
    let mut entries = Vec::new();
    for record in &status.history {
        let (kind, verb) = match record.outcome.as_str() {
            "Applied" => ("applied", "applied".to_owned()),
            "RolledBack" => (
                "rolledback",
                "applied again: rolled back to the last good revision".to_owned(),
            ),
            "Pinned" => ("pinned", "applied and held by hand".to_owned()),
            // Told with its reason and metric from the rejections below.
            "Rejected"
                if status
                    .rejected_revisions
                    .iter()
                    .any(|r| r.revision == record.revision) =>
            {
                continue;
            }
            "Rejected" => ("rejected", "rejected".to_owned()),
            other => ("failed", format!("not applied ({other})")),
        };
        entries.push(Entry {
            at: record.time.0.as_second(),
            kind,
            text: format!(
                "{} {:?} {verb}",
                show::short(&record.revision),
                record.subject
            ),
        });
    }
    for good in &status.good_revisions {
        entries.push(Entry {
            at: good.since.0.as_second(),
            kind: "stable",
            text: format!(
                "{}{} stable: every Rollout healthy",
                show::short(&good.revision),
                subject(&good.revision)
            ),
        });
    }
    for rejected in &status.rejected_revisions {
        let mut text = format!(
            "{}{} rejected: {}",
            show::short(&rejected.revision),
            subject(&rejected.revision),
            rejected.reason
        );
        if let Some(rollout) = &rejected.rollout {
            let _ = write!(text, " by Rollout {rollout}");
        }
        if let Some(object) = &rejected.object {
            let _ = write!(text, " by {object}");
        }
        match (&rejected.metric, &rejected.value) {
            (Some(metric), Some(value)) => {
                let _ = write!(text, "; metric {metric} measured {value}");
            }
            (Some(metric), None) => {
                let _ = write!(text, "; metric {metric}");
            }
            _ => {}
        }
        if let Some(message) = &rejected.message {
            let _ = write!(text, "; {message}");
        }
        let at = rejected.rejected_at.0.as_second();
        entries.push(Entry {
            at,
            kind: "rejected",
            text,
        });
        if let Some(revert) = &rejected.revert {
            entries.push(Entry {
                at,
                kind: "reverted",
                text: format!(
                    "{} reverted in Git by {}; rolled back to {}",
                    show::short(&rejected.revision),
                    show::short(revert),
                    status
                        .last_good_revision
                        .as_deref()
                        .map_or("-", show::short)
                ),
            });
        }
    }
    // Newest first. Times are whole seconds: what happened in one second is told in the
    // order it must have happened (applied, rejected, rolled back, reverted, good).
    let order = |kind: &str| match kind {
        "rejected" => 1,
        "rolledback" => 2,
        "reverted" => 3,
        "stable" => 4,
        _ => 0,
    };
    entries.sort_by_key(|e| std::cmp::Reverse((e.at, order(e.kind))));
    entries
}

/// What one GitSync's page shows.
pub struct GitSyncPage<'a> {
    pub sync: &'a GitSync,
    pub events: &'a [Event],
    pub window: Window,
    pub notes: &'a [String],
    pub now: DateTime<Utc>,
}

pub fn gitsync(page: &GitSyncPage) -> String {
    let sync = page.sync;
    let status = sync.status.clone().unwrap_or_default();
    let namespace = sync.namespace().unwrap_or_default();
    let mut out = format!(
        "<h1>GitSync {}/{}</h1><dl><dt>Repository</dt><dd>{}</dd><dt>Ref</dt><dd>{}</dd>\
         <dt>Path</dt><dd>{}</dd><dt>Applied</dt><dd>{}</dd><dt>Last good</dt><dd>{}</dd>\
         <dt>Prune</dt><dd>{}</dd></dl>",
        escape(&namespace),
        escape(&sync.name_any()),
        escape(&crate::gitops::source::without_credentials(&sync.spec.url)),
        escape(&crate::gitops::source::describe(&sync.spec.git_ref)),
        escape(&sync.spec.path),
        escape(
            status
                .last_applied_revision
                .as_deref()
                .map_or("-", show::short)
        ),
        escape(
            status
                .last_good_revision
                .as_deref()
                .map_or("-", show::short)
        ),
        if sync.spec.prune {
            "on: objects removed from Git are deleted"
        } else {
            "off"
        },
    );
    let _ = write!(
        out,
        "<h2>Delivery over the last {}</h2>",
        window_text(page.window)
    );
    let cells = figure_cells(sync, page.window);
    out.push_str(&table(&FIGURE_HEADER, &[cells]));
    out.push_str("<h2>Timeline</h2><ol class=\"timeline\" id=\"timeline\">");
    for entry in timeline(sync) {
        let at = DateTime::from_timestamp(entry.at, 0).unwrap_or(page.now);
        let _ = write!(
            out,
            "<li class=\"{}\"><time datetime=\"{}\">{} ago</time> {}</li>",
            entry.kind,
            at.to_rfc3339(),
            show::age(at, page.now),
            escape(&entry.text)
        );
    }
    out.push_str("</ol>");
    out.push_str("<h2>Conditions</h2>");
    out.push_str(&table(
        &["Type", "Status", "Reason", "Message"],
        &show::condition_rows(&status.conditions),
    ));
    out.push_str("<h2>Events (drift repaired, prunes, applies)</h2>");
    out.push_str(&events(page.events, page.now));
    out.push_str("<h2>Inventory</h2>");
    let rows: Vec<Vec<String>> = status
        .inventory
        .iter()
        .map(|i| {
            vec![
                i.kind.clone(),
                i.namespace.clone().unwrap_or_default(),
                i.name.clone(),
                i.api_version.clone(),
            ]
        })
        .collect();
    out.push_str(&table(&["Kind", "Namespace", "Name", "API version"], &rows));
    out.push_str(&notes_list(page.notes));
    out
}

#[cfg(test)]
mod tests;
