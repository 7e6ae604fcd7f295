//! SOPS-encrypted files, decrypted with age identities, in memory (`spec.decryption`).
//!
//! The format, as SOPS documents and writes it: a YAML or JSON file whose first document
//! has a top-level `sops` mapping (the metadata); every other value is either left in the
//! clear (by `unencrypted_suffix`, `encrypted_regex`, ...) or replaced by
//! `ENC[AES256_GCM,data:<b64>,iv:<b64>,tag:<b64>,type:<str|int|float|bool|bytes|time>]`:
//! AES-256-GCM under the file's data key, with a 32-byte nonce and the path of keys to the
//! value (`stringData:password:`) as additional data. The data key is wrapped for each age
//! recipient in an armored age file (`sops.age[].enc`). The MAC is SHA-512 over the values
//! in file order (cleartext, encrypted or not, unless `mac_only_encrypted`), written as
//! upper-case hex and encrypted with the data key under `lastmodified` as additional data.
//! Keys, order and types are all covered: a file changed by anything but SOPS fails.
//!
//! A multi-document file that SOPS wrote carries the same metadata in every document and
//! one MAC over all of them; documents with different metadata (files encrypted apart and
//! then concatenated, which Flux decrypts document by document) are each decrypted with
//! their own. A document without metadata is taken as it is.
//!
//! Pure: no I/O, no clock. Errors name the document and the key path, never a value; a
//! value never reaches a log or a `Debug` from here.

use std::cell::Cell;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::io::Read;
use std::str::FromStr;
use std::sync::LazyLock;

use aes_gcm::aead::consts::U32;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, Nonce};
use age::x25519;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::Value;
use sha2::{Digest, Sha512};

mod redact;
pub use redact::Redactor;

/// The suffix of a Secret's data keys that hold age identities (Flux's convention).
pub const AGE_KEY_SUFFIX: &str = ".agekey";
/// The key under which SOPS keeps its metadata.
pub const METADATA_KEY: &str = "sops";
/// Identities one Secret may hold: far more than anyone keeps, few enough to try.
pub const MAX_IDENTITIES: usize = 64;
/// age entries of one file whose recipient is ours that are tried: a hostile file could
/// list ours a thousand times, each with a header full of stanzas to try.
const MAX_TRIED: usize = 8;
/// age unwraps one revision may take in all: `MAX_TRIED` bounds one file's metadata, but a
/// file may hold any number of documents encrypted apart, each with its own.
pub const MAX_UNWRAPS: usize = 64;
/// An armored data key for one recipient is about 400 bytes; this bounds the stanzas in its
/// header (each at least ~100 bytes, each one X25519 agreement to try).
const MAX_WRAPPED_KEY: usize = 4 << 10;
/// AES-256.
const DATA_KEY_BYTES: usize = 32;
/// SOPS's GCM nonce.
const NONCE_BYTES: usize = 32;
const TAG_BYTES: usize = 16;
/// The default rule when a file names none (SOPS's own default).
const DEFAULT_UNENCRYPTED_SUFFIX: &str = "_unencrypted";
/// What a regex of a file's metadata may compile to.
const REGEX_SIZE: usize = 1 << 20;
/// Hashed first with `mac_only_encrypted`, so that such a MAC never equals one over all
/// values: SHA-256 of "sops", as the SOPS format defines it.
const MAC_ONLY_ENCRYPTED_INIT: [u8; 32] = [
    0x8a, 0x3f, 0xd2, 0xad, 0x54, 0xce, 0x66, 0x52, 0x7b, 0x10, 0x34, 0xf3, 0xd1, 0x47, 0xbe, 0x0b,
    0x0b, 0x97, 0x5b, 0x3b, 0xf4, 0x4f, 0x72, 0xc6, 0xfd, 0xad, 0xec, 0x81, 0x76, 0xf2, 0x7d, 0x69,
];

