//! A SOPS encryptor for tests, written from SOPS's documented format, apart from weir's
//! decryptor (which it must agree with): the unit tests of `gitops::sops` include this file,
//! and so does the integration harness. Never part of the controller.
#![allow(dead_code)]

use aes_gcm::aead::consts::U32;
use aes_gcm::aead::rand_core::RngCore;
use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_yaml_ng::{Mapping, Value};
use sha2::{Digest, Sha512};

/// Which values are left in the clear, and what the MAC covers.
#[derive(Clone, Debug)]
pub struct Options {
    /// `unencrypted_suffix` (SOPS's default `_unencrypted` when no rule is given).
    pub unencrypted_suffix: Option<String>,
    /// `encrypted_regex`: only values under a key it matches are encrypted.
    pub encrypted_regex: Option<String>,
    pub mac_only_encrypted: bool,
    pub lastmodified: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            unencrypted_suffix: None,
            encrypted_regex: None,
            mac_only_encrypted: false,
            lastmodified: "2026-01-02T03:04:05Z".into(),
        }
    }
}

impl Options {
    /// Flux's advice for Kubernetes Secrets: only `data` and `stringData` encrypted.
    pub fn kubernetes() -> Self {
        Options {
            encrypted_regex: Some("^(data|stringData)$".into()),
            ..Options::default()
        }
    }

    fn encrypts(&self, path: &[String]) -> bool {
        if let Some(pattern) = &self.encrypted_regex {
            let regex = regex::Regex::new(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
            return path.iter().any(|key| regex.is_match(key));
        }
        let suffix = self.unencrypted_suffix.as_deref().unwrap_or("_unencrypted");
        !path.iter().any(|key| key.ends_with(suffix))
    }
}

/// A SOPS file of `documents` (mappings with string keys), its data key wrapped for each of
/// `recipients`.
pub fn encrypt(
    documents: &[Value],
    recipients: &[age::x25519::Recipient],
    options: &Options,
) -> String {
    let mut key = [0u8; 32];
    OsRng.fill_bytes(&mut key);
    let mut mac = Sha512::new();
    if options.mac_only_encrypted {
        // SHA-256("sops"), the documented start of a MAC over encrypted values only.
        mac.update([
            0x8a, 0x3f, 0xd2, 0xad, 0x54, 0xce, 0x66, 0x52, 0x7b, 0x10, 0x34, 0xf3, 0xd1, 0x47,
            0xbe, 0x0b, 0x0b, 0x97, 0x5b, 0x3b, 0xf4, 0x4f, 0x72, 0xc6, 0xfd, 0xad, 0xec, 0x81,
            0x76, 0xf2, 0x7d, 0x69,
        ]);
    }
    let mut encrypted: Vec<Value> = documents
        .iter()
        .map(|document| walk(document, &mut Vec::new(), &key, &mut mac, options))
        .collect();
    let digest: String = mac.finalize().iter().map(|b| format!("{b:02X}")).collect();
    let mut metadata = Mapping::new();
    let age: Vec<Value> = recipients
        .iter()
        .map(|recipient| {
            let wrapped = age::encrypt_and_armor(recipient, &key)
                .unwrap_or_else(|e| panic!("wrapping the data key: {e}"));
            let mut entry = Mapping::new();
            entry.insert("recipient".into(), recipient.to_string().into());
            entry.insert("enc".into(), wrapped.into());
            Value::Mapping(entry)
        })
        .collect();
    metadata.insert("age".into(), Value::Sequence(age));
    metadata.insert("lastmodified".into(), options.lastmodified.clone().into());
    metadata.insert(
        "mac".into(),
        seal(&key, "str", digest.as_bytes(), &options.lastmodified).into(),
    );
    if let Some(regex) = &options.encrypted_regex {
        metadata.insert("encrypted_regex".into(), regex.clone().into());
    } else if let Some(suffix) = &options.unencrypted_suffix {
        metadata.insert("unencrypted_suffix".into(), suffix.clone().into());
    }
    if options.mac_only_encrypted {
        metadata.insert("mac_only_encrypted".into(), true.into());
    }
    metadata.insert("version".into(), "3.9.0".into());
    // SOPS writes the metadata into every document.
    for document in &mut encrypted {
        if let Value::Mapping(map) = document {
            map.insert("sops".into(), Value::Mapping(metadata.clone()));
        }
    }
    encrypted
        .iter()
        .map(|d| serde_yaml_ng::to_string(d).unwrap_or_else(|e| panic!("writing YAML: {e}")))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// The text SOPS encrypts and hashes for a scalar, and its type name.
pub fn text_of(value: &Value) -> Option<(&'static str, String)> {
    match value {
        Value::String(s) => Some(("str", s.clone())),
        Value::Bool(true) => Some(("bool", "True".into())),
        Value::Bool(false) => Some(("bool", "False".into())),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Some(("int", i.to_string())),
            // Go's shortest 'f' formatting: Rust's Display of a finite float is the same.
            None => n.as_f64().map(|f| ("float", format!("{f}"))),
        },
        _ => None,
    }
}

fn walk(
    value: &Value,
    path: &mut Vec<String>,
    key: &[u8; 32],
    mac: &mut Sha512,
    options: &Options,
) -> Value {
    match value {
        Value::Mapping(map) => {
            let mut out = Mapping::new();
            for (k, v) in map {
                let name = k
                    .as_str()
                    .unwrap_or_else(|| panic!("SOPS takes string keys only: {k:?}"))
                    .to_owned();
                path.push(name);
                out.insert(k.clone(), walk(v, path, key, mac, options));
                path.pop();
            }
            Value::Mapping(out)
        }
        Value::Sequence(items) => Value::Sequence(
            items
                .iter()
                .map(|item| walk(item, path, key, mac, options))
                .collect(),
        ),
        Value::Null => Value::Null,
        leaf => {
            let Some((kind, text)) = text_of(leaf) else {
                panic!("no SOPS type for {leaf:?}")
            };
            let encrypt = options.encrypts(path);
            if encrypt || !options.mac_only_encrypted {
                mac.update(text.as_bytes());
            }
            if !encrypt {
                return leaf.clone();
            }
            if text.is_empty() {
                // SOPS leaves an empty value empty.
                return Value::String(String::new());
            }
            let aad = format!("{}:", path.join(":"));
            Value::String(seal(key, kind, text.as_bytes(), &aad))
        }
    }
}

/// `ENC[AES256_GCM,data:...,iv:...,tag:...,type:...]` of `plain`.
pub fn seal(key: &[u8; 32], kind: &str, plain: &[u8], aad: &str) -> String {
    let mut iv = [0u8; 32];
    OsRng.fill_bytes(&mut iv);
    let cipher = AesGcm::<Aes256, U32>::new(key.into());
    let sealed = cipher
        .encrypt(
            Nonce::<U32>::from_slice(&iv),
            Payload {
                msg: plain,
                aad: aad.as_bytes(),
            },
        )
        .unwrap_or_else(|e| panic!("AES-GCM: {e}"));
    let (data, tag) = sealed.split_at(sealed.len() - 16);
    format!(
        "ENC[AES256_GCM,data:{},iv:{},tag:{},type:{kind}]",
        STANDARD.encode(data),
        STANDARD.encode(iv),
        STANDARD.encode(tag)
    )
}
