//! The test suite reads nothing outside the repository: a lone `git clone` runs `make test`.
//! Every relative path literal (`"../…"`) in the repository's Rust sources is resolved against
//! its crate's directory (where `env!("CARGO_MANIFEST_DIR")` points) and must stay inside the
//! repository; and no source names the team's `shared/` directory.
use std::path::{Component, Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// The nearest directory above `file` holding a Cargo.toml: what `CARGO_MANIFEST_DIR` is there.
fn crate_dir(file: &Path) -> PathBuf {
    let mut dir = file.parent().unwrap();
    while !dir.join("Cargo.toml").is_file() {
        dir = dir.parent().unwrap();
    }
    dir.to_path_buf()
}

/// `base/rel` with `..` resolved lexically (the target need not exist).
fn resolve(base: &Path, rel: &str) -> PathBuf {
    let mut out = base.to_path_buf();
    for c in Path::new(rel).components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(p) => out.push(p),
            _ => {}
        }
    }
    out
}

/// The string literals in `text` that start with `../`, each with whether it is a module's
/// `#[path = "..."]` (relative to the file's directory, not the crate's).
fn parent_literals(text: &str) -> Vec<(String, bool)> {
    let parts: Vec<&str> = text.split('"').collect();
    (1..parts.len())
        .step_by(2)
        .filter(|&i| parts[i].starts_with("../"))
        .map(|i| (parts[i].to_owned(), parts[i - 1].trim_end().ends_with("#[path =")))
        .collect()
}

#[test]
fn no_source_reaches_outside_the_repository() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(files.len() > 50, "found only {} Rust files under {}", files.len(), root.display());
    let this = root.join("tests/self_contained.rs");
    let mut outside = Vec::new();
    for file in files.iter().filter(|f| **f != this) {
        let text = std::fs::read_to_string(file).unwrap();
        if text.contains(concat!("KDR_", "SHARED_DIR")) || text.contains(concat!("shared", "/design")) {
            outside.push(format!("{}: names the team's shared/ directory", file.display()));
        }
        for (lit, module_path) in parent_literals(&text) {
            let base = if module_path { file.parent().unwrap().to_path_buf() } else { crate_dir(file) };
            let target = resolve(&base, &lit);
            if !target.starts_with(&root) {
                outside.push(format!("{}: \"{lit}\" resolves to {}", file.display(), target.display()));
            }
        }
    }
    assert!(outside.is_empty(), "sources that read outside the repository:\n{}", outside.join("\n"));
}

#[test]
fn the_checker_catches_a_path_that_leaves_the_repository() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let lits = parent_literals(
        r#"let p = dir.join("../../elsewhere/x"); let q = "../tests/fixtures"; #[path = "../common/mod.rs"]"#,
    );
    let names: Vec<&str> = lits.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(names, ["../../elsewhere/x", "../tests/fixtures", "../common/mod.rs"]);
    assert_eq!(lits.iter().map(|(_, m)| *m).collect::<Vec<_>>(), [false, false, true]);
    assert!(!resolve(&root.join("kdr-monitor"), &lits[0].0).starts_with(&root));
    assert!(resolve(&root.join("kdr-monitor"), &lits[1].0).starts_with(&root));
    assert!(resolve(&root.join("tests/drill"), &lits[2].0).starts_with(&root));
}

#[test]
fn the_sample_traces_are_in_the_repository() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/detector-traces");
    let n = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "jsonl"))
        .count();
    assert!(n >= 8, "{} holds {n} traces", dir.display());
}
