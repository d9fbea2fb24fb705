//! `carte-bench`: the load clients `scripts/bench` runs against netbootd and against the
//! reference peers (dnsmasq, a plain TCP sender) with the same code, so ratios compare
//! servers, not clients. Each subcommand prints one line of `key=value` results.
//! `scripts/bench-images` uses the raw TCP pair and the HTTP transfer subcommands.

mod dhcp;
mod http;
mod image;
mod tftp;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Args, Parser, Subcommand};

use image::Endpoint;

#[derive(Parser)]
#[command(name = "carte-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Download one file over TFTP `repeat` times in a row; report throughput.
    Tftp {
        #[arg(long)]
        server: SocketAddr,
        #[arg(long)]
        file: String,
        #[arg(long, default_value_t = 1468)]
        blksize: u16,
        /// 0 = do not ask for the windowsize option.
        #[arg(long, default_value_t = 0)]
        windowsize: u16,
        #[arg(long, default_value_t = 1)]
        repeat: u32,
    },
    /// `clients` concurrent TFTP downloads of one file.
    TftpMany {
        #[arg(long)]
        server: SocketAddr,
        #[arg(long)]
        file: String,
        #[arg(long, default_value_t = 200)]
        clients: usize,
        #[arg(long, default_value_t = 1468)]
        blksize: u16,
    },
    /// `clients` concurrent HTTP/1.1 GETs of one URL path.
    HttpMany {
        #[arg(long)]
        server: SocketAddr,
        #[arg(long)]
        path: String,
        #[arg(long, default_value_t = 200)]
        clients: usize,
    },
    /// Sequential DHCP DISCOVER -> OFFER round trips for `seconds` on `iface`.
    Dhcp {
        #[arg(long)]
        iface: String,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// Print a loopback TCP port that is free now.
    FreePort,
    /// Raw TCP baseline: send a file through one connection (256 KiB writes).
    TcpSend {
        #[command(flatten)]
        end: EndpointArgs,
        #[arg(long)]
        file: PathBuf,
    },
    /// Raw TCP baseline: count the bytes of one connection (256 KiB reads).
    TcpRecv {
        #[command(flatten)]
        end: EndpointArgs,
        /// Fail unless exactly this many bytes arrive.
        #[arg(long)]
        expect: Option<u64>,
    },
    /// One HTTP/1.1 GET whose body is counted, not kept.
    HttpGet {
        #[arg(long)]
        server: SocketAddr,
        #[arg(long)]
        path: String,
        /// Extra request header, `Name: value`; repeatable.
        #[arg(long)]
        header: Vec<String>,
        /// Fail unless the body has exactly this many bytes.
        #[arg(long)]
        expect: Option<u64>,
    },
    /// One HTTP/1.1 upload streaming a file as the body (Content-Length, 256 KiB writes).
    HttpUpload {
        #[arg(long)]
        server: SocketAddr,
        #[arg(long)]
        path: String,
        #[arg(long)]
        file: PathBuf,
        #[arg(long, default_value = "PUT")]
        method: String,
        /// Extra request header, `Name: value`; repeatable.
        #[arg(long)]
        header: Vec<String>,
    },
}

/// Exactly one of: listen for the peer, or connect to it.
#[derive(Args)]
struct EndpointArgs {
    #[arg(long, conflicts_with = "connect", required_unless_present = "connect")]
    listen: Option<SocketAddr>,
    #[arg(long)]
    connect: Option<SocketAddr>,
}

impl EndpointArgs {
    fn endpoint(&self) -> anyhow::Result<Endpoint> {
        match (self.listen, self.connect) {
            (Some(a), None) => Ok(Endpoint::Listen(a)),
            (None, Some(a)) => Ok(Endpoint::Connect(a)),
            _ => bail!("give exactly one of --listen and --connect"),
        }
    }
}

