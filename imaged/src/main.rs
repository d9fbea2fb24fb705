//! `imaged`: the image store's CLI and daemon. The only place that reads flags and the
//! environment and decides exit codes. It talks to a local data folder (`--data`, acting
//! as admin: whoever can write the folder is in charge) or to a server (`--server`, with
//! a token from `CARTE_TOKEN` or `--token-file`). It holds no store rule of its own.

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use imaged::access::Principal;
use imaged::blob::sha256_reader;
use imaged::client::{save_verified, Client, Progress};
use imaged::model::{
    Artefact, ArtefactName, Digest, Encoding, Image, ImageDetails, ImageKind, ImageRef,
    LayerFormat, LayerMeta, NewImage, NewToken, NewVersion, Project, Role, Version,
};
use imaged::store::{self, GcReport, Store, StoreConfig};

mod build_cli;

#[derive(Parser)]
#[command(name = "imaged", about = "carte's image store", version)]
struct Cli {
    /// Local data folder (carte.db, blobs/, tmp/).
    #[arg(long, global = true, env = "CARTE_DATA")]
    data: Option<PathBuf>,
    /// Server URL, e.g. http://192.0.2.1:8080 (token from CARTE_TOKEN or --token-file).
    #[arg(long, global = true, conflicts_with = "data")]
    server: Option<String>,
    /// File holding the bearer token.
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List the images you may read.
    Ls,
    /// Show an image and its versions (JSON).
    Show {
        /// The image.
        name: String,
    },
    /// Delete an image (a server refuses while a setup of its policy uses it; a local
    /// --data folder knows no policy).
    Rm {
        /// The image.
        name: String,
    },
    /// Delete expired temporary images and unreferenced blobs.
    Gc,
    /// Create an image without a version.
    Create(CreateArgs),
    /// Upload a file as a new version (creating the image with --kind if missing).
    Push(PushArgs),
    /// Download an artefact of a version, verified against its sha256.
    Pull {
        /// name@N or name@latest
        image: ImageRef,
        /// Which file of the version: layer, vmlinuz or modules (a zstd-encoded layer
        /// comes as it was stored, still encoded).
        #[arg(long, default_value = "layer")]
        artefact: ArtefactName,
        /// Where to write it (replaced only once verified).
        #[arg(short, long)]
        output: PathBuf,
    },
    /// API tokens: create one, list them (admin).
    #[command(subcommand)]
    Token(TokenCmd),
    /// Projects: create one, add a member, list them.
    #[command(subcommand)]
    Project(ProjectCmd),
    /// Build a layer (or a kernel's files) and print them as JSON; --push stores them.
    #[command(subcommand)]
    Build(build_cli::BuildCmd),
    /// Run the API server (needs --data).
    Serve {
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: String,
        /// Largest accepted upload in bytes.
        #[arg(long, default_value_t = 64 << 30)]
        max_upload: u64,
        /// Seconds between periodic gc runs.
        #[arg(long, default_value_t = 3600)]
        gc_every: u64,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Create a token; it is printed once and only its hash is kept.
    Create {
        /// admin (everything, netbootd's machine list) or user (own images, projects).
        #[arg(long)]
        role: Role,
        /// The user name the token acts as.
        #[arg(long)]
        name: String,
    },
    /// List the tokens: name, role, creation time (never the secret).
    Ls,
}

#[derive(Subcommand)]
enum ProjectCmd {
    /// Create a project you own.
    Create { name: String },
    /// Let a user read and push the project's images.
    AddMember { project: String, user: String },
    /// List the projects with their owner and members.
    Ls,
}

#[derive(Args)]
struct CreateArgs {
    /// The new image's name (a-z 0-9 . _ -).
    name: String,
    /// kernel, system, user, machine, temporary or project: what it may hold and who may
    /// write it.
    #[arg(long)]
    kind: ImageKind,
    /// Project images: the project whose members share it.
    #[arg(long)]
    project: Option<String>,
    /// Temporary images: seconds from now until expiry.
    #[arg(long)]
    expires_in: Option<u64>,
}

/// How `push` and `build --push` create the image when it does not exist yet.
#[derive(Args)]
struct NewImageArgs {
    /// Create the image with this kind if it does not exist.
    #[arg(long)]
    kind: Option<ImageKind>,
    /// Project images: the project whose members share it.
    #[arg(long)]
    project: Option<String>,
    /// Temporary images: seconds from now until expiry.
    #[arg(long)]
    expires_in: Option<u64>,
}

#[derive(Args)]
struct PushArgs {
    /// The image; created with --kind if it does not exist.
    name: String,
    /// The layer file.
    file: PathBuf,
    #[command(flatten)]
    image: NewImageArgs,
    /// What the layer is once decoded: erofs, ext4, squashfs or raw (a whole disk).
    #[arg(long, default_value = "erofs", value_parser = parse_format)]
    format: LayerFormat,
    /// How FILE is compressed on the wire: none or zstd (then give the two below).
    #[arg(long, default_value = "none", value_parser = parse_encoding)]
    encoding: Encoding,
    /// Size after decoding, what the machine writes to its disk.
    #[arg(long)]
    uncompressed_size: Option<u64>,
    /// sha256 after decoding, what the machine verifies its cache against.
    #[arg(long)]
    written_sha256: Option<Digest>,
    /// User and project layers: where they are mounted read-write in the target root.
    #[arg(long)]
    mount_point: Option<String>,
    /// Fetched by carte-shim after the target's init starts, not before.
    #[arg(long)]
    lazy: bool,
    /// Project images: the command carte-shim runs once booted.
    #[arg(long)]
    autostart: Option<String>,
    /// Kernel images: the vmlinuz file.
    #[arg(long)]
    vmlinuz: Option<PathBuf>,
    /// Kernel images: the modules newc cpio.
    #[arg(long)]
    modules: Option<PathBuf>,
    /// Kernel images: `uname -r` of the kernel (required there).
    #[arg(long)]
    kernel_release: Option<String>,
}

fn parse_format(s: &str) -> Result<LayerFormat, String> {
    serde_json::from_value(serde_json::Value::String(s.into()))
        .map_err(|_| format!("unknown format {s:?}: erofs, ext4, squashfs or raw"))
}

fn parse_encoding(s: &str) -> Result<Encoding, String> {
    serde_json::from_value(serde_json::Value::String(s.into()))
        .map_err(|_| format!("unknown encoding {s:?}: zstd or none"))
}

/// What the commands need, from a local folder or a server.
trait Backend {
    fn list(&self) -> Result<Vec<Image>>;
    fn show(&self, name: &str) -> Result<ImageDetails>;
    fn delete(&self, name: &str) -> Result<()>;
    fn gc(&self) -> Result<GcReport>;
    fn create(&self, new: NewImage) -> Result<Image>;
    fn upload(&self, name: &str, path: &Path, size: u64, sha: &Digest) -> Result<Artefact>;
    fn add_version(&self, name: &str, new: NewVersion) -> Result<Version>;
    fn pull(&self, r: &ImageRef, a: ArtefactName, dest: &Path) -> Result<Artefact>;
    fn create_token(&self, name: &str, role: Role) -> Result<NewToken>;
    fn tokens(&self) -> Result<Vec<imaged::model::TokenInfo>>;
    fn create_project(&self, name: &str) -> Result<Project>;
    fn add_member(&self, project: &str, user: &str) -> Result<Project>;
    fn projects(&self) -> Result<Vec<Project>>;
}

/// A one-line progress report on stderr: bytes, rate, ETA. Redraws at most 5 times a second.
struct ProgressLine {
    what: String,
    total: u64,
    start: Instant,
    last: Instant,
    tty: bool,
    /// The final line was printed; the reader reports the total again at end of file.
    ended: bool,
}

impl ProgressLine {
    fn new(what: &str, total: u64) -> Self {
        let now = Instant::now();
        ProgressLine {
            what: what.to_string(),
            total,
            start: now,
            last: now - Duration::from_secs(1),
            tty: std::io::stderr().is_terminal(),
            ended: false,
        }
    }

