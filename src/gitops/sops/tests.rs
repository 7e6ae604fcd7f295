use std::cell::Cell;

use proptest::prelude::*;
use serde_json::json;

use super::encrypt::{self, Options};
use super::*;

fn identity() -> (x25519::Identity, Identities) {
    let identity = x25519::Identity::generate();
    let text = format!(
        "# created: today\n# public key: {}\n{}\n",
        identity.to_public(),
        age::secrecy::ExposeSecret::expose_secret(&identity.to_string())
    );
    let identities = Identities::from_secret(
        "Secret apps/sops-age (spec.decryption.secretRef)",
        [("identity.agekey", text.as_bytes())],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    (identity, identities)
}

fn yaml(text: &str) -> serde_yaml_ng::Value {
    serde_yaml_ng::from_str(text).unwrap_or_else(|e| panic!("{e}"))
}

const SECRET: &str = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  labels: {app: web}\ntype: Opaque\nstringData:\n  password: hunter2\n  port: 5432\n  ratio: 0.25\n  enabled: true\n  empty: ''\n  nothing: null\n  list: [a, 1, false]\n  nested: {user: admin}\n";

fn run(text: &str, identities: Option<&Identities>) -> Result<Option<Vec<Node>>, Error> {
    let budget = Cell::new(8 << 20);
    let documents = parse(text, &budget).unwrap_or_else(|e| panic!("{e}"));
    decrypt(documents, identities, &mut Session::default())
}

fn decrypted_json(text: &str, identities: &Identities) -> Vec<Value> {
    run(text, Some(identities))
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("not encrypted"))
        .into_iter()
        .map(Node::into_json)
        .collect()
}

fn failure(text: &str, identities: &Identities) -> Error {
    match run(text, Some(identities)) {
        Err(error) => error,
        Ok(documents) => panic!("decrypted: {documents:?}"),
    }
}

#[test]
fn a_file_decrypts_to_its_values_with_their_types_and_no_metadata() {
    let (identity, identities) = identity();
    for options in [Options::default(), Options::kubernetes()] {
        let text = encrypt::encrypt(&[yaml(SECRET)], &[identity.to_public()], &options);
        assert!(looks_encrypted(&text));
        assert!(!text.contains("hunter2"), "{text}");
        let expected: Value = serde_yaml_ng::from_str(SECRET).unwrap_or_default();
        assert_eq!(
            decrypted_json(&text, &identities),
            vec![expected],
            "{options:?}"
        );
    }
}

#[test]
fn a_file_that_is_not_encrypted_is_left_to_rendering() {
    let (_, identities) = identity();
    assert_eq!(run(SECRET, Some(&identities)), Ok(None));
    // A `sops` field without a MAC is not SOPS's.
    assert_eq!(run("sops: {note: mine}\nkind: X\n", None), Ok(None));
}

#[test]
fn an_encrypted_file_without_decryption_names_the_field_to_set() {
    let (identity, _) = identity();
    let text = encrypt::encrypt(
        &[yaml(SECRET)],
        &[identity.to_public()],
        &Options::kubernetes(),
    );
    let error = run(&text, None).expect_err("refused");
    assert_eq!(error.document, Some(0));
    assert!(
        error.message.contains("spec.decryption is not set") && error.message.contains("Secret db"),
        "{error}"
    );
}

#[test]
fn a_file_for_another_key_names_both_recipients_and_no_value() {
    let (_, identities) = identity();
    let other = x25519::Identity::generate();
    let text = encrypt::encrypt(&[yaml(SECRET)], &[other.to_public()], &Options::default());
    let error = failure(&text, &identities);
    assert!(error.no_identity, "{error:?}");
    assert!(
        error.message.contains(&other.to_public().to_string()),
        "{error}"
    );
    assert!(
        error
            .message
            .contains(identities.recipients().next().unwrap_or("?")),
        "{error}"
    );
    assert!(error.message.contains("Secret apps/sops-age"), "{error}");
}

#[test]
fn any_of_several_recipients_opens_the_file() {
    let (identity, identities) = identity();
    let other = x25519::Identity::generate();
    let text = encrypt::encrypt(
        &[yaml(SECRET)],
        &[other.to_public(), identity.to_public()],
        &Options::default(),
    );
    assert_eq!(decrypted_json(&text, &identities).len(), 1);
}

