//! The scale and latency harness: weir's controller (the release build) against the local
//! control plane, measured the way an operator would see it, and written to BENCHMARKS.md.
//!
//! Run with `make bench` (which brings the cluster up first), or with the cluster up:
//! `cargo bench --bench cluster`. `WEIR_BENCH_SIZES` (default `100 1000 5000`) picks the
//! Rollout counts, `WEIR_BENCH_SAMPLES` (default 50) the aborts and pauses timed,
//! `WEIR_BENCH_BUSY` (default 1000) the Rollouts kept busy around the timed one,
//! `WEIR_BENCH_SHARDED` (default 1000) the Rollouts shared by three sharded replicas,
//! `WEIR_BENCH_IN_FLIGHT` (default all) how many of a size are moved mid-canary (on 2
//! cores, 5,000 took 18 minutes to get there),
//! `WEIR_BENCH_OUT` (default `BENCHMARKS.md`) where the report goes, `WEIR_BENCH_ONLY` (any of
//! `steps aborts busy git unchanged barrage restarts scale shards`) which parts run.
//!
//! Every figure is taken from outside the controller: memory from /proc, API requests from
//! the API server's own `apiserver_request_total`, times from watches on the API server and
//! from Prometheus' query log. Nothing here asserts a time; BENCHMARKS.md says which targets
//! are met.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use gateway_api::apis::standard::httproutes::HttpRoute;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use support::git::{GitDaemon, GitRepo};
use support::{ControllerProcess, TestNamespace, client, eventually};
use weir::api::Rollout;
use weir::api::rollout::{PauseReason, RolloutPhase};

/// The heading of the hand-written part of BENCHMARKS.md, which a new run keeps.
const NOTES: &str = "## Notes";

/// Liveness bound for waits on the cluster; generous, never a performance limit.
const SETTLE: Duration = Duration::from_secs(5);

fn main() {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start a tokio runtime: {error}");
            std::process::exit(1);
        }
    };
    // `cargo bench` passes `--bench`; anything else (a filter) is not ours to interpret.
    runtime.block_on(run());
}

async fn run() {
    let sizes: Vec<usize> = std::env::var("WEIR_BENCH_SIZES")
        .unwrap_or_else(|_| "100 1000 5000".into())
        .split_whitespace()
        .map(|n| {
            n.parse()
                .unwrap_or_else(|e| panic!("WEIR_BENCH_SIZES: {n:?} is not a count: {e}"))
        })
        .collect();
    let samples: usize = std::env::var("WEIR_BENCH_SAMPLES")
        .ok()
        .map(|n| {
            n.parse()
                .unwrap_or_else(|e| panic!("WEIR_BENCH_SAMPLES: {n:?} is not a count: {e}"))
        })
        .unwrap_or(50);
    let busy_others: usize = std::env::var("WEIR_BENCH_BUSY")
        .ok()
        .map(|n| {
            n.parse()
                .unwrap_or_else(|e| panic!("WEIR_BENCH_BUSY: {n:?} is not a count: {e}"))
        })
        .unwrap_or(1000);
    let sharded_size: usize = std::env::var("WEIR_BENCH_SHARDED")
        .ok()
        .map(|n| {
            n.parse()
                .unwrap_or_else(|e| panic!("WEIR_BENCH_SHARDED: {n:?} is not a count: {e}"))
        })
        .unwrap_or(1000);
    let in_flight: usize = std::env::var("WEIR_BENCH_IN_FLIGHT")
        .ok()
        .map(|n| {
            n.parse()
                .unwrap_or_else(|e| panic!("WEIR_BENCH_IN_FLIGHT: {n:?} is not a count: {e}"))
        })
        .unwrap_or(usize::MAX);
    let out = std::env::var("WEIR_BENCH_OUT").unwrap_or_else(|_| "BENCHMARKS.md".into());
    // WEIR_BENCH_ONLY=scale (say) runs one part, to profile it; the others are reported
    // as not measured.
    let only = std::env::var("WEIR_BENCH_ONLY").ok();
    let runs = |part: &str| {
        only.as_deref()
            .is_none_or(|o| o.split_whitespace().any(|p| p == part))
    };
    let client = client().await;
    let started = Utc::now();
    let mut report = Report::default();

    // The report is rewritten after every scenario, so a run stopped part-way (5,000
    // Rollouts take the better part of an hour on 2 cores) still leaves what it measured,
    // and says what it did not get to.
    let path = support::repo_root().join(&out);
    // Notes written by hand under NOTES (what a miss needs, with its evidence) are kept.
    let notes = std::fs::read_to_string(&path)
        .ok()
        .and_then(|old| old.find(NOTES).map(|at| old[at..].to_owned()))
        .unwrap_or_default();
    let write = |report: &Report, pending: &str| {
        let mut text = report.render(started, Utc::now(), pending);
        text.push_str(&notes);
        std::fs::write(&path, &text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        text
    };
    report.section("Pure parts (criterion)", criterion_table());
    let all_sizes = sizes
        .iter()
        .map(|n| format!("{n} Rollouts"))
        .collect::<Vec<_>>()
        .join(", ");
    write(
        &report,
        &format!("step writes, aborts, busy, Git to canary, {all_sizes}"),
    );
    if runs("steps") {
        println!("== step writes and step latency ({samples} pauses)");
        steps(&client, samples, &mut report).await;
    }
    write(
        &report,
        &format!("aborts, busy, Git to canary, {all_sizes}"),
    );
    if runs("aborts") {
        println!("== abort latency ({samples} aborts)");
        aborts(&client, samples, &mut report).await;
    }
    write(
        &report,
        &format!("busy, Git to canary, restarts, {all_sizes}"),
    );
    if runs("busy") {
        println!("== step and abort latency with {busy_others} others busy");
        busy(&client, samples, busy_others, &mut report).await;
    }
    write(&report, &format!("Git to canary, restarts, {all_sizes}"));
    if runs("git") {
        println!("== Git to canary");
        git_to_canary(&client, &mut report).await;
    }
    write(
        &report,
        &format!("unchanged repository, barrage, restarts, {all_sizes}"),
    );
    if runs("unchanged") {
        println!("== requests per interval for an unchanged repository");
        unchanged_repository(&client, &mut report).await;
    }
    write(&report, &format!("barrage, restarts, {all_sizes}"));
    if runs("barrage") {
        println!("== step latency under a hostile barrage");
        barrage(&client, samples, &mut report).await;
    }
    write(&report, &format!("restarts, {all_sizes}"));
    if runs("restarts") {
        println!("== API server restart to first step");
        restart_to_step(&mut report).await;
    }
    let mut resync_reads = Vec::new();
    for (done, size) in sizes.iter().enumerate().filter(|_| runs("scale")) {
        let left = sizes[done..]
            .iter()
            .map(|n| format!("{n} Rollouts"))
            .collect::<Vec<_>>()
            .join(", ");
        write(&report, &left);
        println!("== {size} Rollouts");
        if let Some(reads) = scale(&client, *size, in_flight, &mut report).await {
            resync_reads.push((*size, reads));
        }
    }
    if resync_reads.len() > 1 {
        let counts = resync_reads.iter().map(|(_, reads)| *reads);
        let spread = counts.clone().max().unwrap_or(0) - counts.min().unwrap_or(0);
        let value = resync_reads
            .iter()
            .map(|(size, reads)| format!("{reads} at {size}"))
            .collect::<Vec<_>>()
            .join(", ");
        report.target(
            "the controller's reads of a resync of unchanged Rollouts, every kind, by size",
            value,
            "the same at every size (± 2: a watch may reconnect)",
            Some(spread <= 2),
        );
    }
    write(
        &report,
        &format!("{sharded_size} Rollouts over {REPLICAS} replicas"),
    );
    if runs("shards") {
        println!("== {sharded_size} Rollouts over {REPLICAS} replicas");
        sharded(&client, sharded_size, in_flight, &mut report).await;
    }
    let text = write(&report, "");
    println!("{text}");
    println!("written to {}", path.display());
}

// --- what the report holds ----------------------------------------------------------------------

#[derive(Default)]
struct Report {
    /// (figure, value, target, met) in the order measured.
    targets: Vec<(String, String, String, Option<bool>)>,
    /// Sections of plain findings, each a heading and its Markdown body.
    sections: Vec<(String, String)>,
}

impl Report {
    fn target(&mut self, figure: &str, value: String, target: &str, met: Option<bool>) {
        println!("{figure}: {value} (target {target})");
        self.targets
            .push((figure.into(), value, target.into(), met));
    }

    fn section(&mut self, heading: &str, body: String) {
        println!("{body}");
        self.sections.push((heading.into(), body));
    }

    fn render(&self, started: DateTime<Utc>, finished: DateTime<Utc>, pending: &str) -> String {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "# Benchmarks\n\nWritten by `make bench` (the harness is `benches/cluster.rs`, run as \
             `cargo bench --bench cluster` against the local control plane of \
             `hack/local-cluster.sh`). Regenerate it with `make bench`; every figure below comes \
             from that run.\n"
        );
        let _ = writeln!(
            text,
            "- Run: {} to {} (UTC)\n- Machine: {}\n- Controller: `target/release/weir`, one \
             replica, leader election off, `RUST_LOG=info`\n- Control plane: etcd, \
             kube-apiserver and kube-controller-manager {} on the same machine, Prometheus \
             scraping every second, weir's kubelet stand-in\n",
            started.format("%Y-%m-%d %H:%M"),
            finished.format("%Y-%m-%d %H:%M"),
            machine(),
            kubernetes_version(),
        );
        if !pending.is_empty() {
            let _ = writeln!(
                text,
                "**This run stopped (or is still running) before it measured: {pending}.** \
                 Those figures are missing below; `make bench` measures them.\n"
            );
        }
        let _ = writeln!(text, "## Targets\n");
        let _ = writeln!(
            text,
            "| figure | measured | target | met |\n| --- | --- | --- | --- |"
        );
        for (figure, value, target, met) in &self.targets {
            let met = match met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "n/a",
            };
            let _ = writeln!(text, "| {figure} | {value} | {target} | {met} |");
        }
        let _ = writeln!(text);
        for (heading, body) in &self.sections {
            let _ = writeln!(text, "## {heading}\n\n{body}\n");
        }
        text
    }
}

fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let memory_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!(
        "{cores} cores ({cpu}), {:.1} GiB memory",
        memory_kib as f64 / 1024.0 / 1024.0
    )
}

fn kubernetes_version() -> String {
    std::process::Command::new("kubectl")
        .args(["version", "-o", "json"])
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok())
        .and_then(|v| v["serverVersion"]["gitVersion"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "(version unknown)".into())
}