/// The age identities a GitSync decrypts with, from its Secret. Debug shows only their
/// public recipients.
pub struct Identities {
    keys: Vec<(x25519::Identity, String)>,
    /// `Secret ns/name (spec.decryption.secretRef)`, for messages.
    source: String,
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identities")
            .field("source", &self.source)
            .field(
                "recipients",
                &self.keys.iter().map(|(_, r)| r).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Identities {
    /// Every identity in the Secret's data entries whose key ends in `.agekey`: lines of
    /// `AGE-SECRET-KEY-1...`, blank lines and `#` comments. `source` names the Secret and the
    /// field that named it. Errors name the entry and line, never their text.
    pub fn from_secret<'a>(
        source: &str,
        data: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<Identities, String> {
        let mut keys = Vec::new();
        let mut entries = 0;
        for (name, bytes) in data {
            if !name.ends_with(AGE_KEY_SUFFIX) {
                continue;
            }
            entries += 1;
            let text = std::str::from_utf8(bytes)
                .map_err(|_| format!("{source}: data key {name} is not UTF-8 text"))?;
            for (number, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let identity = x25519::Identity::from_str(line).map_err(|_| {
                    format!(
                        "{source}: data key {name}, line {}: not an age identity (AGE-SECRET-KEY-1...); \
                         only native age X25519 identities are supported",
                        number + 1
                    )
                })?;
                if keys.len() == MAX_IDENTITIES {
                    return Err(format!(
                        "{source}: holds more than {MAX_IDENTITIES} age identities; keep the ones this GitSync needs"
                    ));
                }
                let recipient = identity.to_public().to_string();
                keys.push((identity, recipient));
            }
        }
        if entries == 0 {
            return Err(format!(
                "{source}: has no data key ending in {AGE_KEY_SUFFIX}: put the age identity \
                 (AGE-SECRET-KEY-1...) under a key such as identity{AGE_KEY_SUFFIX}"
            ));
        }
        if keys.is_empty() {
            return Err(format!(
                "{source}: its {AGE_KEY_SUFFIX} entries hold no age identity (AGE-SECRET-KEY-1...)"
            ));
        }
        Ok(Identities {
            keys,
            source: source.to_owned(),
        })
    }

    /// Where the identities came from, for messages.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The public recipients of the identities, for messages.
    pub fn recipients(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(_, r)| r.as_str())
    }
}

/// What decrypting one revision's files shares: the age unwraps spent (`MAX_UNWRAPS`), the
/// data keys already unwrapped (the same stanza in many documents is opened once), and the
/// values decrypted, to scrub from the revision's messages.
#[derive(Default)]
pub struct Session {
    unwraps: usize,
    /// By (recipient, armored key): what unwrapping it gave.
    keys: HashMap<(String, String), Result<[u8; DATA_KEY_BYTES], String>>,
    pub redactor: Redactor,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("unwraps", &self.unwraps)
            .field("redactor", &self.redactor)
            .finish_non_exhaustive()
    }
}

/// A document as SOPS sees it: mappings keep their order, since the MAC covers it, and
/// scalars keep their YAML type, since the MAC covers their text as SOPS writes it.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(String, Node)>),
}

impl Node {
    fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Node::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Whether this document carries SOPS metadata (a top-level `sops` mapping with a MAC).
    pub fn is_encrypted(&self) -> bool {
        self.get(METADATA_KEY)
            .and_then(|metadata| metadata.get("mac"))
            .is_some()
    }

