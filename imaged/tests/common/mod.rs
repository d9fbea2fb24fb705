//! Shared test harness: a store in a temp folder served on 127.0.0.1:0 by a background
//! runtime, with one admin and two user tokens and a fake reference check.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use imaged::access::Principal;
use imaged::blob::sha256_of;
use imaged::client::Client;
use imaged::model::{Artefact, ArtefactName, LayerFormat, LayerMeta, NewVersion, Role};
use imaged::store::{ReferenceCheck, Store, StoreConfig};

/// Setups per image name, as netbootd's policy would report them.
#[derive(Clone, Default)]
pub struct FakeRefs(pub Arc<Mutex<HashMap<String, Vec<String>>>>);

impl FakeRefs {
    pub fn set(&self, image: &str, setups: &[&str]) {
        self.0.lock().expect("lock").insert(
            image.to_string(),
            setups.iter().map(|s| s.to_string()).collect(),
        );
    }
}

impl ReferenceCheck for FakeRefs {
    fn setups_using(&self, image: &str) -> Vec<String> {
        self.0
            .lock()
            .expect("lock")
            .get(image)
            .cloned()
            .unwrap_or_default()
    }
}

pub struct Server {
    pub url: String,
    pub data: tempfile::TempDir,
    pub store: Store,
    pub refs: FakeRefs,
    pub admin: String,
    pub alice: String,
    pub bob: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(StoreConfig::default())
    }

    pub fn start_with(config: StoreConfig) -> Server {
        let data = tempfile::tempdir().expect("tempdir");
        let refs = FakeRefs::default();
        let store = Store::open(data.path(), Arc::new(refs.clone()), config).expect("open store");
        let root = Principal::local_admin();
        let token = |name, role| store.create_token(&root, name, role).expect("token").token;
        let (admin, alice, bob) = (
            token("root", Role::Admin),
            token("alice", Role::User),
            token("bob", Role::User),
        );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let s = store.clone();
        let thread = std::thread::spawn(move || {
            rt.block_on(async move {
                imaged::serve::serve(listener, s, std::time::Duration::from_secs(3600), async {
                    let _ = rx.await;
                })
                .await
                .expect("serve");
            });
        });
        Server {
            url,
            data,
            store,
            refs,
            admin,
            alice,
            bob,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn client(&self, token: &str) -> Client {
        Client::new(&self.url, token)
    }

    pub fn api(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.url)
    }

    pub fn blobs_dir(&self) -> PathBuf {
        self.data.path().join("blobs/sha256")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// All files under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Metadata of a plain layer whose content is `content`.
pub fn layer_version(content: &[u8]) -> NewVersion {
    let mut artefacts = BTreeMap::new();
    artefacts.insert(
        ArtefactName::Layer,
        Artefact {
            sha256: sha256_of(content),
            size: content.len() as u64,
        },
    );
    NewVersion {
        layer: LayerMeta::plain(LayerFormat::Erofs),
        artefacts,
    }
}

/// A plain HTTP agent that reports every status instead of failing on 4xx/5xx.
pub fn agent() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build(),
    )
}
