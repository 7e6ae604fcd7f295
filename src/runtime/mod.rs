//! What the controller process needs around the reconcilers: leader election, and the HTTP
//! server for health, readiness and metrics.

pub mod http;
pub mod leader;
pub mod metrics;

use kube::{Api, Client};

/// An Api over one namespace (`--namespace`), or over all of them.
pub fn scoped_api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as kube::Resource>::DynamicType: Default,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// Publishes Events as controller `weir`, instance `$POD_NAME` when set.
pub fn recorder(client: &Client) -> kube::runtime::events::Recorder {
    kube::runtime::events::Recorder::new(
        client.clone(),
        kube::runtime::events::Reporter {
            controller: "weir".into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    )
}
