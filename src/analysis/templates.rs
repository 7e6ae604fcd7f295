//! Reading the templates an analysis reaches from the API server: for a Rollout's check and
//! runs, and for an Experiment's runs. A Rollout's look reads them from the Rollout
//! controller's caches first ([`TemplateCaches`]).

use kube::Client;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;

use crate::runtime::cache::Cache;

use super::run::{self, Requested};
use crate::api::analysis::{
    AnalysisTemplate, AnalysisTemplateRef, AnalysisTemplateSpec, ClusterAnalysisTemplate,
};
use crate::runtime::error::Error;
use crate::validate::Violation;

/// The templates a process keeps watched. A Rollout's look reads its templates here, so a
/// restart of many Rollouts reads no template one by one, and an abort waits for none;
/// anything that creates a run reads them from the API server ([`read_checked`]).
#[derive(Clone)]
pub struct TemplateCaches {
    pub namespaced: Cache<AnalysisTemplate>,
    pub cluster: Cache<ClusterAnalysisTemplate>,
}

/// Why an analysis' templates, as read, cannot make a run.
#[derive(Debug)]
pub enum Unusable {
    /// A template it reaches does not exist; `field` names where it is named, `label` it and
    /// what composes it.
    Missing {
        kind: &'static str,
        name: String,
        field: String,
        label: String,
    },
    /// The first rule it breaks, as the plan's check reports it.
    Invalid(Violation),
}

/// The templates an analysis reaches (label, spec), read now and checked as the plan checks
/// them: a template changed since the plan's check must not reach a run (a
/// ClusterAnalysisTemplate's literal credentials would be copied into it). The outer error
/// is the API server's; the inner says why what was read cannot be used.
pub async fn read_checked(
    client: &Client,
    namespace: &str,
    requested: &Requested<'_>,
) -> Result<Result<Vec<(String, AnalysisTemplateSpec)>, Unusable>, Error> {
    let mut fetched = run::Fetched::new();
    read(client, None, namespace, &requested.templates, &mut fetched).await?;
    let reach = run::reach(&requested.templates, &fetched);
    if let Some(missing) = reach.reached.iter().find(|r| r.spec.is_none()) {
        let named_at = requested.template_field(missing.root);
        let label = missing.label();
        let field = match (missing.through.is_empty(), requested.kind) {
            (true, Some(_)) => format!("{named_at}.templateName"),
            (true, None) => named_at,
            (false, _) => format!("{named_at} ({label})"),
        };
        return Ok(Err(Unusable::Missing {
            kind: if missing.reference.cluster_scope {
                "ClusterAnalysisTemplate"
            } else {
                "AnalysisTemplate"
            },
            name: missing.reference.template_name.clone(),
            field,
            label,
        }));
    }
    if let Some(first) = run::check(requested, &reach).into_iter().next() {
        return Ok(Err(Unusable::Invalid(first)));
    }
    Ok(Ok(reach
        .reached
        .iter()
        .filter_map(|r| r.spec.map(|spec| (r.label(), spec.clone())))
        .collect()))
}

/// Reads into `fetched` every template `roots` reach, composition included (at most
/// [`run::MAX_TEMPLATES`] more): from `cached` where given and holding them, else from the
/// API server.
pub async fn read(
    client: &Client,
    cached: Option<&TemplateCaches>,
    namespace: &str,
    roots: &[AnalysisTemplateRef],
    fetched: &mut run::Fetched,
) -> Result<(), Error> {
    loop {
        let unread = run::reach(roots, fetched).unread;
        if unread.is_empty() {
            return Ok(());
        }
        for reference in unread {
            let spec = match cached.and_then(|caches| from_cache(caches, namespace, &reference)) {
                Some(spec) => Some(spec),
                None => fetch(client, namespace, &reference).await?,
            };
            fetched.insert(run::key(&reference), spec);
        }
    }
}

/// A template as `caches` hold it. None when they do not hold it, and the API server is
/// asked: a template applied together with its Rollout may not have reached the cache yet,
/// and must not be reported missing for that.
fn from_cache(
    caches: &TemplateCaches,
    namespace: &str,
    reference: &AnalysisTemplateRef,
) -> Option<AnalysisTemplateSpec> {
    let name = reference.template_name.as_str();
    if reference.cluster_scope {
        let found = caches.cluster.store.get(&ObjectRef::new(name))?;
        Some(found.spec.template.clone())
    } else {
        let key = ObjectRef::new(name).within(namespace);
        let found = caches.namespaced.store.get(&key)?;
        Some(found.spec.clone())
    }
}

/// A template, namespaced or cluster-wide; None when it does not exist.
pub async fn fetch(
    client: &Client,
    namespace: &str,
    reference: &AnalysisTemplateRef,
) -> Result<Option<AnalysisTemplateSpec>, Error> {
    let name = &reference.template_name;
    if reference.cluster_scope {
        let api: Api<ClusterAnalysisTemplate> = Api::all(client.clone());
        let found = api.get_opt(name).await.map_err(Error::api(
            "reading",
            "ClusterAnalysisTemplate",
            name,
        ))?;
        Ok(found.map(|t| t.spec.template))
    } else {
        let api: Api<AnalysisTemplate> = Api::namespaced(client.clone(), namespace);
        let found =
            api.get_opt(name)
                .await
                .map_err(Error::api("reading", "AnalysisTemplate", name))?;
        Ok(found.map(|t| t.spec))
    }
}