/// Replaces the first `from` in `text`, which must be there.
fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} in {text}");
    text.replacen(from, to, 1)
}

fn value_of<'t>(text: &'t str, key: &str) -> &'t str {
    let start = text
        .find(&format!("{key}: "))
        .unwrap_or_else(|| panic!("{key} in {text}"))
        + key.len()
        + 2;
    let end = text[start..].find('\n').map_or(text.len(), |e| start + e);
    &text[start..end]
}

#[test]
fn a_changed_encrypted_value_fails_by_its_path() {
    let (identity, identities) = identity();
    let text = encrypt::encrypt(
        &[yaml(SECRET)],
        &[identity.to_public()],
        &Options::kubernetes(),
    );
    let password = value_of(&text, "password").to_owned();
    // One bit of the ciphertext flipped.
    let data = password.split("data:").nth(1).unwrap_or_default();
    let flipped = if data.starts_with('A') { "B" } else { "A" };
    let tampered = edit(&text, &password, &password.replacen(&data[..1], flipped, 1));
    let error = failure(&tampered, &identities);
    assert!(
        error
            .message
            .starts_with("stringData.password: cannot be decrypted"),
        "{error}"
    );
    // Moved to another key: the path is authenticated too.
    let user = value_of(&text, "user").to_owned();
    let moved = edit(&text, &user, &password);
    let error = failure(&moved, &identities);
    assert!(
        error.message.starts_with("stringData.nested.user"),
        "{error}"
    );
    assert!(!error.message.contains("hunter2") && !error.message.contains("admin"));
}

#[test]
fn a_changed_clear_value_or_order_fails_the_mac() {
    let (identity, identities) = identity();
    let text = encrypt::encrypt(
        &[yaml(SECRET)],
        &[identity.to_public()],
        &Options::kubernetes(),
    );
    for tampered in [
        edit(&text, "name: db", "name: other"),
        edit(&text, "type: Opaque", "type: kubernetes.io/tls"),
        // The same keys and values in another order.
        edit(
            &edit(&text, "kind: Secret\n", ""),
            "apiVersion: v1\n",
            "kind: Secret\napiVersion: v1\n",
        ),
    ] {
        let error = failure(&tampered, &identities);
        assert!(error.message.contains("MAC does not match"), "{error}");
    }
}

#[test]
fn a_changed_mac_fails() {
    let (identity, identities) = identity();
    let text = encrypt::encrypt(
        &[yaml(SECRET)],
        &[identity.to_public()],
        &Options::default(),
    );
    let mac = value_of(&text, "mac").to_owned();
    // Its type changed: the tag no longer authenticates it.
    let forged = edit(&text, &mac, &mac.replacen("type:str", "type:int", 1));
    let error = failure(&forged, &identities);
    assert!(
        error.message.contains("sops.mac cannot be decrypted"),
        "{error}"
    );
    // A different lastmodified: the MAC's additional data no longer matches.
    let moved = edit(&text, "2026-01-02T03:04:05Z", "2026-01-02T03:04:06Z");
    let error = failure(&moved, &identities);
    assert!(
        error.message.contains("sops.mac cannot be decrypted"),
        "{error}"
    );
}

/// A MAC that decrypts but is of other contents: the same file encrypted twice with one
/// data key is not possible from outside, so the test seals one with the key it unwraps.
#[test]
fn a_mac_of_other_contents_fails() {
    let (identity, identities) = identity();
    let text = encrypt::encrypt(
        &[yaml(SECRET)],
        &[identity.to_public()],
        &Options::default(),
    );
    let documents = parse(&text, &Cell::new(1 << 20)).unwrap_or_default();
    let metadata = Metadata::read(documents[0].get(METADATA_KEY).unwrap_or(&Node::Null))
        .unwrap_or_else(|e| panic!("{e}"));
    let key =
        data_key(&metadata, &identities, &mut Session::default()).unwrap_or_else(|e| panic!("{e}"));
    let forged_mac = encrypt::seal(
        &key,
        "str",
        "00".repeat(64).as_bytes(),
        "2026-01-02T03:04:05Z",
    );
    let forged = edit(&text, value_of(&text, "mac"), &forged_mac);
    let error = failure(&forged, &identities);
    assert!(error.message.contains("MAC does not match"), "{error}");
}

