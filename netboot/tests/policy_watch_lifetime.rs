//! The watcher thread lives while a handle exists and ends after the last one is dropped.
//! Alone in its own test binary so no other test's watcher is counted.

use std::time::{Duration, Instant};

fn watcher_threads() -> usize {
    let tasks = std::fs::read_dir("/proc/self/task").expect("read /proc/self/task");
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim() == "policy-watch")
        .count()
}

#[test]
fn watcher_stops_with_the_last_handle() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("p.toml"), "[[group]]\nsetup = \"wait\"\n").expect("write");
    let handle = netboot::policy::watch(dir.path()).expect("valid");
    let clone = handle.clone();
    // The thread names itself once it runs: give it a moment.
    let start = Instant::now();
    while watcher_threads() != 1 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no watcher thread"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(handle);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(watcher_threads(), 1, "a clone still holds the policy");
    drop(clone);
    let start = Instant::now();
    while watcher_threads() != 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "watcher thread did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
