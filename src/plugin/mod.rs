//! `kubectl weir`: the operator's plugin. The commands and their flags (`cli`), and the thin
//! I/O around the pure parts: `show` (list, get), `control` (promote, abort, retry, pause,
//! resume), `wait` (status), `history`, `undo`, `lint`, `diff` and the `dashboard`; `cluster`
//! is the connection they act through.

mod cli;
mod cluster;
pub mod control;
pub mod dashboard;
pub mod diff;
pub mod fleet;
pub mod history;
pub mod lint;
pub mod show;
pub mod undo;
pub mod wait;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::CommandFactory;
use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};

use self::cluster::{Cluster, Failure, Request, explain};
use self::control::Control;
use self::wait::Standing;
use crate::api::analysis::AnalysisRun;
use crate::api::contract::ROLLBACK_TO_ANNOTATION;
use crate::api::gitsync::GitSync;
use crate::api::rollout::Rollout;

pub use self::cli::{Cli, Command, Format, KubeArgs};

/// Runs a command; its exit code follows kubectl's (0 fine, 1 an error).
pub async fn run(cli: Cli) -> ExitCode {
    match execute(cli).await {
        Ok(code) => code,
        Err(Failure(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
    }
}

async fn execute(cli: Cli) -> Result<ExitCode, Failure> {
    let kube = cli.kube;
    match cli.command {
        Command::Version => {
            println!("kubectl-weir {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Completion { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "kubectl-weir", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Lint { files } => Ok(lint_files(&files)),
        Command::Diff {
            name,
            revision,
            default_service_account,
            allow_cross_namespace,
        } => {
            let policy = tenancy_policy(default_service_account, allow_cross_namespace);
            match gitsync_diff(&kube, &name, revision.as_deref(), policy).await {
                Ok(code) => Ok(code),
                Err(Failure(message)) => {
                    eprintln!("error: {message}");
                    Ok(ExitCode::from(2))
                }
            }
        }
        Command::List { all_namespaces } => {
            let cluster = Cluster::connect(&kube).await?;
            let api: Api<Rollout> = if all_namespaces {
                Api::all(cluster.client.clone())
            } else {
                cluster.api()
            };
            let mut rollouts = api
                .list(&ListParams::default())
                .await
                .map_err(|e| {
                    let mut request = cluster.here("list", "rollouts", None);
                    if all_namespaces {
                        request.namespace = None;
                    }
                    cluster.explain(e, &request)
                })?
                .items;
            rollouts.sort_by_key(|r| (r.namespace(), r.name_any()));
            print!(
                "{}",
                show::list(&rollouts, all_namespaces, chrono::Utc::now())
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Get {
            name,
            watch,
            output,
        } => {
            let cluster = Cluster::connect(&kube).await?;
            if let Some(format) = output {
                let rollout = cluster.rollout(&name).await?;
                let text = match format {
                    Format::Json => serde_json::to_string_pretty(&rollout)
                        .map_err(|e| format!("printing {name}: {e}"))?,
                    Format::Yaml => serde_yaml_ng::to_string(&rollout)
                        .map_err(|e| format!("printing {name}: {e}"))?,
                };
                println!("{}", text.trim_end());
                return Ok(ExitCode::SUCCESS);
            }
            if !watch {
                let observed = cluster.observe(&name).await?;
                print!("{}", show::get(&observed, chrono::Utc::now()));
                return Ok(ExitCode::SUCCESS);
            }
            watch_rollout(&cluster, &name).await
        }
        Command::Promote {
            name,
            full,
            revision,
        } => match name
            .strip_prefix("gitsync/")
            .or_else(|| name.strip_prefix("gitsyncs/"))
        {
            Some(sync) => promote_git_sync(&kube, sync, revision.as_deref()).await,
            None if revision.is_some() => Err(Failure(
                "--revision approves a GitSync's promotion: write gitsync/NAME".into(),
            )),
            None => control(&kube, &name, Control::Promote { full }).await,
        },
        Command::Abort { name } => control(&kube, &name, Control::Abort).await,
        Command::Retry { name } => control(&kube, &name, Control::Retry).await,
        Command::Pause { name } => control(&kube, &name, Control::Pause).await,
        Command::Resume { name } => control(&kube, &name, Control::Resume).await,
        Command::Undo { name, to_revision } => undo(&kube, &name, to_revision.as_deref()).await,
        Command::Fleet { all_namespaces } => {
            let cluster = Cluster::connect(&kube).await?;
            let api: Api<GitSync> = if all_namespaces {
                Api::all(cluster.client.clone())
            } else {
                cluster.api()
            };
            let syncs = api
                .list(&ListParams::default())
                .await
                .map_err(|e| cluster.explain(e, &cluster.here("list", "gitsyncs", None)))?
                .items;
            print!("{}", fleet::fleet(&syncs, chrono::Utc::now()));
            Ok(ExitCode::SUCCESS)
        }
        Command::Dashboard {
            port,
            all_namespaces,
        } => {
            let cluster = Cluster::connect(&kube).await?;
            let options = dashboard::serve::Options {
                port,
                all_namespaces,
            };
            dashboard::serve::serve(cluster, options).await
        }
        Command::History { name } => {
            let cluster = Cluster::connect(&kube).await?;
            let rollout = cluster.rollout(&name).await?;
            let runs = cluster.owned::<AnalysisRun>(&name, "analysisruns").await?;
            let now = chrono::Utc::now();
            let text = match cluster.managing_sync(&rollout).await? {
                Some(sync) => {
                    history::from_git(&rollout, &sync.status.unwrap_or_default(), &runs, now)
                }
                None => {
                    let replica_sets = cluster.owned::<ReplicaSet>(&name, "replicasets").await?;
                    history::from_replica_sets(&rollout, &replica_sets, &runs, now)
                }
            };
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Status {
            name,
            timeout,
            revision,
        } => match Cluster::connect(&kube).await {
            Ok(cluster) => status(&cluster, &name, timeout, revision.as_deref()).await,
            Err(Failure(message)) => {
                eprintln!("error: {message}");
                Ok(ExitCode::from(COULD_NOT_TELL))
            }
        },
    }
}

fn lint_files(files: &[PathBuf]) -> ExitCode {
    let (mut errors, mut checked) = (0, 0);
    let mut texts = Vec::new();
    for file in files {
        let shown = file.display().to_string();
        match std::fs::read_to_string(file) {
            Ok(text) => texts.push((shown, text)),
            Err(e) => {
                println!("{shown}: cannot be read: {e}");
                errors += 1;
            }
        }
    }
    // As one set: a Rollout's templates may be in another of the files.
    let report = lint::lint_all(&texts);
    for line in &report.lines {
        println!("{line}");
    }
    errors += report.errors;
    checked += report.checked;
    println!(
        "{checked} weir document{} checked, {errors} problem{}",
        if checked == 1 { "" } else { "s" },
        if errors == 1 { "" } else { "s" }
    );
    if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Fetches the GitSync's repository into a temporary clone, renders the revision as the
/// controller would, and previews its apply as the GitSync's identity.
/// The controller's tenancy flags, as `diff` is told them.
fn tenancy_policy(
    default_service_account: String,
    allow_cross_namespace: bool,
) -> crate::gitops::tenancy::Policy {
    crate::gitops::tenancy::Policy {
        default_service_account: Some(default_service_account),
        allow_cross_namespace,
        ..crate::gitops::tenancy::Policy::default()
    }
}

async fn gitsync_diff(
    kube: &KubeArgs,
    name: &str,
    revision: Option<&str>,
    policy: crate::gitops::tenancy::Policy,
) -> Result<ExitCode, Failure> {
    use crate::gitops::{apply, credentials, render, revision as rendered, source, tenancy};
    let cluster = Cluster::connect(kube).await?;
    let namespace = cluster.namespace.clone();
    let sync: GitSync = cluster
        .api()
        .get(name)
        .await
        .map_err(|e| cluster.explain(e, &cluster.here("get", "gitsyncs", Some(name))))?;
    if let Some(first) = crate::validate::git_sync(&sync.spec).first() {
        return Err(format!("GitSync {namespace}/{name} is invalid: {first}").into());
    }
    // Previewed here, a remote GitSync's diff would compare with the wrong cluster.
    if sync.spec.kube_config.is_some() {
        return Err(format!(
            "GitSync {namespace}/{name} applies to another cluster (spec.kubeConfig), which kubectl weir diff does not preview yet: run it with a kubeconfig for that cluster's weir, or compare there with kubectl diff"
        )
        .into());
    }
    let spec = &sync.spec;
    let credentials = match &spec.secret_ref {
        None => credentials::Credentials::Anonymous,
        Some(reference) => {
            let secret: k8s_openapi::api::core::v1::Secret =
                cluster.api().get(&reference.name).await.map_err(|e| {
                    cluster.explain(e, &cluster.here("get", "secrets", Some(&reference.name)))
                })?;
            credentials::from_secret(
                &spec.url,
                &format!("{namespace}/{}", reference.name),
                &secret.data.unwrap_or_default(),
            )?
        }
    };
    let clone = tempfile::tempdir().map_err(|e| format!("making a temporary clone: {e}"))?;
    let (dir, url, git_ref) = (
        clone.path().to_owned(),
        spec.url.clone(),
        spec.git_ref.clone(),
    );
    let limits = source::FetchLimits::new(Duration::from_secs(60), 512 << 20);
    let fetched = tokio::task::spawn_blocking(move || {
        source::fetch(&dir, &url, &git_ref, &credentials, &limits)
    })
    .await
    .map_err(|_| "the fetch was interrupted".to_owned())?
    .map_err(|e| format!("fetching {}: {e}", source::without_credentials(&spec.url)))?;
    let status = sync.status.clone().unwrap_or_default();
    let target_revision = match revision {
        None => fetched.revision.clone(),
        Some(prefix) => std::iter::once(fetched.revision.clone())
            .chain(status.history.iter().map(|h| h.revision.clone()))
            .chain(status.last_applied_revision.clone())
            .find(|known| known.starts_with(prefix))
            .ok_or_else(|| {
                format!(
                    "revision {prefix} is neither the ref's head ({}) nor a revision GitSync {namespace}/{name} tried",
                    crate::gitops::status::short(&fetched.revision)
                )
            })?,
    };
    // The decryption keys, read with the operator's own rights, like the credentials.
    let identities = match spec.decryption.as_ref().and_then(|d| d.secret_ref.as_ref()) {
        None => None,
        Some(reference) => {
            let secret: k8s_openapi::api::core::v1::Secret =
                cluster.api().get(&reference.name).await.map_err(|e| {
                    cluster.explain(e, &cluster.here("get", "secrets", Some(&reference.name)))
                })?;
            let described = format!(
                "Secret {namespace}/{} (spec.decryption.secretRef)",
                reference.name
            );
            let data = secret.data.unwrap_or_default();
            let identities = crate::gitops::sops::Identities::from_secret(
                &described,
                data.iter().map(|(k, v)| (k.as_str(), v.0.as_slice())),
            )?;
            Some(std::sync::Arc::new(identities))
        }
    };
    let rendering = rendered::Rendering {
        clone: clone.path().to_owned(),
        path: spec.path.clone(),
        limits: render::Limits::default(),
        kustomize: crate::gitops::kustomize::find(),
        allow_remote: spec.kustomize.allow_remote,
        identities,
    };
    let manifests = match rendered::render(rendering, &target_revision).await {
        Ok(rendered) => rendered.manifests,
        Err(rendered::Failure::Read(message)) => return Err(message.into()),
        Err(rendered::Failure::Render { message, .. }) => {
            return Err(format!(
                "revision {} does not render, so the controller would apply none of it: {message}",
                crate::gitops::status::short(&target_revision)
            )
            .into());
        }
    };
    let identity = tenancy::identity(&policy, &namespace, spec.service_account_name.as_deref());
    let client = crate::runtime::impersonation::Impersonation::new(
        cluster.config.clone(),
        cluster.client.clone(),
    )
    .client(identity.user().as_deref())
    .map_err(|e| format!("acting as {}: {e}", identity.describe()))?;
    let term = crate::runtime::leader::Leadership::always().term_in(0);
    let owner = format!("{namespace}/{name}");
    let target = apply::Applier {
        client: &client,
        identity: &identity,
        reader: &cluster.client,
        policy: &policy,
        term: &term,
        scope: Some(&namespace),
        owner: &owner,
        namespace: &namespace,
        revision: &target_revision,
        prune: spec.prune,
    };
    let preview = apply::preview(&target, manifests, &status.inventory)
        .await
        .map_err(|error| error.message)?;
    let (text, changed) = diff::report(&target_revision, &preview);
    print!("{text}");
    Ok(if changed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

async fn control(kube: &KubeArgs, name: &str, control: Control) -> Result<ExitCode, Failure> {
    let cluster = Cluster::connect(kube).await?;
    println!("{}", cluster.control(name, control).await?);
    Ok(ExitCode::SUCCESS)
}

/// Approves a revision for a GitSync whose promotion waits for a person.
async fn promote_git_sync(
    kube: &KubeArgs,
    name: &str,
    revision: Option<&str>,
) -> Result<ExitCode, Failure> {
    let cluster = Cluster::connect(kube).await?;
    let api: Api<GitSync> = cluster.api();
    let sync = api
        .get(name)
        .await
        .map_err(|e| cluster.explain(e, &cluster.here("get", "gitsyncs", Some(name))))?;
    let (approved, patch) = control::approve_promotion(&sync, revision)?;
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| cluster.explain(e, &cluster.here("patch", "gitsyncs", Some(name))))?;
    println!(
        "approved revision {approved} for GitSync {name}: it is applied once it is good upstream and has soaked"
    );
    Ok(ExitCode::SUCCESS)
}

async fn undo(kube: &KubeArgs, name: &str, to: Option<&str>) -> Result<ExitCode, Failure> {
    let cluster = Cluster::connect(kube).await?;
    let rollout = cluster.rollout(name).await?;
    if let Some(sync) = cluster.managing_sync(&rollout).await? {
        let status = sync.status.clone().unwrap_or_default();
        let revision = undo::revision_to_pin(&status, to)?;
        let subject = status
            .history
            .iter()
            .find(|h| h.revision == revision)
            .map(|h| format!(" {:?}", h.subject))
            .unwrap_or_default();
        let sync_namespace = sync.namespace().unwrap_or_default();
        let api: Api<GitSync> = Api::namespaced(cluster.client.clone(), &sync_namespace);
        let patch =
            serde_json::json!({"metadata": {"annotations": {ROLLBACK_TO_ANNOTATION: revision}}});
        api.patch(
            &sync.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|e| {
            cluster.explain(
                e,
                &Request {
                    verb: "patch",
                    resource: "gitsyncs",
                    name: Some(&sync.name_any()),
                    namespace: Some(&sync_namespace),
                },
            )
        })?;
        println!(
            "{name}: GitSync {sync_namespace}/{} applies revision {}{subject} and holds it until its ref moves; {name} follows",
            sync.name_any(),
            show::short(&revision)
        );
        return Ok(ExitCode::SUCCESS);
    }
    let replica_sets = cluster.owned::<ReplicaSet>(name, "replicasets").await?;
    let runs = cluster.owned::<AnalysisRun>(name, "analysisruns").await?;
    let restore = undo::template_to_restore(&rollout, &replica_sets, &runs, to)?;
    let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
        {"op": "replace", "path": "/spec/template", "value": restore.template}
    ]))
    .map_err(|e| format!("building the patch: {e}"))?;
    let api: Api<Rollout> = cluster.api();
    api.patch(name, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
        .map_err(|e| cluster.explain(e, &cluster.here("patch", "rollouts", Some(name))))?;
    let stable = rollout.status.as_ref().and_then(|s| s.stable_rs.as_ref());
    let then = if !restore.exact {
        "its copy was made before weir kept templates and carries the API server's defaults, so it goes through the canary steps as a new version"
    } else if stable == Some(&restore.hash) {
        "it is the stable one: traffic is all on it at once, with no steps"
    } else {
        "it goes through the canary steps"
    };
    println!(
        "{name}: the template of ReplicaSet {} is back; {then}",
        restore.hash
    );
    Ok(ExitCode::SUCCESS)
}

/// How often `get -w` and `status` look again.
const POLL: Duration = Duration::from_secs(1);

/// `status` could not tell: the Rollout is gone, permission is missing, or the command was
/// given wrongly. Not 1 or 2, which a pipeline reads as Degraded or timed out.
pub const COULD_NOT_TELL: u8 = 3;

async fn status(
    cluster: &Cluster,
    name: &str,
    timeout: Duration,
    revision: Option<&str>,
) -> Result<ExitCode, Failure> {
    let deadline = tokio::time::Instant::now() + timeout;
    let api: Api<Rollout> = cluster.api();
    let mut last = String::new();
    loop {
        // Every request ends by the deadline, even against an API server that hangs.
        let looked = tokio::time::timeout_at(deadline, async {
            let rollout = api.get(name).await?;
            // Without read access to GitSyncs, the Rollout alone is judged.
            let sync = cluster.managing_sync(&rollout).await.ok().flatten();
            Ok::<_, kube::Error>(match sync {
                Some(sync) => Some(wait::standing_in_git(&rollout, &sync, revision)),
                None if revision.is_some() => None,
                None => Some(wait::standing(&rollout)),
            })
        });
        let line = match looked.await {
            Err(_) => None,
            Ok(Ok(None)) => {
                eprintln!(
                    "error: {name} is not applied by a GitSync (or its GitSync cannot be read), \
                     so it has no Git revision to wait for; leave out --revision"
                );
                return Ok(ExitCode::from(COULD_NOT_TELL));
            }
            Ok(Ok(Some(standing))) => match standing {
                Standing::Healthy(line) => {
                    println!("{name}: {line}");
                    return Ok(ExitCode::SUCCESS);
                }
                Standing::Degraded(line) => {
                    println!("{name}: {line}");
                    return Ok(ExitCode::from(1));
                }
                Standing::Going(line) => Some(line),
            },
            // A blip of the API server is not the rollout's verdict: try again.
            Ok(Err(error)) if crate::runtime::error::transient(&error) => Some(format!(
                "cannot tell for now ({}); trying again",
                explain(error, &cluster.here("get", "rollouts", Some(name)))
            )),
            Ok(Err(error)) => {
                eprintln!(
                    "error: {}",
                    explain(error, &cluster.here("get", "rollouts", Some(name)))
                );
                return Ok(ExitCode::from(COULD_NOT_TELL));
            }
        };
        if let Some(line) = line
            && line != last
        {
            println!("{name}: {line}");
            last = line;
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            println!(
                "{name}: still not Healthy after {}s: {last}",
                timeout.as_secs()
            );
            return Ok(ExitCode::from(2));
        }
        tokio::time::sleep_until((now + POLL).min(deadline)).await;
    }
}

async fn watch_rollout(cluster: &Cluster, name: &str) -> Result<ExitCode, Failure> {
    use tokio::signal::unix::{SignalKind, signal};
    let terminal = std::io::stdout().is_terminal();
    // One handler for the whole watch, so no Ctrl-C is missed between two looks.
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|e| format!("watching for Ctrl-C: {e}"))?;
    let mut last = String::new();
    loop {
        let observed = tokio::select! {
            _ = interrupt.recv() => return Ok(ExitCode::SUCCESS),
            observed = cluster.observe(name) => observed,
        };
        let text = match observed {
            Ok(observed) if terminal => show::get(&observed, chrono::Utc::now()),
            Ok(observed) => summary(&observed.rollout),
            // Gone or forbidden: the watch is over.
            Err(Failure(message)) if !message.starts_with("cannot reach") => {
                return Err(Failure(message));
            }
            Err(Failure(message)) => format!("{message}; trying again"),
        };
        if text != last {
            let mut out = std::io::stdout().lock();
            if terminal {
                // Home and clear, then the whole view: a redraw in place.
                let _ = write!(out, "\x1b[H\x1b[2J{text}");
            } else {
                let _ = writeln!(out, "{text}");
            }
            let _ = out.flush();
            last = text;
        }
        tokio::select! {
            _ = interrupt.recv() => return Ok(ExitCode::SUCCESS),
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// One line for a change seen by `get -w` off a terminal.
fn summary(rollout: &Rollout) -> String {
    let status = rollout.status.clone().unwrap_or_default();
    format!(
        "{} {} step={} weight={}% stable={} canary={}{}",
        rollout.name_any(),
        status.phase.map_or("Pending".into(), |p| format!("{p:?}")),
        show::step_of(rollout),
        status.canary_weight.unwrap_or(0),
        status.stable_rs.as_deref().unwrap_or("-"),
        status.canary_rs.as_deref().unwrap_or("-"),
        status
            .message
            .map(|m| format!(" message={m:?}"))
            .unwrap_or_default()
    )
}

#[cfg(test)]
mod tests;