    /// The document as JSON (non-finite floats become null, as in the rest of rendering).
    pub fn into_json(self) -> Value {
        match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(b),
            Node::Int(i) => Value::Number(i.into()),
            Node::Float(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
            Node::Str(s) => Value::String(s),
            Node::Seq(items) => Value::Array(items.into_iter().map(Node::into_json).collect()),
            Node::Map(entries) => Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, v.into_json()))
                    .collect(),
            ),
        }
    }

    /// `kind name` of a document, when its metadata is in the clear, for messages.
    fn describe(&self) -> Option<String> {
        let kind = self.get("kind")?.as_str()?;
        let name = self.get("metadata")?.get("name")?.as_str()?;
        Some(format!("{kind} {name}"))
    }
}

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Null => serializer.serialize_unit(),
            Node::Bool(b) => serializer.serialize_bool(*b),
            Node::Int(i) => serializer.serialize_i64(*i),
            Node::Float(f) if f.is_finite() => serializer.serialize_f64(*f),
            Node::Float(_) => serializer.serialize_unit(),
            Node::Str(s) => serializer.serialize_str(s),
            Node::Seq(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Node::Map(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

/// Documents as text a YAML reader (kustomize) takes: each one JSON, in order, keys in
/// their order, separated by `---`.
pub fn to_text(documents: &[Node]) -> String {
    documents
        .iter()
        .map(|d| serde_json::to_string(d).unwrap_or_else(|_| "null".into()))
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// Whether a file may be SOPS-encrypted, by its text alone: cheap, and never false for a
/// file that is (both words appear in every SOPS YAML or JSON file).
pub fn looks_encrypted(text: &str) -> bool {
    text.contains(METADATA_KEY) && text.contains("mac") && text.contains("ENC[AES256_GCM")
}

/// Why a file cannot be decrypted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    /// The document at fault, when one is.
    pub document: Option<usize>,
    /// None of the identities opens any of the file's age entries: a file for someone else.
    pub no_identity: bool,
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

fn error(document: Option<usize>, message: impl Into<String>) -> Error {
    Error {
        document,
        no_identity: false,
        message: message.into(),
    }
}

/// The documents of `text`, in order, within `budget` bytes of memory (aliases expanded;
/// the same estimate as rendering's).
pub fn parse(text: &str, budget: &Cell<u64>) -> Result<Vec<Node>, String> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|document| {
            Budget(budget)
                .deserialize(document)
                .map_err(|e| e.to_string())
        })
        .collect()
}

/// The file's documents, those SOPS encrypted decrypted (their `sops` key removed), the
/// others as they are; None when no document is encrypted. `identities` None: the GitSync
/// has no `spec.decryption`, and an encrypted document is an error saying so.
/// `session` is the revision's: its unwraps are counted and its values kept for scrubbing.
pub fn decrypt(
    documents: Vec<Node>,
    identities: Option<&Identities>,
    session: &mut Session,
) -> Result<Option<Vec<Node>>, Error> {
    let encrypted: Vec<usize> = (0..documents.len())
        .filter(|&i| documents[i].is_encrypted())
        .collect();
    let Some(&first) = encrypted.first() else {
        return Ok(None);
    };
    let Some(identities) = identities else {
        let what = documents[first]
            .describe()
            .map_or(String::new(), |d| format!(" ({d})"));
        return Err(error(
            Some(first),
            format!(
                "is SOPS-encrypted{what}, and spec.decryption is not set: set spec.decryption \
                 {{provider: sops, secretRef: {{name: <Secret>}}}} naming a Secret that holds its age identity"
            ),
        ));
    };
    // Documents with the same metadata are one SOPS tree: one data key, one MAC over all.
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for &index in &encrypted {
        let metadata = documents[index].get(METADATA_KEY);
        match groups
            .iter_mut()
            .find(|g| documents[g[0]].get(METADATA_KEY) == metadata)
        {
            Some(group) => group.push(index),
            None => groups.push(vec![index]),
        }
    }
    let mut out: Vec<Option<Node>> = documents.into_iter().map(Some).collect();
    for group in groups {
        let head = group[0];
        let Some(Node::Map(first)) = &out[head] else {
            continue;
        };
        let Some((_, metadata)) = first.iter().find(|(k, _)| k == METADATA_KEY) else {
            continue;
        };
        let metadata = Metadata::read(metadata).map_err(|m| error(Some(head), m))?;
        let key = data_key(&metadata, identities, session).map_err(|mut e| {
            e.document = Some(head);
            e
        })?;
        let mut tree = Tree {
            metadata: &metadata,
            key: &key,
            hash: Sha512::new(),
            redactor: &mut session.redactor,
        };
        if metadata.mac_only_encrypted {
            tree.hash.update(MAC_ONLY_ENCRYPTED_INIT);
        }
        for &index in &group {
            let Some(Node::Map(entries)) = out[index].take() else {
                continue;
            };
            let mut path = Vec::new();
            let decrypted = tree
                .map(entries, &mut path)
                .map_err(|m| error(Some(index), m))?;
            out[index] = Some(Node::Map(decrypted));
        }
        let computed = hex_upper(&tree.hash.finalize());
        let stored = decrypt_value(&metadata.mac, &key, metadata.lastmodified.as_bytes())
            .map_err(|why| {
                error(
                    Some(head),
                    format!("sops.mac cannot be decrypted ({why}): the file was changed after SOPS wrote it"),
                )
            })?;
        if stored.as_str() != Some(computed.as_str()) {
            let what = if group.len() > 1 {
                format!("documents {group:?} together")
            } else {
                "the document".into()
            };
            return Err(error(
                Some(head),
                format!(
                    "its MAC does not match {what}: the file was changed after SOPS encrypted it \
                     (a value, a key or their order); encrypt it again with sops"
                ),
            ));
        }
    }
    Ok(Some(out.into_iter().flatten().collect()))
}

/// Which values a file's metadata says are encrypted.
enum Rule {
    UnencryptedSuffix(String),
    EncryptedSuffix(String),
    UnencryptedRegex(regex::Regex),
    EncryptedRegex(regex::Regex),
}

impl Rule {
    /// SOPS's rule: each is judged on every key of the path.
    fn encrypts(&self, path: &[String]) -> bool {
        match self {
            Rule::UnencryptedSuffix(s) => !path.iter().any(|k| k.ends_with(s.as_str())),
            Rule::EncryptedSuffix(s) => path.iter().any(|k| k.ends_with(s.as_str())),
            Rule::UnencryptedRegex(r) => !path.iter().any(|k| r.is_match(k)),
            Rule::EncryptedRegex(r) => path.iter().any(|k| r.is_match(k)),
        }
    }
}

struct Metadata {
    /// (recipient, armored data key)
    age: Vec<(String, String)>,
    /// As SOPS formats it for the MAC's additional data (Go's RFC 3339).
    lastmodified: String,
    mac: String,
    rule: Rule,
    mac_only_encrypted: bool,
}

impl Metadata {
    fn read(node: &Node) -> Result<Metadata, String> {
        let text = |field: &str| -> Result<Option<&str>, String> {
            match node.get(field) {
                None | Some(Node::Null) => Ok(None),
                Some(Node::Str(s)) => Ok(Some(s)),
                Some(_) => Err(format!("sops.{field} must be a string")),
            }
        };
        let mac = text("mac")?
            .ok_or("sops.mac is missing: the file is not complete SOPS output")?
            .to_owned();
        let lastmodified = text("lastmodified")?
            .ok_or("sops.lastmodified is missing: the file is not complete SOPS output")?;
        let lastmodified = go_rfc3339(lastmodified).ok_or(
            "sops.lastmodified is not an RFC 3339 time: the file is not complete SOPS output",
        )?;
        let age_of = |entries: Option<&Node>, at: &str| -> Result<Vec<(String, String)>, String> {
            let mut found = Vec::new();
            match entries {
                None | Some(Node::Null) => {}
                Some(Node::Seq(items)) => {
                    for (i, item) in items.iter().enumerate() {
                        let field = |f: &str| {
                            item.get(f)
                                .and_then(Node::as_str)
                                .map(|s| s.trim().to_owned())
                                .ok_or(format!("{at}[{i}].{f} is missing or not a string"))
                        };
                        found.push((field("recipient")?, field("enc")?));
                    }
                }
                Some(_) => return Err(format!("{at} must be a list")),
            }
            Ok(found)
        };
        let mut age = age_of(node.get("age"), "sops.age")?;
        match node.get("key_groups") {
            None | Some(Node::Null) => {}
            Some(Node::Seq(groups)) if groups.len() <= 1 => {
                for group in groups {
                    age.extend(age_of(group.get("age"), "sops.key_groups[0].age")?);
                }
            }
            Some(Node::Seq(_)) => {
                return Err(
                    "sops.key_groups splits the data key across several groups (Shamir), which weir does not support: encrypt the file for age recipients in one group".into(),
                );
            }
            Some(_) => return Err("sops.key_groups must be a list".into()),
        }
        if age.is_empty() {
            let others: Vec<&str> = ["pgp", "kms", "gcp_kms", "azure_kv", "hc_vault", "hckms"]
                .into_iter()
                .filter(|k| matches!(node.get(k), Some(Node::Seq(items)) if !items.is_empty()))
                .collect();
            return Err(format!(
                "is encrypted for {}, not for age: weir decrypts with age identities only; \
                 add an age recipient with `sops updatekeys` or `sops -r -i --add-age`",
                if others.is_empty() {
                    "no recipient".to_owned()
                } else {
                    others.join(", ")
                }
            ));
        }
        let mut rules = Vec::new();
        for field in [
            "unencrypted_suffix",
            "encrypted_suffix",
            "unencrypted_regex",
            "encrypted_regex",
            "unencrypted_comment_regex",
            "encrypted_comment_regex",
        ] {
            if let Some(value) = text(field)?.filter(|v| !v.is_empty()) {
                rules.push((field, value));
            }
        }
        let compile = |field: &str, pattern: &str| {
            regex::RegexBuilder::new(pattern)
                .size_limit(REGEX_SIZE)
                .build()
                .map_err(|_| format!("sops.{field} is not a regular expression weir can use"))
        };
        let rule = match rules.as_slice() {
            [] => Rule::UnencryptedSuffix(DEFAULT_UNENCRYPTED_SUFFIX.into()),
            [("unencrypted_suffix", s)] => Rule::UnencryptedSuffix((*s).to_owned()),
            [("encrypted_suffix", s)] => Rule::EncryptedSuffix((*s).to_owned()),
            [("unencrypted_regex", r)] => Rule::UnencryptedRegex(compile("unencrypted_regex", r)?),
            [("encrypted_regex", r)] => Rule::EncryptedRegex(compile("encrypted_regex", r)?),
            [(field, _)] => {
                return Err(format!(
                    "sops.{field}: files encrypted by their comments are not supported (weir reads no YAML comments); encrypt with --encrypted-regex or --unencrypted-suffix instead"
                ));
            }
            _ => {
                return Err(
                    "sops names more than one of encrypted_suffix, unencrypted_suffix, encrypted_regex and unencrypted_regex, which SOPS itself refuses".into(),
                );
            }
        };
        let mac_only_encrypted = match node.get("mac_only_encrypted") {
            None | Some(Node::Null) => false,
            Some(Node::Bool(b)) => *b,
            Some(Node::Str(s)) => go_bool(s).ok_or("sops.mac_only_encrypted must be a boolean")?,
            Some(_) => return Err("sops.mac_only_encrypted must be a boolean".into()),
        };
        Ok(Metadata {
            age,
            lastmodified,
            mac,
            rule,
            mac_only_encrypted,
        })
    }
}

/// The file's data key, unwrapped by the identity its age entry names.
fn data_key(
    metadata: &Metadata,
    identities: &Identities,
    session: &mut Session,
) -> Result<[u8; DATA_KEY_BYTES], Error> {
    let mut tried = 0;
    let mut failed = None;
    for (recipient, wrapped) in &metadata.age {
        let Some((identity, _)) = identities.keys.iter().find(|(_, r)| r == recipient) else {
            continue;
        };
        if tried == MAX_TRIED {
            break;
        }
        tried += 1;
        let stanza = (recipient.clone(), wrapped.clone());
        let outcome = match session.keys.get(&stanza) {
            Some(known) => known.clone(),
            None => {
                if session.unwraps == MAX_UNWRAPS {
                    return Err(error(
                        None,
                        format!(
                            "decrypting it would take more than {MAX_UNWRAPS} age unwraps in this revision \
                             (each document encrypted apart has its own data key); encrypt the documents \
                             of a file together, with one sops command"
                        ),
                    ));
                }
                session.unwraps += 1;
                let outcome = unwrap(wrapped, identity);
                session.keys.insert(stanza, outcome.clone());
                outcome
            }
        };
        match outcome {
            Ok(key) => return Ok(key),
            Err(why) => failed = Some(why),
        }
    }
    if let Some(why) = failed {
        return Err(error(
            None,
            format!("the data key wrapped for its age recipient cannot be opened: {why}"),
        ));
    }
    let theirs: Vec<&str> = metadata
        .age
        .iter()
        .map(|(r, _)| r.as_str())
        .take(8)
        .collect();
    let ours: Vec<&str> = identities.recipients().take(8).collect();
    Err(Error {
        document: None,
        no_identity: true,
        message: format!(
            "is encrypted for age recipients {} and {} holds identities for {} only: add the file's \
             identity to the Secret, or encrypt the file for one of these recipients",
            theirs.join(", "),
            identities.source(),
            ours.join(", ")
        ),
    })
}

fn unwrap(armored: &str, identity: &x25519::Identity) -> Result<[u8; DATA_KEY_BYTES], String> {
    if armored.len() > MAX_WRAPPED_KEY {
        return Err(format!(
            "the wrapped key is over {MAX_WRAPPED_KEY} bytes, more than any one recipient needs"
        ));
    }
    let reader = age::armor::ArmoredReader::new(armored.as_bytes());
    let decryptor = age::Decryptor::new(reader).map_err(|e| format!("not an age file ({e})"))?;
    let mut plain = decryptor
        .decrypt(std::iter::once(identity as &dyn age::Identity))
        .map_err(|e| e.to_string())?;
    let mut key = Vec::with_capacity(DATA_KEY_BYTES);
    (&mut plain)
        .take(DATA_KEY_BYTES as u64 + 1)
        .read_to_end(&mut key)
        .map_err(|e| e.to_string())?;
    key.try_into()
        .map_err(|_| "the data key is not 32 bytes".to_owned())
}

/// A walk over one SOPS tree: decrypting what the rule says is encrypted, hashing what the
/// MAC covers.
struct Tree<'m> {
    metadata: &'m Metadata,
    key: &'m [u8; DATA_KEY_BYTES],
    hash: Sha512,
    /// Keeps each value decrypted, for scrubbing messages.
    redactor: &'m mut Redactor,
}