#[test]
fn incomplete_metadata_is_named() {
    let (identity, identities) = identity();
    let text = encrypt::encrypt(
        &[yaml(SECRET)],
        &[identity.to_public()],
        &Options::default(),
    );
    let without = |key: &str| -> String {
        text.lines()
            .filter(|l| !l.trim_start().starts_with(&format!("{key}:")))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    let error = failure(&without("lastmodified"), &identities);
    assert!(
        error.message.contains("sops.lastmodified is missing"),
        "{error}"
    );
    // Without its MAC the `sops` field is not SOPS metadata: the document is taken as it
    // is, and rendering then finds values no one decrypted (see render's tests).
    assert_eq!(
        run(&without("mac"), Some(&identities)).map(|d| d.is_some()),
        Ok(false)
    );
    let pgp_only = "kind: Secret\nsops:\n  mac: ENC[AES256_GCM,data:AA==,iv:AA==,tag:AA==,type:str]\n  lastmodified: '2026-01-02T03:04:05Z'\n  pgp: [{fp: ABC, enc: x}]\n";
    let error = failure(pgp_only, &identities);
    assert!(
        error.message.contains("encrypted for pgp, not for age"),
        "{error}"
    );
}

#[test]
fn unencrypted_suffix_leaves_values_in_the_clear_and_under_the_mac() {
    let (identity, identities) = identity();
    let source = "kind: Config\nhost_unencrypted: db.local\nsettings_unencrypted: {port: 1}\npassword: hunter2\n";
    let text = encrypt::encrypt(
        &[yaml(source)],
        &[identity.to_public()],
        &Options::default(),
    );
    assert!(
        text.contains("host_unencrypted: db.local") && text.contains("port: 1"),
        "{text}"
    );
    assert!(!text.contains("hunter2"));
    let expected: Value = serde_yaml_ng::from_str(source).unwrap_or_default();
    assert_eq!(decrypted_json(&text, &identities), vec![expected]);
    let error = failure(&edit(&text, "db.local", "evil.local"), &identities);
    assert!(error.message.contains("MAC does not match"), "{error}");
    // Another suffix, named in the metadata.
    let custom = Options {
        unencrypted_suffix: Some("_clear".into()),
        ..Options::default()
    };
    let source = "name_clear: web\nhost_unencrypted: db.local\n";
    let text = encrypt::encrypt(&[yaml(source)], &[identity.to_public()], &custom);
    assert!(
        text.contains("name_clear: web") && !text.contains("db.local"),
        "{text}"
    );
    let expected: Value = serde_yaml_ng::from_str(source).unwrap_or_default();
    assert_eq!(decrypted_json(&text, &identities), vec![expected]);
}

#[test]
fn mac_only_encrypted_lets_clear_values_change() {
    let (identity, identities) = identity();
    let options = Options {
        mac_only_encrypted: true,
        ..Options::kubernetes()
    };
    let text = encrypt::encrypt(&[yaml(SECRET)], &[identity.to_public()], &options);
    // What kustomize does to an object: a namespace and a label added, a name prefixed.
    let transformed = edit(
        &edit(&text, "name: db", "name: prod-db\n  namespace: prod"),
        "    app: web",
        "    app: web\n    team: a",
    );
    let decrypted = decrypted_json(&transformed, &identities);
    assert_eq!(decrypted[0]["metadata"]["namespace"], json!("prod"));
    assert_eq!(decrypted[0]["stringData"]["password"], json!("hunter2"));
    // A changed encrypted value still fails.
    let port = value_of(&text, "port").to_owned();
    let swapped = edit(&text, &port, "''");
    let error = failure(&swapped, &identities);
    assert!(error.message.contains("MAC does not match"), "{error}");
}

#[test]
fn a_multi_document_file_is_one_tree_with_one_mac() {
    let (identity, identities) = identity();
    let documents = [
        yaml(SECRET),
        yaml("apiVersion: v1\nkind: Secret\nmetadata: {name: api}\nstringData: {token: abc}\n"),
    ];
    let text = encrypt::encrypt(&documents, &[identity.to_public()], &Options::kubernetes());
    let decrypted = decrypted_json(&text, &identities);
    assert_eq!(decrypted.len(), 2);
    assert_eq!(decrypted[1]["stringData"]["token"], json!("abc"));
    // One document dropped: the MAC covered both.
    let parts: Vec<&str> = text.split("\n---\n").collect();
    assert_eq!(parts.len(), 2);
    let error = failure(parts[0], &identities);
    assert!(error.message.contains("MAC does not match"), "{error}");
    // Two documents in another order.
    let swapped = format!("{}\n---\n{}", parts[1], parts[0]);
    let error = failure(&swapped, &identities);
    assert!(error.message.contains("MAC does not match"), "{error}");
}

#[test]
fn files_encrypted_apart_and_concatenated_decrypt_each_with_its_own_key() {
    let (identity, identities) = identity();
    let one = encrypt::encrypt(
        &[yaml(SECRET)],
        &[identity.to_public()],
        &Options::kubernetes(),
    );
    let two = encrypt::encrypt(
        &[yaml(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: api}\nstringData: {token: abc}\n",
        )],
        &[identity.to_public()],
        &Options::kubernetes(),
    );
    let plain = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}\n";
    let text = format!("{one}---\n{plain}---\n{two}");
    let decrypted = decrypted_json(&text, &identities);
    assert_eq!(decrypted.len(), 3);
    assert_eq!(decrypted[0]["stringData"]["password"], json!("hunter2"));
    assert_eq!(decrypted[1]["data"]["a"], json!("b"));
    assert_eq!(decrypted[2]["stringData"]["token"], json!("abc"));
}

