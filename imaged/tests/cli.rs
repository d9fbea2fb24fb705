//! The `imaged` binary end to end: tokens made locally, `serve` on 127.0.0.1, then push,
//! pull, ls, show and rm against it with a token from the environment or a file.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_imaged");

fn run(args: &[&str], token: Option<&str>) -> Output {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_remove("CARTE_TOKEN")
        .env_remove("CARTE_DATA");
    if let Some(t) = token {
        c.env("CARTE_TOKEN", t);
    }
    c.output().expect("run imaged")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "imaged failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Kills the server we started (by its own handle) even when the test fails.
struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn token(data: &Path, role: &str, name: &str) -> String {
    let d = data.to_str().expect("utf-8 path");
    let out = run(
        &[
            "--data", d, "token", "create", "--role", role, "--name", name,
        ],
        None,
    );
    let t = ok(&out).trim().to_string();
    assert!(t.starts_with("carte_"), "{t}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("shown once"));
    t
}

#[test]
fn push_pull_ls_show_rm_through_a_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let d = data.to_str().expect("utf-8");
    let _root = token(&data, "admin", "root");
    let alice = token(&data, "user", "alice");
    let bob = token(&data, "user", "bob");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let _server = Kill(
        Command::new(BIN)
            .args(["serve", "--data", d, "--listen", &addr])
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn serve"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let url = format!("http://{addr}");

    let file = dir.path().join("home.ext4");
    let content: Vec<u8> = (0..2_000_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&file, &content).expect("write");
    let f = file.to_str().expect("utf-8");
    let out = run(
        &[
            "--server",
            &url,
            "push",
            "home",
            f,
            "--kind",
            "user",
            "--format",
            "ext4",
            "--mount-point",
            "/home/alice",
        ],
        Some(&alice),
    );
    assert_eq!(ok(&out).trim(), "home@1");
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(
        progress.contains("2000000/2000000 bytes") && progress.contains("ETA"),
        "{progress}"
    );
    assert_eq!(
        progress.matches("2000000/2000000 bytes").count(),
        1,
        "the final progress line, once: {progress}"
    );

    let out = run(
        &["--server", &url, "push", "home", f, "--kind", "user"],
        Some(&alice),
    );
    assert_eq!(
        ok(&out).trim(),
        "home@2",
        "an existing image gets a new version"
    );

    let pulled = dir.path().join("pulled");
    let p = pulled.to_str().expect("utf-8");
    let out = run(
        &["--server", &url, "pull", "home@latest", "-o", p],
        Some(&alice),
    );
    ok(&out);
    let progress = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        progress.matches("2000000/2000000 bytes").count(),
        1,
        "the final progress line, once: {progress}"
    );
    assert_eq!(std::fs::read(&pulled).expect("read"), content);

    let ls = ok(&run(&["--server", &url, "ls"], Some(&alice)));
    assert!(
        ls.contains("home") && ls.contains("user") && ls.contains("alice"),
        "{ls}"
    );
    assert!(ls.starts_with("NAME "), "a header names the columns: {ls}");
    assert!(ok(&run(&["--server", &url, "ls"], Some(&bob)))
        .trim()
        .is_empty());

    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{alice}\n")).expect("write token");
    let tf = token_file.to_str().expect("utf-8");
    let show = ok(&run(
        &["--server", &url, "--token-file", tf, "show", "home"],
        None,
    ));
    let v: serde_json::Value = serde_json::from_str(&show).expect("json");
    assert_eq!(v["versions"].as_array().map(Vec::len), Some(2));
    assert_eq!(v["versions"][0]["layer"]["mount_point"], "/home/alice");

    let denied = run(&["--server", &url, "rm", "home"], Some(&bob));
    assert!(!denied.status.success());
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("403"),
        "{denied:?}"
    );
    let no_token = run(&["--server", &url, "ls"], None);
    assert!(!no_token.status.success());

    // The local folder, as admin, sees the same store (SQLite in WAL, shared).
    assert!(ok(&run(&["--data", d, "ls"], None)).contains("home"));
    ok(&run(&["--server", &url, "rm", "home"], Some(&alice)));
    assert!(!ok(&run(&["--data", d, "ls"], None)).contains("home"));
}

