//! `daemon::serve` wires the image store in: it opens `$DATA/carte.db` and `$DATA/blobs`,
//! validates image setups against that store at start (file and line), and serves
//! `/api/v1` beside the boot routes, which `netbootd machines` asks.

use std::time::{Duration, Instant};

use imaged::access::Principal;
use imaged::model::{ImageKind, LayerFormat, LayerMeta, NewImage, NewVersion, Role};
use imaged::store::{self, Store, StoreConfig};
use netboot::config::{Config, DhcpMode};
use tokio_util::sync::CancellationToken;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A system image `debian` with one version, made through the store as `imaged` would.
fn seed(data: &std::path::Path) -> String {
    let store = Store::open(data, store::no_references(), StoreConfig::default()).expect("store");
    let admin = Principal::local_admin();
    store
        .create_image(
            &admin,
            NewImage {
                name: "debian".into(),
                kind: ImageKind::System,
                project: None,
                expires_at: None,
            },
        )
        .expect("create");
    let bytes = b"a system layer".as_slice();
    let a = store
        .upload_blob(&admin, "debian", &mut &bytes[..], None)
        .expect("upload");
    store
        .add_version(
            &admin,
            "debian",
            NewVersion {
                layer: LayerMeta::plain(LayerFormat::Erofs),
                artefacts: [(imaged::model::ArtefactName::Layer, a)].into(),
            },
        )
        .expect("version");
    store
        .create_token(&admin, "root", Role::Admin)
        .expect("token")
        .token
}

fn config(data: &std::path::Path, policy: &std::path::Path, http_port: u16) -> Config {
    let mut c = Config {
        server_addr: Some(std::net::Ipv4Addr::LOCALHOST),
        http_port,
        data_dir: data.to_path_buf(),
        policy_dir: policy.to_path_buf(),
        ipxe_dir: data.to_path_buf(),
        ..Config::default()
    };
    c.dhcp.mode = DhcpMode::Off;
    c.tftp.port = free_udp_port();
    c
}

#[tokio::test]
async fn the_daemon_opens_the_store_and_checks_image_setups_against_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, policy) = (dir.path().join("data"), dir.path().join("policy"));
    std::fs::create_dir_all(&data).expect("mkdir");
    std::fs::create_dir_all(&policy).expect("mkdir");
    let token = seed(&data);

    // A setup naming a version the store does not have: the daemon refuses to start.
    std::fs::write(
        policy.join("lab.toml"),
        "[setup.lab]\nkernel = \"vmlinuz\"\n[setup.img]\nkernel = \"linux@1\"\n\
         [[group]]\nsetup = \"lab\"\n",
    )
    .expect("write");
    let err = netboot::daemon::serve(
        config(&data, &policy, free_port()),
        CancellationToken::new(),
    )
    .await
    .expect_err("unknown image");
    assert!(err.to_string().contains("lab.toml:4"), "{err}");
    assert!(err.to_string().contains("unknown image \"linux\""), "{err}");

    // A valid policy: the daemon starts and its API reads the data folder's store.
    std::fs::write(
        policy.join("lab.toml"),
        "[setup.lab]\nkernel = \"vmlinuz\"\n[[group]]\nsetup = \"lab\"\n",
    )
    .expect("write");
    let port = free_port();
    let stop = CancellationToken::new();
    let daemon = tokio::spawn(netboot::daemon::serve(
        config(&data, &policy, port),
        stop.clone(),
    ));
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "netbootd did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let client = imaged::client::Client::new(&base, &token);
    let names = tokio::task::spawn_blocking(move || client.list_images())
        .await
        .expect("task")
        .expect("the API is mounted and sees the data folder's store");
    assert_eq!(
        names.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        ["debian"]
    );
    // `netbootd machines` asks the running daemon (no machine has booted yet).
    let run = |token: String| {
        let base = base.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_netbootd"))
                .args(["machines", "--server", &base])
                .env("CARTE_TOKEN", token)
                .env("RUST_LOG", "off")
                .output()
                .expect("run netbootd machines")
        })
    };
    let out = run(token.clone()).await.expect("task");
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.starts_with("MACHINE"), "{stdout}");
    let out = run("carte_wrong".into()).await.expect("task");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{out:?}"
    );

    stop.cancel();
    daemon.await.expect("join").expect("clean stop");
    assert!(data.join("carte.db").is_file());
    assert!(data.join("blobs").is_dir());
}