impl Tree<'_> {
    fn map(
        &mut self,
        entries: Vec<(String, Node)>,
        path: &mut Vec<String>,
    ) -> Result<Vec<(String, Node)>, String> {
        let top = path.is_empty();
        let mut out = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            if top && key == METADATA_KEY {
                continue;
            }
            path.push(key);
            let value = self.value(value, path)?;
            let key = path.pop().unwrap_or_default();
            out.push((key, value));
        }
        Ok(out)
    }

    fn value(&mut self, node: Node, path: &mut Vec<String>) -> Result<Node, String> {
        match node {
            Node::Map(entries) => Ok(Node::Map(self.map(entries, path)?)),
            Node::Seq(items) => items
                .into_iter()
                .map(|item| self.value(item, path))
                .collect::<Result<_, _>>()
                .map(Node::Seq),
            // SOPS neither encrypts nor hashes a null.
            Node::Null => Ok(Node::Null),
            leaf => {
                let encrypted = self.metadata.rule.encrypts(path);
                let plain = if encrypted {
                    let Node::Str(text) = &leaf else {
                        return Err(format!(
                            "{}: is not encrypted, but sops metadata says it must be",
                            path.join(".")
                        ));
                    };
                    let aad = format!("{}:", path.join(":"));
                    let plain = decrypt_value(text, self.key, aad.as_bytes())
                        .map_err(|why| format!("{}: cannot be decrypted: {why}", path.join(".")))?;
                    if let Some(text) = plain.text() {
                        self.redactor.add(text);
                    }
                    plain
                } else {
                    Plain::Node(leaf)
                };
                if encrypted || !self.metadata.mac_only_encrypted {
                    self.hash.update(plain.mac_bytes());
                }
                plain
                    .into_node()
                    .map_err(|why| format!("{}: {why}", path.join(".")))
            }
        }
    }
}

