//! A policy folder replaced as a whole (renamed away and created again, as deploy tools
//! do) keeps being watched (regression: the watch stayed on the old folder's inode, so
//! every later edit was ignored in silence).

use std::time::{Duration, Instant};

use netboot::mac::MacAddr;
use netboot::policy::{watch, Answer, MachineFacts, PolicyHandle};

fn answer(handle: &PolicyHandle) -> Answer {
    let mac: MacAddr = "52:54:00:12:34:01".parse().expect("mac");
    handle
        .current()
        .select(&MachineFacts {
            mac,
            arch: None,
            uuid: None,
        })
        .answer
}

fn wait_for(handle: &PolicyHandle, want: Answer) {
    let start = Instant::now();
    while answer(handle) != want {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "policy did not become {want:?}, still {:?}",
            answer(handle)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn default_group(setup: &str) -> String {
    format!("[[group]]\nsetup = \"{setup}\"\n")
}

#[test]
fn a_replaced_folder_is_watched_anew() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("policy");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::write(dir.join("p.toml"), default_group("wait")).expect("write");
    let handle = watch(&dir).expect("valid");
    assert_eq!(answer(&handle), Answer::Wait);

    std::fs::rename(&dir, root.path().join("policy.old")).expect("rename away");
    std::fs::create_dir(&dir).expect("mkdir again");
    std::fs::write(dir.join("p.toml"), default_group("local")).expect("write");
    wait_for(&handle, Answer::Local);

    // And edits in the new folder apply.
    std::fs::write(dir.join("p.toml"), default_group("ignore")).expect("write");
    wait_for(&handle, Answer::Ignore);
}
