//! The crate's layering, checked from the source tree.
//!
//! Reads every file under `src/`, collects the `crate::<module>` paths each top-level module
//! names (including `use crate::{a, b}` groups), and asserts:
//! (a) there is no import circle between top-level modules;
//! (b) every edge points down the documented order: entry points (`app`, `cli`, `admin`,
//!     `explain`, `fuzz`) → `server` → `stages` → the config and error edges (`config`
//!     compiles into domain types, `error` maps domain errors to replies) → domain modules →
//!     foundations. Domain modules never import `stages`, `server` or `config`.
//!
//! What is not counted, and why: comments and string literals (a doc link is not a
//! dependency); code under `#[cfg(test)]` (an item, or a `mod x;` whose file is then skipped)
//! and files named `tests.rs` or under a `tests/` folder, because tests may build a whole
//! snapshot to exercise a lower module; `super::` paths, which cannot leave a top-level
//! module from the depths used here. `lib.rs` and `main.rs` are the crate roots, not layers.
#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "a test: an unreadable source tree fails it"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layers, top first. An edge may go to the same layer or any layer below.
const LAYERS: &[(&str, &[&str])] = &[
    ("entry", &["app", "cli", "admin", "explain", "fuzz"]),
    ("server", &["server"]),
    ("stages", &["stages"]),
    ("edges", &["config", "error"]),
    (
        "domain",
        &[
            "auth",
            "routing",
            "providers",
            "guard",
            "pii",
            "limits",
            "tokens",
            "pricing",
            "observe",
            "metrics",
            "llm",
        ],
    ),
    (
        "foundation",
        &[
            "glob",
            "headers",
            "secret",
            "suggest",
            "fastrand",
            "proto",
            "drain",
            "telemetry",
        ],
    ),
];

/// Directions within a layer that the design fixes (the reverse would be a circle anyway;
/// this names the intended side).
const NEVER: &[(&str, &str)] = &[
    ("providers", "routing"),
    ("metrics", "observe"),
    ("glob", "routing"),
];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Source with comments, string and char literals blanked (newlines kept).
fn strip(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0usize;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if b[i] == b'\n' {
                        out.push('\n');
                    }
                    i += 1;
                }
            }
        } else if c == b'r'
            && (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#'))
            && !ident_byte(i.checked_sub(1).map(|p| b[p]))
        {
            // Raw string r"..." / r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push(c as char);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == b'"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&b'#')) {
                    j += 1 + hashes;
                    break;
                }
                if b[j] == b'\n' {
                    out.push('\n');
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                if b.get(i) == Some(&b'\n') {
                    out.push('\n');
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == b'\'' {
            // A char literal ('x', '\n', '\u{7f}', '{'), else a lifetime or label.
            if b.get(i + 1) == Some(&b'\\') {
                let mut j = i + 2;
                while j < b.len() && b[j] != b'\'' {
                    j += 1;
                }
                i = j + 1;
                out.push_str("' '");
            } else if b.get(i + 2) == Some(&b'\'') {
                i += 3;
                out.push_str("' '");
            } else if let Some(ch) = src[i + 1..].chars().next()
                && !ch.is_ascii()
                && src[i + 1 + ch.len_utf8()..].starts_with('\'')
            {
                i += 2 + ch.len_utf8();
                out.push_str("' '");
            } else {
                out.push('\'');
                i += 1;
            }
        } else {
            let ch = src[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

fn ident_byte(c: Option<u8>) -> bool {
    c.is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Removes `#[cfg(test)]` items; returns the names of `#[cfg(test)] mod x;` declarations.
fn drop_test_items(code: &str) -> (String, Vec<String>) {
    const ATTR: &str = "#[cfg(test)]";
    let mut out = String::with_capacity(code.len());
    let mut test_mods = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(ATTR) {
        out.push_str(&rest[..at]);
        let item = &rest[at + ATTR.len()..];
        // The item ends at the first `;` outside braces, or where its first brace closes.
        let mut depth = 0usize;
        let mut end = item.len();
        for (k, ch) in item.char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        end = k + 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    end = k + 1;
                    let decl = item[..k].split_whitespace().collect::<Vec<_>>();
                    if let Some(p) = decl.iter().position(|w| *w == "mod")
                        && let Some(name) = decl.get(p + 1)
                    {
                        test_mods.push((*name).to_owned());
                    }
                    break;
                }
                _ => {}
            }
        }
        rest = &item[end..];
    }
    out.push_str(rest);
    (out, test_mods)
}

/// Top-level module names that `code` refers to as `crate::name` (or inside `crate::{..}`).
fn crate_refs(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let b = code.as_bytes();
    let mut from = 0;
    while let Some(k) = code[from..].find("crate::") {
        let at = from + k;
        from = at + 7;
        // `$crate::` (macros) and `tollgate_crate::` are not this crate's paths.
        if at > 0 && (ident_byte(Some(b[at - 1])) || b[at - 1] == b'$') {
            continue;
        }
        let tail = &code[from..];
        if let Some(group) = tail.strip_prefix('{') {
            // The first identifier after `{` and after each `,`, at depth 0 of the group.
            let mut depth = 0usize;
            let mut want = true;
            let mut name = String::new();
            for ch in group.chars() {
                let ident = ch.is_ascii_alphanumeric() || ch == '_';
                if want && depth == 0 && ident {
                    name.push(ch);
                    continue;
                }
                if !name.is_empty() {
                    found.insert(std::mem::take(&mut name));
                    want = false;
                }
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => want = true,
                    _ => {}
                }
            }
        } else {
            let name: String = tail
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

/// Where `mod name;` declared in `file` lives (file or folder; either may exist).
fn child_paths(file: &Path, name: &str) -> [PathBuf; 2] {
    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let dir = if stem == "mod" || stem == "lib" {
        file.parent().map(Path::to_path_buf).unwrap_or_default()
    } else {
        file.with_extension("")
    };
    [dir.join(format!("{name}.rs")), dir.join(name)]
}

/// Files of one top-level module, with the test-only ones left out.
fn module_code(root: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let file = root.with_extension("rs");
    if file.is_file() {
        files.push(file);
    }
    if root.is_dir() {
        walk(root, &mut files);
    }
    files.sort();
    // Parse parents before children, so a test-only child is known before it is read: a
    // folder's `mod.rs` before its siblings, which are its children.
    files.sort_by_key(|f| (f.components().count(), !f.ends_with("mod.rs")));
    let mut skipped: Vec<PathBuf> = Vec::new();
    let mut out = Vec::new();
    for f in files {
        let name = f.file_name().and_then(|s| s.to_str()).unwrap_or("");
        let in_tests_dir = f.components().any(|c| c.as_os_str() == "tests");
        if name == "tests.rs" || in_tests_dir || skipped.iter().any(|s| f.starts_with(s)) {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let (code, test_mods) = drop_test_items(&strip(&text));
        for m in test_mods {
            skipped.extend(child_paths(&f, &m));
        }
        out.push(code);
    }
    out
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, files);
        } else if p.extension().is_some_and(|x| x == "rs") {
            files.push(p);
        }
    }
}

/// Top-level modules and the modules each one names.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = src_dir();
    let mut modules = BTreeSet::new();
    for e in std::fs::read_dir(&src).expect("src/").flatten() {
        let p = e.path();
        let stem = p
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .to_owned();
        if p.is_dir()
            || (p.extension().is_some_and(|x| x == "rs") && stem != "lib" && stem != "main")
        {
            modules.insert(stem);
        }
    }
    modules
        .iter()
        .map(|m| {
            let refs = module_code(&src.join(m))
                .iter()
                .flat_map(|c| crate_refs(c))
                .filter(|r| r != m && modules.contains(r))
                .collect();
            (m.clone(), refs)
        })
        .collect()
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, ms)| ms.contains(&module))
}