#[test]
fn each_value_type_is_restored() {
    let (identity, identities) = identity();
    let text = encrypt::encrypt(
        &[yaml("a: b\n")],
        &[identity.to_public()],
        &Options::default(),
    );
    let documents = parse(&text, &Cell::new(1 << 20)).unwrap_or_default();
    let metadata = Metadata::read(documents[0].get(METADATA_KEY).unwrap_or(&Node::Null))
        .unwrap_or_else(|e| panic!("{e}"));
    let key =
        data_key(&metadata, &identities, &mut Session::default()).unwrap_or_else(|e| panic!("{e}"));
    let open = |kind: &str, plain: &str| {
        decrypt_value(
            &encrypt::seal(&key, kind, plain.as_bytes(), "v:"),
            &key,
            b"v:",
        )
        .map(|p| (p.mac_bytes(), p.into_node()))
    };
    let node = |kind: &str, plain: &str| open(kind, plain).map(|(_, n)| n);
    assert_eq!(node("str", "x y"), Ok(Ok(Node::Str("x y".into()))));
    assert_eq!(node("int", "-42"), Ok(Ok(Node::Int(-42))));
    assert_eq!(node("float", "0.5"), Ok(Ok(Node::Float(0.5))));
    assert_eq!(node("bool", "True"), Ok(Ok(Node::Bool(true))));
    assert_eq!(node("bool", "false"), Ok(Ok(Node::Bool(false))));
    assert_eq!(node("comment", "note"), Ok(Ok(Node::Str("note".into()))));
    assert_eq!(node("bytes", "raw"), Ok(Ok(Node::Str("raw".into()))));
    assert_eq!(
        node("time", "2026-01-02T03:04:05.500+00:00"),
        Ok(Ok(Node::Str("2026-01-02T03:04:05.5Z".into())))
    );
    // What the MAC covers: SOPS's text of the value, not the file's.
    assert_eq!(open("bool", "true").map(|(b, _)| b), Ok(b"True".to_vec()));
    assert_eq!(open("float", "1.0").map(|(b, _)| b), Ok(b"1".to_vec()));
    assert_eq!(open("int", "+7").map(|(b, _)| b), Ok(b"7".to_vec()));
    assert!(node("int", "seven").is_err());
    assert!(node("bool", "yes").is_err());
    assert!(node("money", "1").is_err());
    assert!(
        node("bytes", "\u{0}\u{ff}").is_ok(),
        "bytes are text here, and need not be printable"
    );
    assert_eq!(
        decrypt_value("", &key, b"v:").map(|p| p.into_node()),
        Ok(Ok(Node::Str(String::new())))
    );
    for malformed in [
        "hunter2",
        "ENC[AES256_GCM,data:!!,iv:AA==,tag:AA==,type:str]",
        "ENC[AES256_GCM,data:AA==,iv:AA==,tag:AA==,type:str]",
    ] {
        assert!(
            decrypt_value(malformed, &key, b"v:").is_err(),
            "{malformed}"
        );
    }
}

