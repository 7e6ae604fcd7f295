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
    let rendered = render(&files, "./apps/web/").expect("renders");
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
        render(&files, ".").map(|m| m.len()),
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
        assert_eq!(render(&files, path).map(|m| m.len()), Ok(2), "{path:?}");
    }
}

#[test]
fn lists_are_expanded() {
    let files = vec![file(
        "list.yaml",
        "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: x}}\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: y}}\n",
    )];
    assert_eq!(
        names(&render(&files, ".").expect("renders")),
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
        let error = render(&files, ".").expect_err(text);
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
        render(&binary, ".").map_err(|e| e.message),
        Err("is not UTF-8 text".into())
    );
}

#[test]
fn the_same_object_twice_is_refused_naming_both() {
    let files = vec![file("a.yaml", SERVICE), file("b.yaml", SERVICE)];
    let error = render(&files, ".").expect_err("duplicate");
    assert_eq!(
        error.to_string(),
        "b.yaml (document 0): Service web is also defined in a.yaml (document 0)"
    );
    let other_namespace = format!("{SERVICE}  namespace: other\n");
    let files = vec![file("a.yaml", SERVICE), file("b.yaml", &other_namespace)];
    assert!(
        render(&files, ".").is_ok(),
        "a different namespace is a different object"
    );
}

#[test]
fn a_missing_path_and_kustomizations_are_told_apart() {
    let files = vec![
        file("apps/web/kustomization.yaml", "resources: [a.yaml]\n"),
        file("apps/web/a.yaml", SERVICE),
    ];
    let error = render(&files, "apps/api").expect_err("missing");
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
    let manifests = render(&files, "deploy").expect("renders");
    assert_eq!(names(&manifests), vec!["AllowList/ips"]);
    assert_eq!(manifests[0].object["items"][0], "10.0.0.1");
}