/// A circle through the graph, if any (depth-first search with an on-stack set).
fn find_circle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        g: &BTreeMap<String, BTreeSet<String>>,
        n: &str,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(p) = stack.iter().position(|s| s == n) {
            let mut c = stack[p..].to_vec();
            c.push(n.to_owned());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_owned());
        for m in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(g, m, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for n in g.keys() {
        if let Some(c) = visit(g, n, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn the_scanner_sees_the_known_edges() {
    // Guards against a scanner that finds nothing and so passes everything.
    let g = graph();
    for (a, b) in [
        ("server", "stages"),
        ("stages", "routing"),
        ("routing", "providers"),
        ("observe", "metrics"),
        ("limits", "glob"),
        ("app", "config"),
    ] {
        assert!(g[a].contains(b), "{a} -> {b} not found; graph: {g:#?}");
    }
}

#[test]
fn no_import_circles_between_top_level_modules() {
    let g = graph();
    if let Some(c) = find_circle(&g) {
        panic!("import circle: {}", c.join(" -> "));
    }
}

#[test]
fn imports_follow_the_documented_layers() {
    let g = graph();
    let mut bad = Vec::new();
    for (a, refs) in &g {
        let Some(la) = layer_of(a) else {
            bad.push(format!(
                "{a} is in no layer (add it to LAYERS in tests/layering.rs)"
            ));
            continue;
        };
        for b in refs {
            match layer_of(b) {
                Some(lb) if lb < la => bad.push(format!(
                    "{a} ({}) imports {b} ({}), a layer above it",
                    LAYERS[la].0, LAYERS[lb].0
                )),
                _ => {}
            }
            if NEVER.contains(&(a.as_str(), b.as_str())) {
                bad.push(format!("{a} imports {b}; the design runs {b} -> {a}"));
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn scanner_unit_cases() {
    let code = strip(
        "use crate::a::X; // crate::b\n/* crate::c */ let s = \"crate::d\"; let r = r#\"crate::e\"#;\n\
         use crate::{f::Y, g, h::{i, j}}; let c = '{'; fn k<'a>() { crate::l::m() }\n\
         #[cfg(test)]\nmod tests { use crate::n; }\n#[cfg(test)]\nmod testing;\n$crate::o",
    );
    let (code, test_mods) = drop_test_items(&code);
    let refs: Vec<_> = crate_refs(&code).into_iter().collect();
    assert_eq!(refs, ["a", "f", "g", "h", "l"]);
    assert_eq!(test_mods, ["testing"]);
}