#[test]
fn a_value_left_clear_where_sops_encrypts_fails() {
    let (identity, identities) = identity();
    let text = encrypt::encrypt(
        &[yaml(SECRET)],
        &[identity.to_public()],
        &Options::kubernetes(),
    );
    let password = value_of(&text, "password").to_owned();
    let error = failure(&edit(&text, &password, "hunter3"), &identities);
    assert!(
        error
            .message
            .starts_with("stringData.password: cannot be decrypted: not in SOPS's"),
        "{error}"
    );
    assert!(!error.message.contains("hunter3"), "{error}");
    let error = failure(&edit(&text, &password, "17"), &identities);
    assert!(error.message.contains("is not encrypted"), "{error}");
}

#[test]
fn key_groups_of_one_group_are_read_and_shamir_is_refused() {
    let (_, identities) = identity();
    let metadata = "mac: x\nlastmodified: '2026-01-02T03:04:05Z'\nkey_groups:\n- age: [{recipient: a, enc: b}]\n  pgp: []\n";
    let parsed = parse(metadata, &Cell::new(1 << 20)).unwrap_or_default();
    let read = Metadata::read(&parsed[0]).map(|m| m.age);
    assert_eq!(read.ok(), Some(vec![("a".to_owned(), "b".to_owned())]));
    let shamir = "kind: X\nsops:\n  mac: x\n  lastmodified: '2026-01-02T03:04:05Z'\n  key_groups:\n  - age: [{recipient: a, enc: b}]\n  - age: [{recipient: c, enc: d}]\n";
    let error = failure(shamir, &identities);
    assert!(error.message.contains("Shamir"), "{error}");
}

#[test]
fn rules_sops_refuses_or_weir_cannot_follow_are_named() {
    let (_, identities) = identity();
    let base = "kind: X\nsops:\n  mac: x\n  lastmodified: '2026-01-02T03:04:05Z'\n  age: [{recipient: a, enc: b}]\n";
    let error = failure(
        &format!("{base}  encrypted_comment_regex: sops\n"),
        &identities,
    );
    assert!(error.message.contains("encrypted_comment_regex"), "{error}");
    let error = failure(
        &format!("{base}  encrypted_regex: a\n  unencrypted_suffix: b\n"),
        &identities,
    );
    assert!(error.message.contains("more than one"), "{error}");
    let error = failure(&format!("{base}  encrypted_regex: '(('\n"), &identities);
    assert!(error.message.contains("encrypted_regex"), "{error}");
}

#[test]
fn the_values_decrypted_are_kept_to_scrub_and_clear_ones_are_not() {
    let (identity, identities) = identity();
    let text = encrypt::encrypt(
        &[yaml(SECRET)],
        &[identity.to_public()],
        &Options::kubernetes(),
    );
    let budget = Cell::new(8 << 20);
    let documents = parse(&text, &budget).unwrap_or_else(|e| panic!("{e}"));
    let mut session = Session::default();
    decrypt(documents, Some(&identities), &mut session).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        session
            .redactor
            .scrub("Secret web: password hunter2, user \"admin\", port 5432"),
        "Secret web: password <decrypted>, user \"<decrypted>\", port 5432",
        "strings SOPS decrypted, not the clear `Secret` and `web`, nor numbers"
    );
    assert!(!format!("{session:?}").contains("hunter2"));
}