    fn update(&mut self, done: u64) {
        let finished = done >= self.total;
        if self.ended {
            return;
        }
        self.ended = finished;
        if !finished && self.last.elapsed() < Duration::from_millis(200) {
            return;
        }
        if !self.tty && !finished {
            return;
        }
        self.last = Instant::now();
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        let rate = done as f64 / secs;
        let eta = if rate > 0.0 {
            (self.total.saturating_sub(done)) as f64 / rate
        } else {
            0.0
        };
        let mut err = std::io::stderr();
        let _ = write!(
            err,
            "\r{}: {}/{} bytes  {:.1} MiB/s  ETA {:.0}s ",
            self.what,
            done,
            self.total,
            rate / (1024.0 * 1024.0),
            eta
        );
        if finished {
            let _ = writeln!(err);
        }
    }
}

struct Local {
    store: Store,
    who: Principal,
}

impl Backend for Local {
    fn list(&self) -> Result<Vec<Image>> {
        Ok(self.store.list_images(&self.who)?)
    }
    fn show(&self, name: &str) -> Result<ImageDetails> {
        Ok(self.store.show_image(&self.who, name)?)
    }
    fn delete(&self, name: &str) -> Result<()> {
        Ok(self.store.delete_image(&self.who, name)?)
    }
    fn gc(&self) -> Result<GcReport> {
        Ok(self.store.gc(&self.who, store::now())?)
    }
    fn create(&self, new: NewImage) -> Result<Image> {
        Ok(self.store.create_image(&self.who, new)?)
    }
    fn upload(&self, name: &str, path: &Path, size: u64, sha: &Digest) -> Result<Artefact> {
        let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
        let mut line = ProgressLine::new(&format!("store {}", path.display()), size);
        let mut cb = |n| line.update(n);
        let mut r = Progress::new(file, &mut cb);
        Ok(self.store.upload_blob(&self.who, name, &mut r, Some(sha))?)
    }
    fn add_version(&self, name: &str, new: NewVersion) -> Result<Version> {
        Ok(self.store.add_version(&self.who, name, new)?)
    }
    fn pull(&self, r: &ImageRef, a: ArtefactName, dest: &Path) -> Result<Artefact> {
        let (meta, path) = self.store.artefact(&self.who, r, a)?;
        let mut file = File::open(&path).with_context(|| format!("open {}", path.display()))?;
        save_verified(&mut file, &meta.sha256, dest)?;
        Ok(meta)
    }
    fn create_token(&self, name: &str, role: Role) -> Result<NewToken> {
        Ok(self.store.create_token(&self.who, name, role)?)
    }
    fn tokens(&self) -> Result<Vec<imaged::model::TokenInfo>> {
        Ok(self.store.tokens(&self.who)?)
    }
    fn create_project(&self, name: &str) -> Result<Project> {
        Ok(self.store.create_project(&self.who, name)?)
    }
    fn add_member(&self, project: &str, user: &str) -> Result<Project> {
        Ok(self.store.add_member(&self.who, project, user)?)
    }
    fn projects(&self) -> Result<Vec<Project>> {
        Ok(self.store.projects(&self.who)?)
    }
}

impl Backend for Client {
    fn list(&self) -> Result<Vec<Image>> {
        Ok(self.list_images()?)
    }
    fn show(&self, name: &str) -> Result<ImageDetails> {
        Ok(Client::show(self, name)?)
    }
    fn delete(&self, name: &str) -> Result<()> {
        Ok(Client::delete(self, name)?)
    }
    fn gc(&self) -> Result<GcReport> {
        Ok(Client::gc(self)?)
    }
    fn create(&self, new: NewImage) -> Result<Image> {
        Ok(self.create_image(&new)?)
    }
    fn upload(&self, name: &str, path: &Path, size: u64, sha: &Digest) -> Result<Artefact> {
        let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
        let mut line = ProgressLine::new(&format!("push {}", path.display()), size);
        let mut cb = |n| line.update(n);
        let mut r = Progress::new(file, &mut cb);
        Ok(self.upload_blob(name, &mut r, size, sha)?)
    }
    fn add_version(&self, name: &str, new: NewVersion) -> Result<Version> {
        Ok(Client::add_version(self, name, &new)?)
    }
    fn pull(&self, r: &ImageRef, a: ArtefactName, dest: &Path) -> Result<Artefact> {
        // The size is known once the response starts.
        let mut line: Option<ProgressLine> = None;
        let mut cb = |n, total| {
            line.get_or_insert_with(|| ProgressLine::new(&format!("pull {r} {a}"), total))
                .update(n)
        };
        Ok(self.download(r, a, dest, &mut cb)?)
    }
    fn create_token(&self, name: &str, role: Role) -> Result<NewToken> {
        Ok(Client::create_token(self, name, role)?)
    }
    fn tokens(&self) -> Result<Vec<imaged::model::TokenInfo>> {
        Ok(Client::tokens(self)?)
    }
    fn create_project(&self, name: &str) -> Result<Project> {
        Ok(Client::create_project(self, name)?)
    }
    fn add_member(&self, project: &str, user: &str) -> Result<Project> {
        Ok(Client::add_member(self, project, user)?)
    }
    fn projects(&self) -> Result<Vec<Project>> {
        Ok(Client::projects(self)?)
    }
}

fn open_local(data: &Path, config: StoreConfig) -> Result<Store> {
    std::fs::create_dir_all(data).with_context(|| format!("create {}", data.display()))?;
    Store::open(data, store::no_references(), config)
        .with_context(|| format!("open data folder {}", data.display()))
}

fn backend(cli: &Cli) -> Result<Box<dyn Backend>> {
    if let Some(server) = &cli.server {
        let token = match &cli.token_file {
            Some(f) => std::fs::read_to_string(f)
                .with_context(|| format!("read token file {}", f.display()))?,
            None => std::env::var("CARTE_TOKEN")
                .context("no token: set CARTE_TOKEN or pass --token-file")?,
        };
        return Ok(Box::new(Client::new(server, token.trim())));
    }
    let Some(data) = &cli.data else {
        bail!("say where the store is: --data DIR or --server URL");
    };
    Ok(Box::new(Local {
        store: open_local(data, StoreConfig::default())?,
        who: Principal::local_admin(),
    }))
}

fn hash_file(path: &Path) -> Result<(Digest, u64)> {
    let mut f = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let info = sha256_reader(&mut f).with_context(|| format!("read {}", path.display()))?;
    Ok((info.digest, info.size))
}

/// Creates `name` with `--kind` (and its project/expiry) unless it already exists.
/// Creates `name` with `a.kind` unless it exists; true when it was created here.
fn ensure_image(b: &dyn Backend, name: &str, a: &NewImageArgs) -> Result<bool> {
    let Some(kind) = a.kind else { return Ok(false) };
    // Already there (and readable): push a new version of it.
    if b.show(name).is_ok() {
        return Ok(false);
    }
    b.create(NewImage {
        name: name.to_string(),
        kind,
        project: a.project.clone(),
        expires_at: a.expires_in.map(|s| store::now() + s),
    })?;
    eprintln!("created {kind} image {name}");
    Ok(true)
}

/// `push` and `build --push`: the next version of `image` (created first when `new`
/// says so) from `files`. An image this call created is deleted again when the version
/// is refused, so a failed push leaves nothing behind.
fn push_version(
    b: &dyn Backend,
    image: &str,
    new: &NewImageArgs,
    files: Vec<(ArtefactName, PathBuf)>,
    layer: LayerMeta,
) -> Result<Version> {
    let created = ensure_image(b, image, new)?;
    let pushed = upload_version(b, image, files, layer);
    if pushed.is_err() && created {
        match b.delete(image) {
            Ok(()) => eprintln!("deleted the image {image} again (the push failed)"),
            Err(e) => eprintln!("the image {image} created for this push stays: {e:#}"),
        }
    }
    pushed
}

/// Uploads each file as a blob of `image`, then records them as one version.
fn upload_version(
    b: &dyn Backend,
    image: &str,
    files: Vec<(ArtefactName, PathBuf)>,
    layer: LayerMeta,
) -> Result<Version> {
    let mut artefacts = std::collections::BTreeMap::new();
    for (name, path) in files {
        // First pass: the digest the server checks the upload against.
        let (sha, size) = hash_file(&path)?;
        let got = b
            .upload(image, &path, size, &sha)
            .with_context(|| format!("upload {name} {}", path.display()))?;
        artefacts.insert(name, got);
    }
    b.add_version(image, NewVersion { layer, artefacts })
}

fn push(b: &dyn Backend, a: PushArgs) -> Result<Version> {
    let mut files = vec![(ArtefactName::Layer, a.file.clone())];
    files.extend(a.vmlinuz.clone().map(|f| (ArtefactName::Vmlinuz, f)));
    files.extend(a.modules.clone().map(|f| (ArtefactName::Modules, f)));
    let layer = LayerMeta {
        format: a.format,
        encoding: a.encoding,
        uncompressed_size: a.uncompressed_size,
        written_sha256: a.written_sha256,
        mount_point: a.mount_point,
        lazy: a.lazy,
        autostart: a.autostart,
        kernel_release: a.kernel_release,
        base: None,
    };
    push_version(b, &a.name, &a.image, files, layer)
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn serve(data: Option<&Path>, listen: &str, max_upload: u64, gc_every: u64) -> Result<()> {
    {
        let Some(data) = data else {
            bail!("serve needs --data DIR");
        };
        let store = open_local(
            data,
            StoreConfig {
                max_upload,
                ..StoreConfig::default()
            },
        )?;
        let rt = tokio::runtime::Runtime::new().context("start tokio")?;
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("bind {listen}"))?;
            let shutdown = async {
                let mut term =
                    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    {
                        Ok(t) => t,
                        Err(_) => {
                            let _ = tokio::signal::ctrl_c().await;
                            return;
                        }
                    };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                }
            };
            imaged::serve::serve(listener, store, Duration::from_secs(gc_every), shutdown)
                .await
                .map_err(anyhow::Error::from)
        })
    }
}