/// The criterion figures `make bench` produced just before (benches/core.rs and
/// benches/validate.rs), read from criterion's own estimates.
fn criterion_table() -> String {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| support::repo_root().join("target"));
    let mut rows = Vec::new();
    let mut pending = vec![target.join("criterion")];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            if path.file_name().is_some_and(|n| n == "new") {
                let read = |file: &str| -> Option<Value> {
                    serde_json::from_str(&std::fs::read_to_string(path.join(file)).ok()?).ok()
                };
                let (Some(benchmark), Some(estimates)) =
                    (read("benchmark.json"), read("estimates.json"))
                else {
                    continue;
                };
                let id = benchmark["full_id"].as_str().unwrap_or("?").to_owned();
                let median = estimates["median"]["point_estimate"]
                    .as_f64()
                    .unwrap_or(f64::NAN);
                rows.push((id, median));
            } else {
                pending.push(path);
            }
        }
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    if rows.is_empty() {
        return "No criterion results found: run `cargo bench --bench core --bench validate` \
                first (`make bench` does)."
            .into();
    }
    let mut text = String::from(
        "Medians from `cargo bench --bench core --bench validate`, run by `make bench` just \
         before the harness.\n\n| benchmark | median |\n| --- | --- |\n",
    );
    for (id, nanos) in rows {
        let shown = if nanos >= 1e6 {
            format!("{:.2} ms", nanos / 1e6)
        } else if nanos >= 1e3 {
            format!("{:.2} µs", nanos / 1e3)
        } else {
            format!("{nanos:.0} ns")
        };
        let _ = writeln!(text, "| {id} | {shown} |");
    }
    text
}

// --- measuring --------------------------------------------------------------------------------

/// The controller's memory from /proc: (resident now, peak resident), in MiB.
fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kib| kib / 1024.0)
            .unwrap_or(f64::NAN)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// `apiserver_request_total` summed by (verb, resource/subresource), as the API server counts.
type Requests = BTreeMap<(String, String), f64>;

async fn api_requests(client: &Client) -> Requests {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .unwrap_or_else(|e| panic!("building GET /metrics: {e}"));
    let text = client
        .request_text(request)
        .await
        .unwrap_or_else(|e| panic!("GET /metrics from the API server: {e}"));
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .unwrap_or_else(|e| panic!("the API server's /metrics does not parse: {e}"));
    let mut requests = Requests::new();
    for sample in scrape
        .samples
        .iter()
        .filter(|s| s.metric == "apiserver_request_total")
    {
        let prometheus_parse::Value::Counter(count) = sample.value else {
            continue;
        };
        let resource = match (
            sample.labels.get("resource").unwrap_or_default(),
            sample.labels.get("subresource").unwrap_or_default(),
        ) {
            ("", _) => continue, // /metrics, /healthz and other non-resource paths
            (resource, "") => resource.to_owned(),
            (resource, sub) => format!("{resource}/{sub}"),
        };
        // A dry run writes nothing: counted apart from the writes.
        let verb = match sample.labels.get("dry_run").unwrap_or_default() {
            "" => sample.labels.get("verb").unwrap_or_default().to_owned(),
            _ => format!(
                "{} (dry run)",
                sample.labels.get("verb").unwrap_or_default()
            ),
        };
        *requests.entry((verb, resource)).or_default() += count;
    }
    requests
}

const WRITE_VERBS: [&str; 6] = [
    "POST",
    "PUT",
    "PATCH",
    "DELETE",
    "DELETECOLLECTION",
    "APPLY",
];

/// What changed between two snapshots, by (verb, resource): the writes, or the reads.
fn requests_between(
    before: &Requests,
    after: &Requests,
    writes: bool,
) -> BTreeMap<(String, String), f64> {
    after
        .iter()
        .filter(|((verb, _), _)| WRITE_VERBS.contains(&verb.as_str()) == writes)
        .map(|(key, count)| (key.clone(), count - before.get(key).copied().unwrap_or(0.0)))
        .filter(|(_, delta)| *delta > 0.0)
        .collect()
}

fn writes_between(before: &Requests, after: &Requests) -> BTreeMap<(String, String), f64> {
    requests_between(before, after, true)
}

fn reads_between(before: &Requests, after: &Requests) -> BTreeMap<(String, String), f64> {
    requests_between(before, after, false)
}

fn request_table(requests: &BTreeMap<(String, String), f64>, per: f64) -> String {
    let mut text =
        String::from("| verb | resource | requests | per step |\n| --- | --- | --- | --- |\n");
    for ((verb, resource), count) in requests {
        let _ = writeln!(
            text,
            "| {verb} | {resource} | {count} | {:.2} |",
            count / per
        );
    }
    text
}

/// Distinct Rollouts the controller has reconciled since it started (its per-Rollout phase
/// gauge appears after a Rollout's first reconcile).
async fn reconciled(port: u16) -> usize {
    let Some((200, text)) = support::http_get(port, "/metrics").await else {
        return 0;
    };
    let Ok(scrape) = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))) else {
        return 0;
    };
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == "weir_rollout_phase")
        .filter_map(|s| s.labels.get("rollout"))
        .collect::<BTreeSet<_>>()
        .len()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Nearest rank: the smallest value with at least p of the samples at or below it.
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn summary(mut samples: Vec<f64>) -> (f64, f64, f64, usize) {
    samples.sort_by(f64::total_cmp);
    let max = samples.last().copied().unwrap_or(f64::NAN);
    (
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        max,
        samples.len(),
    )
}

fn millis(at: SystemTime) -> f64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// Every canary weight the route `web` carries, with the moment a watch saw it.
#[derive(Clone, Default)]
struct RouteLog(Arc<Mutex<Vec<(SystemTime, i32)>>>);

impl RouteLog {
    fn start(api: Api<HttpRoute>) -> (RouteLog, tokio::task::JoinHandle<()>) {
        let log = RouteLog::default();
        let sink = log.clone();
        let task = tokio::spawn(async move {
            let mut stream = watcher(api, watcher::Config::default().fields("metadata.name=web"))
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Some(Ok(route)) = stream.next().await {
                let seen = SystemTime::now();
                let weight = weir::traffic::gateway_api::splits(&route, "web-stable", "web-canary")
                    .ok()
                    .and_then(|s| weir::traffic::gateway_api::canary_weight(&route, &s));
                let Some(weight) = weight else { continue };
                let mut log = sink.0.lock().unwrap_or_else(|e| e.into_inner());
                if log.last().map(|(_, w)| *w) != Some(weight) {
                    log.push((seen, weight));
                }
            }
        });
        (log, task)
    }

    fn entries(&self) -> Vec<(SystemTime, i32)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The start of every one-second pause a Rollout records, as a watch sees it.
#[derive(Clone, Default)]
struct PauseLog(Arc<Mutex<Vec<DateTime<Utc>>>>);

impl PauseLog {
    fn start(api: Api<Rollout>) -> (PauseLog, tokio::task::JoinHandle<()>) {
        let log = PauseLog::default();
        let sink = log.clone();
        let task = tokio::spawn(async move {
            // The timed Rollout's pauses only: others may share its namespace (`busy`).
            let mut stream = watcher(api, watcher::Config::default().fields("metadata.name=web"))
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Some(Ok(rollout)) = stream.next().await {
                let started = rollout
                    .status
                    .iter()
                    .flat_map(|s| &s.pause_conditions)
                    .find_map(|c| {
                        (c.reason == PauseReason::CanaryPauseStep)
                            .then(|| weir::time::from_k8s(&c.start_time))
                    });
                if let Some(started) = started {
                    let mut pauses = sink.0.lock().unwrap_or_else(|e| e.into_inner());
                    if pauses.last() != Some(&started) {
                        pauses.push(started);
                    }
                }
            }
        });
        (log, task)
    }

