//! Loading policy folders: what a valid folder becomes, and every rejection with its
//! file, line and reason.

use std::path::Path;

use netboot::arch::ClientArch;
use netboot::mac::MacAddr;
use netboot::policy::{load_dir, Answer, BootSpec, MachineFacts, PolicyError};

fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write policy file");
    }
    dir
}

fn errors(files: &[(&str, &str)]) -> Vec<PolicyError> {
    let dir = folder(files);
    match load_dir(dir.path()) {
        Ok(p) => panic!("expected errors for {files:?}, got {p:?}"),
        Err(e) => e.0,
    }
}

/// Asserts the folder is rejected with exactly these `(file, line, reason fragment)`.
fn check(files: &[(&str, &str)], want: &[(&str, usize, &str)]) {
    let got = errors(files);
    let short: Vec<(String, usize, String)> = got
        .iter()
        .map(|e| {
            let name = e
                .file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, e.line, e.message.clone())
        })
        .collect();
    assert_eq!(short.len(), want.len(), "got {short:#?}");
    for ((file, line, message), (wfile, wline, wfrag)) in short.iter().zip(want) {
        assert_eq!(
            (file.as_str(), *line),
            (*wfile, *wline),
            "for {message:?} in {short:#?}"
        );
        assert!(
            message.contains(wfrag),
            "{message:?} should contain {wfrag:?}"
        );
    }
}

const DEFAULT: &str = "[[group]]\nsetup = \"wait\"\n";
const HELLO: &str = "[setup.hello]\nkernel = \"kernels/vmlinuz\"\n";

#[test]
fn valid_folder_merges_files() {
    let dir = folder(&[
        (
            "10-setups.toml",
            r#"
[setup.hello]
kernel  = "kernels/vmlinuz"
initrd  = ["initrds/hello.cpio.gz", "https://198.51.100.1/extra.cpio"]
cmdline = "console=ttyS0"

[setup.parked]
answer = "wait"
"#,
        ),
        (
            "20-groups.toml",
            r#"
[[group]]
name  = "rack-a"
match = { labels = { rack = "a" }, arch = ["bios"] }
setup = "hello"

[[group]]
match = { mac = ["52:54:00:12:34:02"] }
setup = "parked"

[[group]]
match = {}
setup = "local"
"#,
        ),
        (
            "30-machines.toml",
            r#"
[machine."52-54-00-12-34-01"]
ip = "198.51.100.50"
hostname = "node1"
labels = { rack = "a" }
"#,
        ),
        // Editor leftovers and other files are not read (these would not even parse).
        (".20-groups.toml.swp", "garbage ["),
        ("20-groups.toml~", "garbage ["),
        ("#20-groups.toml#", "garbage ["),
        ("notes.md", "garbage ["),
    ]);
    let p = load_dir(dir.path()).expect("valid policy");
    assert_eq!(p.setups.len(), 2);
    assert_eq!(
        p.setups["hello"].answer,
        Answer::Boot(BootSpec {
            kernel: "kernels/vmlinuz".into(),
            initrds: vec![
                "initrds/hello.cpio.gz".into(),
                "https://198.51.100.1/extra.cpio".into()
            ],
            cmdline: "console=ttyS0".into(),
        })
    );
    assert_eq!(p.setups["parked"].answer, Answer::Wait);
    let names: Vec<&str> = p.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["rack-a", "20-groups.toml:7", "20-groups.toml:11"]);
    let m1: MacAddr = "52:54:00:12:34:01".parse().expect("mac");
    assert_eq!(
        p.machines[&m1].ip,
        Some("198.51.100.50".parse().expect("ip"))
    );
    assert_eq!(p.machines[&m1].hostname.as_deref(), Some("node1"));

    let facts = |mac: &str, arch| MachineFacts {
        mac: mac.parse().expect("mac"),
        arch: Some(arch),
        uuid: None,
    };
    let d = p.select(&facts("52:54:00:12:34:01", ClientArch::Bios));
    assert_eq!((d.group.as_str(), d.setup.as_str()), ("rack-a", "hello"));
    let d = p.select(&facts("52:54:00:12:34:01", ClientArch::EfiX64));
    assert_eq!((d.setup.as_str(), d.answer), ("local", Answer::Local));
    let d = p.select(&facts("52:54:00:12:34:02", ClientArch::EfiX64));
    assert_eq!((d.setup.as_str(), d.answer), ("parked", Answer::Wait));
}

#[test]
fn missing_and_empty_folders() {
    let dir = folder(&[("readme.txt", "not policy")]);
    let e = load_dir(dir.path()).expect_err("empty folder");
    assert_eq!(e.0.len(), 1);
    assert!(e.0[0].message.contains("no *.toml files"), "{}", e.0[0]);
    assert_eq!(e.0[0].file, dir.path());

    let missing = dir.path().join("nope");
    let e = load_dir(&missing).expect_err("missing folder");
    assert_eq!(e.0.len(), 1);
    assert!(
        e.0[0].message.contains("cannot read policy folder"),
        "{}",
        e.0[0]
    );
    // Line 0 is left out of the message.
    assert_eq!(
        e.0[0].to_string(),
        format!("{}: {}", missing.display(), e.0[0].message)
    );
    assert!(load_dir(Path::new("/nonexistent-carte-policy")).is_err());
}

