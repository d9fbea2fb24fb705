//! A policy file name (`*.toml`) that is not a readable regular file is an error with the
//! file named, never skipped in silence (regression: a `main.toml` replaced by a
//! directory, a dangling link or a link loop was skipped, so its groups and reservations
//! vanished, or the folder was reported as having no policy files at all).

use std::path::Path;

use netboot::policy::load_dir;

const DEFAULT: &str = "[[group]]\nsetup = \"wait\"\n";

/// Loads a folder holding a valid `a.toml` plus `odd.toml` made by `make`; expects
/// exactly one error, on `odd.toml`, whose message contains `fragment`.
fn check(make: impl FnOnce(&Path), fragment: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a.toml"), DEFAULT).expect("write");
    make(&dir.path().join("odd.toml"));
    let errors = load_dir(dir.path())
        .expect_err("odd.toml must be refused")
        .0;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].file, dir.path().join("odd.toml"));
    assert_eq!(errors[0].line, 0);
    assert!(
        errors[0].message.contains(fragment),
        "{:?} should contain {fragment:?}",
        errors[0].message
    );
}

#[test]
fn odd_entries_under_a_policy_name_are_errors() {
    check(|p| std::fs::create_dir(p).expect("mkdir"), "Is a directory");
    check(
        |p| std::os::unix::fs::symlink("odd.toml", p).expect("ln"),
        "symbolic links",
    );
    check(
        |p| std::os::unix::fs::symlink("missing.toml", p).expect("ln"),
        "No such file",
    );
}

#[test]
fn the_only_file_replaced_by_a_directory_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("main.toml")).expect("mkdir");
    let errors = load_dir(dir.path()).expect_err("refused").0;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].file, dir.path().join("main.toml"));
}

#[test]
fn a_link_to_a_file_still_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let real = tempfile::tempdir().expect("tempdir");
    std::fs::write(real.path().join("x"), DEFAULT).expect("write");
    std::os::unix::fs::symlink(real.path().join("x"), dir.path().join("a.toml")).expect("ln");
    let policy = load_dir(dir.path()).expect("a linked file is a policy file");
    assert_eq!(policy.groups.len(), 1);
}