fn check_count(what: &str, got: u64, expect: Option<u64>) -> anyhow::Result<()> {
    match expect {
        Some(want) if want != got => bail!("{what}: got {got} bytes, expected {want}"),
        _ => Ok(()),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        match cli.command {
            Command::Tftp {
                server,
                file,
                blksize,
                windowsize,
                repeat,
            } => {
                let start = Instant::now();
                let mut bytes = 0u64;
                for _ in 0..repeat {
                    bytes += tftp::get(server, &file, blksize, windowsize).await?;
                }
                report(bytes, start.elapsed(), repeat as usize);
            }
            Command::TftpMany {
                server,
                file,
                clients,
                blksize,
            } => {
                let start = Instant::now();
                let mut tasks = tokio::task::JoinSet::new();
                for _ in 0..clients {
                    let file = file.clone();
                    tasks.spawn(async move { tftp::get(server, &file, blksize, 0).await });
                }
                let (bytes, failures) = collect(&mut tasks).await;
                report(bytes, start.elapsed(), clients);
                println!("failures={failures}");
            }
            Command::HttpMany {
                server,
                path,
                clients,
            } => {
                let start = Instant::now();
                let mut tasks = tokio::task::JoinSet::new();
                for _ in 0..clients {
                    let path = path.clone();
                    tasks.spawn(async move { http::get(server, &path).await });
                }
                let (bytes, failures) = collect(&mut tasks).await;
                report(bytes, start.elapsed(), clients);
                println!("failures={failures}");
            }
            Command::Dhcp { iface, seconds } => {
                let (round_trips, lost, elapsed) =
                    dhcp::discover_loop(&iface, Duration::from_secs_f64(seconds)).await?;
                println!(
                    "round_trips={round_trips} lost={lost} seconds={:.3} per_second={:.1}",
                    elapsed.as_secs_f64(),
                    round_trips as f64 / elapsed.as_secs_f64()
                );
            }
            Command::FreePort => println!("{}", image::free_port()?),
            Command::TcpSend { end, file } => {
                let (bytes, elapsed) = image::tcp_send(end.endpoint()?, &file).await?;
                report(bytes, elapsed, 1);
            }
            Command::TcpRecv { end, expect } => {
                let (bytes, elapsed) = image::tcp_recv(end.endpoint()?).await?;
                check_count("tcp receive", bytes, expect)?;
                report(bytes, elapsed, 1);
            }
            Command::HttpGet {
                server,
                path,
                header,
                expect,
            } => {
                let start = Instant::now();
                let bytes = http::get_with_headers(server, &path, &header).await?;
                let elapsed = start.elapsed();
                check_count(&format!("GET {path}"), bytes, expect)?;
                report(bytes, elapsed, 1);
            }
            Command::HttpUpload {
                server,
                path,
                file,
                method,
                header,
            } => {
                let up = image::http_upload(server, &method, &path, &file, &header).await?;
                report(up.bytes, up.elapsed, 1);
                println!("status={} body={}", up.status, up.body);
            }
        }
        Ok(())
    })
}

async fn collect(tasks: &mut tokio::task::JoinSet<anyhow::Result<u64>>) -> (u64, usize) {
    let mut bytes = 0;
    let mut failures = 0;
    while let Some(res) = tasks.join_next().await {
        match res {
            Ok(Ok(n)) => bytes += n,
            Ok(Err(e)) => {
                failures += 1;
                eprintln!("carte-bench: {e:#}");
            }
            Err(e) => {
                failures += 1;
                eprintln!("carte-bench: task failed: {e}");
            }
        }
    }
    (bytes, failures)
}

fn report(bytes: u64, elapsed: Duration, transfers: usize) {
    let secs = elapsed.as_secs_f64();
    println!(
        "transfers={transfers} bytes={bytes} seconds={secs:.3} mib_per_s={:.2}",
        bytes as f64 / secs / (1024.0 * 1024.0)
    );
}
