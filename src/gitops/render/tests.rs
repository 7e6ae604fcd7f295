use super::*;

fn file(path: &str, text: &str) -> SourceFile {
    SourceFile {
        path: path.into(),
        bytes: text.as_bytes().to_vec(),
    }
}

fn names(manifests: &[Manifest]) -> Vec<String> {
    manifests
        .iter()
        .map(|m| format!("{}/{}", m.kind(), m.name()))
        .collect()
}

const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n";

#[test]
fn files_under_the_path_in_order_with_every_document() {
    let files = vec![
        file(
            "apps/web/b.yaml",
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b1}\n---\n# only a comment\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b2}\n",
        ),
        file("apps/web/a.yml", SERVICE),
        file(
            "apps/web/nested/c.json",
            r#"{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "c"}}"#,
        ),
        file("apps/web/README.md", "not a manifest"),
        file("apps/web/.hidden.yaml", "not: [valid"),
        file(
            "apps/other/d.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: d}\n",
        ),
        file(
            "apps/webshop/e.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: e}\n",
        ),
    ];
    let rendered = render(&files, "./apps/web/", &Limits::default()).expect("renders");
    assert_eq!(
        names(&rendered),
        vec!["Service/web", "ConfigMap/b1", "ConfigMap/b2", "Secret/c"]
    );
    assert_eq!(
        (rendered[2].file.as_str(), rendered[2].index),
        ("apps/web/b.yaml", 2),
        "the comment-only document counts, so indexes match what an editor shows"
    );
    assert_eq!(
        render(&files, ".", &Limits::default()).map(|m| m.len()),
        Ok(6),
        "everything but the README and the hidden file"
    );
}

#[test]
fn the_root_path_takes_every_file() {
    let files = vec![
        file("a.yaml", SERVICE),
        file(
            "dir/b.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n",
        ),
    ];
    for path in ["", ".", "./", "/"] {
        assert_eq!(
            render(&files, path, &Limits::default()).map(|m| m.len()),
            Ok(2),
            "{path:?}"
        );
    }
}

#[test]
fn lists_are_expanded() {
    let files = vec![file(
        "list.yaml",
        "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: x}}\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: y}}\n",
    )];
    assert_eq!(
        names(&render(&files, ".", &Limits::default()).expect("renders")),
        vec!["ConfigMap/x", "ConfigMap/y"]
    );
}

#[test]
fn a_bad_document_names_file_and_index() {
    let cases = [
        ("apiVersion: v1\nkind: [unclosed\n", "is not valid YAML"),
        ("- just\n- a list\n", "is a list, not a Kubernetes object"),
        ("apiVersion: v1\nmetadata: {name: x}\n", "kind is missing"),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: 7}\n",
            "metadata.name must be a non-empty string",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: [a]}\n",
            "metadata.namespace must be a string",
        ),
    ];
    for (text, why) in cases {
        let files = vec![
            file("ok.yaml", SERVICE),
            file("bad.yaml", &format!("{SERVICE}---\n{text}")),
        ];
        let error = render(&files, ".", &Limits::default()).expect_err(text);
        assert_eq!(
            (error.file.as_str(), error.index),
            ("bad.yaml", Some(1)),
            "{text}"
        );
        assert!(error.message.starts_with(why), "{error}");
        assert!(
            error.to_string().starts_with("bad.yaml (document 1): "),
            "{error}"
        );
    }
    let binary = vec![SourceFile {
        path: "x.yaml".into(),
        bytes: vec![0xff, 0xfe],
    }];
    assert_eq!(
        render(&binary, ".", &Limits::default()).map_err(|e| e.message),
        Err("is not UTF-8 text".into())
    );
}

#[test]
fn the_same_object_twice_is_refused_naming_both() {
    let files = vec![file("a.yaml", SERVICE), file("b.yaml", SERVICE)];
    let error = render(&files, ".", &Limits::default()).expect_err("duplicate");
    assert_eq!(
        error.to_string(),
        "b.yaml (document 0): Service web is also defined in a.yaml (document 0)"
    );
    let other_namespace = format!("{SERVICE}  namespace: other\n");
    let files = vec![file("a.yaml", SERVICE), file("b.yaml", &other_namespace)];
    assert!(
        render(&files, ".", &Limits::default()).is_ok(),
        "a different namespace is a different object"
    );
}

#[test]
fn a_missing_path_and_kustomizations_are_told_apart() {
    let files = vec![
        file("apps/web/kustomization.yaml", "resources: [a.yaml]\n"),
        file("apps/web/a.yaml", SERVICE),
    ];
    let error = render(&files, "apps/api", &Limits::default()).expect_err("missing");
    assert_eq!(
        error.to_string(),
        "apps/api: no such directory in this revision: check spec.path"
    );
    assert_eq!(
        layout(&files, "apps/web"),
        Layout::Kustomization("apps/web/kustomization.yaml".into())
    );
    assert_eq!(
        layout(&files, "apps"),
        Layout::Manifests,
        "only directly under the path"
    );
}

