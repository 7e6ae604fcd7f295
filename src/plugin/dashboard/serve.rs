//! `kubectl weir dashboard`: the server. It watches Rollouts, their ReplicaSets and
//! AnalysisRuns, and GitSyncs with the user's own kubeconfig (what the user may not read is
//! left out, with a note), renders the pages of `view` from what it holds, and sends each
//! open page its new fragment by server-sent events when what it shows changes. It listens on
//! loopback only; see `route` for who may ask.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as Sent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Event;
use kube::api::ListParams;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::Deserialize;
use tokio::sync::watch;

use super::action::Action;
use super::route::{self, Page};
use super::series::Seen;
use super::view;
use crate::api::analysis::AnalysisRun;
use crate::api::contract::ROLLOUT_LABEL;
use crate::api::gitsync::GitSync;
use crate::api::rollout::Rollout;
use crate::plugin::cluster::{Cluster, Failure, Request as Asked, explain};

/// How often an open page is rendered again even when no watched object changed: Events
/// are read at each render, not watched.
const REFRESH: Duration = Duration::from_secs(5);

pub struct Options {
    /// 0: any free port (printed).
    pub port: u16,
    pub all_namespaces: bool,
}

/// What the handlers share.
struct Shared {
    cluster: Cluster,
    /// None: every namespace.
    scope: Option<String>,
    rollouts: Store<Rollout>,
    replica_sets: Store<ReplicaSet>,
    runs: Store<AnalysisRun>,
    syncs: Store<GitSync>,
    seen: Mutex<Seen>,
    /// Bumped at every change a watch brings.
    changed: watch::Sender<u64>,
    /// What a watch could not read, by kind.
    problems: Mutex<BTreeMap<&'static str, String>>,
    token: String,
    port: u16,
}

type Dashboard = Arc<Shared>;

pub async fn serve(cluster: Cluster, options: Options) -> Result<ExitCode, Failure> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", options.port))
        .await
        .map_err(|e| format!("listening on 127.0.0.1:{}: {e}", options.port))?;
    let port = listener
        .local_addr()
        .map_err(|e| format!("reading the address listened on: {e}"))?
        .port();
    let scope = (!options.all_namespaces).then(|| cluster.namespace.clone());
    let mut token = [0u8; 16];
    aws_lc_rs::rand::fill(&mut token).map_err(|_| "no randomness for the form token")?;
    let token: String = token.iter().map(|b| format!("{b:02x}")).collect();

    let (rollouts, rollout_writer) = reflector::store();
    let (replica_sets, replica_set_writer) = reflector::store();
    let (runs, run_writer) = reflector::store();
    let (syncs, sync_writer) = reflector::store();
    let (changed, _) = watch::channel(0);
    let shared: Dashboard = Arc::new(Shared {
        cluster,
        scope,
        rollouts,
        replica_sets,
        runs,
        syncs,
        seen: Mutex::new(Seen::default()),
        changed,
        problems: Mutex::new(BTreeMap::new()),
        token,
        port,
    });
    let all = watcher::Config::default();
    let managed = watcher::Config::default().labels(ROLLOUT_LABEL);
    follow(
        &shared,
        "Rollouts",
        "rollouts",
        rollout_writer,
        all.clone(),
        note_weights,
    );
    follow(
        &shared,
        "ReplicaSets",
        "replicasets",
        replica_set_writer,
        managed,
        nothing,
    );
    follow(
        &shared,
        "AnalysisRuns",
        "analysisruns",
        run_writer,
        all.clone(),
        nothing,
    );
    follow(&shared, "GitSyncs", "gitsyncs", sync_writer, all, nothing);

    let app = Router::new()
        .route("/live.js", get(script))
        .route("/live", get(live))
        .route("/rollouts/{namespace}/{name}/{action}", post(act))
        .fallback(get(page))
        .layer(middleware::from_fn_with_state(shared.clone(), guard))
        .with_state(shared.clone());
    let scope = match &shared.scope {
        Some(namespace) => format!("namespace {namespace}"),
        None => "all namespaces".to_owned(),
    };
    println!("weir dashboard for {scope}: http://127.0.0.1:{port}/ (Ctrl-C to stop)");
    // Ctrl-C ends it at once: open pages hold their live streams forever, so there is no
    // graceful end to wait for.
    tokio::select! {
        served = axum::serve(listener, app) => {
            served.map_err(|e| format!("serving the dashboard: {e}"))?;
        }
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// Keeps `writer` filled from a watch of `K` in the dashboard's scope, for as long as the
/// dashboard runs; a watch that fails (no permission) is a note on the pages and is tried
/// again with backoff.
fn follow<K>(
    shared: &Dashboard,
    kind: &'static str,
    resource: &'static str,
    writer: reflector::store::Writer<K>,
    config: watcher::Config,
    observe: fn(&Shared, &watcher::Event<K>),
) where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let client = shared.cluster.client.clone();
    let api: Api<K> = match &shared.scope {
        Some(namespace) => Api::namespaced(client, namespace),
        None => Api::all(client),
    };
    let shared = shared.clone();
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => {
                    if let Ok(mut problems) = shared.problems.lock() {
                        problems.remove(kind);
                    }
                    observe(&shared, &event);
                    shared.changed.send_modify(|n| *n = n.wrapping_add(1));
                }
                Err(error) => {
                    let said = watch_failure(error, resource, shared.scope.as_deref());
                    if let Ok(mut problems) = shared.problems.lock() {
                        problems.insert(kind, format!("{kind} not shown: {said}"));
                    }
                    shared.changed.send_modify(|n| *n = n.wrapping_add(1));
                }
            }
        }
    });
}

