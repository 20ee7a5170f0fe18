//! Tidy tests: repository-wide rules that are cheap to check and easy to forget.

use std::path::{Path, PathBuf};

fn rust_files(directory: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(directory) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name == ".git" || name == "vendor" {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            found.push(path);
        }
    }
}

#[test]
fn every_rust_file_starts_with_a_module_doc_comment() {
    let mut files = Vec::new();
    rust_files(&crate::project_root(), &mut files);
    assert!(files.len() > 10, "found only {files:?}");
    let undocumented: Vec<_> = files
        .iter()
        .filter(|path| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            !text.trim_start().starts_with("//!")
        })
        .collect();
    assert!(
        undocumented.is_empty(),
        "files without a leading //! line: {undocumented:?}"
    );
}

/// The Rust files of the repository that contain `marker`.
fn files_containing(marker: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    rust_files(&crate::project_root(), &mut files);
    files.retain(|path| {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .contains(marker)
    });
    files
}

#[test]
fn no_test_is_ignored() {
    let ignored = files_containing(&["#[", "ignore"].concat());
    assert!(
        ignored.is_empty(),
        "ignored tests never run in CI: {ignored:?}"
    );
}

/// Relative links in README.md, ARCHITECTURE.md and docs/ lead to files that exist.
#[test]
fn documentation_links_lead_somewhere() {
    let root = crate::project_root();
    let mut pages = vec![root.join("README.md"), root.join("ARCHITECTURE.md")];
    if let Ok(entries) = std::fs::read_dir(root.join("docs")) {
        pages.extend(entries.flatten().map(|entry| entry.path()));
    }
    let mut broken = Vec::new();
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap_or_default();
        for (at, _) in text.match_indices("](") {
            let Some(target) = text[at + 2..].split(')').next() else {
                continue;
            };
            let file = target.split('#').next().unwrap_or_default();
            if file.is_empty() || file.contains("://") {
                continue;
            }
            let resolved = page.parent().unwrap_or(&root).join(file);
            if !resolved.exists() {
                broken.push(format!("{}: {target}", page.display()));
            }
        }
    }
    assert!(pages.len() > 3, "found only {pages:?}");
    assert!(broken.is_empty(), "broken links: {broken:?}");
}

/// The sources outside tests: every `.rs` file under `crates/*/src` and `xtask/src`, except
/// `tests.rs` files and `tests/` folders.
fn source_files() -> Vec<PathBuf> {
    let root = crate::project_root();
    let mut files = Vec::new();
    rust_files(&root.join("xtask/src"), &mut files);
    for entry in std::fs::read_dir(root.join("crates"))
        .into_iter()
        .flatten()
        .flatten()
    {
        rust_files(&entry.path().join("src"), &mut files);
    }
    files.retain(|path| {
        path.file_name().is_none_or(|name| name != "tests.rs")
            && !path.components().any(|part| part.as_os_str() == "tests")
    });
    files
}

/// Long files hide structure: past 700 lines, a file is split by what its parts do.
#[test]
fn no_source_file_is_over_700_lines() {
    let files = source_files();
    assert!(files.len() > 50, "found only {files:?}");
    let long: Vec<_> = files
        .iter()
        .filter_map(|path| {
            let lines = std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .count();
            (lines > 700).then(|| format!("{} ({lines} lines)", path.display()))
        })
        .collect();
    assert!(long.is_empty(), "over 700 lines: {long:?}");
}

/// A function with more than clippy's seven arguments takes a struct instead; the lint is never
/// silenced.
#[test]
fn the_argument_count_lint_is_never_allowed() {
    let marker = ["too_many", "_arguments"].concat();
    let silenced = files_containing(&marker);
    assert!(silenced.is_empty(), "{marker} allowed in {silenced:?}");
}