    /// Step latency, in milliseconds: each pause's deadline (its recorded start plus one
    /// second, as the controller judges it) to the first weight the route shows after it.
    fn latencies(&self, routes: &RouteLog) -> Vec<f64> {
        let weights = routes.entries();
        let pauses = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        pauses
            .iter()
            .filter_map(|start| {
                let deadline = millis(SystemTime::from(*start)) + 1000.0;
                let (seen, _) = weights.iter().find(|(seen, _)| millis(*seen) >= deadline)?;
                Some(millis(*seen) - deadline)
            })
            .collect()
    }
}

/// Deletes a scenario's namespace and waits until it is gone, so that the API server is
/// quiet for the next scenario (its request counters then count only what that one does).
async fn finish(ns: TestNamespace) {
    delete_namespace(&ns.client, &ns.name).await;
    // Already deleted: the namespace's own Drop would only warn that it cannot delete it.
    std::mem::forget(ns);
}

fn step_rollout(image: &str, steps: Value) -> Value {
    support::app::rollout(image, steps, json!({"replicas": 1}))
}

async fn apply(api: &Api<Rollout>, object: &Value) {
    api.patch(
        "web",
        &PatchParams::apply("weir-bench").force(),
        &Patch::Apply(object),
    )
    .await
    .unwrap_or_else(|e| panic!("applying Rollout web: {e}"));
}

fn controller(ns: &TestNamespace, port: u16, extra: &[&str]) -> ControllerProcess {
    let address = format!("127.0.0.1:{port}");
    let prometheus = support::prometheus_url();
    let mut args = vec![
        "--metrics-addr",
        address.as_str(),
        "--prometheus-url",
        prometheus.as_str(),
    ];
    args.extend_from_slice(extra);
    ControllerProcess::start_with(&ns.name, &args)
}

// --- API writes per step, and step latency ------------------------------------------------------

/// A canary of ten weights, each held by a one-second pause, run until `samples` pauses have
/// ended. Writes are counted over whole canaries (from the template change to Healthy), and
/// separately over the steady middle of each (from weight 20 to weight 80: six setWeight and
/// six pause steps), where nothing but steps happens.
async fn steps(client: &Client, samples: usize, report: &mut Report) {
    let ns = TestNamespace::new(client, "bench-steps").await;
    support::app::app(&ns).await;
    let port = support::free_port();
    let _controller = controller(&ns, port, &[]);
    let steps = pause_steps();
    let step_count = steps.as_array().map_or(0, Vec::len) as f64;
    let rollouts = ns.api::<Rollout>();
    apply(&rollouts, &step_rollout("web:1", steps.clone())).await;
    support::app::healthy_on(&ns, "web:1").await;

    let (routes, route_task) = RouteLog::start(ns.api::<HttpRoute>());
    let (pauses, pause_task) = PauseLog::start(rollouts.clone());

    let canaries = samples.div_ceil(9).max(1);
    let mut whole = BTreeMap::new();
    let mut middle = BTreeMap::new();
    let mut middle_steps = 0.0;
    for canary in 0..canaries {
        let image = format!("web:{}", canary + 2);
        tokio::time::sleep(SETTLE).await;
        let before = api_requests(client).await;
        apply(&rollouts, &step_rollout(&image, steps.clone())).await;
        let at_20 = wait_weight(&routes, 20).await;
        let mid_before = api_requests(client).await;
        wait_weight(&routes, 80).await;
        let mid_after = api_requests(client).await;
        support::app::healthy_on(&ns, &image).await;
        tokio::time::sleep(SETTLE).await;
        let after = api_requests(client).await;
        let _ = at_20;
        for (key, n) in writes_between(&before, &after) {
            *whole.entry(key).or_insert(0.0) += n;
        }
        for (key, n) in writes_between(&mid_before, &mid_after) {
            *middle.entry(key).or_insert(0.0) += n;
        }
        middle_steps += 12.0;
    }
    route_task.abort();
    pause_task.abort();
    // While the controller runs: it honours the Rollouts' route-cleanup finalizer.
    finish(ns).await;

    let (p50, p99, max, n) = summary(pauses.latencies(&routes));
    report.target(
        "step latency p99 (pause deadline to next route weight)",
        format!("{p99:.0} ms (p50 {p50:.0} ms, max {max:.0} ms, n = {n})"),
        "≤ 100 ms",
        Some(p99 <= 100.0),
    );

    let total_writes: f64 = middle.values().sum();
    let per_step = total_writes / middle_steps;
    report.target(
        "API writes per canary step (steady middle of a canary)",
        format!("{per_step:.2}"),
        "≤ 3",
        Some(per_step <= 3.0),
    );
    let whole_writes: f64 = whole.values().sum();
    let per_canary_step = whole_writes / (step_count * canaries as f64);
    report.section(
        "API requests per canary step",
        format!(
            "A Rollout with 1 replica, an HTTPRoute and 18 steps (setWeight 10, 20, ... 90, \
             each followed by `pause: {{duration: 1s}}`), run through {canaries} canaries. \
             Counted from the API server's `apiserver_request_total` (writes: POST, PUT, \
             PATCH, DELETE), which counts every client: the kube-controller-manager's and the \
             kubelet stand-in's requests for the canary's Pod show up in whole canaries, not \
             in the steady middle.\n\n\
             **Steady middle** (from weight 20 to weight 80 on the route: 6 setWeight and 6 \
             pause steps per canary, {middle_steps} steps in all): {per_step:.2} writes per step.\n\n{}\n\
             **Whole canaries** (template change to Healthy, promotion and scale-down \
             included): {whole_writes} writes, {per_canary_step:.2} per step.\n\n{}",
            request_table(&middle, middle_steps),
            request_table(&whole, step_count * canaries as f64),
        ),
    );
    report.section(
        "Step latency",
        format!(
            "From each pause's deadline (the `startTime` the controller recorded in \
             `status.pauseConditions` plus the pause's 1 s) to the moment a watch on the \
             HTTPRoute sees the next weight. {n} pauses over {canaries} canaries of the Rollout \
             above: p50 {p50:.0} ms, p99 {p99:.0} ms, max {max:.0} ms."
        ),
    );
}

async fn wait_weight(routes: &RouteLog, weight: i32) -> SystemTime {
    let since = routes.entries().len();
    eventually(
        &format!("route weight {weight}"),
        Duration::from_secs(300),
        || async {
            routes
                .entries()
                .into_iter()
                .skip(since.saturating_sub(1))
                .find(|(_, w)| *w == weight)
                .map(|(t, _)| t)
        },
    )
    .await
}

/// Ten weights, each held by a one-second pause: nine pauses timed per canary.
fn pause_steps() -> Value {
    let mut steps = Vec::new();
    for weight in (10..=90).step_by(10) {
        steps.push(json!({"setWeight": weight}));
        steps.push(json!({"pause": {"duration": "1s"}}));
    }
    Value::Array(steps)
}

/// The pause-to-next-weight latencies of `canaries` canaries of the Rollout `web` in `ns`
/// (with [`pause_steps`]), each with the next `image`.
async fn step_latencies(
    ns: &TestNamespace,
    rollouts: &Api<Rollout>,
    canaries: usize,
    image: &mut u32,
) -> Vec<f64> {
    let (routes, route_task) = RouteLog::start(ns.api::<HttpRoute>());
    let (pauses, pause_task) = PauseLog::start(rollouts.clone());
    for _ in 0..canaries {
        *image += 1;
        let name = format!("web:{image}");
        tokio::time::sleep(SETTLE).await;
        apply(rollouts, &step_rollout(&name, pause_steps())).await;
        support::app::healthy_on(ns, &name).await;
    }
    route_task.abort();
    pause_task.abort();
    pauses.latencies(&routes)
}

// --- step latency under a hostile barrage -------------------------------------------------------

/// Tenant B's step latency with and without tenant A hammering the same controller: A's
/// repository serving, in turn, an alias bomb, a 50 MB file, a remote kustomize base and a
/// deeply nested CEL condition (a new commit every two seconds), while forged webhook calls
/// arrive a hundred a second. The figure is the ratio of B's p99 step latency during the
/// barrage to the p99 without it, in one run.
async fn barrage(client: &Client, samples: usize, report: &mut Report) {
    let ns = TestNamespace::new(client, "bench-barrage").await;
    support::app::app(&ns).await;
    support::app::apply(
        &ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "webhook"},
            "stringData": {"token": "s3cret"}}),
    )
    .await;
    let port = support::free_port();
    let secret = format!("{}/webhook", ns.name);
    let _controller = controller(&ns, port, &["--webhook-secret", &secret]);
    let steps = pause_steps();
    let rollouts = ns.api::<Rollout>();
    apply(&rollouts, &step_rollout("web:1", steps.clone())).await;
    support::app::healthy_on(&ns, "web:1").await;

    // Tenant A's GitSync, good at first.
    let repo = Arc::new(GitRepo::new(&ns.name));
    repo.commit(
        "good",
        &[(
            "deploy/a.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
        )],
    );
    let daemon = GitDaemon::serve(&repo).await;
    support::app::apply_git_sync(
        &ns,
        "app",
        json!({"url": daemon.url(&repo), "ref": {"branch": "main"}, "path": "deploy", "interval": "1s"}),
    )
    .await;

    let canaries = samples.div_ceil(9).max(1);
    let mut image = 1;
    let quiet = step_latencies(&ns, &rollouts, canaries, &mut image).await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hostile = {
        let (stop, repo) = (stop.clone(), repo.clone());
        tokio::task::spawn_blocking(move || {
            let items = vec!["x"; 3_000].join(", ");
            let aliases = vec!["*a"; 3_000].join(", ");
            let bomb = format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: bomb}}\nx: &a [{items}]\ny: [{aliases}]\n"
            );
            let big = "#".repeat(50 << 20);
            let mut deep = "true".to_owned();
            for level in 0..20 {
                deep = format!("result.all(v{level}, {deep})");
            }
            let deep = format!(
                "apiVersion: weir.dev/v1alpha1\nkind: AnalysisTemplate\nmetadata: {{name: deep}}\nspec:\n  metrics:\n  - name: deep\n    successCondition: \"{deep}\"\n    provider: {{prometheus: {{query: up}}}}\n"
            );
            let revisions: [(&str, &str, &str); 4] = [
                ("alias bomb", "deploy/hostile.yaml", bomb.as_str()),
                ("50 MB", "deploy/hostile.yaml", big.as_str()),
                (
                    "remote base",
                    "deploy/kustomization.yaml",
                    "resources:\n- a.yaml\n- https://example.com/remote.yaml\n",
                ),
                ("deep condition", "deploy/hostile.yaml", deep.as_str()),
            ];
            let mut turn = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let (subject, path, text) = revisions[turn % revisions.len()];
                let mut files = vec![(path, text)];
                if path != "deploy/hostile.yaml" {
                    files.push(("deploy/hostile.yaml", ""));
                } else {
                    files.push(("deploy/kustomization.yaml", ""));
                }
                repo.commit(subject, &files);
                turn += 1;
                std::thread::sleep(Duration::from_secs(2));
            }
            turn
        })
    };
    let forged = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let body =
                json!({"ref": "refs/heads/main", "repository": {"clone_url": "x"}}).to_string();
            let signature = weir::gitops::webhook::signature(b"guess", body.as_bytes());
            let mut sent = 0usize;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let headers = [
                    ("Content-Type", "application/json"),
                    ("X-Hub-Signature-256", signature.as_str()),
                ];
                let _ = support::http_request(port, "POST", "/hooks/git", &headers, &body).await;
                sent += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            sent
        })
    };
    let loud = step_latencies(&ns, &rollouts, canaries, &mut image).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let revisions = hostile.await.unwrap_or_default();
    let calls = forged.await.unwrap_or_default();
    drop(daemon);
    finish(ns).await;

    let (_, quiet_p99, _, quiet_n) = summary(quiet);
    let (loud_p50, loud_p99, loud_max, loud_n) = summary(loud);
    let ratio = loud_p99 / quiet_p99;
    report.target(
        "B's step latency p99 during tenant A's barrage, against without it",
        format!(
            "{ratio:.2} ({loud_p99:.0} ms against {quiet_p99:.0} ms; n = {loud_n} and {quiet_n})"
        ),
        "≤ 1.5",
        Some(ratio <= 1.5),
    );
    report.section(
        "Step latency under a hostile barrage",
        format!(
            "Tenant B's Rollout (the step-latency Rollout above) ran {canaries} canaries without, \
             then {canaries} with, tenant A's GitSync on the same controller fetching a new hostile \
             revision every 2 s ({revisions} in all: an alias bomb, a 50 MB file, a remote kustomize \
             base, a 20-deep CEL condition, in turn; each refused) and {calls} forged webhook calls \
             at about 100 a second. During the barrage: p50 {loud_p50:.0} ms, p99 {loud_p99:.0} ms, \
             max {loud_max:.0} ms; without it, p99 {quiet_p99:.0} ms."
        ),
    );
}

// --- API server restart to first step ----------------------------------------------------------

