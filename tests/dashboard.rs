//! `kubectl weir dashboard` in a real browser: Debian's Chromium, headless, driven through
//! ChromeDriver, against the dashboard process on the local control plane while a
//! `weir controller` takes a GitOps application through a good release (promoted by the
//! dashboard's own button) and a bad one (rejected by analysis and reverted in Git).
//! Screenshots of each page are written to `target/dashboard-screenshots/` for review.

mod support;

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use fantoccini::{Client as Browser, ClientBuilder, Locator};
use serde_json::json;
use support::app::{LIMIT, healthy_on, phase, wait_for};
use support::git::{GitDaemon, GitRepo};
use support::gitops::{commit_with, git_sync_every, sync_where, version_rates};
use support::{
    ControllerProcess, TestNamespace, client, eventually, free_port, http_get, kubeconfig_path,
    listening, prometheus_url, repo_root,
};
use weir::api::rollout::RolloutPhase;

/// A child process killed when the test ends, passing or failing.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `kubectl weir dashboard -n NS --port 0`, and the address it printed.
fn dashboard(ns: &TestNamespace) -> (Killed, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubectl-weir"))
        .args(["dashboard", "--port", "0", "-n", &ns.name])
        .env("KUBECONFIG", kubeconfig_path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting kubectl weir dashboard: {e}"));
    let mut first = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = std::io::BufReader::new(out).read_line(&mut first);
    }
    let address = first
        .split_whitespace()
        .find(|word| word.starts_with("http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("the dashboard printed no address: {first:?}"))
        .trim_end_matches('/')
        .to_owned();
    (Killed(child), address)
}

/// ChromeDriver on a free port, and a headless Chromium session through it.
async fn browser() -> (Killed, Browser) {
    let port = free_port();
    let driver = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("starting chromedriver ({e}): hack/local-cluster.sh up installs Debian's chromium-driver")
        });
    let driver = Killed(driver);
    listening("chromedriver", port).await;
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({"binary": "/usr/bin/chromium",
               "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        "--window-size=1280,2400"]}),
    );
    let session = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .unwrap_or_else(|e| panic!("a Chromium session through chromedriver: {e}"));
    (driver, session)
}

fn screenshots() -> PathBuf {
    let dir = repo_root().join("target/dashboard-screenshots");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

async fn screenshot(browser: &Browser, name: &str) {
    let png = browser
        .screenshot()
        .await
        .unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
    let path = screenshots().join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// The number of elements `css` matches on the page as the browser has it now.
async fn count(browser: &Browser, css: &str) -> usize {
    browser
        .find_all(Locator::Css(css))
        .await
        .map(|found| found.len())
        .unwrap_or(0)
}

async fn text(browser: &Browser, css: &str) -> String {
    match browser.find(Locator::Css(css)).await {
        Ok(element) => element.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Clicks the first element `css` matches. A live page swaps its `<main>` whenever the
/// release changes, so an element found a moment ago may be gone when clicked: then the
/// new one is found and clicked, as a person would click the button they now see.
async fn click(browser: &Browser, css: &str) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let element = browser
            .wait()
            .at_most(LIMIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("finding {css}: {e}"));
        match element.click().await {
            Ok(_) => return,
            Err(e) if e.is_stale_element_reference() && tokio::time::Instant::now() < deadline => {
                continue;
            }
            Err(e) => panic!("clicking {css}: {e}"),
        }
    }
}

/// A numeric attribute of the first element `css` matches.
async fn attribute(browser: &Browser, css: &str, name: &str) -> Option<f64> {
    let element = browser.find(Locator::Css(css)).await.ok()?;
    element.attr(name).await.ok()??.parse().ok()
}

/// A good release paused twice for a person: 20%, wait, 40%, wait, 60%. The second pause
/// holds the release while the page is watched, so that the step the test then takes is
/// seen live, however slowly the browser came back.
fn paused_steps() -> serde_json::Value {
    json!([{"setWeight": 20}, {"pause": {}}, {"setWeight": 40}, {"pause": {}},
        {"setWeight": 60}])
}

/// Steps whose analysis measures the version shipped (web:3's success rate is 0.5).
fn analysed(version: &str) -> serde_json::Value {
    json!([{"setWeight": 20},
        {"analysis": {"templates": [{"templateName": "success-rate"}],
                      "args": [{"name": "version", "value": version}]}},
        {"setWeight": 60}])
}

#[tokio::test]
async fn the_dashboard_shows_a_release_live_and_its_buttons_steer_it() {
    let ns = TestNamespace::new(&client().await, "dashboard").await;
    let (_metrics, _target) = version_rates(&ns).await;
    let repo = GitRepo::new(&ns.name);
    repo.accept_pushes();
    let daemon = GitDaemon::serve(&repo).await;
    let v1 = commit_with(&repo, &ns, 1, analysed("web:1"), &[]);
    let metrics_port = free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let _controller = ControllerProcess::start_with(
        &ns.name,
        &[
            "--prometheus-url",
            &prometheus_url(),
            "--metrics-addr",
            &metrics_addr,
        ],
    );
    git_sync_every(&ns, &daemon.url(&repo), true, "1s").await;
    healthy_on(&ns, "web:1").await;
    sync_where(&ns, "v1 good", |s| {
        s.last_good_revision.as_deref() == Some(v1.as_str())
    })
    .await;

    let (_dashboard, address) = dashboard(&ns);
    let (_driver, browser) = browser().await;

    // The list has the Rollout, linking to its page.
    browser
        .goto(&format!("{address}/"))
        .await
        .unwrap_or_else(|e| panic!("opening the dashboard: {e}"));
    let link = format!("a[href='/rollouts/{}/web']", ns.name);
    // Served at once, filled as the dashboard's first list comes in (live).
    eventually("the Rollouts list to link web", LIMIT, || async {
        (count(&browser, &link).await == 1).then_some(())
    })
    .await;
    screenshot(&browser, "rollouts").await;

    // A release paused for a person: its page marks the step and plots the weight.
    commit_with(&repo, &ns, 2, paused_steps(), &[]);
    wait_for(&ns, "web:2 paused at its first pause", |r| {
        phase(r) == Some(RolloutPhase::Paused)
    })
    .await;
    click(&browser, &link).await;
    eventually("the page to show the paused step", LIMIT, || async {
        text(&browser, "li[aria-current='step']")
            .await
            .contains("pause (until promoted)")
            .then_some(())
    })
    .await;
    let before = count(&browser, "#weight-chart circle.point").await;
    assert!(before >= 1, "the weight chart has the canary's 20%");
    screenshot(&browser, "rollout-paused").await;

    // Promote, confirmed: the canary goes on to 40%. The chart is timed to the second (as
    // Events are), so the clock turns first: a step taken within the second of the last
    // point would take that point's place instead of adding one.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    click(&browser, "button[value='promote']").await;
    let asked = eventually("the confirmation page", LIMIT, || async {
        // Empty while the browser is between the two pages.
        let heading = text(&browser, "h1").await;
        (!heading.is_empty() && !heading.starts_with("Rollout")).then_some(heading)
    })
    .await;
    assert!(
        asked.starts_with("Promote"),
        "a confirmation page comes first, not {asked:?}: {}",
        text(&browser, "main").await
    );
    screenshot(&browser, "confirm-promote").await;
    click(&browser, "#confirm").await;
    // The result page says what happened (a click does not wait for the page it posts to).
    eventually("the result page", LIMIT, || async {
        (!text(&browser, "#result").await.is_empty()).then_some(())
    })
    .await;
    wait_for(&ns, "the canary past its pause", |r| {
        r.status.as_ref().and_then(|s| s.canary_weight) == Some(40)
    })
    .await;

    // Back on the page, it follows the release by itself: the weight chart gains the next
    // step's point without a reload.
    click(&browser, "#back").await;
    let shown = eventually("40% on the chart", LIMIT, || async {
        let shown = count(&browser, "#weight-chart circle.point").await;
        (shown > before).then_some(shown)
    })
    .await;
    wait_for(&ns, "the canary at its second pause", |r| {
        phase(r) == Some(RolloutPhase::Paused)
            && r.status.as_ref().and_then(|s| s.current_step_index) == Some(3)
    })
    .await;
    let shown = eventually("the page at the second pause", LIMIT, || async {
        let now = count(&browser, "#weight-chart circle.point").await;
        text(&browser, "li[aria-current='step']")
            .await
            .contains("pause")
            .then_some(now.max(shown))
    })
    .await;
    // The next step, taken with `kubectl weir promote` while the page stays open, once the
    // clock has turned (as above).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let promoted = Command::new(env!("CARGO_BIN_EXE_kubectl-weir"))
        .args(["promote", "web", "-n", &ns.name])
        .env("KUBECONFIG", kubeconfig_path())
        .output()
        .unwrap_or_else(|e| panic!("kubectl weir promote: {e}"));
    assert!(promoted.status.success(), "{promoted:?}");
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let updates = attribute(&browser, "body", "data-updates")
            .await
            .unwrap_or(0.0);
        let now = count(&browser, "#weight-chart circle.point").await;
        if updates >= 1.0 && now > shown {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            screenshot(&browser, "live-point-missing").await;
            panic!(
                "the live page gained no point in {LIMIT:?}: {updates} updates, {now} points (was {shown}); the page: {}",
                text(&browser, "main").await
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    healthy_on(&ns, "web:2").await;
    screenshot(&browser, "rollout-promoted").await;

    // A bad release: analysis fails, the revision is rejected and reverted in Git.
    let v3 = commit_with(&repo, &ns, 3, analysed("web:3"), &[]);
    let status = sync_where(&ns, "v3 rejected and reverted", |s| {
        s.rejected_revisions
            .iter()
            .any(|r| r.revision == v3 && r.revert.is_some())
    })
    .await;
    let revert = status
        .rejected_revisions
        .iter()
        .find_map(|r| r.revert.clone())
        .unwrap_or_default();
    eventually("the page to plot the failed measurement", LIMIT, || async {
        (count(&browser, ".analysis-chart circle.point.failed").await >= 1).then_some(())
    })
    .await;
    // Below its threshold: SVG's y grows downward.
    // Both read off the one chart that has the failed point (each chart has its own scale).
    let chart = ".analysis-chart:has(circle.failed)";
    let failed = attribute(&browser, &format!("{chart} circle.point.failed"), "cy").await;
    let threshold = attribute(&browser, &format!("{chart} line.threshold"), "y1").await;
    match (failed, threshold) {
        (Some(failed), Some(threshold)) => assert!(
            failed > threshold,
            "the failed measurement (y {failed}) lies below its threshold (y {threshold})"
        ),
        other => panic!("no failed point or threshold line on the analysis chart: {other:?}"),
    }
    screenshot(&browser, "rollout-failed").await;

    // The GitSync's timeline: the rejected revision with its metric, and weir's revert.
    browser
        .goto(&format!("{address}/gitsyncs/{}/app", ns.name))
        .await
        .unwrap_or_else(|e| panic!("opening the GitSync: {e}"));
    // The dashboard's watch may be a moment behind the API server: the live page catches up.
    let (rejected, reverted) =
        eventually("the timeline to show v3 and its revert", LIMIT, || async {
            let rejected = text(&browser, "#timeline li.rejected").await;
            let reverted = text(&browser, "#timeline li.reverted").await;
            (rejected.contains(&v3[..7]) && reverted.contains(&revert[..7]))
                .then_some((rejected, reverted))
        })
        .await;
    assert!(
        rejected.contains("AnalysisFailed") && rejected.contains("success-rate"),
        "the timeline shows v3 rejected by its metric: {rejected:?}"
    );
    assert!(
        reverted.contains("reverted in Git"),
        "the timeline shows weir's revert {revert}: {reverted:?}"
    );
    screenshot(&browser, "gitsync").await;

    // The same figures, as the controller's metrics: three revisions applied, one rejected,
    // and good served again after it.
    let series = format!("{{namespace=\"{}\",gitsync=\"app\"}}", ns.name);
    eventually("the delivery metrics", LIMIT, || async {
        let (_, text) = http_get(metrics_port, "/metrics").await?;
        let has = |line: String| text.lines().any(|l| l == line);
        (has(format!("weir_delivery_deployments{series} 3"))
            && has(format!("weir_delivery_failures{series} 1"))
            && text.contains(&format!("weir_delivery_time_to_restore_seconds{series} ")))
        .then_some(())
    })
    .await;
    browser
        .goto(&format!("{address}/gitsyncs"))
        .await
        .unwrap_or_else(|e| panic!("opening the GitSyncs: {e}"));
    // The list is live too: an element read while its `<main>` is swapped reads as empty.
    eventually("the GitSyncs list to show app", LIMIT, || async {
        text(&browser, "#gitsyncs")
            .await
            .contains("app")
            .then_some(())
    })
    .await;
    screenshot(&browser, "gitsyncs").await;
    let _ = browser.close().await;
}

/// What a page elsewhere in the same browser would try: reading the dashboard through
/// another host name, or posting a button without the form's token.
#[tokio::test]
async fn another_site_can_neither_read_nor_press() {
    let ns = TestNamespace::new(&client().await, "dashboard-guard").await;
    let (_dashboard, address) = dashboard(&ns);
    let port: u16 = address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("a port in {address}"));
    let http = reqwest::Client::new();
    let page = http
        .get(format!("{address}/"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()
            .get("content-security-policy")
            .is_some_and(|v| v.to_str().unwrap_or("").contains("frame-ancestors 'none'"))
    );
    let rebound = http
        .get(format!("{address}/"))
        .header("Host", format!("evil.example:{port}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rebound.status(), 421, "a rebound host name is refused");
    let forged = http
        .post(format!("{address}/rollouts/{}/web/abort", ns.name))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=guessed&confirmed=yes")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        forged.status(),
        403,
        "a post without the form's token is refused"
    );
    let cross_site = http
        .post(format!("{address}/rollouts/{}/web/abort", ns.name))
        .header("Origin", "https://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("confirmed=yes")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cross_site.status(), 403);
}
