//! The connection `kubectl weir`'s commands act through, and how a failed request is said:
//! not found, no permission (with the verb and resource to ask for), or the server's words.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::api::{ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, ResourceExt};

use super::cli::KubeArgs;
use super::control::{self, Control, Part};
use super::show::Observed;
use crate::api::analysis::AnalysisRun;
use crate::api::contract::{GITSYNC_ANNOTATION, ROLLOUT_LABEL};
use crate::api::experiment::Experiment;
use crate::api::gitsync::GitSync;
use crate::api::rollout::Rollout;
use crate::traffic::{RouterView, Routers};

/// What went wrong, in one line for the operator.
pub struct Failure(pub String);

impl<T: Into<String>> From<T> for Failure {
    fn from(text: T) -> Failure {
        Failure(text.into())
    }
}
/// What the user may not read is left out, with a note, rather than failing the view.
pub fn allowed<T>(
    result: Result<T, Failure>,
    what: &str,
    notes: &mut Vec<String>,
) -> Result<Option<T>, Failure> {
    match result {
        Ok(found) => Ok(Some(found)),
        Err(Failure(message)) if message.starts_with("no permission") => {
            notes.push(format!("{what} not shown: {message}"));
            Ok(None)
        }
        Err(failure) => Err(failure),
    }
}

/// What a request was, to explain its failure.
pub struct Request<'a> {
    pub verb: &'a str,
    /// The plural resource, with a subresource (`rollouts/status`).
    pub resource: &'a str,
    pub name: Option<&'a str>,
    /// None: all namespaces.
    pub namespace: Option<&'a str>,
}

pub fn explain(error: kube::Error, request: &Request) -> String {
    let place = match request.namespace {
        Some(namespace) => format!("in namespace {namespace}"),
        None => "in any namespace".to_owned(),
    };
    let Request { verb, resource, .. } = request;
    let kind = resource
        .split('/')
        .next()
        .unwrap_or(resource)
        .trim_end_matches('s');
    match (error, request.name) {
        (kube::Error::Api(status), Some(name)) if status.code == 404 => {
            format!("{kind} {name} not found {place}")
        }
        (kube::Error::Api(status), None) if status.code == 404 => format!(
            "the server has no {resource}: are weir's CRDs installed (`weir crds | kubectl apply -f -`)?"
        ),
        (kube::Error::Api(status), _) if status.code == 403 => format!(
            "no permission to {verb} {resource} {place} (ask for RBAC that allows it): {}",
            status.message
        ),
        (kube::Error::Api(status), name) => format!(
            "{verb} {resource}{} {place}: {}",
            name.map(|n| format!(" {n}")).unwrap_or_default(),
            status.message
        ),
        (other, _) => format!("cannot reach the cluster: {other}"),
    }
}

/// A connection, and the namespace commands act in.
pub struct Cluster {
    pub client: Client,
    /// What `client` was made from: `diff` makes a client that impersonates from it.
    pub config: Config,
    pub namespace: String,
}