/// The restart scenario of the fault suite, timed: the API server is restarted
/// (`hack/local-cluster.sh restart kube-apiserver`, which returns once it is ready), the
/// Rollout's template changes at once, and two times are measured from that readiness: to
/// the canary's ReplicaSet (weir's own reaction) and to the canary's first step taken (the
/// step index past `setWeight`, recorded in the status), which also needs the canary's pod.
/// kube-controller-manager is restarted right after the API server, as an upgrade does: left
/// alone, its informers back off further after each restart in a row (a minute and more by
/// the sixth), and the pods, not weir, would be what the figure measured.
/// `WEIR_BENCH_RESTARTS` (default 10) restarts.
async fn restart_to_step(report: &mut Report) {
    let restarts: usize = std::env::var("WEIR_BENCH_RESTARTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10);
    let ns = TestNamespace::new(&client().await, "bench-restart").await;
    support::app::app(&ns).await;
    let port = support::free_port();
    let _controller = controller(&ns, port, &[]);
    let steps = json!([{"setWeight": 20}, {"pause": {}}]);
    apply(&ns.api::<Rollout>(), &step_rollout("web:0", steps.clone())).await;
    eventually("web:0 Healthy", Duration::from_secs(120), || async {
        let rollout = ns.api::<Rollout>().get("web").await.ok()?;
        (phase_of(&rollout) == Some(RolloutPhase::Healthy)).then_some(())
    })
    .await;
    let (mut canaries, mut samples) = (Vec::new(), Vec::new());
    for run in 1..=restarts {
        let status = std::process::Command::new(support::repo_root().join("hack/local-cluster.sh"))
            .args(["restart", "kube-apiserver"])
            .status()
            .unwrap_or_else(|e| panic!("restarting the API server: {e}"));
        assert!(
            status.success(),
            "hack/local-cluster.sh restart kube-apiserver: {status}"
        );
        let ready = Instant::now();
        let manager = std::thread::spawn(|| {
            std::process::Command::new(support::repo_root().join("hack/local-cluster.sh"))
                .args(["restart", "kube-controller-manager"])
                .status()
        });
        // The old client's connections died with the API server.
        let api: Api<Rollout> = Api::namespaced(client().await, &ns.name);
        let image = format!("web:{run}");
        let rollout = step_rollout(&image, steps.clone());
        apply(&api, &rollout).await;
        let hash = weir::template_hash::of(
            &serde_json::from_value(rollout["spec"]["template"].clone())
                .unwrap_or_else(|e| panic!("the template: {e}")),
        );
        let replica_sets: Api<ReplicaSet> = Api::namespaced(api.clone().into_client(), &ns.name);
        let name = format!("web-{hash}");
        let created = eventually(
            &format!("run {run}: the canary ReplicaSet of {image}"),
            Duration::from_secs(120),
            || async {
                replica_sets
                    .get_opt(&name)
                    .await
                    .ok()
                    .flatten()
                    .map(|_| ready.elapsed())
            },
        )
        .await;
        let took = eventually(
            &format!("run {run}: the first step of {image}"),
            Duration::from_secs(120),
            || async {
                let status = api.get("web").await.ok()?.status?;
                (status.canary_rs.as_deref() == Some(hash.as_str())
                    && status.current_step_index.unwrap_or(0) >= 1)
                    .then(|| ready.elapsed())
            },
        )
        .await;
        let _ = manager.join();
        println!(
            "run {run}: canary ReplicaSet {} ms, first step {} ms after the API server was ready",
            created.as_millis(),
            took.as_millis()
        );
        canaries.push(created.as_secs_f64() * 1000.0);
        samples.push(took.as_secs_f64() * 1000.0);
    }
    let (p50, _p99, max, n) = summary(canaries);
    report.target(
        "API server ready to the canary ReplicaSet of a template changed then (restart scenario)",
        format!("p50 {p50:.0} ms, max {max:.0} ms ({n} restarts)"),
        "max 10 s",
        Some(max <= 10_000.0),
    );
    let (p50, _p99, max, n) = summary(samples);
    report.target(
        "API server ready to that canary's first step (kube-controller-manager restarted too)",
        format!("p50 {p50:.0} ms, max {max:.0} ms ({n} restarts)"),
        "max 10 s",
        Some(max <= 10_000.0),
    );
    // Every other part needs kube-controller-manager at once; it recovers from restarts in a
    // row only after its own backoff.
    let _ = std::process::Command::new(support::repo_root().join("hack/local-cluster.sh"))
        .args(["restart", "kube-controller-manager"])
        .status();
    let fresh = TestNamespace {
        name: ns.name.clone(),
        client: client().await,
    };
    // One deletion, by the fresh client: the first one's connections died in the restarts.
    std::mem::forget(ns);
    finish(fresh).await;
}

// --- abort latency ------------------------------------------------------------------------------

/// Each canary's first analysis fails at its first measurement; the abort is timed from the
/// moment Prometheus ran that query (its query log) to the moment a watch sees weight 0.
async fn aborts(client: &Client, samples: usize, report: &mut Report) {
    let query_log = query_log().await;
    let ns = TestNamespace::new(client, "bench-aborts").await;
    support::app::app(&ns).await;
    support::app::apply(&ns, always_fails()).await;
    let port = support::free_port();
    let _controller = controller(&ns, port, &[]);
    let rollouts = ns.api::<Rollout>();
    apply(&rollouts, &step_rollout("web:1", abort_steps())).await;
    support::app::healthy_on(&ns, "web:1").await;
    let mut image = 1;
    let latencies = abort_latencies(&ns, &rollouts, &query_log, samples, &mut image).await;
    // While the controller runs: it honours the Rollouts' route-cleanup finalizer.
    finish(ns).await;
    let (p50, p99, max, n) = summary(latencies);
    report.target(
        "abort latency p99 (failing measurement to route weight 0)",
        format!("{p99:.0} ms (p50 {p50:.0} ms, max {max:.0} ms, n = {n})"),
        "≤ 500 ms",
        Some(p99 <= 500.0),
    );
    report.section(
        "Abort latency",
        format!(
            "{n} canaries of a 1-replica Rollout with an HTTPRoute, each with steps \
             `setWeight: 10` then an analysis whose only metric fails at its first measurement \
             (a Prometheus query that returns 1 against `result[0] < 0`). Timed from the moment \
             Prometheus ran the failing query (the `ts` of its entry in Prometheus' query log, \
             which carries the canary's pod-template hash) to the moment a watch on the \
             HTTPRoute sees the canary's weight back at 0. The chain in between: the analysis \
             controller records the Failed measurement, the Rollout controller (woken by that \
             AnalysisRun change) aborts and sets the weight.\n\n\
             p50 {p50:.0} ms, p99 {p99:.0} ms, max {max:.0} ms."
        ),
    );
}

/// Prometheus' query log, which hack/local-cluster.sh configures; a Prometheus started
/// before that line existed picks it up on a reload.
async fn query_log() -> std::path::PathBuf {
    let reload = reqwest::Client::new()
        .post(format!("{}/-/reload", support::prometheus_url()))
        .send()
        .await;
    if let Err(error) = reload {
        panic!("reloading Prometheus for its query log: {error}");
    }
    support::repo_root().join(".local-cluster/prometheus/query.log")
}

/// An AnalysisTemplate whose only metric fails at its first measurement, with the canary's
/// pod-template hash in its query, so Prometheus' query log says when it ran.
fn always_fails() -> Value {
    json!({"apiVersion": "weir.dev/v1alpha1", "kind": "AnalysisTemplate",
        "metadata": {"name": "always-fails"},
        "spec": {"args": [{"name": "hash"}], "metrics": [{
            "name": "errors", "count": 1, "successCondition": "result[0] < 0",
            "provider": {"prometheus": {"query":
                "label_replace(vector(1), \"bench\", \"{{args.hash}}\", \"\", \"\")"}}}]}})
}

fn abort_steps() -> Value {
    json!([{"setWeight": 10},
        {"analysis": {"templates": [{"templateName": "always-fails"}],
            "args": [{"name": "hash", "valueFrom": {"podTemplateHashValue": "Latest"}}]}}])
}

/// The failing-measurement-to-weight-0 latencies of `samples` canaries of the Rollout `web`
/// in `ns` (with [`abort_steps`]), each with the next `image`.
async fn abort_latencies(
    ns: &TestNamespace,
    rollouts: &Api<Rollout>,
    query_log: &std::path::Path,
    samples: usize,
    image: &mut u32,
) -> Vec<f64> {
    let (routes, route_task) = RouteLog::start(ns.api::<HttpRoute>());
    let mut latencies = Vec::new();
    for _ in 0..samples {
        *image += 1;
        let image = format!("web:{image}");
        let object = step_rollout(&image, abort_steps());
        let template = serde_json::from_value(object["spec"]["template"].clone())
            .unwrap_or_else(|e| panic!("the bench's pod template: {e}"));
        let hash = weir::template_hash::of(&template);
        let since = routes.entries().len();
        apply(rollouts, &object).await;
        // The canary reaches 10%, then the failing analysis sends it back to 0.
        let aborted = eventually(
            &format!("the canary of {image} to abort"),
            Duration::from_secs(120),
            || async {
                let entries = routes.entries();
                let new = entries.get(since..)?;
                let raised = new.iter().position(|(_, w)| *w > 0)?;
                new[raised..].iter().find(|(_, w)| *w == 0).map(|(t, _)| *t)
            },
        )
        .await;
        let measured = eventually(
            &format!("Prometheus' query log to show the query for {hash}"),
            Duration::from_secs(30),
            || async { query_time(query_log, &hash) },
        )
        .await;
        latencies.push(millis(aborted) - measured);
    }
    route_task.abort();
    latencies
}

/// When Prometheus ran the query carrying `marker`, in milliseconds since the epoch.
fn query_time(log: &std::path::Path, marker: &str) -> Option<f64> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().rev().find_map(|line| {
        let entry: Value = serde_json::from_str(line).ok()?;
        let query = entry["params"]["query"].as_str()?;
        if !query.contains(marker) {
            return None;
        }
        let at = DateTime::parse_from_rfc3339(entry["ts"].as_str()?).ok()?;
        Some(at.timestamp_micros() as f64 / 1000.0)
    })
}

// --- latency while others are busy -------------------------------------------------------------

/// Steps of a Rollout kept busy in the background: three weights, each held a minute, so a
/// thousand of them take about fifty steps a second between them.
fn busy_rollout(name: &str, image: &str) -> Value {
    let mut rollout = scale_rollout(name, image);
    rollout["spec"]["strategy"]["canary"]["steps"] = json!([
        {"setWeight": 25}, {"pause": {"duration": "60s"}},
        {"setWeight": 50}, {"pause": {"duration": "60s"}},
        {"setWeight": 75}, {"pause": {"duration": "60s"}}]);
    rollout
}

