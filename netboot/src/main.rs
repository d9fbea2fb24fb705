//! `netbootd`: the only place that reads flags, files and the environment, and decides
//! exit codes.

use std::io::IsTerminal;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use netboot::config::{Config, DhcpMode, Pool};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "netbootd",
    version,
    about = "carte's network boot daemon: DHCP, TFTP, HTTP and boot policy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Serve(ServeArgs),
    /// List the machines a running netbootd booted: setup, stage, progress, last error.
    Machines {
        /// netbootd's base URL, e.g. http://192.0.2.1:8080.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        server: String,
        /// File holding an admin token (else CARTE_TOKEN).
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Work with boot policy folders.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a policy folder; print each problem with file and line; exit 1 if any.
    Check {
        /// The policy folder (every *.toml in it).
        dir: PathBuf,
        /// Data folder whose image store the setups' images are checked against.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

/// Every key of the config file, as a flag; a flag wins over the file.
#[derive(Args)]
struct ServeArgs {
    /// TOML config file.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The interface DHCP binds to (required unless DHCP is off); flags override the config.
    #[arg(long)]
    interface: Option<String>,
    /// The address machines reach netbootd at (next-server, URLs, server id); required.
    #[arg(long)]
    server_addr: Option<Ipv4Addr>,
    /// How netbootd takes part in DHCP [default: full].
    #[arg(long)]
    dhcp_mode: Option<DhcpMode>,
    /// Address pool for full mode, FIRST-LAST.
    #[arg(long)]
    dhcp_pool: Option<Pool>,
    /// Subnet prefix length handed out in full mode [default: 24].
    #[arg(long)]
    dhcp_prefix_len: Option<u8>,
    /// Default gateway handed out in full mode (none if unset).
    #[arg(long)]
    dhcp_router: Option<Ipv4Addr>,
    /// Lease time in seconds [default: 3600].
    #[arg(long)]
    dhcp_lease_secs: Option<u32>,
    /// HTTP port for scripts, artefacts and the API [default: 8080].
    #[arg(long)]
    http_port: Option<u16>,
    /// TFTP port [default: 69].
    #[arg(long)]
    tftp_port: Option<u16>,
    /// Largest TFTP blksize accepted from a client [default: 1468].
    #[arg(long)]
    tftp_max_blksize: Option<u16>,
    /// Extra folder served over TFTP after the iPXE binaries.
    #[arg(long)]
    tftp_dir: Option<PathBuf>,
    /// The data folder: image store, files, leases [default: /var/lib/carte].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The carte initramfs for image setups, a path under the data folder
    /// [default: carte/initramfs.cpio.zst].
    #[arg(long)]
    initramfs: Option<String>,
    /// The boot policy folder, reloaded live [default: /etc/carte/policy].
    #[arg(long)]
    policy_dir: Option<PathBuf>,
    /// Where the iPXE first stages are [default: /usr/lib/ipxe].
    #[arg(long)]
    ipxe_dir: Option<PathBuf>,
}

impl ServeArgs {
    fn into_config(self) -> anyhow::Result<Config> {
        let mut cfg = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(v) = self.interface {
            cfg.interface = Some(v);
        }
        if let Some(v) = self.server_addr {
            cfg.server_addr = Some(v);
        }
        if let Some(v) = self.dhcp_mode {
            cfg.dhcp.mode = v;
        }
        if let Some(v) = self.dhcp_pool {
            cfg.dhcp.pool = Some(v);
        }
        if let Some(v) = self.dhcp_prefix_len {
            cfg.dhcp.prefix_len = v;
        }
        if let Some(v) = self.dhcp_router {
            cfg.dhcp.router = Some(v);
        }
        if let Some(v) = self.dhcp_lease_secs {
            cfg.dhcp.lease_secs = v;
        }
        if let Some(v) = self.http_port {
            cfg.http_port = v;
        }
        if let Some(v) = self.tftp_port {
            cfg.tftp.port = v;
        }
        if let Some(v) = self.tftp_max_blksize {
            cfg.tftp.max_blksize = v;
        }
        if let Some(v) = self.tftp_dir {
            cfg.tftp.extra_dir = Some(v);
        }
        if let Some(v) = self.data_dir {
            cfg.data_dir = v;
        }
        if let Some(v) = self.initramfs {
            cfg.initramfs = v;
        }
        if let Some(v) = self.policy_dir {
            cfg.policy_dir = v;
        }
        if let Some(v) = self.ipxe_dir {
            cfg.ipxe_dir = v;
        }
        Ok(cfg)
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        // Colour codes only on a terminal, not in a log file or the journal.
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Machines { server, token_file } => machines(&server, token_file.as_deref()),
        Command::Policy {
            command: PolicyCommand::Check { dir, data_dir },
        } => policy_check(&dir, data_dir.as_deref()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("netbootd: {}", report(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each cause once: our messages already include
/// their io error, which is also their `source`.
fn report(e: &anyhow::Error) -> String {
    imaged::report::error_line(e.as_ref())
}

fn machines(server: &str, token_file: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    let token = match token_file {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("read token file {}", f.display()))?,
        None => std::env::var("CARTE_TOKEN")
            .context("no token: set CARTE_TOKEN or pass --token-file (an admin token)")?,
    };
    let url = format!("{}/api/v1/machines", server.trim_end_matches('/'));
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build(),
    );
    let mut resp = agent
        .get(&url)
        .header("Authorization", format!("Bearer {}", token.trim()))
        .call()
        .with_context(|| format!("GET {url}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(16 << 20)
        .read_to_string()
        .with_context(|| format!("read the answer of {url}"))?;
    if status != 200 {
        anyhow::bail!("GET {url}: server answered {status}: {}", body.trim());
    }
    let states: Vec<carte_contract::MachineState> =
        serde_json::from_str(&body).with_context(|| format!("bad answer from {url}"))?;
    print!("{}", netboot::machines::table(&states));
    let history = netboot::machines::history(&states);
    if !history.is_empty() {
        print!("\nstage history (seconds after the iPXE script):\n{history}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `1 setup`, `2 setups`.
fn counted(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn policy_check(
    dir: &std::path::Path,
    data_dir: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    if let Some(d) = data_dir.filter(|d| !d.is_dir()) {
        anyhow::bail!(
            "--data-dir {}: no such folder (give the data folder netbootd serves from)",
            d.display()
        );
    }
    let catalog: Box<dyn netboot::policy::ImageCatalog> = match data_dir
        .map(netboot::images::metadata_catalog)
        .transpose()?
    {
        Some(Some(c)) => Box::new(c),
        Some(None) => Box::new(netboot::policy::MemoryCatalog::default()),
        None => Box::new(netboot::policy::NoCatalog),
    };
    match netboot::policy::load_dir_with(dir, catalog.as_ref()) {
        Ok(policy) => {
            println!(
                "{}: ok ({}, {}, {})",
                dir.display(),
                counted(policy.setups.len(), "setup"),
                counted(policy.groups.len(), "group"),
                counted(policy.machines.len(), "machine")
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            let n = errors.0.len();
            let plural = if n == 1 { "problem" } else { "problems" };
            eprintln!("{}: {n} {plural}, policy not valid", dir.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = args.into_config()?;
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!("cannot watch SIGTERM: {e}");
                        return;
                    }
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("shutting down");
            stop.cancel();
        });
        netboot::daemon::serve(config, shutdown).await
    })?;
    Ok(ExitCode::SUCCESS)
}
