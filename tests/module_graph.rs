//! No two modules import each other: the house stays layered as it grows.
//!
//! Every source file under `src/` (but `bin/` and test modules) is parsed; each path it names
//! that resolves to another module of the crate is an import. An import is lifted to the two
//! siblings under the modules' closest common parent (`rollout::act` using `analysis::run` is
//! `rollout` using `analysis`), and two siblings must not import each other, at any depth. A
//! parent may use its children, but a child must not also use what its parent itself defines
//! (move the shared part into a child below both).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// A module's path inside the crate: `["rollout", "plan"]`; the crate root is empty.
type Module = Vec<String>;

struct Source {
    module: Module,
    /// The child modules the file declares.
    children: BTreeSet<String>,
    file: syn::File,
}

fn module_of(src: &Path, file: &Path) -> Module {
    let relative = file.strip_prefix(src).expect("under src/");
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs").to_owned();
    if !matches!(stem.as_str(), "mod" | "lib") {
        parts.push(stem);
    }
    parts
}

fn sources(dir: &Path, src: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable src/") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            if path != src.join("bin") {
                sources(&path, src, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Meta>()
                .is_ok_and(|m| m.path().is_ident("test"))
    })
}

/// The paths one file names, outside its test modules: each as its segments.
#[derive(Default)]
struct Paths(Vec<Vec<String>>);

impl Paths {
    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                let mut path = prefix.clone();
                if n.ident != "self" {
                    path.push(n.ident.to_string());
                }
                self.0.push(path);
            }
            syn::UseTree::Rename(r) => {
                let mut path = prefix.clone();
                path.push(r.ident.to_string());
                self.0.push(path);
            }
            syn::UseTree::Glob(_) => self.0.push(prefix.clone()),
            syn::UseTree::Group(g) => g.items.iter().for_each(|t| self.use_tree(prefix, t)),
        }
    }
}

impl<'a> Visit<'a> for Paths {
    fn visit_item_mod(&mut self, item: &'a syn::ItemMod) {
        if !is_test(&item.attrs) {
            syn::visit::visit_item_mod(self, item);
        }
    }
    fn visit_item_fn(&mut self, item: &'a syn::ItemFn) {
        if !is_test(&item.attrs) {
            syn::visit::visit_item_fn(self, item);
        }
    }
    fn visit_item_use(&mut self, item: &'a syn::ItemUse) {
        if !is_test(&item.attrs) {
            self.use_tree(&mut Vec::new(), &item.tree);
        }
    }
    /// `pub(super)` says who may see an item, not what it uses.
    fn visit_visibility(&mut self, _: &'a syn::Visibility) {}
    fn visit_path(&mut self, path: &'a syn::Path) {
        self.0
            .push(path.segments.iter().map(|s| s.ident.to_string()).collect());
        syn::visit::visit_path(self, path);
    }
    fn visit_macro(&mut self, mac: &'a syn::Macro) {
        // Paths inside `format!`, `json!` and the like: any `a::b` token run.
        let text = mac.tokens.to_string().replace(" :: ", "::");
        for word in text.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')) {
            if word.contains("::") {
                self.0.push(word.split("::").map(str::to_owned).collect());
            }
        }
        syn::visit::visit_macro(self, mac);
    }
}

/// The module a path names, if it is one of the crate's: the longest known prefix.
fn resolve(from: &Source, path: &[String], modules: &BTreeSet<Module>) -> Option<Module> {
    let (mut base, rest): (Module, &[String]) = match path.first().map(String::as_str) {
        Some("crate") => (Vec::new(), &path[1..]),
        Some("super") => {
            // A file's module path already names its directory for `mod.rs`, so `super` is
            // always one segment up, and each further `super` one more.
            let mut parent = from.module.clone();
            let mut rest = path;
            while rest.first().map(String::as_str) == Some("super") {
                parent.pop();
                rest = &rest[1..];
            }
            (parent, rest)
        }
        Some("self") => (from.module.clone(), &path[1..]),
        Some(first) if from.children.contains(first) => (from.module.clone(), path),
        _ => return None,
    };
    let mut found = base.clone();
    for segment in rest {
        base.push(segment.clone());
        if modules.contains(&base) {
            found = base.clone();
        } else {
            break;
        }
    }
    Some(found)
}

#[test]
fn no_two_modules_import_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &src, &mut files);
    let files: Vec<(PathBuf, String)> = files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("readable source");
            (
                path.strip_prefix(&src).expect("under src/").to_owned(),
                text,
            )
        })
        .collect();
    let cycles = find_cycles(&files);
    assert!(
        cycles.is_empty(),
        "modules that import each other (move what both need below both):\n{}",
        cycles.into_iter().collect::<Vec<_>>().join("\n")
    );
}