/// Each Rollout's weight as the watch sees it change, for the weight chart.
fn note_weights(shared: &Shared, event: &watcher::Event<Rollout>) {
    let now = chrono::Utc::now().timestamp();
    let Ok(mut seen) = shared.seen.lock() else {
        return;
    };
    match event {
        watcher::Event::Apply(rollout) | watcher::Event::InitApply(rollout) => {
            let weight = rollout
                .status
                .as_ref()
                .and_then(|s| s.canary_weight)
                .unwrap_or(0);
            seen.record(
                &rollout.namespace().unwrap_or_default(),
                &rollout.name_any(),
                now,
                f64::from(weight),
            );
        }
        watcher::Event::Delete(rollout) => {
            seen.forget(
                &rollout.namespace().unwrap_or_default(),
                &rollout.name_any(),
            );
        }
        watcher::Event::Init | watcher::Event::InitDone => {}
    }
}

fn nothing<K>(_: &Shared, _: &watcher::Event<K>) {}

fn watch_failure(error: watcher::Error, resource: &str, scope: Option<&str>) -> String {
    let asked = Asked {
        verb: "watch",
        resource,
        name: None,
        namespace: scope,
    };
    match error {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => explain(e, &asked),
        watcher::Error::WatchError(status) => explain(kube::Error::Api(status), &asked),
        other => other.to_string(),
    }
}

/// Refuses what is not the dashboard's own (see `route`), and sets the headers every answer
/// carries: no framing, no sniffing, scripts and connections to this server only. The
/// referrer policy is same-origin, not no-referrer: under no-referrer a browser posts the
/// buttons' forms with `Origin: null`, which the Origin check must refuse.
async fn guard(
    State(shared): State<Dashboard>,
    request: Request<axum::body::Body>,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    if !route::own_host(host, shared.port) {
        return (
            StatusCode::MISDIRECTED_REQUEST,
            "this dashboard answers only at its own loopback address",
        )
            .into_response();
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; \
             img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("live.js"),
    )
}