#[test]
fn syntax_and_unknown_keys() {
    check(
        &[("a.toml", "[[group]]\nsetup = \"wait\"\n\nkernel = [\n")],
        &[("a.toml", 4, "")],
    );
    check(
        &[(
            "a.toml",
            "[setup.hello]\nkernel = \"k\"\ninitrds = [\"x\"]\n[[group]]\nsetup = \"wait\"\n",
        )],
        &[("a.toml", 3, "unknown field `initrds`")],
    );
    check(
        &[
            ("a.toml", DEFAULT),
            (
                "b.toml",
                "\n[[group]]\nsetup = \"local\"\nmatch = { mac = [\"52:54:00:00:00:01\"], rack = \"a\" }\n",
            ),
        ],
        &[("b.toml", 4, "unknown field `rack`")],
    );
    check(
        &[
            ("a.toml", DEFAULT),
            (
                "b.toml",
                "[machine.\"52:54:00:00:00:01\"]\n\naddress = \"198.51.100.9\"\n",
            ),
        ],
        &[("b.toml", 3, "unknown field `address`")],
    );
    check(
        &[("a.toml", DEFAULT), ("b.toml", "\n\nsetups = 1\n")],
        &[("b.toml", 3, "unknown field `setups`")],
    );
}

#[test]
fn duplicates_and_types_within_a_file() {
    check(
        &[(
            "a.toml",
            "[[group]]\nsetup = \"wait\"\n[setup.a]\nkernel = \"k\"\n\n[setup.a]\nkernel = \"j\"\n",
        )],
        &[("a.toml", 6, "duplicate key `a`")],
    );
    check(
        &[
            ("a.toml", DEFAULT),
            (
                "b.toml",
                "[machine.\"52:54:00:00:00:01\"]\nlabels = { rack = 1 }\n",
            ),
            (
                "c.toml",
                "[[group]]\nname = \"z\"\nmatch = { labels = { rack = \"a\" } }\n",
            ),
        ],
        &[
            ("b.toml", 2, "expected a string"),
            ("c.toml", 1, "missing field `setup`"),
        ],
    );
}

#[test]
fn broken_file_does_not_cause_guessed_errors() {
    // b.toml defines the setup and default group a.toml relies on, but does not parse:
    // only its own error is reported, not "unknown setup" or "no default group".
    check(
        &[
            (
                "a.toml",
                "[[group]]\nmatch = { arch = [\"bios\"] }\nsetup = \"hello\"\n",
            ),
            (
                "b.toml",
                "[setup.hello]\nkernel = \"k\"\n[[group]]\nsetup = wait\n",
            ),
        ],
        &[("b.toml", 4, "")],
    );
}

#[test]
fn setups() {
    let with_default = |text: &'static str| [("a.toml", DEFAULT), ("s.toml", text)];
    check(
        &with_default("\n[setup.hello]\ncmdline = \"x\"\n"),
        &[("s.toml", 2, "has no kernel")],
    );
    check(
        &with_default("[setup.hello]\nanswer = \"boot\"\n"),
        &[("s.toml", 1, "has no kernel")],
    );
    check(
        &with_default("[setup.hello]\nanswer = \"reboot\"\n"),
        &[("s.toml", 2, "unknown answer \"reboot\"")],
    );
    check(
        &with_default("[setup.hello]\nanswer = \"local\"\nkernel = \"k\"\n"),
        &[("s.toml", 1, "only apply to answer = \"boot\"")],
    );
    check(
        &with_default("[setup.wait]\nanswer = \"local\"\n\n[setup.ignore]\nanswer = \"wait\"\n"),
        &[("s.toml", 1, "built-in"), ("s.toml", 4, "built-in")],
    );
    check(
        &with_default(
            "[setup.a]\nkernel = \"/boot/vmlinuz\"\ninitrd = [\"ok.img\",\n  \"../../etc/shadow\"]\n\
             [setup.b]\nkernel = \"ftp://198.51.100.1/k\"\n",
        ),
        &[
            ("s.toml", 2, "absolute"),
            ("s.toml", 4, "'..'"),
            ("s.toml", 6, "http(s) URL"),
        ],
    );
    // The same setup in two files; the message points at the first.
    check(
        &[("a.toml", DEFAULT), ("b.toml", HELLO), ("c.toml", HELLO)],
        &[("c.toml", 1, "defined twice (first at ")],
    );
    let e = errors(&[("a.toml", DEFAULT), ("b.toml", HELLO), ("c.toml", HELLO)]);
    assert!(e[0].message.contains("b.toml:1)"), "{}", e[0]);
}