/// How long the API server takes to answer one GET of the Rollout `web` (the first request a
/// step's fresh look makes), asked every 100 ms while a part runs: the floor under any
/// step's latency, idle and busy alike.
struct RoundTrips {
    samples: Arc<Mutex<Vec<f64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RoundTrips {
    fn start(api: Api<Rollout>) -> RoundTrips {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let samples = samples.clone();
            async move {
                loop {
                    let sent = Instant::now();
                    if api.get("web").await.is_ok() {
                        let took = sent.elapsed().as_secs_f64() * 1000.0;
                        samples
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push(took);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        RoundTrips { samples, task }
    }

    fn stop(self) -> Vec<f64> {
        self.task.abort();
        std::mem::take(
            &mut *self
                .samples
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// One Rollout's step latency and abort latency (timed as in the two parts above) on a
/// controller with nothing else to do, then on the same controller while `others`
/// Rollouts in its namespace progress: each a canary of three one-minute pauses, given a
/// new image whenever it finishes. The figures are the busy p99s against the idle ones, in
/// one run.
async fn busy(client: &Client, samples: usize, others: usize, report: &mut Report) {
    let query_log = query_log().await;
    let ns = TestNamespace::new(client, "bench-busy").await;
    support::app::app(&ns).await;
    support::app::apply(&ns, always_fails()).await;
    let port = support::free_port();
    let _controller = controller(&ns, port, &[]);
    let rollouts = ns.api::<Rollout>();
    apply(&rollouts, &step_rollout("web:1", pause_steps())).await;
    support::app::healthy_on(&ns, "web:1").await;
    let canaries = samples.div_ceil(9).max(1);
    let mut image = 1;
    let round_trips = RoundTrips::start(rollouts.clone());
    let idle_steps = step_latencies(&ns, &rollouts, canaries, &mut image).await;
    let idle_aborts = abort_latencies(&ns, &rollouts, &query_log, samples, &mut image).await;
    let idle_gets = round_trips.stop();

    // The others: created, Healthy, then each moved to a new image whenever it is Healthy.
    let (store, writer) = reflector::store();
    let watch = tokio::spawn(
        reflector::reflector(
            writer,
            watcher(
                rollouts.clone(),
                watcher::Config::default().labels("bench=busy"),
            ),
        )
        .default_backoff()
        .touched_objects()
        .for_each(|_| async {}),
    );
    let names: Vec<String> = (0..others).map(|i| format!("busy-{i:05}")).collect();
    create_all(&rollouts, &names, |name| {
        let mut object = busy_rollout(name, "bench:1");
        object["metadata"]["labels"] = json!({"bench": "busy"});
        object
    })
    .await;
    let limit = Duration::from_secs(300 + others as u64);
    wait_count(&store, "Healthy", limit, others, |r| {
        phase_of(r) == Some(RolloutPhase::Healthy)
    })
    .await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let (stop, store, api) = (stop.clone(), store.clone(), rollouts.clone());
        tokio::spawn(async move {
            let mut released = 0usize;
            let mut round = 1u32;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                round += 1;
                // Healthy at its current spec: one just given a new image still reads
                // Healthy until the controller has seen the change.
                let healthy: Vec<String> = store
                    .state()
                    .iter()
                    .filter(|r| {
                        phase_of(r) == Some(RolloutPhase::Healthy)
                            && r.status.as_ref().and_then(|s| s.observed_generation)
                                == r.metadata.generation
                    })
                    .map(|r| kube::ResourceExt::name_any(r.as_ref()))
                    .collect();
                let image = format!("bench:{round}");
                released += healthy.len();
                futures::stream::iter(healthy)
                    .map(|name| {
                        let (api, image) = (api.clone(), image.clone());
                        async move {
                            let patch = json!({"spec": {"template": {"spec": {"containers": [
                                {"name": "app", "image": image}]}}}});
                            let _ = api
                                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                                .await;
                        }
                    })
                    .buffer_unordered(16)
                    .collect::<()>()
                    .await;
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            released
        })
    };
    wait_count(&store, "progressing", limit, others * 9 / 10, |r| {
        matches!(
            phase_of(r),
            Some(RolloutPhase::Progressing | RolloutPhase::Paused)
        )
    })
    .await;
    let busy_from = Instant::now();
    let round_trips = RoundTrips::start(rollouts.clone());
    let busy_steps = step_latencies(&ns, &rollouts, canaries, &mut image).await;
    let busy_aborts = abort_latencies(&ns, &rollouts, &query_log, samples, &mut image).await;
    let busy_gets = round_trips.stop();
    let busy_for = busy_from.elapsed();
    let in_flight = store
        .state()
        .iter()
        .filter(|r| phase_of(r) != Some(RolloutPhase::Healthy))
        .count();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let released = churn.await.unwrap_or_default();
    watch.abort();
    finish(ns).await;

    let mut lines = Vec::new();
    for (what, idle, busy) in [
        ("step latency", idle_steps, busy_steps),
        ("abort latency", idle_aborts, busy_aborts),
    ] {
        let (_, idle_p99, _, idle_n) = summary(idle);
        let (busy_p50, busy_p99, busy_max, busy_n) = summary(busy);
        let ratio = busy_p99 / idle_p99;
        report.target(
            &format!("{what} p99 with {others} other Rollouts progressing, against idle"),
            format!(
                "{ratio:.2} ({busy_p99:.0} ms against {idle_p99:.0} ms; n = {busy_n} and {idle_n})"
            ),
            "≤ 2",
            Some(ratio <= 2.0),
        );
        lines.push(format!(
            "| {what} | {idle_p99:.0} ms | {busy_p50:.0} ms | {busy_p99:.0} ms | {busy_max:.0} ms |"
        ));
    }
    // Not a target: what any request of a step waits for on this machine, weir or not.
    let (_, idle_p99, _, idle_n) = summary(idle_gets);
    let (busy_p50, busy_p99, busy_max, busy_n) = summary(busy_gets);
    lines.push(format!(
        "| one GET of the Rollout (n = {idle_n} idle, {busy_n} busy) | {idle_p99:.0} ms | {busy_p50:.0} ms | {busy_p99:.0} ms | {busy_max:.0} ms |"
    ));
    report.section(
        &format!("Latency with {others} Rollouts busy"),
        format!(
            "The step-latency and abort-latency Rollouts above, on one controller: first with \
             nothing else in its namespace, then while {others} other Rollouts there (1 replica \
             each, no router) progressed, each through `setWeight` 25, 50 and 75 with a \
             one-minute pause after each, and a new image as soon as it was Healthy again: \
             {released} canaries started in the {:.0} s measured, {in_flight} in flight at its \
             end. The last row is the API server alone: a GET of the step Rollout every \
             100 ms by the bench itself, over the same two periods.\n\n| measured | idle p99 | busy p50 | busy p99 | busy max |\n| --- | --- | --- | --- | --- |\n{}\n",
            busy_for.as_secs_f64(),
            lines.join("\n")
        ),
    );
}

// --- Git to canary ----------------------------------------------------------------------------

/// From the start of `git push` to a watch seeing the new canary's ReplicaSet: with the push
/// webhook, and with polling alone.
async fn git_to_canary(client: &Client, report: &mut Report) {
    let webhook = git_to_canary_via(client, true, 10).await;
    let polling = git_to_canary_via(client, false, 6).await;
    let (p50, p99, max, n) = summary(webhook);
    report.target(
        "Git to canary with the webhook (max)",
        format!("{max:.0} ms (p50 {p50:.0} ms, n = {n})"),
        "≤ 2 s",
        Some(max <= 2000.0),
    );
    let (poll_p50, _, poll_max, poll_n) = summary(polling);
    report.section(
        "Git to canary",
        format!(
            "A GitSync following `main` of a repository served by `git daemon` on loopback, \
             holding the Services, the HTTPRoute and a 1-replica Rollout; each sample commits \
             a new image, and is timed from the start of `git push` to the moment a watch sees \
             the new canary's ReplicaSet.\n\n\
             - With the push webhook (signed `POST /hooks/git` sent right after the push; \
             GitSync interval 1h, so only the webhook brings revisions in): p50 {p50:.0} ms, \
             p99 {p99:.0} ms, max {max:.0} ms over {n} pushes.\n\
             - With polling only (GitSync `interval: 5s`, no webhook): p50 {poll_p50:.0} ms, \
             max {poll_max:.0} ms over {poll_n} pushes; this is the interval's wait plus the \
             sync, so it scales with `interval`."
        ),
    );
}

async fn git_to_canary_via(client: &Client, webhook: bool, samples: usize) -> Vec<f64> {
    let ns = TestNamespace::new(
        client,
        if webhook {
            "bench-git-hook"
        } else {
            "bench-git-poll"
        },
    )
    .await;
    // The team's remote, served by git daemon and taking pushes, and a clone to push from.
    let origin = GitRepo::new(&format!("{}-origin", ns.name));
    origin.accept_pushes();
    let daemon = GitDaemon::serve(&origin).await;
    let url = daemon.url(&origin);
    let work = GitRepo::new(&format!("{}-work", ns.name));
    work.git(&["remote", "add", "origin", &url]);
    let manifests = |image: &str| {
        let mut documents = support::app::routing();
        documents.push(step_rollout(
            image,
            json!([{"setWeight": 10}, {"pause": {}}]),
        ));
        support::app::yaml_stream(&documents)
    };
    work.commit("web 1", &[("deploy/app.yaml", &manifests("web:1"))]);
    push(&work);

    let port = support::free_port();
    support::app::apply(
        &ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "webhook"},
            "stringData": {"token": "bench-secret"}}),
    )
    .await;
    let secret = format!("{}/webhook", ns.name);
    let _controller = if webhook {
        controller(&ns, port, &["--webhook-secret", &secret])
    } else {
        controller(&ns, port, &[])
    };
    let interval = if webhook { "1h" } else { "5s" };
    support::app::git_sync(&ns, &url, json!({"interval": interval})).await;
    support::app::healthy_on(&ns, "web:1").await;

    let seen: Arc<Mutex<Vec<(SystemTime, String)>>> = Arc::default();
    let watch = {
        let seen = seen.clone();
        let api = ns.api::<ReplicaSet>();
        tokio::spawn(async move {
            let mut stream = watcher(api, watcher::Config::default())
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Some(Ok(set)) = stream.next().await {
                let at = SystemTime::now();
                let image = set
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .and_then(|t| t.spec.as_ref())
                    .and_then(|s| s.containers.first())
                    .and_then(|c| c.image.clone())
                    .unwrap_or_default();
                seen.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((at, image));
            }
        })
    };
    let mut latencies = Vec::new();
    for sample in 0..samples {
        let image = format!("web:{}", sample + 2);
        work.commit(
            &format!("web {}", sample + 2),
            &[("deploy/app.yaml", &manifests(&image))],
        );
        let head = work.head();
        let pushed = SystemTime::now();
        push(&work);
        if webhook {
            let body = json!({"ref": "refs/heads/main", "after": head,
                "repository": {"clone_url": url}})
            .to_string();
            let signature = weir::gitops::webhook::signature(b"bench-secret", body.as_bytes());
            let answer = support::http_request(
                port,
                "POST",
                "/hooks/git",
                &[
                    ("Content-Type", "application/json"),
                    ("X-GitHub-Event", "push"),
                    ("X-Hub-Signature-256", &signature),
                ],
                &body,
            )
            .await;
            if !matches!(answer, Some((202, _))) {
                panic!("the webhook refused the push: {answer:?}");
            }
        }
        let created = eventually(
            &format!("the canary ReplicaSet of {image}"),
            Duration::from_secs(120),
            || async {
                seen.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .find(|(_, i)| *i == image)
                    .map(|(t, _)| *t)
            },
        )
        .await;
        latencies.push(millis(created) - millis(pushed));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    watch.abort();
    // While the controller runs: it honours the Rollouts' route-cleanup finalizer.
    finish(ns).await;
    latencies
}

// --- requests per interval for an unchanged repository --------------------------------------

/// A GitSync (interval 2s) over a repository of 100 objects as people write them (70
/// ConfigMaps, 20 Services without `protocol`, 10 Secrets in `stringData`), left unchanged:
/// the API server's requests over twenty intervals, per interval.
async fn unchanged_repository(client: &Client, report: &mut Report) {
    const OBJECTS: usize = 100;
    const INTERVALS: u64 = 20;
    let ns = TestNamespace::new(client, "bench-unchanged").await;
    let mut documents = Vec::new();
    for i in 0..70 {
        documents.push(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("settings-{i}")}, "data": {"value": format!("{i}")}}));
    }
    for i in 0..20 {
        documents.push(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": format!("svc-{i}")},
            "spec": {"selector": {"app": format!("app-{i}")}, "ports": [{"port": 80, "targetPort": 8080}]}}));
    }
    for i in 0..10 {
        documents.push(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": format!("secret-{i}")}, "stringData": {"token": format!("t{i}")}}));
    }
    let repo = GitRepo::new(&ns.name);
    repo.commit(
        "100 objects",
        &[("deploy/app.yaml", &support::app::yaml_stream(&documents))],
    );
    let port = support::free_port();
    let _controller = controller(&ns, port, &[]);
    support::app::apply_git_sync(
        &ns,
        "app",
        json!({"url": repo.file_url(), "ref": {"branch": "main"}, "path": "deploy", "interval": "2s"}),
    )
    .await;
    eventually(
        "the first apply of 100 objects",
        Duration::from_secs(120),
        || async {
            (support::gitops::gitsync_objects(port, "applied").await >= OBJECTS as u64)
                .then_some(())
        },
    )
    .await;
    // From the first interval that found nothing to apply.
    let start = eventually(
        "an interval with nothing to apply",
        Duration::from_secs(60),
        || async {
            let unchanged = support::gitops::gitsync_objects(port, "unchanged").await;
            (unchanged > 0 && unchanged % OBJECTS as u64 == 0).then_some(unchanged)
        },
    )
    .await;
    let applied_before = support::gitops::gitsync_objects(port, "applied").await;
    let before = api_requests(client).await;
    let end = start + INTERVALS * OBJECTS as u64;
    eventually(
        &format!("{INTERVALS} more intervals"),
        Duration::from_secs(INTERVALS * 10),
        || async {
            (support::gitops::gitsync_objects(port, "unchanged").await >= end).then_some(())
        },
    )
    .await;
    let after = api_requests(client).await;
    let applied_after = support::gitops::gitsync_objects(port, "applied").await;
    let skipped = support::gitops::gitsync_objects(port, "unchanged").await - start;
    let kinds = ["configmaps", "services", "secrets"];
    let of_repository =
        |requests: BTreeMap<(String, String), f64>| -> BTreeMap<(String, String), f64> {
            requests
                .into_iter()
                .filter(|((_, resource), _)| kinds.contains(&resource.as_str()))
                .collect()
        };
    let writes = of_repository(writes_between(&before, &after));
    let reads = of_repository(reads_between(&before, &after));
    let intervals = INTERVALS as f64;
    // Folded from +0.0: an empty f64 sum is -0.0, which prints as "-0.00".
    let per_interval = writes.values().fold(0.0, |sum, n| sum + n) / intervals;
    report.target(
        "Writes per interval, unchanged 100-object repository",
        format!("{per_interval:.2}"),
        "0",
        Some(per_interval == 0.0),
    );
    report.section(
        "Unchanged repository",
        format!(
            "A GitSync with `interval: 2s` over a repository of {OBJECTS} objects as people \
             write them (70 ConfigMaps, 20 Services without `protocol`, 10 Secrets in \
             `stringData`), left unchanged. Requests to those three resources, counted by the \
             API server over {INTERVALS} intervals (in them the controller sent {} applies and \
             found {} needless). A dry run is counted apart: it writes nothing.\n\n\
             Writes:\n\n{}\nReads and dry runs:\n\n{}",
            applied_after - applied_before,
            skipped,
            match writes.is_empty() {
                true => "none\n".to_owned(),
                false => request_table(&writes, intervals).replace("per step", "per interval"),
            },
            request_table(&reads, intervals).replace("per step", "per interval"),
        ),
    );
    finish(ns).await;
}