#[test]
fn age_unwraps_are_bounded_per_revision_and_each_stanza_is_unwrapped_once() {
    let (identity, identities) = identity();
    let one = |name: &str| {
        encrypt::encrypt(
            &[yaml(&format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\nstringData: {{token: abcdef}}\n"
            ))],
            &[identity.to_public()],
            &Options::kubernetes(),
        )
    };
    let budget = Cell::new(64 << 20);
    // The same file read again and again in one revision: one unwrap, cached.
    let same = one("same");
    let mut session = Session::default();
    for _ in 0..(MAX_UNWRAPS * 2) {
        let documents = parse(&same, &budget).unwrap_or_else(|e| panic!("{e}"));
        decrypt(documents, Some(&identities), &mut session).unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(session.unwraps, 1);
    // Documents encrypted apart, each with its own data key: one more than the limit fails.
    let apart: Vec<String> = (0..=MAX_UNWRAPS).map(|i| one(&format!("s{i}"))).collect();
    let documents = parse(&apart.join("---\n"), &budget).unwrap_or_else(|e| panic!("{e}"));
    let error =
        decrypt(documents, Some(&identities), &mut Session::default()).expect_err("over the limit");
    assert_eq!(error.document, Some(MAX_UNWRAPS));
    assert!(
        error.message.contains("more than 64 age unwraps") && !error.no_identity,
        "{error}"
    );
}

