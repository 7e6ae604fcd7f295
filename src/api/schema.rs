//! Schema adjustments that make the generated CRDs structural and installable on every
//! supported API server (1.20 included), applied through `#[schemars(transform = ...)]`.

use std::collections::BTreeMap;

use schemars::Schema;
use serde_json::Value;

/// Marks an object whose unknown keys must reach weir instead of being pruned by the API
/// server, so that validation can name a field weir does not support (an Argo Rollouts
/// `experiment` step, say) rather than have it vanish silently.
pub fn keep_unknown_fields(schema: &mut Schema) {
    if let Some(object) = schema.as_object_mut() {
        object.remove("additionalProperties");
        object.insert(
            "x-kubernetes-preserve-unknown-fields".into(),
            Value::Bool(true),
        );
    }
}

/// A value that is an integer or a string (`30` or `"30s"`), as Kubernetes' IntOrString.
pub fn int_or_string(_: &mut schemars::SchemaGenerator) -> Schema {
    schemars::json_schema!({ "x-kubernetes-int-or-string": true })
}

/// Any JSON value, kept as written (a `web` metric's `jsonBody`).
pub fn any_json(_: &mut schemars::SchemaGenerator) -> Schema {
    schemars::json_schema!({ "x-kubernetes-preserve-unknown-fields": true })
}

/// Removes what a 1.20 API server refuses in a CRD schema, everywhere in the tree:
/// `null` entries inside `enum` lists (schemars emits them for `Option<Enum>`; the field stays
/// `nullable`), which the server reports with the misleading "per-version schemas may not all
/// be set to identical values".
pub fn make_installable(value: &mut Value) {
    match value {
        Value::Object(object) => {
            if let Some(Value::Array(variants)) = object.get_mut("enum") {
                let had_null = variants.iter().any(Value::is_null);
                variants.retain(|v| !v.is_null());
                if had_null {
                    object.insert("nullable".into(), Value::Bool(true));
                }
            }
            object.values_mut().for_each(make_installable);
        }
        Value::Array(items) => items.iter_mut().for_each(make_installable),
        _ => {}
    }
}

/// Fields this version of weir does not understand, kept so validation can name them.
pub type Unsupported = BTreeMap<String, Value>;

/// An object that keeps its unknown fields (in an `unsupported` map) so validation can name
/// each one, and can say which fields it does know, for a "did you mean" on a misspelling.
pub trait KeepsUnknownFields {
    fn unknown_fields(&self) -> &Unsupported;
    /// The field names this object reads, as written in manifests (camelCase).
    fn known_fields() -> Vec<String>;
}

impl<T: KeepsUnknownFields> KeepsUnknownFields for &T {
    fn unknown_fields(&self) -> &Unsupported {
        (*self).unknown_fields()
    }
    fn known_fields() -> Vec<String> {
        T::known_fields()
    }
}

// Rarely set parts of a spec are boxed (the cache keeps every Rollout): the same fields.
impl<T: KeepsUnknownFields> KeepsUnknownFields for Box<T> {
    fn unknown_fields(&self) -> &Unsupported {
        self.as_ref().unknown_fields()
    }
    fn known_fields() -> Vec<String> {
        T::known_fields()
    }
}

/// The property names of `T`'s schema: the names serde reads, flattened fields included.
pub fn schema_properties<T: schemars::JsonSchema>() -> Vec<String> {
    let schema = schemars::SchemaGenerator::default().into_root_schema_for::<T>();
    schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|properties| properties.keys().cloned().collect())
        .unwrap_or_default()
}

/// Implements [`KeepsUnknownFields`] for structs with an `unsupported` map.
macro_rules! keeps_unknown_fields {
    ($($kind:ty),* $(,)?) => {
        $(impl $crate::api::schema::KeepsUnknownFields for $kind {
            fn unknown_fields(&self) -> &$crate::api::schema::Unsupported {
                &self.unsupported
            }
            fn known_fields() -> Vec<String> {
                $crate::api::schema::schema_properties::<$kind>()
            }
        })*
    };
}
pub(crate) use keeps_unknown_fields;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn null_enum_entries_are_dropped_and_the_field_stays_nullable() {
        let mut schema = json!({
            "properties": {"phase": {"enum": ["A", null, "B"], "type": "string"}},
            "items": [{"enum": [null, "C"]}]
        });
        make_installable(&mut schema);
        assert_eq!(
            schema,
            json!({
                "properties": {"phase": {"enum": ["A", "B"], "type": "string", "nullable": true}},
                "items": [{"enum": ["C"], "nullable": true}]
            })
        );
    }

    #[test]
    fn enums_without_null_are_left_alone() {
        let mut schema = json!({"enum": ["A", "B"]});
        make_installable(&mut schema);
        assert_eq!(schema, json!({"enum": ["A", "B"]}));
    }
}
