//! Image setups end to end over HTTP: a small kernel version pushed into a temporary
//! store, a policy naming it, the rendered script, and the URLs in it fetched (right
//! bytes, sha256 ETag, Range); blobs the policy does not name are 404; `@latest`
//! follows a new push without a policy edit; the boot token on the command line fetches
//! the machine's plan, whose layers are fetchable, and posts events that admins list; the
//! mounted API refuses to delete an image a setup uses, naming the setup.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use imaged::access::Principal;
use imaged::blob::sha256_of;
use imaged::model::{
    Artefact, ArtefactName, Digest, ImageKind, LayerFormat, LayerMeta, NewImage, NewVersion, Role,
};
use imaged::store::Store;
use netboot::http::{serve, AppState, ImageRoutes};
use netboot::images::{open_store, PolicyReferences, StoreCatalog};
use netboot::policy::watch_with;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request over a fresh connection; reads until the server closes it.
async fn request(addr: SocketAddr, method: &str, target: &str, extra: &[(&str, &str)]) -> Resp {
    request_with_body(addr, method, target, extra, &[]).await
}

/// [`request`] with a body (and its Content-Length).
async fn request_with_body(
    addr: SocketAddr,
    method: &str,
    target: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    conn.write_all(req.as_bytes()).await.expect("write");
    conn.write_all(body).await.expect("write body");
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).await.expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8(raw[..split].to_vec()).expect("utf8 head");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Resp {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// Pushes one version of `name` with these artefact contents; returns their digests.
fn push(
    store: &Store,
    name: &str,
    kind: ImageKind,
    files: &[(ArtefactName, &[u8])],
    release: Option<&str>,
) -> BTreeMap<ArtefactName, Digest> {
    let admin = Principal::local_admin();
    if store.show_image(&admin, name).is_err() {
        store
            .create_image(
                &admin,
                NewImage {
                    name: name.into(),
                    kind,
                    project: None,
                    expires_at: None,
                },
            )
            .expect("create image");
    }
    let mut artefacts = BTreeMap::new();
    for (artefact, bytes) in files {
        let a = store
            .upload_blob(&admin, name, &mut &bytes[..], Some(&sha256_of(bytes)))
            .expect("upload");
        artefacts.insert(*artefact, a);
    }
    let mut layer = LayerMeta::plain(LayerFormat::Erofs);
    layer.kernel_release = release.map(String::from);
    let digests = artefacts
        .iter()
        .map(|(k, a): (&ArtefactName, &Artefact)| (*k, a.sha256.clone()))
        .collect();
    store
        .add_version(&admin, name, NewVersion { layer, artefacts })
        .expect("add version");
    digests
}

fn kernel_files<'a>(vmlinuz: &'a [u8], modules: &'a [u8]) -> Vec<(ArtefactName, &'a [u8])> {
    vec![
        (ArtefactName::Layer, b"erofs of /lib/modules".as_slice()),
        (ArtefactName::Vmlinuz, vmlinuz),
        (ArtefactName::Modules, modules),
    ]
}

/// The URLs of the `kernel` and `initrd` lines of a script, in order.
fn boot_urls(script: &str) -> Vec<String> {
    script
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            match words.next() {
                Some("kernel") => words.next(),
                Some("initrd") => words.nth(2),
                _ => None,
            }
        })
        .map(String::from)
        .collect()
}

fn path_of(url: &str, base: &str) -> String {
    url.strip_prefix(base).expect("served by us").to_string()
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, bytes).expect("write");
}