fn run(cli: Cli) -> Result<()> {
    if let Cmd::Serve {
        listen,
        max_upload,
        gc_every,
    } = &cli.cmd
    {
        return serve(cli.data.as_deref(), listen, *max_upload, *gc_every);
    }
    if let Cmd::Build(cmd) = &cli.cmd {
        // Building alone needs no store; pushing does.
        let b = if cmd.pushes() {
            Some(backend(&cli)?)
        } else {
            None
        };
        return build_cli::run(b.as_deref(), cmd);
    }
    let b = backend(&cli)?;
    match cli.cmd {
        Cmd::Serve { .. } | Cmd::Build(_) => {} // handled above
        Cmd::Ls => {
            let images = b.list()?;
            // A header only above rows: no images prints nothing, for scripts.
            if !images.is_empty() {
                println!(
                    "{:<32} {:<10} {:<16} PROJECT/EXPIRES",
                    "NAME", "KIND", "OWNER"
                );
            }
            for i in images {
                let extra = match (&i.project, i.expires_at) {
                    (Some(p), _) => format!("project={p}"),
                    (None, Some(t)) => format!("expires_at={t}"),
                    _ => String::new(),
                };
                println!("{:<32} {:<10} {:<16} {extra}", i.name, i.kind, i.owner);
            }
        }
        Cmd::Show { name } => print_json(&b.show(&name)?)?,
        Cmd::Rm { name } => {
            b.delete(&name)?;
            eprintln!("deleted {name}");
        }
        Cmd::Gc => print_json(&b.gc()?)?,
        Cmd::Create(a) => {
            let img = b.create(NewImage {
                name: a.name,
                kind: a.kind,
                project: a.project,
                expires_at: a.expires_in.map(|s| store::now() + s),
            })?;
            print_json(&img)?;
        }
        Cmd::Push(a) => {
            let v = push(b.as_ref(), a)?;
            println!("{}@{}", v.image, v.number);
        }
        Cmd::Pull {
            image,
            artefact,
            output,
        } => {
            let got = b.pull(&image, artefact, &output)?;
            eprintln!(
                "{image} {artefact}: {} bytes, sha256 {} verified -> {}",
                got.size,
                got.sha256,
                output.display()
            );
        }
        Cmd::Token(TokenCmd::Create { role, name }) => {
            let t = b.create_token(&name, role)?;
            eprintln!(
                "token for {} ({}); shown once, only its hash is kept:",
                t.name,
                t.role.as_str()
            );
            println!("{}", t.token);
        }
        Cmd::Token(TokenCmd::Ls) => {
            for t in b.tokens()? {
                println!("{:<24} {:<6} {}", t.name, t.role.as_str(), t.created_at);
            }
        }
        Cmd::Project(ProjectCmd::Create { name }) => print_json(&b.create_project(&name)?)?,
        Cmd::Project(ProjectCmd::AddMember { project, user }) => {
            print_json(&b.add_member(&project, &user)?)?
        }
        Cmd::Project(ProjectCmd::Ls) => {
            for p in b.projects()? {
                println!(
                    "{:<24} owner={} members={}",
                    p.name,
                    p.owner,
                    p.members.join(",")
                );
            }
        }
    }
    Ok(())
}

fn main() {
    tracing_subscriber::fmt()
        // Colour codes only on a terminal, not in a log file or a pipe.
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("imaged: {}", imaged::report::error_line(e.as_ref()));
        std::process::exit(1);
    }
}