#[test]
fn paths_normalize() {
    for (path, normal) in [(".", ""), ("./a//b/", "a/b"), ("/a", "a"), ("a/./b", "a/b")] {
        assert_eq!(normalize(path), normal);
    }
}

#[test]
fn a_custom_kind_ending_in_list_is_an_object() {
    let files = [file(
        "deploy/allow.yaml",
        "apiVersion: policy.example/v1\nkind: AllowList\nmetadata:\n  name: ips\nitems:\n- 10.0.0.1\n",
    )];
    let manifests = render(&files, "deploy", &Limits::default()).expect("renders");
    assert_eq!(names(&manifests), vec!["AllowList/ips"]);
    assert_eq!(manifests[0].object["items"][0], "10.0.0.1");
}

fn config_map(name: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\n")
}

#[test]
fn a_quadratic_alias_bomb_is_refused_naming_the_file_and_the_limit() {
    // The finding: one anchor of 3,000 items aliased 3,000 times, about 15 KB of YAML that
    // expanded to 291 MB. Refused within the budget, whatever it would expand to.
    let items = vec!["x"; 3_000].join(", ");
    let aliases = vec!["*a"; 3_000].join(", ");
    let bomb = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: bomb}}\ndata: {{}}\nx-anchor: &a [{items}]\nx-uses: [{aliases}]\n"
    );
    assert!(bomb.len() < 30_000);
    let files = vec![
        file("deploy/a.yaml", &config_map("a")),
        file("deploy/bomb.yaml", &bomb),
    ];
    let error = render(&files, ".", &Limits::default()).expect_err("refused");
    assert_eq!(error.file, "deploy/bomb.yaml");
    assert_eq!(error.index, Some(0));
    assert!(error.message.contains("--max-document-bytes"), "{error}");
    assert!(error.message.contains("nothing was applied"), "{error}");
}

#[test]
fn files_objects_and_the_whole_revision_have_limits() {
    let limits = Limits {
        file_bytes: 200,
        revision_bytes: 100_000,
        document_bytes: 5_000,
        objects: 3,
    };
    let big = format!(
        "{}data: {{v: \"{}\"}}\n",
        config_map("big"),
        "x".repeat(300)
    );
    let error = render(&[file("d/big.yaml", &big)], ".", &limits).expect_err("file");
    assert_eq!(error.file, "d/big.yaml");
    assert!(error.message.contains("--max-file-bytes"), "{error}");

    let many: Vec<SourceFile> = (0..4)
        .map(|i| file(&format!("d/{i}.yaml"), &config_map(&format!("c{i}"))))
        .collect();
    let error = render(&many, ".", &limits).expect_err("objects");
    assert!(
        error
            .message
            .contains("more than 3 objects (--max-objects)"),
        "{error}"
    );
    assert!(render(&many[..3], ".", &limits).is_ok(), "three fit");

    // Each file and document fits; all of them together do not.
    let medium = format!("{}data: {{v: \"{}\"}}\n", config_map("m"), "x".repeat(100));
    let spread: Vec<SourceFile> = (0..3)
        .map(|i| {
            file(
                &format!("d/{i}.yaml"),
                &medium.replace("name: m", &format!("name: m{i}")),
            )
        })
        .collect();
    let tight = Limits {
        revision_bytes: 1_500,
        objects: 10,
        ..limits
    };
    let error = render(&spread, ".", &tight).expect_err("revision");
    assert!(error.message.contains("--max-revision-bytes"), "{error}");
    let roomy = Limits {
        revision_bytes: 100_000,
        ..tight
    };
    assert!(render(&spread, ".", &roomy).is_ok());
}

#[test]
fn a_kustomize_build_output_counts_as_the_revision() {
    let limits = Limits {
        revision_bytes: 100,
        ..Limits::default()
    };
    let output = format!("{}---\n{}", config_map("a"), config_map("b")).repeat(3);
    let error = stream(
        "deploy/kustomization.yaml (built)",
        output.into_bytes(),
        &limits,
        None,
        &mut Session::default(),
    )
    .expect_err("over");
    assert!(error.file.contains("(built)"), "{error}");
}

