//! Reading the policy folder is not a change: neither netbootd's own reload nor an admin's
//! `netbootd policy check` may cause a reload (regression: every reload read the files,
//! inotify reported the reads, and the watcher reloaded every 200 ms forever).

use std::sync::Arc;
use std::time::Duration;

use netboot::policy::watch;

#[test]
fn reading_the_files_does_not_reload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("policy.toml");
    std::fs::write(&file, "[[group]]\nsetup = \"wait\"\n").expect("write");
    let handle = watch(dir.path()).expect("valid policy");
    let before = handle.current();

    // What `policy check` does: open and read every file.
    std::fs::read_to_string(&file).expect("read");
    netboot::policy::load_dir(dir.path()).expect("valid");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        Arc::ptr_eq(&before, &handle.current()),
        "a read caused a reload"
    );

    // A real edit still reloads, and only once: the policy then stays put.
    std::fs::write(&file, "[[group]]\nsetup = \"local\"\n").expect("write");
    let start = std::time::Instant::now();
    while Arc::ptr_eq(&before, &handle.current()) {
        assert!(start.elapsed() < Duration::from_secs(10), "edit not seen");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(600));
    let after_edit = handle.current();
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        Arc::ptr_eq(&after_edit, &handle.current()),
        "the reload after an edit kept reloading"
    );
}
