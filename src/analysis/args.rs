//! Arguments: resolving a Rollout's `valueFrom` when a run is made, and substituting
//! `{{args.NAME}}` placeholders when a query is sent. Pure.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::api::analysis::{Argument, PodTemplateHashValue};

/// The arguments weir fills itself when a template declares them without a value.
pub const CANARY_HASH: &str = "canary-hash";
pub const STABLE_HASH: &str = "stable-hash";
/// The version a judge compares the canary with: the stable one.
pub const BASELINE_HASH: &str = "baseline-hash";
pub const ROLLOUT_NAME: &str = "rollout-name";
pub const NAMESPACE: &str = "namespace";

/// What weir knows about the canary a run is made for.
pub struct Known<'a> {
    /// The object `fieldRef` reads: the Rollout, or the Experiment that runs the analysis.
    pub rollout: &'a Value,
    /// Its kind and name, for messages; weir fills `rollout-name` for a Rollout only.
    pub kind: &'a str,
    pub rollout_name: &'a str,
    pub namespace: &'a str,
    /// None for an Experiment's analysis: its versions are its templates, named by
    /// `{{templates.NAME.podTemplateHash}}`, so weir fills no hash argument.
    pub canary_hash: Option<&'a str>,
    pub stable_hash: Option<&'a str>,
}

/// Turns the Rollout-side sources (`fieldRef`, `podTemplateHashValue`) into literal values
/// and fills weir's own arguments where no value was given. Secret references stay
/// references: their values are read at each measurement and never stored in the run.
pub fn resolve(args: &mut [Argument], known: &Known<'_>) -> Result<(), String> {
    for arg in args.iter_mut() {
        if let Some(from) = &arg.value_from {
            if let Some(which) = from.pod_template_hash_value {
                let hash = match which {
                    PodTemplateHashValue::Stable => known.stable_hash,
                    PodTemplateHashValue::Latest => known.canary_hash,
                };
                arg.value = Some(hash.map(str::to_owned).ok_or_else(|| {
                    format!(
                        "argument {:?}: podTemplateHashValue has no version to name here; use {{{{templates.NAME.podTemplateHash}}}}",
                        arg.name
                    )
                })?);
                arg.value_from = None;
            } else if let Some(field) = &from.field_ref {
                let value = field_value(known.rollout, &field.field_path).ok_or_else(|| {
                    format!(
                        "argument {:?}: fieldRef {:?} is not set on {} {}",
                        arg.name, field.field_path, known.kind, known.rollout_name
                    )
                })?;
                arg.value = Some(value);
                arg.value_from = None;
            }
        }
        if arg.value.is_none() && arg.value_from.is_none() {
            arg.value = match arg.name.as_str() {
                CANARY_HASH => known.canary_hash.map(str::to_owned),
                STABLE_HASH | BASELINE_HASH => known.stable_hash.map(str::to_owned),
                ROLLOUT_NAME => (known.kind == "Rollout").then(|| known.rollout_name.to_owned()),
                NAMESPACE => Some(known.namespace.to_owned()),
                _ => None,
            };
        }
    }
    Ok(())
}

/// The arguments that still have neither a value nor a source.
pub fn missing(args: &[Argument]) -> Vec<&str> {
    args.iter()
        .filter(|a| a.value.is_none() && a.value_from.is_none())
        .map(|a| a.name.as_str())
        .collect()
}

/// Whether weir can fill an argument of this name by itself.
pub fn is_filled_by_weir(name: &str) -> bool {
    [
        CANARY_HASH,
        STABLE_HASH,
        BASELINE_HASH,
        ROLLOUT_NAME,
        NAMESPACE,
    ]
    .contains(&name)
}

