//! Writing a status the way every weir controller does: only what changed, as one JSON patch
//! that first tests the resourceVersion it was computed from. An object changed meanwhile (an
//! operator's abort, a run told to stop) fails the write as a conflict and the reconcile
//! starts over, instead of overwriting that change.

use json_patch::{AddOperation, Patch as JsonPatch, PatchOperation, TestOperation};
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

#[derive(Debug)]
pub enum WriteError {
    /// The object moved on since it was read.
    Conflict,
    Api(kube::Error),
}

/// Writes `status` over `original` on `current`; nothing at all when they are equal. Returns
/// the object as written (None when nothing was), for a caller that writes again.
pub async fn write<K, S>(
    api: &Api<K>,
    current: &K,
    has_status: bool,
    original: &S,
    status: &S,
    field_manager: &str,
) -> Result<Option<K>, WriteError>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    if status == original {
        return Ok(None);
    }
    let serialize = |s: &S| serde_json::to_value(s).unwrap_or(Value::Null);
    let mut operations = vec![PatchOperation::Test(TestOperation {
        path: "/metadata/resourceVersion".parse().unwrap_or_default(),
        value: Value::from(current.resource_version().unwrap_or_default()),
    })];
    if has_status {
        let diff = json_patch::diff(
            &json!({"status": serialize(original)}),
            &json!({"status": serialize(status)}),
        );
        operations.extend(diff.0);
    } else {
        operations.push(PatchOperation::Add(AddOperation {
            path: "/status".parse().unwrap_or_default(),
            value: serialize(status),
        }));
    }
    let params = PatchParams {
        field_manager: Some(field_manager.into()),
        ..PatchParams::default()
    };
    match api
        .patch_status(
            &current.name_any(),
            &params,
            &Patch::<()>::Json(JsonPatch(operations)),
        )
        .await
    {
        Ok(written) => Ok(Some(written)),
        // A failed `test` is a 409 from some servers and a 422 from the API server, which
        // names the test only in newer versions; an older one says no more than "Invalid".
        Err(kube::Error::Api(status)) if status.code == 409 => Err(WriteError::Conflict),
        Err(kube::Error::Api(status)) if status.code == 422 => {
            if status.message.contains("test") || moved(api, current).await {
                Err(WriteError::Conflict)
            } else {
                Err(WriteError::Api(kube::Error::Api(status)))
            }
        }
        Err(source) => Err(WriteError::Api(source)),
    }
}

/// Whether the object changed since `current` was read (or is gone).
async fn moved<K>(api: &Api<K>, current: &K) -> bool
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.get_opt(&current.name_any()).await {
        Ok(Some(now)) => now.resource_version() != current.resource_version(),
        Ok(None) => true,
        Err(_) => false,
    }
}
