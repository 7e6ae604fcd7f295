//! Rendering a revision: the YAML files under a GitSync's `path`, read from the Git tree, into
//! the objects to apply. Pure: the caller reads the tree.
//!
//! Files are taken in path order, recursively, each possibly holding several documents
//! (`---`); `kind: List` documents are expanded. A document that is not a Kubernetes object
//! fails the whole revision with a message naming the file and the document's index, so that
//! nothing of a broken revision is applied.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::DeserializeSeed;
use serde_json::Value;

use super::sops::{self, Identities, Session};

mod bounded;

/// How much a revision may hold: a repository is anyone's who can push to it, so nothing it
/// says may cost the controller unbounded memory. Each is a controller flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of one file (`--max-file-bytes`); checked before the file is read.
    pub file_bytes: u64,
    /// Bytes of all the files read for a revision, and of a kustomize build's output
    /// (`--max-revision-bytes`).
    pub revision_bytes: u64,
    /// What one document may take in memory once built, aliases expanded (an estimate: its
    /// text plus about a hundred bytes per field) (`--max-document-bytes`).
    /// The revision's documents together get `revision_bytes` of the same estimate.
    pub document_bytes: u64,
    /// Objects in one revision (`--max-objects`).
    pub objects: usize,
}

impl Default for Limits {
    /// Far above any real application (the API server stores no object over 1.5 MiB), and
    /// far below what would threaten the controller's memory.
    fn default() -> Self {
        Limits {
            file_bytes: 4 << 20,
            revision_bytes: 32 << 20,
            document_bytes: 4 << 20,
            objects: 5_000,
        }
    }
}

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

pub(crate) const KUSTOMIZATIONS: [&str; 3] =
    ["kustomization.yaml", "kustomization.yml", "Kustomization"];

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

/// Every object in the YAML and JSON files under `path`, in file order then document order,
/// within `limits`; a SOPS-encrypted file fails the revision (see `render_decrypted`).
pub fn render(
    files: &[SourceFile],
    path: &str,
    limits: &Limits,
) -> Result<Vec<Manifest>, RenderError> {
    render_decrypted(files, path, limits, None, &mut Session::default())
}

/// `render`, with SOPS-encrypted files decrypted in memory by `identities` (the GitSync's
/// `spec.decryption`; None: it has none, and an encrypted file fails the revision by name).
/// `session` keeps what was decrypted, and the error is scrubbed of it.
pub fn render_decrypted(
    files: &[SourceFile],
    path: &str,
    limits: &Limits,
    identities: Option<&Identities>,
    session: &mut Session,
) -> Result<Vec<Manifest>, RenderError> {
    render_files(files, path, limits, identities, session).map_err(|e| scrubbed(e, session))
}

/// The error with every value `session` decrypted replaced (`sops::Redactor`).
fn scrubbed(mut error: RenderError, session: &Session) -> RenderError {
    error.message = session.redactor.scrub(&error.message);
    error
}

fn render_files(
    files: &[SourceFile],
    path: &str,
    limits: &Limits,
    identities: Option<&Identities>,
    session: &mut Session,
) -> Result<Vec<Manifest>, RenderError> {
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
    let revision = Cell::new(limits.revision_bytes);
    let mut manifests = Vec::new();
    for file in selected {
        let before = manifests.len();
        manifests.extend(documents(file, limits, &revision, identities, session)?);
        // Each file's objects once, as they come: a count over the limit stops the reading.
        check_weir_objects(&manifests[before..])?;
        if manifests.len() > limits.objects {
            break;
        }
    }
    check_count(&manifests, limits)?;
    check_unique(&manifests)?;
    Ok(manifests)
}

/// Every object of one rendered stream (a kustomize build's output), named `origin` in
/// errors, within `limits` (the stream counts as the revision's files); objects still
/// SOPS-encrypted in it are decrypted by `identities`, or fail; the error is scrubbed of
/// what `session` decrypted.
pub fn stream(
    origin: &str,
    bytes: Vec<u8>,
    limits: &Limits,
    identities: Option<&Identities>,
    session: &mut Session,
) -> Result<Vec<Manifest>, RenderError> {
    stream_objects(origin, bytes, limits, identities, session).map_err(|e| scrubbed(e, session))
}

fn stream_objects(
    origin: &str,
    bytes: Vec<u8>,
    limits: &Limits,
    identities: Option<&Identities>,
    session: &mut Session,
) -> Result<Vec<Manifest>, RenderError> {
    let file = SourceFile {
        path: origin.to_owned(),
        bytes,
    };
    let output = Limits {
        file_bytes: limits.revision_bytes,
        ..*limits
    };
    let manifests = documents(
        &file,
        &output,
        &Cell::new(limits.revision_bytes),
        identities,
        session,
    )?;
    check_count(&manifests, limits)?;
    check_weir_objects(&manifests)?;
    check_unique(&manifests)?;
    Ok(manifests)
}

