//! `kubectl weir diff`: what applying a revision would create, change and prune, as text.
//! Pure: the dry runs are `gitops::apply::preview`'s.

use std::fmt::Write;

use crate::api::gitsync::InventoryEntry;
use crate::gitops::apply::Preview;
use crate::gitops::drift::Change;

fn describe(entry: &InventoryEntry) -> String {
    match &entry.namespace {
        Some(namespace) => format!("{} {namespace}/{}", entry.kind, entry.name),
        None => format!("{} {}", entry.kind, entry.name),
    }
}

/// The report, and whether anything would change (the exit code: 1 when it would).
pub fn report(revision: &str, preview: &Preview) -> (String, bool) {
    let mut text = String::new();
    let (mut created, mut changed, mut restamped, mut unchanged) = (0, 0, 0, 0);
    for (entry, change) in &preview.objects {
        let what = describe(entry);
        match change {
            Change::Create => {
                created += 1;
                let _ = writeln!(text, "+ create {what}");
                if let Some(body) = preview.created.get(entry) {
                    for line in body.lines() {
                        let _ = writeln!(text, "+   {line}");
                    }
                }
            }
            Change::Update(diff) => {
                changed += 1;
                let _ = writeln!(text, "~ change {what}");
                text.push_str(diff);
                if !diff.ends_with('\n') {
                    text.push('\n');
                }
            }
            Change::Restamp => restamped += 1,
            Change::Unchanged => unchanged += 1,
        }
    }
    for entry in &preview.pruned {
        let _ = writeln!(text, "- prune {}", describe(entry));
    }
    let pruned = preview.pruned.len();
    let short = crate::gitops::status::short(revision);
    let _ = write!(
        text,
        "revision {short}: {created} to create, {changed} to change, {pruned} to prune, {} unchanged",
        unchanged + restamped
    );
    if restamped > 0 {
        let _ = write!(text, " ({restamped} only take the new revision's stamp)");
    }
    text.push('\n');
    (text, created + changed + pruned > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: &str, name: &str) -> InventoryEntry {
        InventoryEntry {
            api_version: "v1".into(),
            kind: kind.into(),
            namespace: Some("shop".into()),
            name: name.into(),
        }
    }

    #[test]
    fn each_change_is_shown_and_the_exit_says_whether_any() {
        let mut preview = Preview {
            objects: vec![
                (entry("ConfigMap", "new"), Change::Create),
                (
                    entry("Deployment", "web"),
                    Change::Update("--- live\n+++ git\n-image: web:1\n+image: web:2\n".into()),
                ),
                (entry("Service", "web"), Change::Restamp),
                (entry("Service", "db"), Change::Unchanged),
            ],
            pruned: vec![entry("ConfigMap", "old")],
            ..Preview::default()
        };
        preview
            .created
            .insert(entry("ConfigMap", "new"), "data:\n  a: b\n".into());
        let (text, changed) = report("0123456789abcdef0123", &preview);
        assert!(changed);
        assert_eq!(
            text,
            "+ create ConfigMap shop/new\n+   data:\n+     a: b\n~ change Deployment shop/web\n--- live\n+++ git\n-image: web:1\n+image: web:2\n- prune ConfigMap shop/old\nrevision 0123456789ab: 1 to create, 1 to change, 1 to prune, 2 unchanged (1 only take the new revision's stamp)\n"
        );
        let quiet = Preview {
            objects: vec![(entry("Service", "web"), Change::Restamp)],
            ..Preview::default()
        };
        let (text, changed) = report("abc", &quiet);
        assert!(!changed, "a new stamp alone is no change: {text}");
        let pruned_only = Preview {
            pruned: vec![entry("ConfigMap", "old")],
            ..Preview::default()
        };
        assert!(report("abc", &pruned_only).1);
    }
}