#[test]
fn a_revision_whose_inventory_would_not_fit_the_status_is_refused() {
    // 2,500 objects with names of 250 characters: within --max-objects, but their inventory
    // alone would take over 800 KiB of the GitSync's status.
    let long = |i: usize| format!("{i:0>250}");
    let text: String = (0..2_500)
        .map(|i| format!("---\n{}", config_map(&long(i))))
        .collect();
    let error = render(&[file("d/many.yaml", &text)], ".", &Limits::default())
        .expect_err("too large an inventory");
    assert_eq!(error.file, "d/many.yaml");
    assert!(error.message.contains("status.inventory"), "{error}");
    assert!(error.message.contains("512 KiB"), "{error}");
    // The same count with ordinary names fits.
    let text: String = (0..2_500)
        .map(|i| format!("---\n{}", config_map(&format!("settings-{i}"))))
        .collect();
    assert_eq!(
        render(&[file("d/many.yaml", &text)], ".", &Limits::default())
            .map(|m| m.len())
            .ok(),
        Some(2_500)
    );
}

proptest::proptest! {
    /// Whatever a revision holds, what render accepts fits the inventory's bound.
    #[test]
    fn an_accepted_inventory_fits(names in proptest::collection::vec(1usize..253, 0..3_000)) {
        let text: String = names
            .iter()
            .enumerate()
            .map(|(i, len)| format!("---\n{}", config_map(&format!("{i:0>len$}"))))
            .collect();
        if let Ok(manifests) = render(&[file("d/m.yaml", &text)], ".", &Limits::default()) {
            let total: usize = manifests.iter().map(inventory_entry_bytes).sum();
            proptest::prop_assert!(total <= INVENTORY_BYTES);
        }
    }
}

#[test]
fn a_revision_with_an_object_weir_would_refuse_is_refused_whole() {
    let rollout = |weight: i32| {
        format!(
            "apiVersion: weir.dev/v1alpha1\nkind: Rollout\nmetadata: {{name: web}}\nspec:\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec: {{containers: [{{name: web, image: web:1}}]}}\n  strategy:\n    canary:\n      steps: [{{setWeight: {weight}}}]\n"
        )
    };
    let files = |weight| {
        vec![
            file("deploy/a.yaml", &config_map("a")),
            file("deploy/web.yaml", &rollout(weight)),
        ]
    };
    assert_eq!(
        render(&files(20), "deploy", &Limits::default())
            .map(|m| m.len())
            .ok(),
        Some(2)
    );
    let error = render(&files(150), "deploy", &Limits::default()).expect_err("refused");
    assert_eq!(
        (error.file.as_str(), error.index),
        ("deploy/web.yaml", Some(0))
    );
    assert!(
        error
            .message
            .starts_with("Rollout web: spec.strategy.canary.steps[0].setWeight"),
        "{error}"
    );
    assert!(error.message.contains("nothing was applied"), "{error}");

    let template = "apiVersion: weir.dev/v1alpha1\nkind: AnalysisTemplate\nmetadata: {name: rate}\nspec:\n  metrics:\n  - name: rate\n    successCondition: \"result[0] >=\"\n    provider: {prometheus: {query: up}}\n";
    let error = render(
        &[file("deploy/t.yaml", template)],
        "deploy",
        &Limits::default(),
    )
    .expect_err("refused");
    assert!(
        error
            .message
            .starts_with("AnalysisTemplate rate: spec.metrics[0].successCondition"),
        "{error}"
    );
}

mod decryption {
    use super::*;
    use crate::gitops::sops::encrypt::{self, Options};
    use age::x25519;

    const SECRET: &str =
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: hunter2\n";

