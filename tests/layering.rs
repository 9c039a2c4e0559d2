//! The workspace's layering, checked rather than eyeballed:
//! - no import circle between the files of any crate (a file that uses another's items through
//!   `crate::`, `super::` or its own child module's name depends on it; re-exports, module
//!   declarations and test modules do not count);
//! - library crates depend only on the leaf crates (`tollgate-clock`, `tollgate-backend`),
//!   never on each other, the HTTP crate or the server;
//! - the server's middleware (`layers/`) never uses the application state, and its payment
//!   domain (`payment/`) names no HTTP crate.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The workspace's `crates/` folder.
fn crates_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crates")
}

/// Every `.rs` file below `dir`.
fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// A file's module path below its crate root: `src/a/b.rs` and `src/a/b/mod.rs` are `a::b`,
/// `src/lib.rs` and `src/main.rs` the root.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).unwrap_or(file);
    let mut parts: Vec<String> = relative
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The text that counts: without the test module, comments, re-exports and module declarations.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(str::trim_start)
        .filter(|line| {
            !line.starts_with("//")
                && !line.starts_with("pub use ")
                && !line.starts_with("pub(crate) use ")
                && !line.starts_with("pub(super) use ")
                && !line.starts_with("mod ")
                && !line.starts_with("pub mod ")
                && !line.starts_with("pub(crate) mod ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module paths a file's code names through `crate::…` and `super::…`, including those
/// inside `use` groups (`use crate::{a::X, b::Y}`).
fn referenced(code: &str, here: &[String], is_dir_module: bool) -> BTreeSet<Vec<String>> {
    let mut found = BTreeSet::new();
    let words: Vec<char> = code.chars().collect();
    let text: String = words.iter().collect();
    for (start, _) in text
        .match_indices("crate::")
        .chain(text.match_indices("super::"))
    {
        let before = text[..start].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &text[start..];
        let (mut base, mut path_text) = if let Some(tail) = rest.strip_prefix("crate::") {
            (Vec::new(), tail)
        } else {
            // `super` is the parent of the module this file is; a `mod.rs` is its own module.
            let mut base = here.to_vec();
            let mut tail = rest;
            while let Some(next) = tail.strip_prefix("super::") {
                let _ = is_dir_module;
                base.pop();
                tail = next;
            }
            (base, tail)
        };
        collect_paths(&mut base, &mut path_text, &mut found);
    }
    found
}

/// The module paths a file names through its own child modules (`mod shard;` … `shard::Shard`,
/// `use shard::{…}`): a parent that uses its child depends on it, like any other file.
fn children_used(text: &str, here: &[String]) -> BTreeSet<Vec<String>> {
    let children: Vec<String> = text
        .lines()
        .map(str::trim_start)
        .filter_map(|line| {
            let rest = line
                .strip_prefix("pub(crate) mod ")
                .or_else(|| line.strip_prefix("pub mod "))
                .or_else(|| line.strip_prefix("mod "))?;
            rest.strip_suffix(';').map(str::to_owned)
        })
        .collect();
    let code = code_of(text);
    let mut found = BTreeSet::new();
    for child in children {
        let pattern = format!("{child}::");
        for (start, _) in code.match_indices(&pattern) {
            let before = code[..start].chars().last();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let mut base = here.to_vec();
            let mut tail = &code[start..];
            collect_paths(&mut base, &mut tail, &mut found);
        }
    }
    found
}

/// Reads `a::b::{c, d::e}` at the start of `text` into module paths under `base`.
fn collect_paths(base: &mut Vec<String>, text: &mut &str, found: &mut BTreeSet<Vec<String>>) {
    let ident: String = text
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if ident.is_empty() {
        if let Some(group) = text.strip_prefix('{') {
            // A group: each comma-separated path at depth one.
            let mut depth = 0;
            let mut item_start = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        let mut item = group[item_start..i].trim();
                        collect_paths(&mut base.clone(), &mut item, found);
                        return;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        let mut item = group[item_start..i].trim();
                        collect_paths(&mut base.clone(), &mut item, found);
                        item_start = i + 1;
                    }
                    _ => {}
                }
            }
        }
        found.insert(base.clone());
        return;
    }
    let after = &text[ident.len()..];
    base.push(ident);
    found.insert(base.clone());
    if let Some(mut tail) = after.strip_prefix("::") {
        collect_paths(base, &mut tail, found);
    }
}

/// The import graph of one crate: file → files whose items it uses.
fn graph(src: &Path) -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeMap<Vec<String>, PathBuf> = files
        .iter()
        .map(|f| (module_of(src, f), f.clone()))
        .collect();
    let mut edges = BTreeMap::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let here = module_of(src, file);
        let is_dir = file
            .file_name()
            .is_some_and(|n| n == "mod.rs" || n == "lib.rs" || n == "main.rs");
        let mut targets = BTreeSet::new();
        let mut paths = referenced(&code_of(&text), &here, is_dir);
        paths.extend(children_used(&text, &here));
        for path in paths {
            // The longest prefix of the path that is a file of its own.
            let target = (0..=path.len()).rev().find_map(|n| modules.get(&path[..n]));
            if let Some(target) = target
                && target != file
            {
                targets.insert(target.clone());
            }
        }
        edges.insert(file.clone(), targets);
    }
    edges
}