/// A value as SOPS holds it once decrypted: its MAC text depends on its type.
enum Plain {
    Node(Node),
    /// `bytes`: the MAC covers them as they are.
    Bytes(Vec<u8>),
    /// `time`: Go's RFC 3339 with nanoseconds.
    Time(String),
}

impl Plain {
    fn as_str(&self) -> Option<&str> {
        match self {
            Plain::Node(Node::Str(s)) => Some(s),
            _ => None,
        }
    }

    /// Its text, when it is text: what a message could quote.
    fn text(&self) -> Option<&str> {
        match self {
            Plain::Node(Node::Str(s)) | Plain::Time(s) => Some(s),
            Plain::Bytes(b) => std::str::from_utf8(b).ok(),
            Plain::Node(_) => None,
        }
    }

    fn mac_bytes(&self) -> Vec<u8> {
        match self {
            Plain::Node(Node::Str(s)) | Plain::Time(s) => s.as_bytes().to_vec(),
            Plain::Node(Node::Int(i)) => i.to_string().into_bytes(),
            Plain::Node(Node::Float(f)) => go_float(*f).into_bytes(),
            Plain::Node(Node::Bool(true)) => b"True".to_vec(),
            Plain::Node(Node::Bool(false)) => b"False".to_vec(),
            Plain::Bytes(b) => b.clone(),
            Plain::Node(_) => Vec::new(),
        }
    }