    fn keys(identity: &x25519::Identity) -> Identities {
        let text = age::secrecy::ExposeSecret::expose_secret(&identity.to_string()).to_owned();
        Identities::from_secret(
            "Secret apps/sops-age (spec.decryption.secretRef)",
            [("identity.agekey", text.as_bytes())],
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn encrypted(identity: &x25519::Identity, documents: &[&str]) -> String {
        let documents: Vec<serde_yaml_ng::Value> = documents
            .iter()
            .map(|d| serde_yaml_ng::from_str(d).unwrap_or_default())
            .collect();
        encrypt::encrypt(&documents, &[identity.to_public()], &Options::kubernetes())
    }

    #[test]
    fn encrypted_files_render_decrypted_among_plain_ones() {
        let identity = x25519::Identity::generate();
        let files = vec![
            file("deploy/a.yaml", SERVICE),
            file("deploy/secret.enc.yaml", &encrypted(&identity, &[SECRET])),
        ];
        let manifests = render_decrypted(
            &files,
            "deploy",
            &Limits::default(),
            Some(&keys(&identity)),
            &mut Session::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(names(&manifests), vec!["Service/web", "Secret/db"]);
        assert_eq!(manifests[1].object["stringData"]["password"], "hunter2");
        assert!(
            manifests[1].object.get("sops").is_none(),
            "{:?}",
            manifests[1]
        );
        // The same revision without spec.decryption fails by the file's name.
        let error = render(&files, "deploy", &Limits::default()).expect_err("refused");
        assert_eq!(
            (error.file.as_str(), error.index),
            ("deploy/secret.enc.yaml", Some(0))
        );
        assert!(
            error.message.contains("spec.decryption is not set"),
            "{error}"
        );
    }

    /// A failure that quotes a decrypted value (here a name SOPS encrypted, quoted by the
    /// duplicate check) shows `<decrypted>` in its place.
    #[test]
    fn a_failure_quoting_a_decrypted_value_is_scrubbed() {
        let identity = x25519::Identity::generate();
        let secret = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db-hunter2\nstringData:\n  password: hunter2\n";
        let options = Options {
            encrypted_regex: Some("^(metadata|stringData)$".into()),
            ..Options::default()
        };
        let sealed = encrypt::encrypt(
            &[serde_yaml_ng::from_str(secret).unwrap_or_default()],
            &[identity.to_public()],
            &options,
        );
        let files = vec![
            file("deploy/a.enc.yaml", &sealed),
            file("deploy/b.yaml", secret),
        ];
        let mut session = Session::default();
        let error = render_decrypted(
            &files,
            "deploy",
            &Limits::default(),
            Some(&keys(&identity)),
            &mut session,
        )
        .expect_err("a duplicate");
        assert_eq!(
            error.to_string(),
            "deploy/b.yaml (document 0): Secret <decrypted> is also defined in deploy/a.enc.yaml (document 0)"
        );
        // What was decrypted stays with the caller, for the messages of applying.
        assert_eq!(session.redactor.scrub("x hunter2 y"), "x <decrypted> y");
    }

    #[test]
    fn a_file_for_another_key_fails_the_revision_by_name_and_shows_no_value() {
        let (identity, other) = (x25519::Identity::generate(), x25519::Identity::generate());
        let files = vec![
            file("deploy/a.yaml", SERVICE),
            file("deploy/secret.yaml", &encrypted(&other, &[SECRET])),
        ];
        let error = render_decrypted(
            &files,
            "deploy",
            &Limits::default(),
            Some(&keys(&identity)),
            &mut Session::default(),
        )
        .expect_err("refused");
        let shown = error.to_string();
        assert!(
            shown.starts_with("deploy/secret.yaml (document 0): is encrypted for age recipients"),
            "{shown}"
        );
        assert!(shown.ends_with("nothing was applied"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn a_tampered_file_fails_and_one_without_its_mac_is_never_applied() {
        let identity = x25519::Identity::generate();
        let text = encrypted(&identity, &[SECRET]);
        let tampered = text.replacen("name: db", "name: other", 1);
        let error = render_decrypted(
            &[file("deploy/s.yaml", &tampered)],
            "deploy",
            &Limits::default(),
            Some(&keys(&identity)),
            &mut Session::default(),
        )
        .expect_err("refused");
        assert!(error.message.contains("MAC does not match"), "{error}");
        let without_mac: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("mac:"))
            .map(|l| format!("{l}\n"))
            .collect();
        let error = render_decrypted(
            &[file("deploy/s.yaml", &without_mac)],
            "deploy",
            &Limits::default(),
            Some(&keys(&identity)),
            &mut Session::default(),
        )
        .expect_err("refused");
        assert!(
            error
                .message
                .starts_with("stringData.password is a SOPS-encrypted value"),
            "{error}"
        );
        // Its metadata renamed: not SOPS's any more, and still never applied.
        let renamed = text.replacen("\nsops:", "\nsopx:", 1);
        let error = render(
            &[file("deploy/s.yaml", &renamed)],
            "deploy",
            &Limits::default(),
        )
        .expect_err("refused");
        assert!(error.message.contains("SOPS-encrypted value"), "{error}");
        // A SOPS file kept inside a value (for an application to decrypt) is not one.
        let embedded = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c"}, "data": {"app.enc.yaml": text}});
        assert!(
            render(
                &[file("deploy/c.json", &embedded.to_string())],
                "deploy",
                &Limits::default()
            )
            .is_ok()
        );
    }

    #[test]
    fn an_encrypted_stream_decrypts_objects_still_encrypted_in_it() {
        let identity = x25519::Identity::generate();
        let stream_text = format!("{SERVICE}---\n{}", encrypted(&identity, &[SECRET]));
        let manifests = stream(
            "deploy/kustomization.yaml (built)",
            stream_text.clone().into_bytes(),
            &Limits::default(),
            Some(&keys(&identity)),
            &mut Session::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(manifests[1].object["stringData"]["password"], "hunter2");
        let error = stream(
            "built",
            stream_text.into_bytes(),
            &Limits::default(),
            None,
            &mut Session::default(),
        )
        .expect_err("no decryption");
        assert!(
            error.message.contains("spec.decryption is not set"),
            "{error}"
        );
    }
}