impl Cluster {
    pub async fn connect(args: &KubeArgs) -> Result<Cluster, Failure> {
        let options = KubeConfigOptions {
            context: args.context.clone(),
            cluster: None,
            user: None,
        };
        let config = match &args.kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path)
                    .map_err(|e| format!("reading kubeconfig {}: {e}", path.display()))?;
                Config::from_custom_kubeconfig(kubeconfig, &options).await
            }
            None => Config::from_kubeconfig(&options).await,
        }
        .map_err(|e| format!("reading the kubeconfig: {e}"))?;
        let namespace = args
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config.clone())
            .map_err(|e| format!("connecting to the cluster: {e}"))?;
        Ok(Cluster {
            client,
            config,
            namespace,
        })
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// One line: not found, no permission (with verb and resource), or what the server said.
    pub fn explain(&self, error: kube::Error, request: &Request) -> Failure {
        Failure(explain(error, request))
    }

    /// A request in this cluster's namespace.
    pub fn here<'a>(
        &'a self,
        verb: &'a str,
        resource: &'a str,
        name: Option<&'a str>,
    ) -> Request<'a> {
        Request {
            verb,
            resource,
            name,
            namespace: Some(&self.namespace),
        }
    }

    pub async fn rollout(&self, name: &str) -> Result<Rollout, Failure> {
        self.api::<Rollout>()
            .get(name)
            .await
            .map_err(|e| self.explain(e, &self.here("get", "rollouts", Some(name))))
    }

    pub async fn owned<K>(&self, rollout: &str, resource: &str) -> Result<Vec<K>, Failure>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        <K as kube::Resource>::DynamicType: Default,
    {
        let labels = ListParams::default().labels(&format!("{ROLLOUT_LABEL}={rollout}"));
        Ok(self
            .api::<K>()
            .list(&labels)
            .await
            .map_err(|e| self.explain(e, &self.here("list", resource, None)))?
            .items)
    }

    /// This connection acting in another namespace.
    pub fn in_namespace(&self, namespace: &str) -> Cluster {
        Cluster {
            client: self.client.clone(),
            config: self.config.clone(),
            namespace: namespace.to_owned(),
        }
    }

    /// Steers a Rollout (promote, abort, ...) with the patch its command sends; says what
    /// happens next.
    pub async fn control(&self, name: &str, control: Control) -> Result<String, Failure> {
        let rollout = self.rollout(name).await?;
        let change = control::change(control, &rollout)?;
        let api: Api<Rollout> = self.api();
        let params = PatchParams::default();
        let (patched, resource) = match change.part {
            Part::Status => (
                api.patch_status(name, &params, &Patch::Merge(&change.patch))
                    .await,
                "rollouts/status",
            ),
            Part::Spec => (
                api.patch(name, &params, &Patch::Merge(&change.patch)).await,
                "rollouts",
            ),
        };
        patched.map_err(|e| self.explain(e, &self.here("patch", resource, Some(name))))?;
        Ok(change.next)
    }

    /// The GitSync that applies this Rollout, when one does and it still exists.
    pub async fn managing_sync(&self, rollout: &Rollout) -> Result<Option<GitSync>, Failure> {
        let Some((namespace, name)) = rollout
            .annotations()
            .get(GITSYNC_ANNOTATION)
            .and_then(|owner| owner.split_once('/'))
        else {
            return Ok(None);
        };
        let api: Api<GitSync> = Api::namespaced(self.client.clone(), namespace);
        api.get_opt(name).await.map_err(|e| {
            self.explain(
                e,
                &Request {
                    verb: "get",
                    resource: "gitsyncs",
                    name: Some(name),
                    namespace: Some(namespace),
                },
            )
        })
    }

    /// What each of the Rollout's routers carries now, read as the controller reads it; a
    /// router that cannot be made (a route not granted) is a note, the others shown.
    async fn routers(&self, rollout: &Rollout, notes: &mut Vec<String>) -> Vec<RouterView> {
        let hash = crate::template_hash::of(&rollout.spec.template);
        match Routers::for_rollout(&self.client, rollout, &self.namespace, &hash).await {
            Ok((routers, refused)) => {
                if let Some(refused) = refused {
                    notes.push(format!("Router not shown: {refused}"));
                }
                match routers {
                    Some(routers) => routers.views().await,
                    None => Vec::new(),
                }
            }
            Err(error) => {
                notes.push(format!("Routers not shown: {error}"));
                Vec::new()
            }
        }
    }

    pub async fn observe(&self, name: &str) -> Result<Observed, Failure> {
        let rollout = self.rollout(name).await?;
        let mut notes = Vec::new();
        let replica_sets = allowed(
            self.owned::<ReplicaSet>(name, "replicasets").await,
            "ReplicaSets",
            &mut notes,
        )?
        .unwrap_or_default();
        let runs = allowed(
            self.owned::<AnalysisRun>(name, "analysisruns").await,
            "AnalysisRuns",
            &mut notes,
        )?
        .unwrap_or_default();
        // Only a Rollout with experiment steps has any: a cluster without the Experiment
        // CRD shows the others as ever.
        let has_experiments = rollout
            .spec
            .strategy
            .canary
            .as_ref()
            .is_some_and(|c| c.steps.iter().any(|s| s.experiment.is_some()));
        let experiments = if has_experiments {
            allowed(
                self.owned::<Experiment>(name, "experiments").await,
                "Experiments",
                &mut notes,
            )?
            .unwrap_or_default()
        } else {
            Vec::new()
        };
        let subjects: BTreeMap<String, String> = allowed(
            self.managing_sync(&rollout).await,
            "Commit subjects",
            &mut notes,
        )?
        .flatten()
        .and_then(|s| s.status)
        .map(|s| {
            s.history
                .into_iter()
                .map(|h| (h.revision, h.subject))
                .collect()
        })
        .unwrap_or_default();
        let routers = self.routers(&rollout, &mut notes).await;
        Ok(Observed {
            rollout,
            replica_sets,
            runs,
            experiments,
            subjects,
            routers,
            notes,
        })
    }
}