/// Reads `metadata.name`, `spec.replicas`, `metadata.labels['app']` and the like from an
/// object; None when any part is missing. Strings come back bare, other values as JSON.
pub fn field_value(object: &Value, path: &str) -> Option<String> {
    let mut current = object;
    let mut rest = path.trim();
    while !rest.is_empty() {
        rest = rest.strip_prefix('.').unwrap_or(rest);
        let (key, after) = if let Some(bracketed) = rest.strip_prefix('[') {
            let close = bracketed.find(']')?;
            let key = bracketed[..close].trim().trim_matches(['\'', '"']);
            (key, &bracketed[close + 1..])
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        };
        current = match current {
            Value::Object(map) => map.get(key)?,
            Value::Array(items) => items.get(key.parse::<usize>().ok()?)?,
            _ => return None,
        };
        rest = after;
    }
    match current {
        Value::String(text) => Some(text.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// An argument's value at measurement time; `secret` ones are masked in what is recorded.
#[derive(Clone, Debug, PartialEq)]
pub struct ArgValue {
    pub value: String,
    pub secret: bool,
}

/// A text with its placeholders filled: `sent` carries the real values, `recorded` masks
/// Secret-sourced ones as `<secret>` so they never reach a status.
#[derive(Clone, Debug, PartialEq)]
pub struct Substituted {
    pub sent: String,
    pub recorded: String,
}

/// Fills every `{{args.NAME}}` (spaces inside the braces allowed). An argument without a
/// value, or a placeholder that is not `args.`, is an error naming it.
pub fn substitute(text: &str, values: &BTreeMap<String, ArgValue>) -> Result<Substituted, String> {
    let mut sent = String::with_capacity(text.len());
    let mut recorded = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err(format!("an unclosed {{{{ in {text:?}"));
        };
        sent.push_str(&rest[..start]);
        recorded.push_str(&rest[..start]);
        let inner = after[..end].trim();
        let Some(name) = inner.strip_prefix("args.").map(str::trim) else {
            return Err(format!(
                "{{{{{inner}}}}} is not an argument placeholder: write {{{{args.NAME}}}}"
            ));
        };
        let Some(arg) = values.get(name) else {
            return Err(format!("argument {name:?} has no value"));
        };
        sent.push_str(&arg.value);
        recorded.push_str(if arg.secret { "<secret>" } else { &arg.value });
        rest = &after[end + 2..];
    }
    sent.push_str(rest);
    recorded.push_str(rest);
    Ok(Substituted { sent, recorded })
}

/// A JSON document (a `web` metric's `jsonBody`, a `job` metric's spec) with
/// `{{args.NAME}}` filled in its strings, never in its structure, so an argument cannot
/// change the document's shape.
pub fn substitute_json(
    value: &serde_json::Value,
    args: &BTreeMap<String, ArgValue>,
) -> Result<serde_json::Value, String> {
    Ok(match value {
        serde_json::Value::String(text) => serde_json::Value::String(substitute(text, args)?.sent),
        serde_json::Value::Array(items) => serde_json::Value::Array(
            items
                .iter()
                .map(|v| substitute_json(v, args))
                .collect::<Result<_, _>>()?,
        ),
        serde_json::Value::Object(fields) => serde_json::Value::Object(
            fields
                .iter()
                .map(|(k, v)| Ok((k.clone(), substitute_json(v, args)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn values(pairs: &[(&str, &str, bool)]) -> BTreeMap<String, ArgValue> {
        pairs
            .iter()
            .map(|(name, value, secret)| {
                (
                    name.to_string(),
                    ArgValue {
                        value: value.to_string(),
                        secret: *secret,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn placeholders_are_filled_and_secrets_masked_in_the_record() {
        let values = values(&[("service", "web", false), ("tenant", "t-1", true)]);
        let filled = substitute(
            "rate(x{svc=\"{{args.service}}\",tenant=\"{{ args.tenant }}\"}[1m])",
            &values,
        )
        .expect("fills");
        assert_eq!(filled.sent, "rate(x{svc=\"web\",tenant=\"t-1\"}[1m])");
        assert_eq!(
            filled.recorded,
            "rate(x{svc=\"web\",tenant=\"<secret>\"}[1m])"
        );
    }

    #[test]
    fn a_missing_argument_is_named() {
        let error = substitute("up{job=\"{{args.job}}\"}", &values(&[])).expect_err("missing");
        assert_eq!(error, "argument \"job\" has no value");
        let error = substitute("{{workflow.name}}", &values(&[])).expect_err("not args");
        assert!(error.contains("{{workflow.name}}"), "{error}");
        let error = substitute("up{{args.x", &values(&[])).expect_err("unclosed");
        assert!(error.contains("unclosed"), "{error}");
        assert_eq!(
            substitute("no placeholders", &values(&[])).map(|s| s.sent),
            Ok("no placeholders".into())
        );
    }

    #[test]
    fn field_paths_read_nested_values() {
        let object = json!({"metadata": {"name": "web", "labels": {"app.kubernetes.io/name": "shop"}},
                            "spec": {"replicas": 3, "list": ["a", "b"], "none": null}});
        assert_eq!(
            field_value(&object, "metadata.name").as_deref(),
            Some("web")
        );
        assert_eq!(
            field_value(&object, "metadata.labels['app.kubernetes.io/name']").as_deref(),
            Some("shop")
        );
        assert_eq!(field_value(&object, "spec.replicas").as_deref(), Some("3"));
        assert_eq!(field_value(&object, "spec.list[1]").as_deref(), Some("b"));
        assert_eq!(field_value(&object, "spec.none"), None);
        assert_eq!(field_value(&object, "metadata.missing"), None);
        assert_eq!(field_value(&object, "metadata.name.deeper"), None);
    }

    #[test]
    fn rollout_sources_resolve_and_weir_fills_its_own_names() {
        let rollout = json!({"metadata": {"name": "web", "namespace": "shop"}});
        let known = Known {
            rollout: &rollout,
            kind: "Rollout",
            rollout_name: "web",
            namespace: "shop",
            canary_hash: Some("c4"),
            stable_hash: Some("s7"),
        };
        let mut args: Vec<Argument> = serde_json::from_value(json!([
            {"name": "latest", "valueFrom": {"podTemplateHashValue": "Latest"}},
            {"name": "stable", "valueFrom": {"podTemplateHashValue": "Stable"}},
            {"name": "name", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "canary-hash"}, {"name": "stable-hash"}, {"name": "rollout-name"},
            {"name": "namespace"},
            {"name": "token", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
            {"name": "service"},
            {"name": "window", "value": "5m"}
        ]))
        .expect("args");
        resolve(&mut args, &known).expect("resolves");
        let values: Vec<_> = args.iter().map(|a| a.value.as_deref()).collect();
        assert_eq!(
            values,
            vec![
                Some("c4"),
                Some("s7"),
                Some("web"),
                Some("c4"),
                Some("s7"),
                Some("web"),
                Some("shop"),
                None,
                None,
                Some("5m")
            ]
        );
        assert!(args[7].value_from.is_some(), "a Secret stays a reference");
        assert_eq!(missing(&args), vec!["service"]);
    }

    #[test]
    fn an_unset_field_ref_is_an_error_naming_argument_and_path() {
        let rollout = json!({"metadata": {"name": "web"}});
        let known = Known {
            rollout: &rollout,
            kind: "Rollout",
            rollout_name: "web",
            namespace: "shop",
            canary_hash: Some("c"),
            stable_hash: Some("s"),
        };
        let mut args: Vec<Argument> = serde_json::from_value(json!([
            {"name": "team", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['team']"}}}
        ]))
        .expect("args");
        let error = resolve(&mut args, &known).expect_err("unset");
        assert!(
            error.contains("\"team\"") && error.contains("metadata.labels['team']"),
            "{error}"
        );
    }
}