/// Serves the routes on loopback with `store` (in `dir/data`) and the policy `text` (in
/// `dir/policy/lab.toml`, watched live); stops when the guard drops.
async fn serve_policy(
    dir: &Path,
    store: &Store,
    refs: &PolicyReferences,
    text: &[u8],
) -> (SocketAddr, tokio_util::sync::DropGuard) {
    let policy_dir = dir.join("policy");
    write(&policy_dir.join("lab.toml"), text);
    let policy = watch_with(&policy_dir, Arc::new(StoreCatalog(store.clone()))).expect("policy");
    refs.set(policy.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let state = AppState {
        public_base: format!("http://{addr}"),
        select: Arc::new(policy),
        data_dir: dir.join("data"),
        ipxe_dir: dir.join("ipxe"),
        images: Some(ImageRoutes::new(store.clone(), "carte/initramfs.cpio.zst")),
    };
    let stop = CancellationToken::new();
    tokio::spawn(serve(listener, state, stop.clone()));
    (addr, stop.drop_guard())
}

#[tokio::test]
async fn image_setup_renders_and_its_kernel_artefacts_are_served_by_digest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let policy_dir = dir.path().join("policy");
    std::fs::create_dir_all(&data).expect("mkdir");
    std::fs::create_dir_all(&policy_dir).expect("mkdir");

    let refs = PolicyReferences::default();
    let store = open_store(&data, refs.clone()).expect("store");
    let vmlinuz = b"MZ kernel version one".as_slice();
    let modules = b"070701 modules cpio of version one".as_slice();
    let k1 = push(
        &store,
        "linux",
        ImageKind::Kernel,
        &kernel_files(vmlinuz, modules),
        Some("6.1.0-carte"),
    );
    let sys = push(
        &store,
        "debian",
        ImageKind::System,
        &[(ArtefactName::Layer, b"a system layer".as_slice())],
        None,
    );
    // A system image no setup names.
    let other = push(
        &store,
        "other",
        ImageKind::System,
        &[(ArtefactName::Layer, b"a layer nobody boots".as_slice())],
        None,
    );
    let (addr, _stop) = serve_policy(
        dir.path(),
        &store,
        &refs,
        b"[setup.lab]\nkernel = \"linux@latest\"\nlayers = [\"debian@1\"]\n\
          cmdline = \"console=ttyS0\"\n[[group]]\nsetup = \"lab\"\n",
    )
    .await;
    let base = format!("http://{addr}");
    let script_path = "/ipxe/52:54:00:00:00:01?arch=x86_64&platform=pcbios&uuid=";

    // Before any plan names it, a system layer is not served without a token.
    let sys_path = format!("/boot/blobs/sha256/{}", sys[&ArtefactName::Layer]);
    assert_eq!(request(addr, "GET", &sys_path, &[]).await.status, 404);

    // No initramfs yet: a 500 that says what is missing, never a 404.
    let r = request(addr, "GET", script_path, &[]).await;
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.text().contains("carte initramfs"), "{}", r.text());
    assert!(r.text().contains("scripts/build-initramfs"), "{}", r.text());
    let data_path = data.to_str().expect("utf-8");
    assert!(!r.text().contains(data_path), "{}", r.text());

    let initramfs = b"carte initramfs".as_slice();
    write(&data.join("carte/initramfs.cpio.zst"), initramfs);
    let r = request(addr, "GET", script_path, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let script = r.text();
    assert!(script.contains("carte.kernel=linux@1"), "{script}");
    assert!(script.contains("carte.setup=lab"), "{script}");
    let token = script
        .split_whitespace()
        .find_map(|w| w.strip_prefix("carte.token="))
        .expect("a boot token on the command line")
        .to_string();
    let urls = boot_urls(&script);
    let vm = k1[&ArtefactName::Vmlinuz].to_string();
    let mods = k1[&ArtefactName::Modules].to_string();
    assert_eq!(
        urls,
        [
            format!("{base}/boot/blobs/sha256/{vm}"),
            format!("{base}/files/carte/initramfs.cpio.zst"),
            format!("{base}/boot/blobs/sha256/{mods}"),
        ],
        "{script}"
    );
    for (url, want, digest) in [
        (&urls[0], vmlinuz, Some(&vm)),
        (&urls[1], initramfs, None),
        (&urls[2], modules, Some(&mods)),
    ] {
        let r = request(addr, "GET", &path_of(url, &base), &[]).await;
        assert_eq!(r.status, 200, "{url}");
        assert_eq!(r.body, want, "{url}");
        assert_eq!(
            r.header("content-length"),
            Some(want.len().to_string().as_str())
        );
        if let Some(d) = digest {
            assert_eq!(r.header("etag"), Some(format!("\"{d}\"").as_str()), "{url}");
        }
    }
    // Range, HEAD and If-None-Match behave as for /files/.
    let vm_path = path_of(&urls[0], &base);
    let r = request(addr, "GET", &vm_path, &[("Range", "bytes=3-8")]).await;
    assert_eq!((r.status, r.body.as_slice()), (206, &vmlinuz[3..=8]));
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 3-8/{}", vmlinuz.len()).as_str())
    );
    let r = request(addr, "HEAD", &vm_path, &[]).await;
    assert_eq!((r.status, r.body.len()), (200, 0));
    let etag = format!("\"{vm}\"");
    let r = request(addr, "GET", &vm_path, &[("If-None-Match", &etag)]).await;
    assert_eq!(r.status, 304);

    // The store's own files are never served at /files/: not the database (token
    // hashes), not the blobs (user layers).
    let blob_file = format!("/files/blobs/sha256/{}/{}", &vm[..2], vm);
    for target in [
        "/files/carte.db",
        "/files/carte.db-wal",
        "/files//carte.db",
        blob_file.as_str(),
        "/files/tmp/x",
    ] {
        let r = request(addr, "GET", target, &[]).await;
        assert_eq!(r.status, 404, "{target}: {}", r.text());
    }
    assert!(
        data.join("carte.db").is_file(),
        "the database is there, just not served"
    );
    assert!(
        data.join(&blob_file["/files/".len()..]).is_file(),
        "the blob layout is as assumed, so the 404 above means something"
    );

    // Nothing else is served there: a layer no plan names, an unknown digest, junk.
    for target in [
        format!("/boot/blobs/sha256/{}", other[&ArtefactName::Layer]),
        format!("/boot/blobs/sha256/{}", sha256_of(b"never stored")),
        "/boot/blobs/sha256/not-a-digest".to_string(),
        format!("/boot/blobs/sha256/{}", vm.to_uppercase()),
    ] {
        let r = request(addr, "GET", &target, &[]).await;
        assert_eq!(r.status, 404, "{target}");
    }

    // The machine API: the plan with the boot token, its layers fetchable.
    let mac = "52:54:00:00:00:01";
    let plan_path = carte_contract::plan_path(mac);
    let bearer = format!("Bearer {token}");
    let r = request(addr, "GET", &plan_path, &[("Authorization", &bearer)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let plan: carte_contract::Plan = serde_json::from_slice(&r.body).expect("a contract plan");
    assert_eq!(plan.token, token);
    assert_eq!(plan.machine.mac, mac);
    assert_eq!(plan.disk.select, carte_contract::DiskSelect::Largest);
    assert!(!plan.disk.may_wipe, "foreign data is never wiped");
    assert_eq!(
        plan.events_url,
        format!("{base}{}", carte_contract::events_path(mac))
    );
    let layers: Vec<(&str, u64, carte_contract::LayerKind)> = plan
        .layers
        .iter()
        .map(|l| (l.name.as_str(), l.version, l.kind))
        .collect();
    assert_eq!(
        layers,
        [
            ("linux", 1, carte_contract::LayerKind::Kernel),
            ("debian", 1, carte_contract::LayerKind::System),
        ]
    );
    for (layer, want) in plan
        .layers
        .iter()
        .zip([b"erofs of /lib/modules".as_slice(), b"a system layer"])
    {
        let r = request(addr, "GET", &path_of(&layer.url, &base), &[]).await;
        assert_eq!((r.status, r.body.as_slice()), (200, want), "{}", layer.url);
        assert_eq!(layer.size, want.len() as u64);
        assert_eq!(layer.sha256, sha256_of(want).to_string());
    }
    for bad in ["Bearer carte_not-this-boot", "Basic x"] {
        let r = request(addr, "GET", &plan_path, &[("Authorization", bad)]).await;
        assert_eq!(r.status, 401, "{bad}: {}", r.text());
    }
    let r = request(
        addr,
        "GET",
        &carte_contract::plan_path("52:54:00:00:00:09"),
        &[("Authorization", &bearer)],
    )
    .await;
    assert_eq!(r.status, 404, "no plan for another machine: {}", r.text());

    // Events fold into the machine's state, which admins list.
    let events_path = carte_contract::events_path(mac);
    let event = serde_json::to_string(&carte_contract::Event::failed(
        carte_contract::Stage::Fetch,
        "fetch debian@1: connection reset",
    ))
    .expect("json");
    let post = |body: String, auth: String| {
        let events_path = events_path.clone();
        async move {
            let mut conn = TcpStream::connect(addr).await.expect("connect");
            let req = format!(
                "POST {events_path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
                 Authorization: {auth}\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            );
            conn.write_all(req.as_bytes()).await.expect("write");
            let mut raw = Vec::new();
            conn.read_to_end(&mut raw).await.expect("read");
            String::from_utf8_lossy(&raw).into_owned()
        }
    };
    let answer = post(event.clone(), bearer.clone()).await;
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    let answer = post(event.clone(), "Bearer wrong".into()).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let answer = post("{\"stage\":\"teleport\"}".into(), bearer.clone()).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    // A new push: @latest boots it at the next request, no policy edit needed.
    let vmlinuz2 = b"MZ kernel version two".as_slice();
    let k2 = push(
        &store,
        "linux",
        ImageKind::Kernel,
        &kernel_files(vmlinuz2, b"modules two"),
        Some("6.2.0-carte"),
    );
    let script = request(addr, "GET", script_path, &[]).await.text();
    assert!(script.contains("carte.kernel=linux@2"), "{script}");
    let urls = boot_urls(&script);
    assert_eq!(
        urls[0],
        format!("{base}/boot/blobs/sha256/{}", k2[&ArtefactName::Vmlinuz])
    );
    let r = request(addr, "GET", &path_of(&urls[0], &base), &[]).await;
    assert_eq!(r.body, vmlinuz2);

    // The image API is mounted, and deleting an image a setup uses is refused, naming it.
    let token_admin = store
        .create_token(&Principal::local_admin(), "root", Role::Admin)
        .expect("token")
        .token;
    let client = imaged::client::Client::new(&base, &token_admin);
    let (used, unused) = tokio::task::spawn_blocking(move || {
        let used = client.delete("debian").expect_err("debian is used by lab");
        let images = client.list_images().expect("list");
        (used, images)
    })
    .await
    .expect("client task");
    assert_eq!(used.status(), Some(409), "{used}");
    assert!(used.to_string().contains("setup lab"), "{used}");
    let names: Vec<&str> = unused.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["debian", "linux", "other"]);
    let r = request(addr, "GET", "/api/v1/images", &[]).await;
    assert_eq!(r.status, 401, "the API wants a token: {}", r.text());
    let admin = format!("Bearer {token_admin}");
    let r = request(
        addr,
        "GET",
        "/api/v1/machines",
        &[("Authorization", &admin)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let states: Vec<carte_contract::MachineState> = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(states.len(), 1, "{states:?}");
    assert_eq!(states[0].mac, mac);
    assert_eq!(states[0].setup.as_deref(), Some("lab"));
    assert_eq!(states[0].stage, Some(carte_contract::Stage::Fetch));
    assert_eq!(
        states[0].last_error.as_deref(),
        Some("fetch debian@1: connection reset")
    );
    let r = request(
        addr,
        "GET",
        "/api/v1/machines",
        &[("Authorization", &bearer)],
    )
    .await;
    assert_eq!(r.status, 401, "a boot token is not an admin token");
    // The second boot (the render after the push) replaced the first boot's token.
    let r = request(addr, "GET", &plan_path, &[("Authorization", &bearer)]).await;
    assert_eq!(r.status, 401, "{}", r.text());

    // Transfer accounting: a ranged GET adds its 10 bytes, a HEAD adds nothing.
    let totals = |body: &[u8]| -> std::collections::BTreeMap<String, netboot::transfers::Sent> {
        serde_json::from_slice(body).expect("transfers json")
    };
    let digest = k2[&ArtefactName::Vmlinuz].to_string();
    let r = request(
        addr,
        "GET",
        "/api/v1/transfers",
        &[("Authorization", &bearer)],
    )
    .await;
    assert_eq!(r.status, 401, "a boot token is not an admin token");
    let r = request(
        addr,
        "GET",
        "/api/v1/transfers",
        &[("Authorization", &admin)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let before = totals(&r.body)[&digest];
    assert!(before.bytes >= vmlinuz2.len() as u64, "{before:?}");
    let blob = path_of(&urls[0], &base);
    let r = request(addr, "GET", &blob, &[("Range", "bytes=0-9")]).await;
    assert_eq!(r.status, 206);
    let r = request(addr, "HEAD", &blob, &[]).await;
    assert_eq!(r.status, 200);
    let r = request(
        addr,
        "GET",
        "/api/v1/transfers",
        &[("Authorization", &admin)],
    )
    .await;
    let after = totals(&r.body)[&digest];
    assert_eq!(after.bytes, before.bytes + 10, "{before:?} -> {after:?}");
    assert_eq!(
        after.requests,
        before.requests + 1,
        "{before:?} -> {after:?}"
    );
}

#[tokio::test]
async fn a_machine_syncs_its_layer_back_only_when_its_plan_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let refs = PolicyReferences::default();
    let store = linux_debian_and_initramfs(dir.path(), &refs);
    let (addr, _stop) = serve_policy(
        dir.path(),
        &store,
        &refs,
        b"[setup.sync]\nkernel = \"linux@1\"\nlayers = [\"debian@1\"]\nsync = \"on-next-boot\"\n\
          [setup.nosync]\nkernel = \"linux@1\"\nlayers = [\"debian@1\"]\n\
          [[group]]\nmatch = { mac = [\"52:54:00:00:00:02\"] }\nsetup = \"nosync\"\n\
          [[group]]\nsetup = \"sync\"\n",
    )
    .await;
    let token_of = |script: String| {
        script
            .split_whitespace()
            .find_map(|w| w.strip_prefix("carte.token="))
            .expect("a boot token")
            .to_string()
    };
    let tar = b"a machine layer, packed".as_slice();
    let sha = sha256_of(tar).to_string();
    let put = |mac: &'static str, bearer: String, sha: String| async move {
        request_with_body(
            addr,
            "PUT",
            &format!("/api/v1/machines/{mac}/sync/machine"),
            &[("Authorization", &bearer), ("X-Carte-Sha256", &sha)],
            tar,
        )
        .await
    };

    let script = request(addr, "GET", "/ipxe/52:54:00:00:00:01?platform=pcbios", &[]).await;
    assert_eq!(script.status, 200, "{}", script.text());
    let bearer = format!("Bearer {}", token_of(script.text()));
    let plan = request(
        addr,
        "GET",
        "/api/v1/machines/52:54:00:00:00:01/plan",
        &[("Authorization", &bearer)],
    )
    .await;
    assert!(plan.text().contains("/sync/machine"), "{}", plan.text());

    let r = put("52:54:00:00:00:01", "Bearer nope".into(), sha.clone()).await;
    assert_eq!(r.status, 401, "{}", r.text());
    let r = put("52:54:00:00:00:01", bearer.clone(), "0".repeat(64)).await;
    assert!(
        r.status >= 400 && r.status < 500,
        "{} {}",
        r.status,
        r.text()
    );
    assert!(
        store
            .show_image(&Principal::local_admin(), "machine-52-54-00-00-00-01")
            .map_or(true, |d| d.versions.is_empty()),
        "a body that does not match its sha256 left a version"
    );
    let r = put("52:54:00:00:00:01", bearer.clone(), sha.clone()).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let shown = store
        .show_image(&Principal::local_admin(), "machine-52-54-00-00-00-01")
        .expect("the machine image");
    assert_eq!(shown.image.kind, ImageKind::Machine);
    assert_eq!(shown.versions.len(), 1);
    assert_eq!(
        shown.versions[0].layer.format,
        imaged::model::LayerFormat::Tar
    );
    assert_eq!(
        shown.versions[0].artefacts[&ArtefactName::Layer]
            .sha256
            .to_string(),
        sha
    );

    // A machine whose plan does not sync back cannot upload.
    let script = request(addr, "GET", "/ipxe/52:54:00:00:00:02?platform=pcbios", &[]).await;
    let other = format!("Bearer {}", token_of(script.text()));
    let r = put("52:54:00:00:00:02", other, sha).await;
    assert_eq!(r.status, 403, "{}", r.text());
}

/// A store in `dir/data` holding the kernel `linux@1` and the system `debian@1`, with a
/// carte initramfs in the data folder: what an image setup needs to boot.
fn linux_debian_and_initramfs(dir: &Path, refs: &PolicyReferences) -> Store {
    let data = dir.join("data");
    let store = open_store(&data, refs.clone()).expect("store");
    push(
        &store,
        "linux",
        ImageKind::Kernel,
        &kernel_files(b"MZ", b"070701"),
        Some("6.1.0-carte"),
    );
    push(
        &store,
        "debian",
        ImageKind::System,
        &[(ArtefactName::Layer, b"a system layer".as_slice())],
        None,
    );
    write(&data.join("carte/initramfs.cpio.zst"), b"carte initramfs");
    store
}

/// The versions of `image` in `store`, as `(number, format, base)`.
fn versions_of(store: &Store, image: &str) -> Vec<(u32, LayerFormat, Option<u32>)> {
    store
        .show_image(&Principal::local_admin(), image)
        .expect("show")
        .versions
        .iter()
        .map(|v| (v.number, v.layer.format, v.layer.base))
        .collect()
}

#[tokio::test]
async fn a_machine_syncs_a_writable_layer_back_only_when_its_plan_names_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let refs = PolicyReferences::default();
    let store = linux_debian_and_initramfs(dir.path(), &refs);
    // alice's own user layer, mounted read-write at /home/alice.
    let alice = Principal::new("alice", Role::User);
    store
        .create_image(
            &alice,
            NewImage {
                name: "alice-home".into(),
                kind: ImageKind::User,
                project: None,
                expires_at: None,
            },
        )
        .expect("create");
    let home = b"erofs of alice's home".as_slice();
    let a = store
        .upload_blob(&alice, "alice-home", &mut &home[..], Some(&sha256_of(home)))
        .expect("upload");
    let mut layer = LayerMeta::plain(LayerFormat::Erofs);
    layer.mount_point = Some("/home/alice".into());
    store
        .add_version(
            &alice,
            "alice-home",
            NewVersion {
                layer,
                artefacts: [(ArtefactName::Layer, a)].into(),
            },
        )
        .expect("version");
    let (addr, _stop) = serve_policy(
        dir.path(),
        &store,
        &refs,
        b"[setup.sync]\nkernel = \"linux@1\"\nlayers = [\"debian@1\"]\n\
          user = [\"alice-home@latest\"]\nsync = \"on-next-boot\"\n\
          [setup.nosync]\nkernel = \"linux@1\"\nlayers = [\"debian@1\"]\n\
          user = [\"alice-home@latest\"]\n\
          [[group]]\nmatch = { mac = [\"52:54:00:00:00:02\"] }\nsetup = \"nosync\"\n\
          [[group]]\nsetup = \"sync\"\n",
    )
    .await;
    let boot = |mac: &'static str| async move {
        let script = request(addr, "GET", &format!("/ipxe/{mac}?platform=pcbios"), &[]).await;
        assert_eq!(script.status, 200, "{}", script.text());
        let token = script
            .text()
            .split_whitespace()
            .find_map(|w| w.strip_prefix("carte.token="))
            .expect("a boot token")
            .to_string();
        let bearer = format!("Bearer {token}");
        let r = request(
            addr,
            "GET",
            &carte_contract::plan_path(mac),
            &[("Authorization", &bearer)],
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let plan: carte_contract::Plan = serde_json::from_slice(&r.body).expect("plan");
        (bearer, plan)
    };
    let tar = b"a tar of alice's upper".as_slice();
    let sha = sha256_of(tar).to_string();
    let put = |mac: &'static str, layer: &'static str, headers: Vec<(String, String)>| async move {
        let h: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        request_with_body(
            addr,
            "PUT",
            &carte_contract::sync_layer_path(mac, layer),
            &h,
            tar,
        )
        .await
    };
    let auth = |bearer: &str, sha: &str| {
        vec![
            ("Authorization".to_string(), bearer.to_string()),
            ("X-Carte-Sha256".to_string(), sha.to_string()),
        ]
    };

    let (bearer, plan) = boot("52:54:00:00:00:01").await;
    let url = format!(
        "http://{addr}{}",
        carte_contract::sync_layer_path("52:54:00:00:00:01", "alice-home")
    );
    assert!(
        plan.sync_back.iter().any(|s| s.target
            == carte_contract::SyncTarget::Layer("alice-home".into())
            && s.upload_url == url),
        "{:?}",
        plan.sync_back
    );
    let m = "52:54:00:00:00:01";
    // Refused, each leaving alice-home at its one version: a wrong token, a layer the plan
    // does not mount writable (the system layer, an image it does not name), a body that
    // is not what its sha256 says, no sha256 at all.
    let r = put(m, "alice-home", auth("Bearer carte_wrong", &sha)).await;
    assert_eq!(r.status, 401, "{}", r.text());
    for other in ["debian", "linux", "someone-else"] {
        let r = put(m, other, auth(&bearer, &sha)).await;
        assert_eq!(r.status, 403, "{other}: {}", r.text());
    }
    assert_eq!(versions_of(&store, "debian").len(), 1);
    let r = put(m, "alice-home", auth(&bearer, &"0".repeat(64))).await;
    assert!((400..500).contains(&r.status), "{} {}", r.status, r.text());
    let r = put(
        m,
        "alice-home",
        vec![("Authorization".to_string(), bearer.clone())],
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    // Cut off: the body ends before its Content-Length.
    {
        let mut conn = TcpStream::connect(addr).await.expect("connect");
        let req = format!(
            "PUT {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: {bearer}\r\n\
             X-Carte-Sha256: {sha}\r\nContent-Length: {}\r\n\r\n",
            carte_contract::sync_layer_path(m, "alice-home"),
            tar.len() + 100
        );
        conn.write_all(req.as_bytes()).await.expect("write");
        conn.write_all(tar).await.expect("write");
        conn.shutdown().await.expect("shutdown");
        let mut raw = Vec::new();
        let _ = conn.read_to_end(&mut raw).await;
        let answer = String::from_utf8_lossy(&raw);
        assert!(!answer.starts_with("HTTP/1.1 2"), "{answer}");
    }
    assert_eq!(
        versions_of(&store, "alice-home"),
        [(1, LayerFormat::Erofs, None)],
        "a refused upload left a version"
    );

    // The good upload: version 2, a tar of changes on top of version 1, owned by alice.
    let r = put(m, "alice-home", auth(&bearer, &sha)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        versions_of(&store, "alice-home"),
        [
            (1, LayerFormat::Erofs, None),
            (2, LayerFormat::Tar, Some(1))
        ]
    );
    let v2 = store
        .version(&alice, &"alice-home@2".parse().expect("ref"))
        .expect("alice reads her version");
    assert_eq!(v2.artefacts[&ArtefactName::Layer].sha256.to_string(), sha);

    // A machine whose plan does not sync back cannot upload.
    let (other, _) = boot("52:54:00:00:00:02").await;
    let r = put("52:54:00:00:00:02", "alice-home", auth(&other, &sha)).await;
    assert_eq!(r.status, 403, "{}", r.text());

    // The next boot mounts version 1 and names version 2 as the layer's restore, whose
    // bytes the blob route serves while that plan stands.
    let (_, plan) = boot(m).await;
    let home = plan
        .layers
        .iter()
        .find(|l| l.name == "alice-home")
        .expect("alice-home in the plan");
    assert_eq!(home.version, 1);
    let restore = home.restore.as_deref().expect("a restore");
    assert_eq!(restore.version, 2);
    assert_eq!(restore.format, carte_contract::Format::Tar);
    let r = request(
        addr,
        "GET",
        &path_of(&restore.url, &format!("http://{addr}")),
        &[],
    )
    .await;
    assert_eq!((r.status, r.body.as_slice()), (200, tar));
}
