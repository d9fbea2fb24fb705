//! Live reload: edits apply within seconds, broken edits leave the policy in force, and
//! editors that write a temp file and rename it are seen. Runs inside a tokio runtime
//! like the daemon does.

use std::path::Path;
use std::time::{Duration, Instant};

use netboot::mac::MacAddr;
use netboot::policy::{watch, Answer, MachineFacts, PolicyHandle};

const MAC: &str = "52:54:00:12:34:01";

fn policy_text(setup: &str) -> String {
    format!("[[group]]\nsetup = \"wait\"\n\n[[group]]\nmatch = {{ mac = [\"{MAC}\"] }}\nsetup = \"{setup}\"\n")
}

fn answer(handle: &PolicyHandle) -> Answer {
    let mac: MacAddr = MAC.parse().expect("mac");
    handle
        .current()
        .select(&MachineFacts {
            mac,
            arch: None,
            uuid: None,
        })
        .answer
}

/// Polls until the handle gives `want`, for at most 10 s.
async fn wait_for(handle: &PolicyHandle, want: Answer) {
    let start = Instant::now();
    while answer(handle) != want {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "policy did not become {want:?}, still {:?}",
            answer(handle)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes like vim/most editors: a temp file beside the target, renamed over it.
fn write_and_rename(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.swp"));
    std::fs::write(&tmp, text).expect("write temp");
    std::fs::rename(&tmp, dir.join(name)).expect("rename");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_apply_and_broken_edits_are_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("policy.toml");
    std::fs::write(&file, policy_text("local")).expect("write");
    let handle = watch(dir.path()).expect("valid policy");
    assert_eq!(answer(&handle), Answer::Local);

    // A plain in-place edit.
    std::fs::write(&file, policy_text("ignore")).expect("write");
    wait_for(&handle, Answer::Ignore).await;

    // A broken edit (unknown setup) is refused; give the watcher time to see it.
    std::fs::write(&file, policy_text("no-such-setup")).expect("write");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(answer(&handle), Answer::Ignore);
    // A syntax error in a second file is refused too.
    std::fs::write(dir.path().join("extra.toml"), "[[group]\n").expect("write");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(answer(&handle), Answer::Ignore);
    std::fs::remove_file(dir.path().join("extra.toml")).expect("remove");

    // The fix, written the way editors do, applies.
    write_and_rename(dir.path(), "policy.toml", &policy_text("local"));
    wait_for(&handle, Answer::Local).await;

    // A new file whose mac group overlaps the existing one at equal weight: refused.
    std::fs::write(
        dir.path().join("more.toml"),
        format!("[[group]]\nmatch = {{ mac = [\"{MAC}\"] }}\nsetup = \"wait\"\n"),
    )
    .expect("write");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(answer(&handle), Answer::Local);
    // Making it more specific (mac + label from [machine]) lets it load and win.
    std::fs::write(
        dir.path().join("more.toml"),
        format!(
            "[[group]]\nmatch = {{ mac = [\"{MAC}\"], labels = {{ rack = \"a\" }} }}\n\
             setup = \"wait\"\n[machine.\"{MAC}\"]\nlabels = {{ rack = \"a\" }}\n"
        ),
    )
    .expect("write");
    wait_for(&handle, Answer::Wait).await;
    std::fs::remove_file(dir.path().join("more.toml")).expect("remove");
    std::fs::write(&file, policy_text("ignore")).expect("write");
    wait_for(&handle, Answer::Ignore).await;
}

#[tokio::test]
async fn invalid_folder_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("p.toml"), "[[group]]\nsetup = \"nope\"\n").expect("write");
    let errors = watch(dir.path()).expect_err("invalid policy");
    assert_eq!(errors.0.len(), 1, "{errors}");
    assert_eq!(errors.0[0].line, 1);
}

#[test]
fn works_without_a_runtime_and_clones_share_updates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("p.toml");
    std::fs::write(&file, policy_text("local")).expect("write");
    let handle = watch(dir.path()).expect("valid");
    let clone = handle.clone();
    drop(handle);
    std::fs::write(&file, policy_text("ignore")).expect("write");
    let start = Instant::now();
    while answer(&clone) != Answer::Ignore {
        assert!(start.elapsed() < Duration::from_secs(10), "no reload");
        std::thread::sleep(Duration::from_millis(50));
    }
}