#[test]
fn hostile_age_entries_are_bounded() {
    let (identity, identities) = identity();
    let ours = identity.to_public().to_string();
    // Two hundred entries for our recipient, each a header of junk stanzas.
    let stanza = format!("-> X25519 {}\n{}\n", "A".repeat(43), "B".repeat(43));
    let header = format!(
        "age-encryption.org/v1\n{}--- {}\n",
        stanza.repeat(30),
        "C".repeat(43)
    );
    let armored = format!(
        "-----BEGIN AGE ENCRYPTED FILE-----\n{}\n-----END AGE ENCRYPTED FILE-----\n",
        STANDARD.encode(header)
    );
    let entries: Vec<serde_json::Value> = (0..200)
        .map(|_| json!({"recipient": ours, "enc": armored}))
        .collect();
    let document = json!({"kind": "X", "sops": {"mac": "x", "lastmodified": "2026-01-02T03:04:05Z", "age": entries}});
    let started = std::time::Instant::now();
    let error = failure(&document.to_string(), &identities);
    assert!(error.message.contains("cannot be opened"), "{error}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    // One over the size any recipient needs is not even read.
    let big = json!({"kind": "X", "sops": {"mac": "x", "lastmodified": "2026-01-02T03:04:05Z",
        "age": [{"recipient": ours, "enc": "x".repeat(MAX_WRAPPED_KEY + 1)}]}});
    let error = failure(&big.to_string(), &identities);
    assert!(error.message.contains("over 4096 bytes"), "{error}");
}

#[test]
fn parsing_is_bounded_and_keeps_order() {
    let bomb = format!(
        "a: &a [{}]\nb: [{}]\n",
        vec!["xxxxxxxx"; 300].join(","),
        vec!["*a"; 300].join(",")
    );
    let refused = parse(&bomb, &Cell::new(1 << 20)).expect_err("over budget");
    assert!(refused.contains(OVER_BUDGET), "{refused}");
    let parsed = parse("z: 1\na: [x, 2.5, true, null]\n", &Cell::new(1 << 20));
    assert_eq!(
        parsed,
        Ok(vec![Node::Map(vec![
            ("z".into(), Node::Int(1)),
            (
                "a".into(),
                Node::Seq(vec![
                    Node::Str("x".into()),
                    Node::Float(2.5),
                    Node::Bool(true),
                    Node::Null
                ])
            ),
        ])])
    );
    assert!(parse("a: 1\na: 2\n", &Cell::new(1 << 20)).is_err());
}

#[test]
fn identities_come_from_agekey_entries_and_are_never_shown() {
    let one = x25519::Identity::generate();
    let two = x25519::Identity::generate();
    let secret =
        |i: &x25519::Identity| age::secrecy::ExposeSecret::expose_secret(&i.to_string()).to_owned();
    let both = format!("# two keys\n\n{}\n  {}  \n", secret(&one), secret(&two));
    let source = "Secret apps/keys (spec.decryption.secretRef)";
    let identities = Identities::from_secret(
        source,
        [
            ("keys.agekey", both.as_bytes()),
            ("README", b"not a key".as_slice()),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(identities.recipients().count(), 2);
    let shown = format!("{identities:?}");
    assert!(shown.contains(&one.to_public().to_string()), "{shown}");
    assert!(
        !shown.contains(&secret(&one)) && !shown.contains("AGE-SECRET-KEY"),
        "{shown}"
    );

    let broken = format!("{}\nAGE-SECRET-KEY-1NOTAKEY\n", secret(&one));
    let error =
        Identities::from_secret(source, [("a.agekey", broken.as_bytes())]).expect_err("refused");
    assert!(
        error.contains("a.agekey, line 2") && !error.contains("NOTAKEY"),
        "{error}"
    );
    let error = Identities::from_secret(source, [("identity", secret(&one).as_bytes())])
        .expect_err("no .agekey entry");
    assert!(error.contains("no data key ending in .agekey"), "{error}");
    let error = Identities::from_secret(source, [("a.agekey", b"# only a comment\n".as_slice())])
        .expect_err("no identity");
    assert!(error.contains("hold no age identity"), "{error}");
}

#[test]
fn go_formats() {
    assert_eq!(go_float(1.0), "1");
    assert_eq!(go_float(0.1), "0.1");
    assert_eq!(go_float(1e21), "1000000000000000000000");
    assert_eq!(go_float(1e-7), "0.0000001");
    assert_eq!(go_float(f64::INFINITY), "+Inf");
    assert_eq!(go_float(f64::NEG_INFINITY), "-Inf");
    assert_eq!(
        go_rfc3339("2024-11-12T13:33:42Z").as_deref(),
        Some("2024-11-12T13:33:42Z")
    );
    assert_eq!(
        go_rfc3339("2024-11-12T13:33:42.123+00:00").as_deref(),
        Some("2024-11-12T13:33:42Z")
    );
    assert_eq!(
        go_rfc3339("2024-11-12T13:33:42+02:00").as_deref(),
        Some("2024-11-12T13:33:42+02:00")
    );
    assert_eq!(go_rfc3339("yesterday"), None);
    assert_eq!(
        go_rfc3339_nano("2024-11-12T13:33:42.120+02:00").as_deref(),
        Some("2024-11-12T13:33:42.12+02:00")
    );
}

/// YAML trees of every shape SOPS takes: string keys (some left clear by the suffix), each
/// scalar type, lists and mappings nested.
fn tree() -> impl Strategy<Value = serde_yaml_ng::Value> {
    use serde_yaml_ng::Value as Y;
    let leaf = prop_oneof![
        Just(Y::Null),
        any::<bool>().prop_map(Y::Bool),
        any::<i64>().prop_map(|i| Y::Number(i.into())),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| Y::Number(f.into())),
        ".{0,12}".prop_map(Y::String),
        "[0-9]{1,3}|true|null|~|0x1F|1e3".prop_map(Y::String),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(serde_yaml_ng::Value::Sequence),
            prop::collection::vec(("[a-z]{1,6}(_unencrypted)?", inner), 0..5).prop_map(|entries| {
                let mut map = serde_yaml_ng::Mapping::new();
                for (k, v) in entries {
                    map.insert(k.into(), v);
                }
                serde_yaml_ng::Value::Mapping(map)
            }),
        ]
    })
}

fn document() -> impl Strategy<Value = serde_yaml_ng::Value> {
    prop::collection::vec(("[a-z]{1,6}(_unencrypted)?", tree()), 1..6).prop_map(|entries| {
        let mut map = serde_yaml_ng::Mapping::new();
        for (k, v) in entries {
            map.insert(k.into(), v);
        }
        serde_yaml_ng::Value::Mapping(map)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// encrypt -> decrypt gives back every tree, values and types; MAC and all.
    #[test]
    fn encrypted_trees_decrypt_to_themselves(
        documents in prop::collection::vec(document(), 1..3),
        mac_only_encrypted in any::<bool>(),
        regex in any::<bool>(),
    ) {
        let (identity, identities) = identity();
        let options = Options {
            mac_only_encrypted,
            encrypted_regex: regex.then(|| "^[a-m]".to_owned()),
            ..Options::default()
        };
        let text = encrypt::encrypt(&documents, &[identity.to_public()], &options);
        let expected: Vec<Value> = documents
            .iter()
            .map(|d| serde_json::to_value(d).unwrap_or_default())
            .collect();
        prop_assert_eq!(decrypted_json(&text, &identities), expected);
    }
}