/// weir's own objects in the revision, checked as their controllers would check them: one
/// they would refuse (a condition too costly to judge, a step they cannot take) refuses the
/// revision before anything of it is applied, naming the object and the field.
fn check_weir_objects(manifests: &[Manifest]) -> Result<(), RenderError> {
    for manifest in manifests {
        let violations = match crate::validate::object(&manifest.object) {
            None => continue,
            Some(Err(message)) => vec![message],
            Some(Ok(violations)) => violations.iter().map(ToString::to_string).collect(),
        };
        let Some(first) = violations.first() else {
            continue;
        };
        let more = match violations.len() {
            1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        return Err(RenderError {
            file: manifest.file.clone(),
            index: Some(manifest.index),
            message: format!(
                "{} {}: {first}{more}; nothing was applied",
                manifest.kind(),
                manifest.name()
            ),
        });
    }
    Ok(())
}

/// The most a revision's inventory (`status.inventory`, one entry per object) may take:
/// the GitSync's whole status, history and rejections included, must stay under the 1.5 MiB
/// the API server stores, or no status write (a rejection among them) could land.
pub const INVENTORY_BYTES: usize = 512 << 10;

/// What one object's inventory entry takes in the status: its four fields and their JSON.
pub fn inventory_entry_bytes(manifest: &Manifest) -> usize {
    const JSON: usize = 60;
    manifest.api_version().len()
        + manifest.kind().len()
        + manifest.namespace().map_or(0, str::len)
        + manifest.name().len()
        + JSON
}

fn check_count(manifests: &[Manifest], limits: &Limits) -> Result<(), RenderError> {
    if let Some(over) = manifests.get(limits.objects) {
        return Err(RenderError {
            file: over.file.clone(),
            index: Some(over.index),
            message: format!(
                "the revision holds more than {} objects (--max-objects); nothing was applied",
                limits.objects
            ),
        });
    }
    let mut total = 0;
    for manifest in manifests {
        total += inventory_entry_bytes(manifest);
        if total > INVENTORY_BYTES {
            return Err(RenderError {
                file: manifest.file.clone(),
                index: Some(manifest.index),
                message: format!(
                    "the revision's objects need more than {} KiB in status.inventory (their \
                     kinds, names and namespaces), more than a GitSync's status can hold; \
                     split the path across GitSyncs; nothing was applied",
                    INVENTORY_BYTES >> 10
                ),
            });
        }
    }
    Ok(())
}

/// Each YAML document of `text`, or why it could not be built, all of them together within
/// `budget` bytes of memory (aliases expanded); nothing after the first failure, since the
/// rest of a file cannot be read reliably after it.
pub fn each_document_bounded(text: &str, budget: u64) -> Vec<Result<Value, String>> {
    let left = Cell::new(budget);
    let mut documents = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(text) {
        let built = bounded::Budget::new(&left)
            .deserialize(document)
            .map_err(|e| e.to_string());
        let failed = built.is_err();
        documents.push(built);
        if failed {
            break;
        }
    }
    documents
}

/// The YAML documents of `text`, all of them together built within `budget` bytes of
/// memory (aliases expanded): for files weir reads itself, such as kustomizations.
pub fn parse_bounded(text: &str, budget: u64) -> Result<Vec<Value>, String> {
    let left = Cell::new(budget);
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|document| {
            bounded::Budget::new(&left)
                .deserialize(document)
                .map_err(|e| e.to_string())
        })
        .collect()
}