    fn into_node(self) -> Result<Node, String> {
        match self {
            Plain::Node(node) => Ok(node),
            Plain::Time(s) => Ok(Node::Str(s)),
            Plain::Bytes(b) => String::from_utf8(b)
                .map(Node::Str)
                .map_err(|_| "decrypted bytes are not UTF-8 text".into()),
        }
    }
}

static ENCRYPTED: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r"^ENC\[AES256_GCM,data:(.+),iv:(.+),tag:(.+),type:(.+)\]")
        .unwrap_or_else(|e| unreachable!("a fixed pattern: {e}"))
});

/// One `ENC[...]` value, opened with the data key and `aad`; never says what it holds.
fn decrypt_value(text: &str, key: &[u8; DATA_KEY_BYTES], aad: &[u8]) -> Result<Plain, String> {
    // SOPS writes an empty value as it is.
    if text.is_empty() {
        return Ok(Plain::Node(Node::Str(String::new())));
    }
    let parts = ENCRYPTED
        .captures(text)
        .ok_or("not in SOPS's ENC[AES256_GCM,...] form")?;
    let field = |i: usize| parts.get(i).map_or("", |m| m.as_str());
    let decode = |i: usize, what: &str| {
        STANDARD
            .decode(field(i))
            .map_err(|_| format!("its {what} is not base64"))
    };
    let (mut data, iv, tag) = (decode(1, "data")?, decode(2, "iv")?, decode(3, "tag")?);
    if iv.len() != NONCE_BYTES || tag.len() != TAG_BYTES {
        return Err("its iv or tag has the wrong length".into());
    }
    data.extend_from_slice(&tag);
    let cipher = AesGcm::<Aes256, U32>::new(key.into());
    let plain = cipher
        .decrypt(Nonce::<U32>::from_slice(&iv), Payload { msg: &data, aad })
        .map_err(|_| "authentication failed (the value was changed, moved, or encrypted with another key)")?;
    let text = || String::from_utf8(plain.clone()).map_err(|_| "its text is not UTF-8".to_owned());
    let bad = |t: &str| format!("it is not a valid {t}");
    Ok(match field(4) {
        "str" | "comment" => Plain::Node(Node::Str(text()?)),
        "int" => Plain::Node(Node::Int(text()?.parse().map_err(|_| bad("int"))?)),
        "float" => Plain::Node(Node::Float(text()?.parse().map_err(|_| bad("float"))?)),
        "bool" => Plain::Node(Node::Bool(go_bool(&text()?).ok_or_else(|| bad("bool"))?)),
        "bytes" => Plain::Bytes(plain),
        "time" => Plain::Time(go_rfc3339_nano(&text()?).ok_or_else(|| bad("time"))?),
        other => {
            return Err(format!(
                "unknown type {:?}",
                other.chars().take(16).collect::<String>()
            ));
        }
    })
}