#[test]
fn local_push_pull_and_gc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().join("data");
    let d = d.to_str().expect("utf-8");
    let file = dir.path().join("base.erofs");
    std::fs::write(&file, b"an erofs image").expect("write");
    let f = file.to_str().expect("utf-8");
    assert_eq!(
        ok(&run(
            &["--data", d, "push", "base", f, "--kind", "system"],
            None
        ))
        .trim(),
        "base@1"
    );
    let out = dir.path().join("out");
    let o = out.to_str().expect("utf-8");
    ok(&run(&["--data", d, "pull", "base@1", "-o", o], None));
    assert_eq!(std::fs::read(&out).expect("read"), b"an erofs image");
    let gc: serde_json::Value =
        serde_json::from_str(&ok(&run(&["--data", d, "gc"], None))).expect("json");
    assert_eq!(gc["deleted_blobs"], 0, "the referenced blob stays");
    // A push refused after it created its image leaves no image behind.
    let refused = run(
        &[
            "--data",
            d,
            "push",
            "fresh",
            f,
            "--kind",
            "system",
            "--mount-point",
            "/x",
        ],
        None,
    );
    assert!(!refused.status.success(), "{refused:?}");
    let ls = ok(&run(&["--data", d, "ls"], None));
    assert!(!ls.contains("fresh"), "{ls}");
    // The columns line up under the header.
    let (header, row) = (
        ls.lines().next().unwrap_or(""),
        ls.lines().nth(1).unwrap_or(""),
    );
    assert_eq!(header.find("OWNER"), row.find("admin"), "{ls}");
    let missing = run(&["ls"], None);
    assert!(
        !missing.status.success(),
        "no --data nor --server is an error"
    );
}

#[test]
fn kernel_push_records_release_and_derived_artefacts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().join("data");
    let d = d.to_str().expect("utf-8");
    let write = |name: &str, content: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, content).expect("write");
        p.to_str().expect("utf-8").to_string()
    };
    let (layer, vmlinuz, modules) = (
        write("modules.erofs", b"erofs of /lib/modules"),
        write("vmlinuz", b"MZ bzImage"),
        write("modules.cpio", b"070701..."),
    );
    let base = ["--data", d, "push", "linux", &layer, "--kind", "kernel"];
    let no_release = run(
        &[&base[..], &["--vmlinuz", &vmlinuz, "--modules", &modules]].concat(),
        None,
    );
    assert!(!no_release.status.success());
    assert!(String::from_utf8_lossy(&no_release.stderr).contains("kernel_release"));
    let out = run(
        &[
            &base[..],
            &[
                "--vmlinuz",
                &vmlinuz,
                "--modules",
                &modules,
                "--kernel-release",
                "6.1.0-13-amd64",
            ],
        ]
        .concat(),
        None,
    );
    assert_eq!(ok(&out).trim(), "linux@1");
    let got = dir.path().join("got-vmlinuz");
    let g = got.to_str().expect("utf-8");
    ok(&run(
        &[
            "--data",
            d,
            "pull",
            "linux@latest",
            "--artefact",
            "vmlinuz",
            "-o",
            g,
        ],
        None,
    ));
    assert_eq!(std::fs::read(&got).expect("read"), b"MZ bzImage");
    let show: serde_json::Value =
        serde_json::from_str(&ok(&run(&["--data", d, "show", "linux"], None))).expect("json");
    let v = &show["versions"][0];
    assert_eq!(v["layer"]["kernel_release"], "6.1.0-13-amd64");
    let names: Vec<&str> = v["artefacts"]
        .as_object()
        .expect("artefacts")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(names, ["layer", "modules", "vmlinuz"]);
}