/// The documents of one file, parsed and checked: the file within `limits.file_bytes`, each
/// document's expanded size within `limits.document_bytes`, and all of them within what is
/// `left` of the revision's budget. A SOPS-encrypted file is decrypted in memory by
/// `identities` first (the whole file within the revision's budget), or fails; `session`
/// counts its unwraps and keeps its values. Errors are not scrubbed here.
pub fn documents(
    file: &SourceFile,
    limits: &Limits,
    left: &Cell<u64>,
    identities: Option<&Identities>,
    session: &mut Session,
) -> Result<Vec<Manifest>, RenderError> {
    let fail = |index: Option<usize>, message: String| RenderError {
        file: file.path.clone(),
        index,
        message,
    };
    let size = file.bytes.len() as u64;
    if size > limits.file_bytes {
        return Err(fail(
            None,
            format!(
                "is {size} bytes, over the limit of {} (--max-file-bytes); nothing was applied",
                limits.file_bytes
            ),
        ));
    }
    let text =
        std::str::from_utf8(&file.bytes).map_err(|_| fail(None, "is not UTF-8 text".into()))?;
    let over = |left: u64| {
        let (limit, flag) = if limits.document_bytes <= left {
            (limits.document_bytes, "--max-document-bytes")
        } else {
            (limits.revision_bytes, "--max-revision-bytes")
        };
        format!(
            "expands (YAML aliases included) beyond {limit} bytes ({flag}); nothing was applied"
        )
    };
    let mut manifests = Vec::new();
    if sops::looks_encrypted(text) {
        // All its documents at once (the MAC spans them), within what the revision has left.
        let budget = Cell::new(left.get());
        let parsed = sops::parse(text, &budget).map_err(|message| {
            if message.contains(sops::OVER_BUDGET) {
                fail(None, over(0))
            } else {
                fail(None, format!("is not valid YAML: {message}"))
            }
        })?;
        let spent = left.get() - budget.get();
        let decrypted = sops::decrypt(parsed, identities, session).map_err(|error| {
            fail(
                error.document,
                format!("{}; nothing was applied", error.message),
            )
        })?;
        if let Some(decrypted) = decrypted {
            left.set(left.get().saturating_sub(spent));
            for (index, document) in decrypted.into_iter().enumerate() {
                push(&mut manifests, file, index, document.into_json())?;
            }
            return Ok(manifests);
        }
    }
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        // The smaller of the document's own budget and what the revision has left.
        let budget = Cell::new(limits.document_bytes.min(left.get()));
        let value = bounded::Budget::new(&budget)
            .deserialize(document)
            .map_err(|e| {
                let message = e.to_string();
                if message.contains(bounded::OVER_BUDGET) {
                    fail(Some(index), over(left.get()))
                } else {
                    fail(Some(index), format!("is not valid YAML: {message}"))
                }
            })?;
        let spent = limits.document_bytes.min(left.get()) - budget.get();
        left.set(left.get().saturating_sub(spent));
        push(&mut manifests, file, index, value)?;
    }
    Ok(manifests)
}

/// One document's objects, checked, onto `manifests`.
fn push(
    manifests: &mut Vec<Manifest>,
    file: &SourceFile,
    index: usize,
    value: Value,
) -> Result<(), RenderError> {
    let fail = |message: String| RenderError {
        file: file.path.clone(),
        index: Some(index),
        message,
    };
    match value {
        // An empty document (a leading `---`, comments only) holds nothing.
        Value::Null => return Ok(()),
        Value::Object(_) => {}
        other => {
            return Err(fail(format!(
                "is a {}, not a Kubernetes object",
                json_type(&other)
            )));
        }
    }
    // `List` and typed lists (`ConfigMapList`) have no name; a custom object whose kind
    // merely ends in "List" (`AllowList`) does, and is an object.
    if value["kind"].as_str().is_some_and(|k| k.ends_with("List"))
        && value["items"].is_array()
        && value["metadata"]["name"].is_null()
    {
        for (item, object) in value["items"].as_array().into_iter().flatten().enumerate() {
            check_object(object).map_err(|why| fail(format!("items[{item}]: {why}")))?;
            manifests.push(Manifest {
                file: file.path.clone(),
                index,
                object: object.clone(),
            });
        }
        return Ok(());
    }
    check_object(&value).map_err(fail)?;
    manifests.push(Manifest {
        file: file.path.clone(),
        index,
        object: value,
    });
    Ok(())
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
    // Every SOPS file is decrypted before this, or fails: a value still encrypted means a
    // file whose metadata is missing or broken, never to be applied as it is.
    if let Some(at) = encrypted_value(object, &mut Vec::new()) {
        return Err(format!(
            "{at} is a SOPS-encrypted value, but the object is not in a SOPS file weir can read (its sops metadata is missing or broken); encrypt the file again with sops"
        ));
    }
    Ok(())
}

/// The path of the first value that is wholly a SOPS `ENC[...]` value.
fn encrypted_value<'v>(value: &'v Value, path: &mut Vec<&'v str>) -> Option<String> {
    match value {
        Value::String(text) => (text.starts_with("ENC[AES256_GCM,data:") && text.ends_with(']'))
            .then(|| path.join(".")),
        Value::Array(items) => items.iter().find_map(|item| encrypted_value(item, path)),
        Value::Object(map) => map.iter().find_map(|(key, item)| {
            path.push(key);
            let found = encrypted_value(item, path);
            path.pop();
            found
        }),
        _ => None,
    }
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