/// Go's `strconv.ParseBool`.
fn go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `strconv.FormatFloat(f, 'f', -1, 64)`: the shortest digits that read back the same,
/// never an exponent, which is what Rust's `Display` writes for finite values.
pub fn go_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{f}")
    }
}

/// A time as Go's `Format(time.RFC3339)` writes it once parsed: whole seconds, `Z` for UTC.
fn go_rfc3339(text: &str) -> Option<String> {
    let time = chrono::DateTime::parse_from_rfc3339(text.trim()).ok()?;
    let offset = time.offset().local_minus_utc();
    let zone = if offset == 0 {
        "Z".to_owned()
    } else {
        time.format("%:z").to_string()
    };
    Some(format!("{}{zone}", time.format("%Y-%m-%dT%H:%M:%S")))
}

/// Go's `Time.MarshalText` (RFC 3339 with nanoseconds, trailing zeros dropped).
fn go_rfc3339_nano(text: &str) -> Option<String> {
    let time = chrono::DateTime::parse_from_rfc3339(text.trim()).ok()?;
    let seconds = go_rfc3339(text)?;
    let nanos = time.timestamp_subsec_nanos();
    if nanos == 0 {
        return Some(seconds);
    }
    let fraction = format!("{nanos:09}");
    let fraction = fraction.trim_end_matches('0');
    let (date, zone) = seconds.split_at(19);
    Some(format!("{date}.{fraction}{zone}"))
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// Builds a `Node` within a budget on its size in memory, aliases expanded (the estimate of
/// `render::bounded`: a node, a list slot, a map entry).
#[derive(Clone, Copy)]
struct Budget<'a>(&'a Cell<u64>);