fn push(work: &GitRepo) {
    work.git(&["push", "-q", "origin", "HEAD:main"]);
}

// --- scale: memory, resync writes, recovery ---------------------------------------------------

/// One Rollout of the scale part. Its progress deadline is an hour, not the default ten
/// minutes: kube-controller-manager creates and deletes pods at its client's rate (about
/// 20 a second here), so with 5,000 canaries at once some wait more than ten minutes for
/// their pod, and a Rollout aborted for that would never reach the pause the part waits for.
fn scale_rollout(name: &str, image: &str) -> Value {
    json!({"apiVersion": "weir.dev/v1alpha1", "kind": "Rollout", "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": name}},
            "progressDeadlineSeconds": 3600,
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]}},
            "strategy": {"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}}})
}

/// N Rollouts (1 replica each, split by replica count): created and brought to Healthy; the
/// controller restarted on them (its memory idle, the writes of a resync of unchanged
/// Rollouts); all moved to a new template and held mid-canary (its memory while they
/// progress); restarted once more (recovery of N in-flight rollouts).
/// Returns the controller's reads in the resync of `size` unchanged Rollouts, if the API
/// server keeps an audit log to count them from.
async fn scale(client: &Client, size: usize, in_flight: usize, report: &mut Report) -> Option<u64> {
    let ns = TestNamespace::new(client, &format!("bench-scale-{size}")).await;
    let api = ns.api::<Rollout>();
    let (store, writer) = reflector::store();
    let cache = tokio::spawn(
        reflector::reflector(writer, watcher(api.clone(), watcher::Config::default()))
            .default_backoff()
            .touched_objects()
            .for_each(|_| async {}),
    );
    let port = support::free_port();
    let first = controller(&ns, port, &[]);
    // The empty baseline: the controller ready, its watches open, no Rollout yet.
    eventually("the controller ready", Duration::from_secs(120), || async {
        matches!(support::http_get(port, "/readyz").await, Some((200, _))).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (baseline_rss, _) = memory(first.pid());
    let names: Vec<String> = (0..size).map(|i| format!("r-{i:05}")).collect();
    let created = Instant::now();
    create_all(&api, &names, |name| scale_rollout(name, "bench:1")).await;
    // Generous: a limit is there to name what never finished, not to time it.
    let limit = Duration::from_secs(300 + size as u64);
    wait_count(&store, "Healthy", limit, size, |r| {
        phase_of(r) == Some(RolloutPhase::Healthy)
    })
    .await;
    let to_healthy = created.elapsed();
    quiet(&store, limit).await;
    let (_, first_peak) = memory(first.pid());
    // Each figure is printed as it is taken: a run stopped in a long size still leaves them.
    println!(
        "  all Healthy after {:.1} s; first controller's peak RSS {first_peak:.1} MiB",
        to_healthy.as_secs_f64()
    );
    first.kill();

    // Restart on N unchanged, Healthy Rollouts: time to reconcile them all, the writes that
    // costs, and the memory of a controller holding them.
    tokio::time::sleep(SETTLE).await;
    let before = api_requests(client).await;
    let audit = support::audit_log();
    let audit_from = std::fs::metadata(&audit).map_or(0, |m| m.len());
    let restarted = Instant::now();
    let second = controller(&ns, port, &[]);
    wait_reconciled(port, size, limit).await;
    let idle_resync = restarted.elapsed();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = api_requests(client).await;
    let resync_writes = writes_between(&before, &after);
    // The controller's own reads, from the audit log: the API server's metrics name no
    // client (kube-controller-manager's CronJob controller alone lists Jobs every 10 s, so
    // a longer resync reads more), and count a GET of a custom resource as a LIST.
    let resync_reads = weir_reads(&audit, audit_from);
    let (idle_rss, idle_peak) = memory(second.pid());
    let per_idle_kib = (idle_rss - baseline_rss) * 1024.0 / size as f64;
    // Counts are whole; summed as integers (an empty f64 sum is -0, printed "-0").
    let resync_total = resync_writes.values().map(|n| *n as u64).sum::<u64>();
    println!(
        "  restart: all reconciled after {:.1} s; idle RSS {idle_rss:.1} MiB, peak \
         {idle_peak:.1} MiB; resync writes {resync_total}",
        idle_resync.as_secs_f64(),
    );

    // All N (or `in_flight` of them) move to a new template and stop at their indefinite
    // pause.
    let moved = size.min(in_flight);
    let progressing = Instant::now();
    set_image_all(&api, &names[..moved], "bench:2").await;
    wait_count(&store, "paused mid-canary", limit, moved, |r| {
        phase_of(r) == Some(RolloutPhase::Paused)
            && r.status.as_ref().and_then(|s| s.current_step_index) == Some(1)
    })
    .await;
    let to_paused = progressing.elapsed();
    // The stable versions' pods go (kube-controller-manager deletes them at its own client
    // rate: about 50 s for 1,000) and the statuses count them: let that settle, so the
    // restart below finds nothing left to do but what a restart costs.
    quiet(&store, limit).await;
    let (busy_rss, busy_peak) = memory(second.pid());
    println!(
        "  all mid-canary after {:.1} s; RSS {busy_rss:.1} MiB, peak {busy_peak:.1} MiB",
        to_paused.as_secs_f64()
    );
    second.kill();

    // Recovery: a fresh controller on N in-flight rollouts.
    tokio::time::sleep(SETTLE).await;
    let before = api_requests(client).await;
    let restarted = Instant::now();
    let third = controller(&ns, port, &[]);
    wait_reconciled(port, size, limit).await;
    let recovery = restarted.elapsed();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = api_requests(client).await;
    let recovery_writes = writes_between(&before, &after);
    let (_, recovery_peak) = memory(third.pid());

    if size == 1000 && moved == size {
        report.target(
            "controller peak RSS, 1,000 Rollouts progressing",
            format!("{busy_peak:.1} MiB"),
            "≤ 64 MiB",
            Some(busy_peak <= 64.0),
        );
        report.target(
            "recovery: restart to all 1,000 in-flight Rollouts reconciled",
            format!("{:.1} s", recovery.as_secs_f64()),
            "≤ 30 s",
            Some(recovery.as_secs_f64() <= 30.0),
        );
    }
    // The Rollouts' own reads: the list and the watch of the one watch of Rollouts the
    // controller keeps, and nothing per Rollout.
    let rollout_reads = resync_reads
        .iter()
        .filter(|((_, resource), _)| resource == "rollouts")
        .map(|(_, n)| *n as u64)
        .sum::<u64>();
    // Without the audit log (an API server started by an older hack/local-cluster.sh) there
    // is nothing to count, which must not read as no reads.
    let audited = audit.exists();
    report.target(
        &format!("the controller's reads of Rollouts in a resync of {size} unchanged Rollouts"),
        if audited {
            format!("{rollout_reads}")
        } else {
            "not measured: the API server keeps no audit log".to_owned()
        },
        "≤ 2 (one list, one watch), + 2 for a retry",
        audited.then_some(rollout_reads <= 4),
    );
    let all_reads = audited.then(|| resync_reads.values().map(|n| *n as u64).sum::<u64>());
    report.target(
        &format!("memory per idle Rollout above the empty controller, {size} Rollouts"),
        format!("{per_idle_kib:.1} KiB (empty {baseline_rss:.1} MiB, idle {idle_rss:.1} MiB)"),
        "≤ 20 KiB",
        Some(per_idle_kib <= 20.0),
    );
    report.target(
        &format!("API writes of a resync of {size} unchanged Rollouts"),
        format!("{resync_total}"),
        "0",
        Some(resync_total == 0),
    );
    let mut body = format!(
        "{size} Rollouts of 1 replica each (no router: the replica ratio is the traffic), \
         steps `setWeight: 50` and an indefinite `pause`, in one namespace watched by one \
         controller.\n\n\
         | measured | value |\n| --- | --- |\n\
         | created to all Healthy (first controller) | {:.1} s |\n\
         | the controller's RSS, ready with no Rollout yet | {baseline_rss:.1} MiB |\n\
         | first controller's peak RSS (creation burst) | {first_peak:.1} MiB |\n\
         | restart on {size} Healthy Rollouts: all reconciled after | {:.1} s |\n\
         | idle: RSS / peak RSS after that resync and 10 s at rest | {idle_rss:.1} / {idle_peak:.1} MiB |\n\
         | {moved} moved to a new template until all paused mid-canary | {:.1} s |\n\
         | progressing: RSS / peak RSS when {moved} are mid-canary | {busy_rss:.1} / {busy_peak:.1} MiB |\n\
         | recovery: restart to all {size} reconciled, {moved} of them in flight | {:.1} s |\n\
         | recovery: that controller's peak RSS | {recovery_peak:.1} MiB |\n\n",
        to_healthy.as_secs_f64(),
        idle_resync.as_secs_f64(),
        to_paused.as_secs_f64(),
        recovery.as_secs_f64(),
    );
    let _ = write!(
        body,
        "Writes during the resync of unchanged Rollouts (restart to 10 s after all were \
         reconciled; every client counted): {resync_total}.\n\n{}\n\
         The controller's reads during it, from the API server's audit log (a list and a \
         watch per kind it watches; a Rollout is read fresh only when a look at it finds \
         something to do; a list of several pages counts each page):\n\n{}\n\
         Writes during the recovery of in-flight Rollouts: {}.\n\n{}",
        request_table(&resync_writes, 1.0),
        request_table(&resync_reads, 1.0),
        recovery_writes.values().map(|n| *n as u64).sum::<u64>(),
        request_table(&recovery_writes, 1.0),
    );
    report.section(&format!("{size} Rollouts"), body);

    // The namespace goes while a controller still runs, so the Rollouts' route-cleanup
    // finalizer is honoured and the next size starts on a quiet API server.
    cache.abort();
    finish(ns).await;
    drop(third);
    all_reads
}

// --- shards over several replicas ----------------------------------------------------------------

/// The replicas of [`sharded`] and the shards they cut the Rollouts into.
const REPLICAS: usize = 3;
const SHARDS: u32 = 24;

/// For each (resource, name), who wrote it (a replica's identity) and when.
type Writers = BTreeMap<(String, String), Vec<(String, DateTime<Utc>)>>;

/// Who wrote what, from the API server's audit log: for each object of namespace `ns`, the
/// identities of the weir replicas that wrote it, with the time of each write, from byte
/// `from` of the log on.
fn writers(log: &std::path::Path, from: u64, ns: &str) -> Writers {
    let mut writers: BTreeMap<_, Vec<_>> = BTreeMap::new();
    for entry in support::audit_entries(log, from) {
        let object = &entry["objectRef"];
        if object["namespace"].as_str() != Some(ns)
            || !["create", "update", "patch", "delete"]
                .contains(&entry["verb"].as_str().unwrap_or(""))
        {
            continue;
        }
        let Some(identity) = support::weir_identity(&entry) else {
            continue;
        };
        // A write the API server refused (a conflict, say) changed nothing.
        if entry["responseStatus"]["code"]
            .as_u64()
            .is_some_and(|code| code >= 300)
        {
            continue;
        }
        let (Some(resource), Some(name), Some(at)) = (
            object["resource"].as_str(),
            object["name"].as_str(),
            entry["requestReceivedTimestamp"]
                .as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok()),
        ) else {
            continue;
        };
        writers
            .entry((resource.to_owned(), name.to_owned()))
            .or_default()
            .push((identity.to_owned(), at.with_timezone(&Utc)));
    }
    writers
}

/// weir's own reads from byte `from` of the audit log on, by (verb, resource): a LIST of
/// several pages is one request per page, a watch one per start.
fn weir_reads(log: &std::path::Path, from: u64) -> BTreeMap<(String, String), f64> {
    let mut reads = BTreeMap::new();
    for entry in support::audit_entries(log, from) {
        let verb = entry["verb"].as_str().unwrap_or("");
        // A watch is logged when it starts and again when it ends: counted once.
        let counted = match verb {
            "watch" => entry["stage"] == "ResponseStarted",
            "get" | "list" => entry["stage"] == "ResponseComplete",
            _ => false,
        };
        if !counted || support::weir_identity(&entry).is_none() {
            continue;
        }
        let object = &entry["objectRef"];
        let resource = match (object["resource"].as_str(), object["subresource"].as_str()) {
            (Some(resource), Some(sub)) => format!("{resource}/{sub}"),
            (Some(resource), None) => resource.to_owned(),
            // Discovery and other paths that name no resource.
            (None, _) => {
                let uri = entry["requestURI"].as_str().unwrap_or("");
                uri.split('?').next().unwrap_or(uri).to_owned()
            }
        };
        *reads.entry((verb.to_uppercase(), resource)).or_default() += 1.0;
    }
    reads
}

/// The Rollouts a controller has reconciled, as its `weir_rollout_phase` series say.
async fn reconciled_names(port: u16) -> BTreeSet<String> {
    let Some((200, text)) = support::http_get(port, "/metrics").await else {
        return BTreeSet::new();
    };
    let Ok(scrape) = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))) else {
        return BTreeSet::new();
    };
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == "weir_rollout_phase")
        .filter_map(|s| s.labels.get("rollout").map(str::to_owned))
        .collect()
}

