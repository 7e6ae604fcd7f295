//! Reading the templates an analysis reaches from the API server: for a Rollout's check and
//! runs, and for an Experiment's runs.

use kube::Client;
use kube::api::Api;

use super::run;
use crate::api::analysis::{
    AnalysisTemplate, AnalysisTemplateRef, AnalysisTemplateSpec, ClusterAnalysisTemplate,
};
use crate::runtime::error::Error;

/// Reads into `fetched` every template `roots` reach, composition included (at most
/// [`run::MAX_TEMPLATES`] more).
pub async fn read(
    client: &Client,
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
            let spec = fetch(client, namespace, &reference).await?;
            fetched.insert(run::key(&reference), spec);
        }
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