async fn page(State(shared): State<Dashboard>, uri: Uri) -> Response {
    match route::page(uri.path(), uri.query()) {
        Ok(page) => {
            let (title, main) = render(&shared, &page).await;
            Html(view::document(&title, &scope_text(&shared), &main)).into_response()
        }
        Err(why) => (
            StatusCode::NOT_FOUND,
            Html(view::document(
                "Not found",
                &scope_text(&shared),
                &format!("<h1>Not found</h1><p>{}</p>", super::html::escape(&why)),
            )),
        )
            .into_response(),
    }
}

fn scope_text(shared: &Shared) -> String {
    match &shared.scope {
        Some(namespace) => format!("namespace {namespace}"),
        None => "all namespaces".to_owned(),
    }
}

/// A page's title and `<main>` fragment, from what the watches hold now.
async fn render(shared: &Shared, page: &Page) -> (String, String) {
    let now = chrono::Utc::now();
    let mut notes: Vec<String> = shared
        .problems
        .lock()
        .map(|p| p.values().cloned().collect())
        .unwrap_or_default();
    match page {
        Page::Rollouts => {
            let mut rollouts: Vec<Rollout> = shared
                .rollouts
                .state()
                .iter()
                .map(|r| (**r).clone())
                .collect();
            rollouts.sort_by_key(|r| (r.namespace(), r.name_any()));
            ("Rollouts".into(), view::rollouts(&rollouts, &notes))
        }
        Page::Rollout { namespace, name } => {
            let key = ObjectRef::new(name).within(namespace);
            let Some(rollout) = shared.rollouts.get(&key) else {
                return (
                    format!("{namespace}/{name}"),
                    gone("Rollout", namespace, name),
                );
            };
            let owned = |labels: &std::collections::BTreeMap<String, String>,
                         ns: Option<String>| {
                ns.as_deref() == Some(namespace.as_str()) && labels.get(ROLLOUT_LABEL) == Some(name)
            };
            let replica_sets: Vec<Arc<ReplicaSet>> = shared
                .replica_sets
                .state()
                .into_iter()
                .filter(|rs| owned(rs.labels(), rs.namespace()))
                .collect();
            let runs: Vec<Arc<AnalysisRun>> = shared
                .runs
                .state()
                .into_iter()
                .filter(|run| owned(run.labels(), run.namespace()))
                .collect();
            let replica_sets: Vec<&ReplicaSet> = replica_sets.iter().map(|r| &**r).collect();
            let runs: Vec<&AnalysisRun> = runs.iter().map(|r| &**r).collect();
            let events = events_of(shared, "Rollout", namespace, name, &mut notes).await;
            let seen = shared
                .seen
                .lock()
                .map(|s| s.of(namespace, name))
                .unwrap_or_default();
            let main = view::rollout(&view::RolloutPage {
                rollout: &rollout,
                replica_sets: &replica_sets,
                runs: &runs,
                events: &events,
                seen: &seen,
                token: &shared.token,
                notes: &notes,
                now,
            });
            (format!("{namespace}/{name}"), main)
        }
        Page::GitSyncs { window } => {
            let mut syncs: Vec<GitSync> =
                shared.syncs.state().iter().map(|s| (**s).clone()).collect();
            syncs.sort_by_key(|s| (s.namespace(), s.name_any()));
            let window = Page::window(*window, now.timestamp());
            ("GitSyncs".into(), view::gitsyncs(&syncs, window, &notes))
        }
        Page::GitSync {
            namespace,
            name,
            window,
        } => {
            let key = ObjectRef::new(name).within(namespace);
            let Some(sync) = shared.syncs.get(&key) else {
                return (
                    format!("{namespace}/{name}"),
                    gone("GitSync", namespace, name),
                );
            };
            let events = events_of(shared, "GitSync", namespace, name, &mut notes).await;
            let main = view::gitsync(&view::GitSyncPage {
                sync: &sync,
                events: &events,
                window: Page::window(*window, now.timestamp()),
                notes: &notes,
                now,
            });
            (format!("{namespace}/{name}"), main)
        }
    }
}