/// The strongly connected components with more than one file (Tarjan).
fn circles(edges: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Vec<Vec<PathBuf>> {
    struct Walk<'a> {
        edges: &'a BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        index: BTreeMap<&'a PathBuf, usize>,
        low: BTreeMap<&'a PathBuf, usize>,
        stack: Vec<&'a PathBuf>,
        on_stack: BTreeSet<&'a PathBuf>,
        found: Vec<Vec<PathBuf>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, node: &'a PathBuf) {
            let n = self.index.len();
            self.index.insert(node, n);
            self.low.insert(node, n);
            self.stack.push(node);
            self.on_stack.insert(node);
            for next in self.edges.get(node).into_iter().flatten() {
                if !self.index.contains_key(next) {
                    self.visit(next);
                    let low = self.low[node].min(self.low[next]);
                    self.low.insert(node, low);
                } else if self.on_stack.contains(next) {
                    let low = self.low[node].min(self.index[next]);
                    self.low.insert(node, low);
                }
            }
            if self.low[node] == self.index[node] {
                let mut component = Vec::new();
                while let Some(top) = self.stack.pop() {
                    self.on_stack.remove(top);
                    component.push(top.clone());
                    if top == node {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for node in edges.keys() {
        if !walk.index.contains_key(node) {
            walk.visit(node);
        }
    }
    walk.found
}

#[test]
fn no_crate_has_an_import_circle_between_its_files() {
    let mut report = Vec::new();
    let mut crates: Vec<_> = std::fs::read_dir(crates_dir())
        .expect("crates/")
        .flatten()
        .map(|e| e.path())
        .collect();
    crates.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    for krate in crates {
        let src = krate.join("src");
        for circle in circles(&graph(&src)) {
            let names: Vec<String> = circle
                .iter()
                .map(|f| f.strip_prefix(&src).unwrap_or(f).display().to_string())
                .collect();
            report.push(format!("{}: {}", krate.display(), names.join(" → ")));
        }
    }
    assert!(report.is_empty(), "import circles:\n{}", report.join("\n"));
}

#[test]
fn the_scanner_reads_groups_and_supers() {
    let here = vec!["layers".to_owned(), "limits".to_owned()];
    let found = referenced(
        "use crate::{auth::Caller, state::{AppState, X}};\nlet a = super::stage::Next;",
        &here,
        false,
    );
    for path in [
        vec!["auth", "Caller"],
        vec!["state", "AppState"],
        vec!["state", "X"],
        vec!["layers", "stage", "Next"],
    ] {
        let path: Vec<String> = path.into_iter().map(str::to_owned).collect();
        assert!(found.contains(&path), "{path:?} in {found:?}");
    }
}

#[test]
fn libraries_depend_only_on_leaf_crates() {
    // `tollgate-http` is the adapter above them (tower layers over the limiter and the
    // idempotency driver): it may use them, never the server.
    const LIBRARIES: [&str; 4] = [
        "tollgate-ratelimit",
        "tollgate-idempotency",
        "tollgate-retry",
        "tollgate-audit",
    ];
    const LEAVES: [&str; 2] = ["tollgate-clock", "tollgate-backend"];
    for library in LIBRARIES {
        let manifest = std::fs::read_to_string(crates_dir().join(library).join("Cargo.toml"))
            .expect("a manifest");
        let dependencies = manifest
            .split("\n[dependencies]\n")
            .nth(1)
            .and_then(|rest| rest.split("\n[").next())
            .unwrap_or_default();
        for line in dependencies.lines() {
            let name = line.split([' ', '=']).next().unwrap_or_default();
            if name.starts_with("tollgate") || name == "payments-server" {
                assert!(
                    LEAVES.contains(&name),
                    "{library} depends on {name}: libraries import only the leaf crates {LEAVES:?}"
                );
            }
        }
    }
    let http =
        std::fs::read_to_string(crates_dir().join("tollgate-http/Cargo.toml")).expect("a manifest");
    assert!(
        !http.contains("payments-server"),
        "tollgate-http depends on the server"
    );
    // `tollgate-reqwest` is the client-side adapter: the retry library and nothing else of ours.
    let reqwest = std::fs::read_to_string(crates_dir().join("tollgate-reqwest/Cargo.toml"))
        .expect("a manifest");
    let ours: Vec<&str> = reqwest
        .split("\n[dev-dependencies]\n")
        .next()
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split([' ', '=']).next())
        .filter(|name| name.starts_with("tollgate-") || *name == "payments-server")
        .collect();
    assert_eq!(
        ours,
        ["tollgate-retry"],
        "tollgate-reqwest's own dependencies"
    );
}

#[test]
fn the_server_middleware_and_domain_stand_on_their_own() {
    let src = crates_dir().join("payments-server/src");
    let state = src.join("state.rs");
    for (file, targets) in graph(&src) {
        if file.starts_with(src.join("layers")) {
            assert!(
                !targets.contains(&state),
                "{} uses the application state: a middleware carries only what it needs",
                file.display()
            );
        }
    }
    let mut domain = Vec::new();
    rust_files(&src.join("payment"), &mut domain);
    assert!(!domain.is_empty(), "payment/ has files");
    for file in domain {
        let text = std::fs::read_to_string(&file).expect("a source file");
        for http in ["tollgate_http", "axum", "http::"] {
            assert!(
                !text.contains(http),
                "{} names {http}: the payment domain knows no HTTP",
                file.display()
            );
        }
    }
}
