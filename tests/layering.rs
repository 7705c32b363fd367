//! Keeps `docs/architecture.md` true: its layer table is read as written,
//! every reference from one module to another in `src/` is collected
//! (`use crate::…` and `use super::…` trees, inline `crate::…::` and
//! `super::…` paths), and each must be one the table allows. It also keeps
//! production files to one idea in size (no file over 700 lines; functions
//! are held to 80 by clippy's `too_many_lines`, configured in clippy.toml).
//!
//! Test code (`mod tests { … }`, `tests.rs`, `*_tests.rs`, `testing.rs`)
//! is left out: tests reach for fakes and helpers anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Longest production file, in lines.
const MAX_FILE_LINES: usize = 700;

/// One row of the layer table.
#[derive(Debug)]
struct Layer {
    name: String,
    modules: Vec<String>,
    /// Layers whose modules this one may use.
    layers: Vec<String>,
    /// Modules or items it may use although their layer is not allowed.
    items: Vec<String>,
}

fn backticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The table under "## The layers", top row first.
fn layer_table() -> Vec<Layer> {
    let doc = fs::read_to_string("docs/architecture.md").expect("docs/architecture.md");
    let section = doc
        .split("## The layers")
        .nth(1)
        .expect("a section \"## The layers\"");
    let rows: Vec<Vec<String>> = section
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| l.split('|').map(|c| c.trim().to_string()).collect())
        .collect();
    assert!(rows.len() >= 5, "the layer table has {} rows", rows.len());
    let names: Vec<String> = rows.iter().map(|r| r[1].clone()).collect();
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            let (mut layers, mut items) = (Vec::new(), Vec::new());
            for part in row[4].split(',').map(str::trim) {
                match part {
                    "—" | "" => {}
                    "every layer below" => layers.extend(names[i + 1..].iter().cloned()),
                    _ if part.starts_with('`') => items.extend(backticked(part)),
                    name => {
                        assert!(
                            names.iter().any(|n| n == name),
                            "row {:?} names an unknown layer {name:?}",
                            row[1]
                        );
                        layers.push(name.to_string());
                    }
                }
            }
            Layer {
                name: row[1].clone(),
                modules: backticked(&row[2]),
                layers,
                items,
            }
        })
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn is_test_file(path: &Path) -> bool {
    let name = path.file_name().unwrap().to_str().unwrap();
    name == "tests.rs" || name == "testing.rs" || name.ends_with("_tests.rs")
}

/// `src/smtp/proxy/mod.rs` → `smtp::proxy`; `src/lib.rs` → `lib`.
fn module_of(path: &Path) -> String {
    let rel = path.strip_prefix("src").unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_str().unwrap().to_string())
        .collect();
    if parts.len() > 1 && parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

/// The production modules and their source.
fn sources() -> BTreeMap<String, (PathBuf, String)> {
    let mut files = Vec::new();
    rust_files(Path::new("src"), &mut files);
    files
        .into_iter()
        .filter(|p| !is_test_file(p))
        .map(|p| {
            let text = fs::read_to_string(&p).unwrap();
            (module_of(&p), (p, text))
        })
        .collect()
}

/// The source without comments and without inline test modules.
fn production_code(text: &str) -> String {
    let mut code: String = text
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    while let Some(start) = code.find("#[cfg(test)]") {
        let rest = &code[start..];
        let Some(open) = rest.find(['{', ';']) else {
            break;
        };
        if rest.as_bytes()[open] == b';' {
            // `mod tests;`: the file is left out by name.
            code.replace_range(start..start + open + 1, "");
            continue;
        }
        let mut depth = 0;
        let mut end = rest.len();
        for (i, b) in rest.bytes().enumerate().skip(open) {
            match b {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        code.replace_range(start..start + end, "");
    }
    code
}

/// Expands a use tree: `a::{b, c::{d, e}}` → `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str, prefix: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let path = tree.split(" as ").next().unwrap().trim();
        if !path.is_empty() {
            out.push(format!("{prefix}{path}"));
        }
        return;
    };
    let close = tree.rfind('}').expect("a closing brace");
    let head = format!("{prefix}{}", &tree[..open]);
    let (mut depth, mut start) = (0, open + 1);
    for (i, c) in tree.char_indices().take(close).skip(open + 1) {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                expand(&tree[start..i], &head, out);
                start = i + 1;
            }
            _ => {}
        }
    }
    expand(&tree[start..close], &head, out);
}

/// Every path the code names through `crate` or `super`.
fn paths_in(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    for statement in code.split(';') {
        let s = statement.trim_start();
        let s = s
            .strip_prefix("pub(crate) ")
            .or_else(|| s.strip_prefix("pub(super) "))
            .or_else(|| s.strip_prefix("pub "))
            .unwrap_or(s);
        let is_tree = |t: &str| {
            t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_:{},* \n".contains(c))
        };
        if let Some(tree) = s.strip_prefix("use ").filter(|t| is_tree(t)) {
            expand(tree, "", &mut paths);
        }
    }
    let bytes = code.as_bytes();
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(start).map(|i| i + from) {
            from = i + start.len();
            let before = i.checked_sub(1).map(|j| bytes[j]);
            if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':') {
                continue;
            }
            let end = code[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .map_or(code.len(), |n| i + n);
            paths.push(code[i..end].trim_end_matches(':').to_string());
        }
    }
    paths
}