const NODE: u64 = std::mem::size_of::<Node>() as u64;
const ENTRY: u64 = 64;

/// The message a document over its budget fails with.
pub const OVER_BUDGET: &str = "expands beyond the size limit";

impl Budget<'_> {
    fn spend<E: de::Error>(&self, bytes: u64) -> Result<(), E> {
        let left = self.0.get();
        if bytes > left {
            self.0.set(0);
            return Err(E::custom(OVER_BUDGET));
        }
        self.0.set(left - bytes);
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Budget<'_> {
    type Value = Node;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Budget<'_> {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        self.spend(NODE)?;
        Ok(Node::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        self.spend(NODE)?;
        Ok(Node::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        self.spend(NODE)?;
        // Beyond i64 SOPS has no type either (Go's int), so it never wrote one.
        i64::try_from(v)
            .map(Node::Int)
            .map_err(|_| E::custom("an integer beyond 64 bits"))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        self.spend(NODE)?;
        Ok(Node::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        self.spend(NODE + v.len() as u64)?;
        Ok(Node::Str(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        self.spend(NODE + v.len() as u64)?;
        Ok(Node::Str(v))
    }

    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        self.spend(NODE)?;
        Ok(Node::Null)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        self.spend(NODE)?;
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        self.spend(NODE)?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            self.spend(NODE)?;
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        self.spend(NODE)?;
        let mut entries: Vec<(String, Node)> = Vec::new();
        let mut seen = BTreeSet::new();
        while let Some(key) = map.next_key_seed(self)? {
            let key = match key {
                Node::Str(key) => key,
                // SOPS takes string keys only, and so never wrote another: its text, as
                // rendering takes it, makes the MAC fail rather than the parse.
                Node::Null => "null".into(),
                Node::Bool(b) => b.to_string(),
                Node::Int(i) => i.to_string(),
                Node::Float(f) => f.to_string(),
                Node::Seq(_) | Node::Map(_) => {
                    return Err(de::Error::custom("a mapping key must be a scalar"));
                }
            };
            let value = map.next_value_seed(self)?;
            self.spend(ENTRY)?;
            // SOPS refuses a repeated key too, so it never wrote one.
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom("a mapping key appears twice"));
            }
            entries.push((key, value));
        }
        Ok(Node::Map(entries))
    }
}

#[cfg(test)]
#[path = "../../tests/support/sops_encrypt.rs"]
pub(crate) mod encrypt;

#[cfg(test)]
mod tests;
