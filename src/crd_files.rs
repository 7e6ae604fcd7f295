//! Writing CRDs out as YAML: to stdout as one stream, or one file per CRD (what `crds/` and
//! `hack/crds/` hold, and what `make test` compares against the types).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// The file a CRD is written to: `<plural>.<group>.yaml`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.{}.yaml", crd.spec.names.plural, crd.spec.group)
}

pub fn to_yaml(crd: &CustomResourceDefinition) -> anyhow::Result<String> {
    let name = crd.metadata.name.as_deref().unwrap_or("<unnamed>");
    serde_yaml_ng::to_string(crd).with_context(|| format!("rendering CRD {name} as YAML"))
}

/// A field reference in Markdown, from the CRDs' schemas (the types' doc comments): one
/// table per kind, a row per field with its path, type and description.
pub fn reference(crds: &[CustomResourceDefinition]) -> String {
    let mut out = String::from(
        "# weir's resources, field by field\n\nGenerated from the types' documentation by \
         `weir crds --reference docs/crd-reference.md` (`make crds`); `make test` checks it is current.\n",
    );
    for crd in crds {
        let Some(version) = crd.spec.versions.first() else {
            continue;
        };
        let _ = write!(
            out,
            "\n## {} ({}/{})\n\n",
            crd.spec.names.kind, crd.spec.group, version.name
        );
        let Some(schema) = version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
        else {
            continue;
        };
        if let Some(description) = &schema.description {
            let _ = writeln!(out, "{}\n", one_line(description));
        }
        out.push_str("| field | type | description |\n| --- | --- | --- |\n");
        for part in ["spec", "status"] {
            if let Some(field) = schema.properties.as_ref().and_then(|p| p.get(part)) {
                rows(&mut out, part, field, 0);
            }
        }
    }
    out
}

fn one_line(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// How deep the reference goes: deeper fields are the Kubernetes types' own (a pod
/// template), documented by Kubernetes.
const DEPTH: usize = 4;

fn rows(
    out: &mut String,
    path: &str,
    schema: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps,
    depth: usize,
) {
    let kind = match (&schema.type_, &schema.items) {
        (Some(t), Some(_)) if t == "array" => "array".to_owned(),
        (Some(t), _) => t.clone(),
        (None, _) if schema.x_kubernetes_int_or_string == Some(true) => "int or string".into(),
        (None, _) => "object".into(),
    };
    let description = schema
        .description
        .as_deref()
        .map(one_line)
        .unwrap_or_default();
    let _ = writeln!(out, "| `{path}` | {kind} | {description} |");
    if depth >= DEPTH {
        return;
    }
    let nested = match &schema.items {
        Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray::Schema(item)) => {
            item.properties.as_ref().map(|p| (format!("{path}[]"), p))
        }
        _ => schema.properties.as_ref().map(|p| (path.to_owned(), p)),
    };
    if let Some((prefix, properties)) = nested {
        for (name, field) in properties {
            rows(out, &format!("{prefix}.{name}"), field, depth + 1);
        }
    }
}

/// Prints the CRDs as one YAML stream, or writes one file each into `dir`.
pub fn emit(
    crds: Result<Vec<CustomResourceDefinition>, serde_json::Error>,
    dir: Option<&Path>,
) -> anyhow::Result<()> {
    let crds = crds.context("building the CRDs from weir's types")?;
    match dir {
        None => {
            let mut out = String::new();
            for crd in &crds {
                write!(out, "---\n{}", to_yaml(crd)?)?;
            }
            print!("{out}");
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            for crd in &crds {
                let path = dir.join(file_name(crd));
                std::fs::write(&path, to_yaml(crd)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
    }
    Ok(())
}
