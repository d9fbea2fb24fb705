//! `netbootd policy check DIR` run as a real process: problems as `file:line: reason`
//! lines and exit status 1; a valid folder exits 0.

use std::process::Command;

fn check(dir: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_netbootd"))
        .args(["policy", "check"])
        .arg(dir)
        .env("RUST_LOG", "off")
        .output()
        .expect("run netbootd")
}

#[test]
fn broken_folder_reports_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("10-setups.toml"),
        "[setup.hello]\nkernel = \"kernels/vmlinuz\"\n\ninitrd = [\"/abs/initrd\"]\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("20-groups.toml"),
        "[[group]]\nsetup = \"wait\"\n\n[[group]]\nmatch = { arch = [\"bios\"] }\nsetup = \"hallo\"\n",
    )
    .expect("write");
    let out = check(dir.path());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let setups = dir.path().join("10-setups.toml");
    let groups = dir.path().join("20-groups.toml");
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(
        lines[0].starts_with(&format!("{}:4: ", setups.display())) && lines[0].contains("absolute"),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with(&format!("{}:4: ", groups.display()))
            && lines[1].contains("unknown setup \"hallo\""),
        "{stderr}"
    );
    assert!(lines[2].contains("2 problems"), "{stderr}");
}

#[test]
fn syntax_error_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("p.toml"),
        "[[group]]\nsetup = \"wait\"\n\n\n[machine.\"52:54:00:00:00:01\"\nip = \"198.51.100.5\"\n",
    )
    .expect("write");
    let out = check(dir.path());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let want = format!("{}:5: ", dir.path().join("p.toml").display());
    assert!(stderr.starts_with(&want), "{stderr}");
}

#[test]
fn valid_folder_exits_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("p.toml"), "[[group]]\nsetup = \"wait\"\n").expect("write");
    let out = check(dir.path());
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ok (0 setups, 1 group, 0 machines)"),
        "{stdout}"
    );
}

#[test]
fn missing_folder_exits_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = check(&dir.path().join("absent"));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot read policy folder"),
        "{out:?}"
    );
}
