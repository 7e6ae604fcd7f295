//! Rendering a revision: the YAML files under a GitSync's `path`, read from the Git tree, into
//! the objects to apply. Pure: the caller reads the tree.
//!
//! Files are taken in path order, recursively, each possibly holding several documents
//! (`---`); `kind: List` documents are expanded. A document that is not a Kubernetes object
//! fails the whole revision with a message naming the file and the document's index, so that
//! nothing of a broken revision is applied.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde_json::Value;

/// A file of the revision's tree, path relative to the repository root.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceFile {
    pub path: String,
    pub bytes: Vec<u8>,
}

/// One object to apply, and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    pub file: String,
    /// The document's index in its file, from 0.
    pub index: usize,
    pub object: Value,
}

impl Manifest {
    pub fn api_version(&self) -> &str {
        self.object["apiVersion"].as_str().unwrap_or_default()
    }

    pub fn kind(&self) -> &str {
        self.object["kind"].as_str().unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        self.object["metadata"]["name"].as_str().unwrap_or_default()
    }

    pub fn namespace(&self) -> Option<&str> {
        self.object["metadata"]["namespace"].as_str()
    }
}

/// Why a revision cannot be rendered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderError {
    pub file: String,
    /// The document, when one is at fault rather than the file or the path.
    pub index: Option<usize>,
    pub message: String,
}

impl fmt::Display for RenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.index {
            Some(index) => write!(f, "{} (document {index}): {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// What a path holds: plain manifests, or a kustomization to build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layout {
    Manifests,
    /// The kustomization file found directly under the path.
    Kustomization(String),
}

const KUSTOMIZATIONS: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// `apps/web`, `./apps/web/`, `.` and `` all name a directory the same way.
pub fn normalize(path: &str) -> String {
    path.split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// Whether `file` (a path from the repository root) lies inside directory `prefix`, a
/// `normalize`d path (empty: the whole repository).
pub fn inside(prefix: &str, file: &str) -> bool {
    prefix.is_empty()
        || file
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn under<'f>(files: &'f [SourceFile], path: &str) -> impl Iterator<Item = &'f SourceFile> {
    let prefix = normalize(path);
    files.iter().filter(move |f| inside(&prefix, &f.path))
}

/// Whether the path is a kustomization (a kustomization file directly in it).
pub fn layout(files: &[SourceFile], path: &str) -> Layout {
    let prefix = normalize(path);
    for name in KUSTOMIZATIONS {
        let candidate = if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}/{name}")
        };
        if files.iter().any(|f| f.path == candidate) {
            return Layout::Kustomization(candidate);
        }
    }
    Layout::Manifests
}

fn is_manifest(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    !name.starts_with('.')
        && [".yaml", ".yml", ".json"]
            .iter()
            .any(|extension| name.ends_with(extension))
}

/// Every object in the YAML and JSON files under `path`, in file order then document order.
pub fn render(files: &[SourceFile], path: &str) -> Result<Vec<Manifest>, RenderError> {
    if under(files, path).next().is_none() {
        return Err(RenderError {
            file: normalize(path),
            index: None,
            message: "no such directory in this revision: check spec.path".into(),
        });
    }
    let mut selected: Vec<&SourceFile> = under(files, path)
        .filter(|f| is_manifest(&f.path))
        .collect();
    selected.sort_by(|a, b| a.path.cmp(&b.path));
    let mut manifests = Vec::new();
    for file in selected {
        manifests.extend(documents(file)?);
    }
    check_unique(&manifests)?;
    Ok(manifests)
}

/// Every object of one rendered stream (a kustomize build's output), named `origin` in
/// errors.
pub fn stream(origin: &str, bytes: Vec<u8>) -> Result<Vec<Manifest>, RenderError> {
    let manifests = documents(&SourceFile {
        path: origin.to_owned(),
        bytes,
    })?;
    check_unique(&manifests)?;
    Ok(manifests)
}

/// The documents of one file, parsed and checked.
pub fn documents(file: &SourceFile) -> Result<Vec<Manifest>, RenderError> {
    let fail = |index: Option<usize>, message: String| RenderError {
        file: file.path.clone(),
        index,
        message,
    };
    let text =
        std::str::from_utf8(&file.bytes).map_err(|_| fail(None, "is not UTF-8 text".into()))?;
    let mut manifests = Vec::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(document)
            .map_err(|e| fail(Some(index), format!("is not valid YAML: {e}")))?;
        match value {
            // An empty document (a leading `---`, comments only) holds nothing.
            Value::Null => continue,
            Value::Object(_) => {}
            other => {
                return Err(fail(
                    Some(index),
                    format!("is a {}, not a Kubernetes object", json_type(&other)),
                ));
            }
        }
        // `List` and typed lists (`ConfigMapList`) have no name; a custom object whose kind
        // merely ends in "List" (`AllowList`) does, and is an object.
        if value["kind"].as_str().is_some_and(|k| k.ends_with("List"))
            && value["items"].is_array()
            && value["metadata"]["name"].is_null()
        {
            for (item, object) in value["items"].as_array().into_iter().flatten().enumerate() {
                check_object(object)
                    .map_err(|why| fail(Some(index), format!("items[{item}]: {why}")))?;
                manifests.push(Manifest {
                    file: file.path.clone(),
                    index,
                    object: object.clone(),
                });
            }
            continue;
        }
        check_object(&value).map_err(|why| fail(Some(index), why))?;
        manifests.push(Manifest {
            file: file.path.clone(),
            index,
            object: value,
        });
    }
    Ok(manifests)
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "mapping",
    }
}

/// The fields every object needs before the API server can even be asked about it.
fn check_object(object: &Value) -> Result<(), String> {
    for (field, value) in [
        ("apiVersion", &object["apiVersion"]),
        ("kind", &object["kind"]),
        ("metadata.name", &object["metadata"]["name"]),
    ] {
        match value {
            Value::String(text) if !text.trim().is_empty() => {}
            Value::Null => return Err(format!("{field} is missing")),
            _ => return Err(format!("{field} must be a non-empty string")),
        }
    }
    if let Some(namespace) = object["metadata"].get("namespace")
        && !namespace.is_string()
    {
        return Err("metadata.namespace must be a string".into());
    }
    Ok(())
}

/// Two documents for the same object would fight each other on every apply.
fn check_unique(manifests: &[Manifest]) -> Result<(), RenderError> {
    let mut seen: BTreeMap<(String, &str, Option<&str>, &str), &Manifest> = BTreeMap::new();
    for manifest in manifests {
        let group = manifest
            .api_version()
            .rsplit_once('/')
            .map_or("", |(group, _)| group)
            .to_owned();
        let key = (
            group,
            manifest.kind(),
            manifest.namespace(),
            manifest.name(),
        );
        if let Some(first) = seen.insert(key, manifest) {
            return Err(RenderError {
                file: manifest.file.clone(),
                index: Some(manifest.index),
                message: format!(
                    "{} {} is also defined in {} (document {})",
                    manifest.kind(),
                    manifest.name(),
                    first.file,
                    first.index
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