fn gone(kind: &str, namespace: &str, name: &str) -> String {
    format!(
        "<h1>{kind} {ns}/{name}</h1><p>No {kind} {ns}/{name} is watched here: it was deleted, or is \
         outside this dashboard's namespaces.</p>",
        ns = super::html::escape(namespace),
        name = super::html::escape(name)
    )
}

/// The object's Events, read at each render; a read that fails is a note.
async fn events_of(
    shared: &Shared,
    kind: &str,
    namespace: &str,
    name: &str,
    notes: &mut Vec<String>,
) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(shared.cluster.client.clone(), namespace);
    let fields = format!("involvedObject.kind={kind},involvedObject.name={name}");
    match api.list(&ListParams::default().fields(&fields)).await {
        Ok(list) => list.items,
        Err(error) => {
            notes.push(format!(
                "Events not shown: {}",
                explain(
                    error,
                    &Asked {
                        verb: "list",
                        resource: "events",
                        name: None,
                        namespace: Some(namespace),
                    }
                )
            ));
            Vec::new()
        }
    }
}

#[derive(Deserialize)]
struct LiveQuery {
    page: String,
}

/// The page's fragment, sent again whenever it changes: at each change the watches bring,
/// and every few seconds for the Events.
async fn live(
    State(shared): State<Dashboard>,
    Query(query): Query<LiveQuery>,
) -> Result<Sse<impl Stream<Item = Result<Sent, Infallible>>>, StatusCode> {
    let (path, search) = match query.page.split_once('?') {
        Some((path, search)) => (path.to_owned(), Some(search.to_owned())),
        None => (query.page.clone(), None),
    };
    let page = route::page(&path, search.as_deref()).map_err(|_| StatusCode::NOT_FOUND)?;
    let changes = shared.changed.subscribe();
    let first = true;
    let stream = futures::stream::unfold(
        (shared, page, changes, String::new(), first),
        |(shared, page, mut changes, mut last, mut first)| async move {
            loop {
                if !first {
                    tokio::select! {
                        changed = changes.changed() => {
                            // The dashboard is stopping.
                            changed.ok()?;
                        }
                        _ = tokio::time::sleep(REFRESH) => {}
                    }
                }
                first = false;
                let (_, main) = render(&shared, &page).await;
                if main != last {
                    // SSE cannot carry a carriage return; in HTML it is the same as its
                    // character reference.
                    let sent = Sent::default().data(main.replace('\r', "&#13;"));
                    last = main;
                    return Some((Ok(sent), (shared, page, changes, last, first)));
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[derive(Deserialize)]
struct Posted {
    token: Option<String>,
    confirmed: Option<String>,
}

/// A button: first the confirmation page, then (confirmed) the plugin's own patch.
async fn act(
    State(shared): State<Dashboard>,
    Path((namespace, name, action)): Path<(String, String, String)>,
    headers: HeaderMap,
    Form(posted): Form<Posted>,
) -> Response {
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    if !route::own_origin(origin, shared.port)
        || !route::token_matches(posted.token.as_deref(), &shared.token)
    {
        return (
            StatusCode::FORBIDDEN,
            Html(view::document(
                "Refused",
                &scope_text(&shared),
                "<h1>Refused</h1><p>This form did not come from this dashboard (or the dashboard \
                 was restarted since it was loaded): reload the page and press the button again.</p>",
            )),
        )
            .into_response();
    }
    let Some(action) = Action::from_slug(&action) else {
        return (StatusCode::NOT_FOUND, "no such action").into_response();
    };
    let title = format!("{} {namespace}/{name}", action.label());
    if posted.confirmed.as_deref() != Some("yes") {
        let main = view::confirm(&namespace, &name, action, &shared.token);
        return Html(view::document(&title, &scope_text(&shared), &main)).into_response();
    }
    let outcome = shared
        .cluster
        .in_namespace(&namespace)
        .control(&name, action.control())
        .await
        .map_err(|Failure(why)| why);
    let main = view::acted(&namespace, &name, &outcome);
    Html(view::document(&title, &scope_text(&shared), &main)).into_response()
}
