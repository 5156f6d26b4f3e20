//! Tidy checks: every Rust file says what it is for, no `mod.rs`, and the crate graph
//! keeps its direction (schema, sync and handheld-proto stay free of the runtime crates).

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !name.starts_with('.') && name != "target" && name != "node_modules" {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_opens_with_a_module_doc_and_none_is_mod_rs() {
    let mut files = Vec::new();
    rust_files(&workspace_root(), &mut files);
    assert!(files.len() > 20, "found the sources");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(text.starts_with("//!"), "{} must start with a //! comment", f.display());
        assert_ne!(f.file_name().unwrap(), "mod.rs", "{}: use a self-named module file", f.display());
    }
}

fn normal_deps(package: &str) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["tree", "--locked", "-e", "normal", "--prefix", "none", "-p", package])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_crate_graph_keeps_its_direction() {
    let has = |tree: &str, krate: &str| tree.lines().any(|l| l.split_whitespace().next() == Some(krate));
    let schema = normal_deps("schema");
    for forbidden in ["tokio", "axum", "redb", "quinn", "rustls", "mdns-sd", "handheld-proto", "node"] {
        assert!(!has(&schema, forbidden), "schema must not depend on {forbidden}");
    }
    let sync = normal_deps("sync");
    for forbidden in ["tokio", "axum", "redb", "quinn", "rustls", "mdns-sd", "node", "handheld-proto"] {
        assert!(!has(&sync, forbidden), "sync must not depend on {forbidden}");
    }
    let proto = normal_deps("handheld-proto");
    for forbidden in ["node", "axum", "tokio", "redb", "quinn", "schema"] {
        assert!(!has(&proto, forbidden), "handheld-proto must not depend on {forbidden}");
    }
}

/// `docs/formats.md` describes the frames this build speaks: its version byte and every
/// variant of `sync::frame::Frame` (whose names are read from the source).
#[test]
fn the_frame_format_document_matches_the_code() {
    let root = workspace_root();
    let doc = std::fs::read_to_string(root.join("docs/formats.md")).unwrap();
    let version = format!("one version byte (`{}`)", sync::frame::VERSION);
    assert!(doc.contains(&version), "docs/formats.md must say {version}");
    let source = std::fs::read_to_string(root.join("sync/src/frame.rs")).unwrap();
    let body = source.split("pub enum Frame {").nth(1).and_then(|rest| rest.split("\n}").next()).unwrap();
    let variants: Vec<&str> = body
        .lines()
        .map(str::trim)
        .filter(|l| l.chars().next().is_some_and(|c| c.is_ascii_uppercase()))
        .filter_map(|l| l.split([' ', '{', ',', '(']).next())
        .collect();
    assert!(variants.len() >= 9, "read the variants: {variants:?}");
    for v in variants {
        assert!(doc.contains(&format!("| `{v}` |")), "docs/formats.md lists no frame `{v}`");
    }
}