/// A path as seen from `module`, made absolute (without `crate`).
fn absolute(module: &str, path: &str) -> Option<Vec<String>> {
    let mut segments: Vec<&str> = path.split("::").collect();
    let mut base: Vec<&str> = match segments.first() {
        Some(&"crate") => {
            segments.remove(0);
            Vec::new()
        }
        Some(&"super") => {
            // `smtp/proxy/mod.rs` is `smtp::proxy` already, so its
            // `super` is `smtp`, like that of `smtp/proxy.rs`.
            let mut base: Vec<&str> = module.split("::").collect();
            while segments.first() == Some(&"super") {
                segments.remove(0);
                base.pop();
            }
            base
        }
        _ => return None,
    };
    base.extend(segments.into_iter().filter(|s| *s != "*" && *s != "self"));
    Some(base.into_iter().map(str::to_string).collect())
}

fn layer_of<'a>(layers: &'a [Layer], module: &str) -> Option<&'a Layer> {
    let matches = |prefix: &str| module == prefix || module.starts_with(&format!("{prefix}::"));
    layers
        .iter()
        .flat_map(|l| l.modules.iter().map(move |m| (l, m)))
        .filter(|(_, m)| matches(m))
        .max_by_key(|(_, m)| m.len())
        .map(|(l, _)| l)
}

#[test]
fn every_module_belongs_to_one_layer_of_the_table() {
    let layers = layer_table();
    let sources = sources();
    let unplaced: Vec<&String> = sources
        .keys()
        .filter(|m| *m != "lib" && layer_of(&layers, m).is_none())
        .collect();
    assert!(unplaced.is_empty(), "modules in no layer: {unplaced:?}");
    for layer in &layers {
        for module in &layer.modules {
            assert!(
                sources.contains_key(module),
                "the table names {module:?} (layer {}), which is no module",
                layer.name
            );
        }
    }
}

#[test]
fn no_module_uses_what_its_layer_may_not() {
    let layers = layer_table();
    let sources = sources();
    let mut violations = BTreeSet::new();
    let mut checked = 0;
    for (module, (_, text)) in &sources {
        let Some(from) = layer_of(&layers, module) else {
            continue;
        };
        for named in paths_in(&production_code(text)) {
            let Some(segments) = absolute(module, &named) else {
                continue;
            };
            // The longest prefix that is a module is what is used.
            let Some(target) = (1..=segments.len())
                .rev()
                .map(|n| segments[..n].join("::"))
                .find(|m| sources.contains_key(m))
            else {
                continue;
            };
            if &target == module || target == "lib" {
                continue;
            }
            checked += 1;
            let full = segments.join("::");
            let to = layer_of(&layers, &target).expect("every module is placed");
            let allowed = to.name == from.name
                || from.layers.contains(&to.name)
                || from
                    .items
                    .iter()
                    .any(|i| full == *i || full.starts_with(&format!("{i}::")));
            if !allowed {
                violations.insert(format!(
                    "{module} ({}) uses {full} ({})",
                    from.name, to.name
                ));
            }
        }
    }
    assert!(
        checked > 300,
        "only {checked} references found: the scan is broken"
    );
    assert!(
        violations.is_empty(),
        "references docs/architecture.md does not allow:\n{}",
        violations.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn no_production_file_is_over_the_size_of_one_idea() {
    let long: Vec<String> = sources()
        .values()
        .map(|(path, text)| (path, text.lines().count()))
        .filter(|(_, n)| *n > MAX_FILE_LINES)
        .map(|(path, n)| format!("{} ({n} lines)", path.display()))
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_FILE_LINES} lines: {long:?}"
    );
}

#[test]
fn the_scan_finds_what_it_must() {
    // The scanner itself, on code shaped like ours.
    let code = production_code(
        "use crate::net::{driver::Step, engine::{Engine, Replies as R}};\n\
         pub(crate) use super::reply::Reply; // use crate::nothing;\n\
         fn f() { crate::store::open(); let x = super::super::cli::run; }\n\
         #[cfg(test)]\nmod tests { use crate::gateway::Gateway; }\n\
         #[cfg(test)]\nmod other;\n",
    );
    let paths = paths_in(&code);
    for want in [
        "crate::net::driver::Step",
        "crate::net::engine::Engine",
        "crate::net::engine::Replies",
        "super::reply::Reply",
        "crate::store::open",
        "super::super::cli::run",
    ] {
        assert!(paths.iter().any(|p| p == want), "{want} in {paths:?}");
    }
    assert!(
        !paths
            .iter()
            .any(|p| p.contains("gateway") || p.contains("nothing"))
    );
    assert_eq!(
        absolute("smtp::proxy::auth", "super::super::reply::Reply"),
        Some(vec!["smtp".into(), "reply".into(), "Reply".into()])
    );
}