/// `size` Rollouts, each with its own `weir.dev/shard` label, over `REPLICAS` replicas with
/// `--shards SHARDS`: created and brought to Healthy, all moved mid-canary (each replica's
/// RSS then), each object's writers counted from the audit log, then the replica leading
/// the most shards killed: the time until the others have reconciled its Rollouts, and the
/// writes that handover made.
async fn sharded(client: &Client, size: usize, in_flight: usize, report: &mut Report) {
    let audit = support::audit_log();
    if !audit.exists() {
        report.section(
            &format!("{size} Rollouts over {REPLICAS} replicas"),
            format!(
                "Not measured: the API server has no audit log at {} (it was started before \
                 hack/local-cluster.sh kept one; `hack/local-cluster.sh restart \
                 kube-apiserver` starts it with one).\n",
                audit.display()
            ),
        );
        return;
    }
    let ns = TestNamespace::new(client, &format!("bench-shards-{size}")).await;
    let api = ns.api::<Rollout>();
    let (store, writer) = reflector::store();
    let cache = tokio::spawn(
        reflector::reflector(writer, watcher(api.clone(), watcher::Config::default()))
            .default_backoff()
            .touched_objects()
            .for_each(|_| async {}),
    );
    let shards = SHARDS.to_string();
    let ports: Vec<u16> = (0..REPLICAS).map(|_| support::free_port()).collect();
    let mut replicas: Vec<Option<ControllerProcess>> = ports
        .iter()
        .map(|port| {
            Some(controller(
                &ns,
                *port,
                &[
                    "--leader-elect",
                    "--shards",
                    &shards,
                    "--lease-duration",
                    "10s",
                ],
            ))
        })
        .collect();
    let led = async |port: u16| {
        let Some((200, text)) = support::http_get(port, "/metrics").await else {
            return 0;
        };
        text.lines()
            .find_map(|l| l.strip_prefix("weir_shards_led "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(0, |v| v as u32)
    };
    // Each replica's share, as the shards' rendezvous hashing over the three identities
    // gives it (an identity is the host name and the process id, as the controller makes
    // it). The first replica up takes every shard until the others join, then hands theirs
    // over: Rollouts are created only once every shard is where it will stay.
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "weir".into());
    let identities: Vec<String> = replicas
        .iter()
        .flatten()
        .map(|replica| format!("{host}-{}", replica.pid()))
        .collect();
    let members: Vec<&str> = identities.iter().map(String::as_str).collect();
    let shares: Vec<u32> = members
        .iter()
        .map(|me| {
            (0..SHARDS)
                .filter(|shard| weir::runtime::shard::owner(*shard, &members) == Some(*me))
                .count() as u32
        })
        .collect();
    eventually(
        &format!("every replica to lead its share of the shards ({shares:?})"),
        Duration::from_secs(120),
        || async {
            let mut counts = Vec::new();
            for port in &ports {
                counts.push(led(*port).await);
            }
            (counts == shares).then_some(())
        },
    )
    .await;
    let audit_from = std::fs::metadata(&audit).map_or(0, |m| m.len());

    let names: Vec<String> = (0..size).map(|i| format!("r-{i:05}")).collect();
    let created = Instant::now();
    create_all(&api, &names, |name| {
        let mut object = scale_rollout(name, "bench:1");
        object["metadata"]["labels"] = json!({"weir.dev/shard": name});
        object
    })
    .await;
    let limit = Duration::from_secs(300 + size as u64);
    wait_count(&store, "Healthy", limit, size, |r| {
        phase_of(r) == Some(RolloutPhase::Healthy)
    })
    .await;
    let to_healthy = created.elapsed();
    quiet(&store, limit).await;
    let idle: Vec<f64> = replicas
        .iter()
        .flatten()
        .map(|replica| memory(replica.pid()).0)
        .collect();
    let moved = size.min(in_flight);
    set_image_all(&api, &names[..moved], "bench:2").await;
    let paused = |r: &Rollout| {
        phase_of(r) == Some(RolloutPhase::Paused)
            && r.status.as_ref().and_then(|s| s.current_step_index) == Some(1)
    };
    wait_count(&store, "paused mid-canary", limit, moved, paused).await;
    quiet(&store, limit).await;
    let busy: Vec<(f64, f64)> = replicas
        .iter()
        .flatten()
        .map(|replica| memory(replica.pid()))
        .collect();
    println!(
        "  all Healthy after {:.1} s, then {moved} mid-canary",
        to_healthy.as_secs_f64()
    );

    // Who wrote each Rollout and each ReplicaSet so far.
    let before_kill = writers(&audit, audit_from, &ns.name);
    let shared: Vec<&(String, String)> = before_kill
        .iter()
        .filter(|(_, writes)| {
            writes
                .iter()
                .map(|(who, _)| who)
                .collect::<BTreeSet<_>>()
                .len()
                > 1
        })
        .map(|(object, _)| object)
        .collect();
    let rollout_writer = |name: &str| {
        before_kill
            .get(&("rollouts".to_owned(), name.to_owned()))
            .and_then(|writes| writes.first())
            .map(|(who, _)| who.clone())
    };
    let mut by_replica: BTreeMap<String, usize> = BTreeMap::new();
    let mut unwritten = 0;
    for name in &names {
        match rollout_writer(name) {
            Some(who) => *by_replica.entry(who).or_default() += 1,
            None => unwritten += 1,
        }
    }
    report.target(
        &format!("objects (Rollouts, ReplicaSets) written by more than one of {REPLICAS} replicas, {size} Rollouts"),
        format!(
            "{} of {} (Rollouts each replica wrote: {})",
            shared.len(),
            before_kill.len(),
            by_replica.values().map(usize::to_string).collect::<Vec<_>>().join(", ")
        ),
        "0, every Rollout written by one",
        Some(shared.is_empty() && unwritten == 0 && by_replica.len() == REPLICAS),
    );

    // The replica that leads the most shards dies.
    let mut most = 0;
    let mut victim = 0;
    for (index, port) in ports.iter().enumerate() {
        let n = led(*port).await;
        if n > most {
            (most, victim) = (n, index);
        }
    }
    let victim_pid = replicas[victim].as_ref().map_or(0, ControllerProcess::pid);
    let orphans: BTreeSet<String> = names
        .iter()
        .filter(|name| {
            rollout_writer(name).is_some_and(|who| who.ends_with(&format!("-{victim_pid}")))
        })
        .cloned()
        .collect();
    let steps_before: BTreeMap<String, Option<i32>> = store
        .state()
        .iter()
        .map(|r| {
            (
                kube::ResourceExt::name_any(r.as_ref()),
                r.status.as_ref().and_then(|s| s.current_step_index),
            )
        })
        .collect();
    let survivors: Vec<u16> = ports
        .iter()
        .enumerate()
        .filter(|(index, _)| *index != victim)
        .map(|(_, port)| *port)
        .collect();
    let mut known_before = BTreeSet::new();
    for port in &survivors {
        known_before.extend(reconciled_names(*port).await);
    }
    // Else the time below would measure nothing.
    assert!(
        orphans.iter().all(|name| !known_before.contains(name)),
        "the other replicas had reconciled the Rollouts of the one to be killed already"
    );
    let killed_at = Utc::now();
    let killed = Instant::now();
    if let Some(replica) = replicas[victim].take() {
        replica.kill();
    }
    let recovery = eventually(
        "the survivors to reconcile the dead replica's Rollouts",
        limit,
        || async {
            let mut known = BTreeSet::new();
            for port in &survivors {
                known.extend(reconciled_names(*port).await);
            }
            orphans
                .iter()
                .all(|name| known.contains(name))
                .then(|| killed.elapsed())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after_kill = writers(&audit, audit_from, &ns.name);
    let handover_writes: usize = after_kill
        .values()
        .flat_map(|writes| writes.iter())
        .filter(|(_, at)| *at > killed_at)
        .count();
    let steps_after: BTreeMap<String, Option<i32>> = store
        .state()
        .iter()
        .map(|r| {
            (
                kube::ResourceExt::name_any(r.as_ref()),
                r.status.as_ref().and_then(|s| s.current_step_index),
            )
        })
        .collect();
    let steps_moved = steps_before
        .iter()
        .filter(|(name, step)| steps_after.get(*name) != Some(step))
        .count();
    let orphans_in_flight = orphans
        .iter()
        .filter(|name| names[..moved].contains(name))
        .count();
    report.target(
        &format!(
            "kill 1 of {REPLICAS} replicas: its {} Rollouts ({orphans_in_flight} in flight) reconciled again by the others",
            orphans.len()
        ),
        format!("{:.1} s", recovery.as_secs_f64()),
        "≤ 30 s",
        Some(recovery.as_secs_f64() <= 30.0),
    );
    report.target(
        "steps taken, and writes made, by that handover",
        format!("{steps_moved} steps, {handover_writes} writes"),
        "0 and 0",
        Some(steps_moved == 0 && handover_writes == 0),
    );
    let memory_rows = idle
        .iter()
        .zip(&busy)
        .enumerate()
        .map(|(index, (idle, (busy, peak)))| {
            format!(
                "| replica {} | {idle:.1} MiB | {busy:.1} MiB | {peak:.1} MiB |",
                index + 1
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    report.section(
        &format!("{size} Rollouts over {REPLICAS} replicas"),
        format!(
            "{size} Rollouts as in the scale part, each labelled `weir.dev/shard: <its name>`, \
             over {REPLICAS} replicas run with `--leader-elect --shards {SHARDS} \
             --lease-duration 10s` in one namespace. Created to all Healthy: {:.1} s. Writers \
             counted from the API server's audit log (writes to weir's kinds and ReplicaSets, \
             each request's user agent naming its replica): Rollouts written by each \
             replica {}; objects written by more than one: {}. Then the replica leading the \
             most shards ({most} of {SHARDS}) was killed (SIGKILL) with {moved} of the {size} \
             paused mid-canary: the others had reconciled its {} Rollouts \
             ({orphans_in_flight} of them in flight) {:.1} s later, with \
             {steps_moved} steps taken and {handover_writes} writes in the handover.\n\n\
             | replica | idle RSS | mid-canary RSS | peak RSS |\n| --- | --- | --- | --- |\n{memory_rows}\n",
            to_healthy.as_secs_f64(),
            by_replica.values().map(usize::to_string).collect::<Vec<_>>().join(", "),
            shared.len(),
            orphans.len(),
            recovery.as_secs_f64(),
        ),
    );
    cache.abort();
    // The replicas' Leases live in this namespace and go with it; nobody leads after that,
    // and the Rollouts' finalizers would hold the namespace. The Rollouts go first, while
    // the survivors lead every shard.
    // Asked until one request ends well: one for 10,000 can run past its timeout and leave
    // the rest (4,880 in one run); those already on their way are not deleted twice.
    eventually(
        "the sharded Rollouts to be marked deleted",
        limit,
        || async {
            api.delete_collection(&DeleteParams::background(), &ListParams::default())
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await;
    eventually("the sharded Rollouts to be gone", limit, || async {
        api.list_metadata(&ListParams::default().limit(1))
            .await
            .ok()
            .filter(|list| list.items.is_empty())
            .map(|_| ())
    })
    .await;
    finish(ns).await;
    drop(replicas);
}

/// Creates a Rollout from `object(name)` for each of `names`, 16 at a time.
async fn create_all(api: &Api<Rollout>, names: &[String], object: impl Fn(&str) -> Value) {
    futures::stream::iter(names.iter())
        .map(|name| {
            let api = api.clone();
            let object: Rollout = serde_json::from_value(object(name))
                .unwrap_or_else(|e| panic!("the bench's Rollout: {e}"));
            async move {
                api.create(&PostParams::default(), &object)
                    .await
                    .unwrap_or_else(|e| panic!("creating Rollout {name}: {e}"));
            }
        })
        .buffer_unordered(16)
        .collect::<()>()
        .await;
}

/// Gives each of `names` the container image `image`, 16 at a time.
async fn set_image_all(api: &Api<Rollout>, names: &[String], image: &str) {
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": image}]}}}});
    futures::stream::iter(names.iter())
        .map(|name| {
            let (api, patch) = (api.clone(), &patch);
            async move {
                api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                    .unwrap_or_else(|e| panic!("updating Rollout {name}: {e}"));
            }
        })
        .buffer_unordered(16)
        .collect::<()>()
        .await;
}

fn phase_of(rollout: &Rollout) -> Option<RolloutPhase> {
    rollout.status.as_ref().and_then(|s| s.phase)
}

async fn wait_count(
    store: &Store<Rollout>,
    what: &str,
    limit: Duration,
    size: usize,
    check: impl Fn(&Rollout) -> bool,
) {
    let mut last = 0;
    eventually(&format!("{size} Rollouts {what}"), limit, || {
        let count = store.state().iter().filter(|r| check(r)).count();
        if count / 500 != last / 500 {
            println!("  {count}/{size} {what}");
        }
        last = count;
        async move { (count >= size).then_some(()) }
    })
    .await;
}

/// Waits until no Rollout has changed for 10 s: every status has caught up with its pods.
async fn quiet(store: &Store<Rollout>, limit: Duration) {
    const QUIET: Duration = Duration::from_secs(10);
    let versions = || {
        store
            .state()
            .iter()
            .filter_map(|r| r.metadata.resource_version.clone())
            .collect::<BTreeSet<_>>()
    };
    let deadline = Instant::now() + limit;
    let (mut last, mut since) = (versions(), Instant::now());
    while since.elapsed() < QUIET {
        if Instant::now() > deadline {
            panic!("gave up after {limit:?} waiting for the Rollouts to stop changing");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = versions();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
}

async fn wait_reconciled(port: u16, size: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    while reconciled(port).await < size {
        if Instant::now() > deadline {
            panic!(
                "gave up after {limit:?} waiting for the controller to reconcile {size} Rollouts"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn delete_namespace(client: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces.delete(name, &DeleteParams::background()).await;
    eventually(
        &format!("namespace {name} to be deleted"),
        Duration::from_secs(1800),
        || async {
            match namespaces.get_opt(name).await {
                Ok(None) => Some(()),
                _ => None,
            }
        },
    )
    .await;
}