/// The checker itself finds what it is for, and nothing in a layered crate.
#[test]
fn finds_each_kind_of_cycle() {
    let file = |path: &str, text: &str| (PathBuf::from(path), text.to_owned());
    let layered = [
        file("lib.rs", "pub mod a; pub mod b; pub mod c;"),
        file("a.rs", "use crate::c::Shared; pub struct A(Shared);"),
        file(
            "b.rs",
            "pub fn f() -> crate::c::Shared { crate::a::A(todo!()).0 }",
        ),
        file(
            "c.rs",
            "pub struct Shared; #[cfg(test)] mod tests { use crate::a::A; }",
        ),
    ];
    assert_eq!(find_cycles(&layered), BTreeSet::new());

    let siblings = [
        file("lib.rs", "pub mod a; pub mod b;"),
        file("a/mod.rs", "pub mod inner;"),
        file("a/inner.rs", "use crate::b::B; pub struct A;"),
        file(
            "b.rs",
            "pub struct B; fn f() { let _ = format!(\"{}\", crate::a::inner::A); }",
        ),
    ];
    let found = find_cycles(&siblings);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found
            .iter()
            .all(|c| c.starts_with("a and b import each other")),
        "{found:?}"
    );

    let grandparent = [
        file("lib.rs", "pub mod a; pub mod b;"),
        file("a/mod.rs", "pub mod inner;"),
        file("a/inner.rs", "pub fn f() { super::super::b::g() }"),
        file("b.rs", "pub fn g() { crate::a::inner::f() }"),
    ];
    let found = find_cycles(&grandparent);
    assert!(
        found
            .iter()
            .any(|c| c.starts_with("a and b import each other")),
        "super::super reaches the crate root: {found:?}"
    );

    let parent_child = [
        file("lib.rs", "pub mod p;"),
        file(
            "p/mod.rs",
            "mod child; pub const LIMIT: u8 = 1; pub fn f() { child::g() }",
        ),
        file(
            "p/child.rs",
            "use super::LIMIT; pub fn g() { let _ = LIMIT; }",
        ),
    ];
    let found = find_cycles(&parent_child);
    assert!(
        found.contains("p::child uses its ancestor p, which uses it back"),
        "{found:?}"
    );
}

/// The pairs of modules that import each other, as messages.
fn find_cycles(files: &[(PathBuf, String)]) -> BTreeSet<String> {
    let mut parsed = Vec::new();
    for (path, text) in files {
        let module = module_of(Path::new(""), path);
        if module.last().is_some_and(|m| m == "tests") {
            continue;
        }
        let file = syn::parse_file(text)
            .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
        let children = file
            .items
            .iter()
            .filter_map(|item| match item {
                syn::Item::Mod(m) if m.content.is_none() && !is_test(&m.attrs) => {
                    Some(m.ident.to_string())
                }
                _ => None,
            })
            .collect();
        parsed.push(Source {
            module,
            children,
            file,
        });
    }
    let modules: BTreeSet<Module> = parsed.iter().map(|s| s.module.clone()).collect();

    // module -> the modules it names, each with whether an item of it is named.
    let mut imports: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for source in &parsed {
        let mut paths = Paths::default();
        paths.visit_file(&source.file);
        for path in &paths.0 {
            if let Some(target) = resolve(source, path, &modules)
                && target != source.module
            {
                imports
                    .entry(source.module.clone())
                    .or_default()
                    .insert(target);
            }
        }
    }

    let mut cycles = BTreeSet::new();
    let mut lifted: BTreeMap<(Module, Module), Vec<String>> = BTreeMap::new();
    for (from, targets) in &imports {
        for to in targets {
            let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
            if common == to.len() {
                // A child naming its parent (or any ancestor) itself: the ancestor must not
                // name this child back.
                let back = imports.get(to).is_some_and(|t| {
                    t.iter()
                        .any(|m| m.len() > common && m[..=common] == from[..=common])
                });
                if back {
                    cycles.insert(format!(
                        "{} uses its ancestor {}, which uses it back",
                        from.join("::"),
                        show(to)
                    ));
                }
                continue;
            }
            if common == from.len() {
                continue; // a parent using its descendant
            }
            let pair = (from[..=common].to_vec(), to[..=common].to_vec());
            lifted.entry(pair).or_default().push(format!(
                "{} -> {}",
                from.join("::"),
                to.join("::")
            ));
        }
    }
    for ((a, b), why) in &lifted {
        if let Some(back) = lifted.get(&(b.clone(), a.clone()))
            && a < b
        {
            cycles.insert(format!(
                "{} and {} import each other: {} / {}",
                a.join("::"),
                b.join("::"),
                why.join(", "),
                back.join(", ")
            ));
        }
    }
    cycles
}

fn show(module: &Module) -> String {
    if module.is_empty() {
        "the crate root".into()
    } else {
        module.join("::")
    }
}
