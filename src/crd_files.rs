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