#[test]
fn groups() {
    check(
        &[("a.toml", "[[group]]\nsetup = \"wait\"\n\n[[group]]\nmatch = { arch = [\"bios\"] }\nsetup = \"nope\"\n")],
        &[("a.toml", 4, "unknown setup \"nope\"")],
    );
    check(
        &[(
            "a.toml",
            "[[group]]\nmatch = { arch = [\"bios\"] }\nsetup = \"wait\"\n",
        )],
        &[("a.toml", 0, "no default group")],
    );
    check(
        &[
            ("a.toml", DEFAULT),
            ("b.toml", "[[group]]\nmatch = {}\nsetup = \"local\"\n"),
        ],
        &[("b.toml", 1, "second default group")],
    );
    check(
        &[(
            "a.toml",
            "[[group]]\nsetup = \"wait\"\n[[group]]\nmatch = { mac = [\"52:54:00:00:00:0g\"], \
             arch = [\"sparc\"], uuid = [\"nope\"] }\nsetup = \"local\"\n",
        )],
        &[
            ("a.toml", 4, "match.mac"),
            ("a.toml", 4, "unknown architecture \"sparc\""),
            ("a.toml", 4, "invalid SMBIOS UUID"),
        ],
    );
    check(
        &[(
            "a.toml",
            "[[group]]\nname = \"x\"\nsetup = \"wait\"\n[[group]]\nname = \"x\"\nmatch = { arch = [\"bios\"] }\nsetup = \"local\"\n",
        )],
        &[("a.toml", 5, "group name \"x\" is used twice")],
    );
}

#[test]
fn equal_specificity_overlaps() {
    // Same weight and a common MAC: ambiguous, both named with file:line.
    let e = errors(&[
        ("a.toml", DEFAULT),
        (
            "b.toml",
            "[[group]]\nname = \"one\"\nmatch = { mac = [\"52:54:00:00:00:01\", \"52:54:00:00:00:02\"] }\nsetup = \"local\"\n",
        ),
        (
            "c.toml",
            "\n[[group]]\nname = \"two\"\nmatch = { mac = [\"52-54-00-00-00-02\"] }\nsetup = \"wait\"\n",
        ),
    ]);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].line, 2);
    assert!(e[0].message.contains("\"one\" at "), "{}", e[0]);
    assert!(e[0].message.contains("b.toml:1"), "{}", e[0]);
    assert!(e[0].message.contains("c.toml:2"), "{}", e[0]);

    // Different labels keys with one label each (weight 2 both) can meet on one machine.
    check(
        &[(
            "a.toml",
            "[[group]]\nsetup = \"wait\"\n[[group]]\nmatch = { labels = { rack = \"a\" } }\nsetup = \"local\"\n\
             [[group]]\nmatch = { labels = { role = \"db\" } }\nsetup = \"ignore\"\n",
        )],
        &[("a.toml", 6, "equally specific (weight 2)")],
    );
    // Same weight but disjoint, or different weights: fine.
    for text in [
        "[[group]]\nmatch = { labels = { rack = \"a\" } }\nsetup = \"local\"\n\
         [[group]]\nmatch = { labels = { rack = \"b\" } }\nsetup = \"ignore\"\n",
        "[[group]]\nmatch = { mac = [\"52:54:00:00:00:01\"], arch = [\"bios\"] }\nsetup = \"local\"\n\
         [[group]]\nmatch = { mac = [\"52:54:00:00:00:01\"], arch = [\"efi-x64\"] }\nsetup = \"ignore\"\n",
        "[[group]]\nmatch = { mac = [\"52:54:00:00:00:01\"] }\nsetup = \"local\"\n\
         [[group]]\nmatch = { mac = [\"52:54:00:00:00:01\"], arch = [\"efi-x64\"] }\nsetup = \"ignore\"\n",
    ] {
        let dir = folder(&[("a.toml", DEFAULT), ("b.toml", text)]);
        if let Err(e) = load_dir(dir.path()) {
            panic!("{text}\nshould load, got:\n{e}");
        }
    }
}

#[test]
fn machines() {
    check(
        &[
            ("a.toml", DEFAULT),
            (
                "b.toml",
                "[machine.\"52:54:00:00:00:01\"]\nip = \"198.51.100.7\"\n",
            ),
            // Same machine, other spelling, other file.
            ("c.toml", "\n[machine.\"52-54-00-00-00-01\"]\n"),
        ],
        &[("c.toml", 2, "defined twice")],
    );
    check(
        &[(
            "a.toml",
            "[[group]]\nsetup = \"wait\"\n[machine.\"52:54:00:00:00:01\"]\nip = \"198.51.100.7\"\n\
             [machine.\"52:54:00:00:00:02\"]\nip = \"198.51.100.7\"\n[machine.\"nope\"]\n\
             [machine.\"52:54:00:00:00:03\"]\nip = \"198.51.100.300\"\nhostname = \"bad name\"\n",
        )],
        &[
            ("a.toml", 6, "reserved twice"),
            ("a.toml", 7, "invalid MAC"),
            ("a.toml", 9, "invalid IPv4 address"),
            ("a.toml", 10, "invalid hostname"),
        ],
    );
}