/// `imaged build` prints what it built; with `--push` the version's artefacts are those
/// very files (same sha256), and a kernel gets its release and derived artefacts.
#[test]
fn build_prints_json_and_pushes_layers_and_kernels() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().join("data");
    let d = d.to_str().expect("utf-8");
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("etc")).expect("mkdir");
    std::fs::write(tree.join("etc/motd"), b"hello from a layer\n").expect("write");
    let out = dir.path().join("out");
    let o = out.to_str().expect("utf-8");
    let t = tree.to_str().expect("utf-8");

    // Building alone needs no store.
    let built: serde_json::Value =
        serde_json::from_str(&ok(&run(&["build", "dir", t, "--out", o], None))).expect("json");
    let path = built["layer"]["path"].as_str().expect("path");
    assert_eq!(built["layer"]["format"], "erofs");
    let bytes = std::fs::read(path).expect("built file");
    assert_eq!(built["layer"]["size"], bytes.len() as u64);
    assert!(built.get("pushed").is_none());

    let pushed: serde_json::Value = serde_json::from_str(&ok(&run(
        &[
            "--data", d, "build", "dir", t, "--format", "ext4", "--out", o, "--push", "base",
            "--kind", "system",
        ],
        None,
    )))
    .expect("json");
    assert_eq!(pushed["pushed"], "base@1");
    assert_eq!(pushed["layer"]["format"], "ext4");
    let show: serde_json::Value =
        serde_json::from_str(&ok(&run(&["--data", d, "show", "base"], None))).expect("json");
    let v = &show["versions"][0];
    assert_eq!(v["layer"]["format"], "ext4");
    assert_eq!(v["artefacts"]["layer"]["sha256"], pushed["layer"]["sha256"]);

    // A kernel: vmlinuz plus a modules tree with modules.dep.
    let rel = "9.9.9-carte-cli";
    let modules = dir.path().join("lib/modules").join(rel);
    std::fs::create_dir_all(modules.join("kernel/drivers/net")).expect("mkdir");
    std::fs::write(
        modules.join("kernel/drivers/net/virtio_net.ko"),
        b"\x7fELF fake",
    )
    .expect("write");
    std::fs::write(
        modules.join("modules.dep"),
        "kernel/drivers/net/virtio_net.ko:\n",
    )
    .expect("write");
    let vmlinuz = dir.path().join(format!("vmlinuz-{rel}"));
    std::fs::write(&vmlinuz, b"MZ fake bzImage").expect("write");
    let kout = dir.path().join("kout");
    let k: serde_json::Value = serde_json::from_str(&ok(&run(
        &[
            "--data",
            d,
            "build",
            "kernel",
            "--vmlinuz",
            vmlinuz.to_str().expect("utf-8"),
            "--modules",
            modules.to_str().expect("utf-8"),
            "--out",
            kout.to_str().expect("utf-8"),
            "--push",
            "linux",
        ],
        None,
    )))
    .expect("json");
    assert_eq!(k["pushed"], "linux@1");
    assert_eq!(k["release"], rel);
    let show: serde_json::Value =
        serde_json::from_str(&ok(&run(&["--data", d, "show", "linux"], None))).expect("json");
    assert_eq!(
        show["image"]["kind"], "kernel",
        "kernels default to --kind kernel"
    );
    let v = &show["versions"][0];
    assert_eq!(v["layer"]["kernel_release"], rel);
    for (artefact, built) in [
        ("layer", "layer"),
        ("vmlinuz", "vmlinuz"),
        ("modules", "modules"),
    ] {
        assert_eq!(
            v["artefacts"][artefact]["sha256"], k[built]["sha256"],
            "{artefact}"
        );
    }

    // A raw disk: zstd-encoded for transfer, so the version records what is written.
    let disk = dir.path().join("disk.img");
    let mut img = vec![0u8; 1 << 20];
    img[510] = 0x55;
    img[511] = 0xaa;
    std::fs::write(&disk, &img).expect("write");
    let rout = dir.path().join("rout");
    let raw: serde_json::Value = serde_json::from_str(&ok(&run(
        &[
            "--data",
            d,
            "build",
            "raw",
            disk.to_str().expect("utf-8"),
            "--out",
            rout.to_str().expect("utf-8"),
            "--push",
            "disk",
            "--kind",
            "system",
        ],
        None,
    )))
    .expect("json");
    assert_eq!(raw["layer"]["encoding"], "zstd");
    let show: serde_json::Value =
        serde_json::from_str(&ok(&run(&["--data", d, "show", "disk"], None))).expect("json");
    let v = &show["versions"][0];
    assert_eq!(v["layer"]["format"], "raw");
    assert_eq!(v["layer"]["encoding"], "zstd");
    assert_eq!(v["layer"]["uncompressed_size"], img.len() as u64);
    assert_eq!(v["layer"]["written_sha256"], raw["layer"]["sha256"]);
    assert_eq!(
        v["artefacts"]["layer"]["sha256"],
        raw["layer"]["encoded_sha256"]
    );
    assert!(v["artefacts"]["layer"]["size"].as_u64().expect("size") < 64 * 1024);

    let neither = run(&["build", "kernel", "--out", o], None);
    assert!(!neither.status.success(), "a kernel build needs a source");
    let push_no_store = run(&["build", "dir", t, "--out", o, "--push", "x"], None);
    assert!(!push_no_store.status.success());
    assert!(String::from_utf8_lossy(&push_no_store.stderr).contains("--data"));
}
