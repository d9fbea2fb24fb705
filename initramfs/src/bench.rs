//! Benchmark mode, for `carte-lab bench-flash` only (`carte.bench=<disk>` on the command
//! line). After the plan and the disk step, carte-init fetches the plan's largest
//! non-kernel layer
//! into its cache through the normal fill path (make room, pipelined fetch, verify,
//! fsync, commit) and records its own peak RSS during that fill. Then, in the same VM and
//! the same run, it measures each stage of that pipeline alone, over the same number of
//! bytes: the raw HTTP download of the layer to nowhere, a dd-like sequential write of the
//! scratch disk `<disk>`, zstd decoding of the layer's wire bytes (staged on the scratch
//! disk first), and sha256. It prints one [`RESULT_MARKER`] line, posts it as an event,
//! and reboots (QEMU runs with `-no-reboot`, so it exits).
//!
//! The scratch disk is overwritten: it must be a whole disk other than the cache's, and
//! blank unless the plan allows wiping. Nothing here runs on a normal boot; the bench never
//! composes or switches root, and is never retried (it reboots after a failure too).

use crate::boot::Env;
use crate::cache::Cache;
use crate::disk;
use crate::fill::{self, FillError};
use crate::gpt::{self, Contents};
use crate::sys::{Errno, Sys};
use carte_contract::{Encoding, Event, Layer, LayerKind, Plan, Stage};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Start of the result line on the console.
pub const RESULT_MARKER: &str = "CARTE-BENCH";

/// Block size of the dd-like write and of every read loop (the pipeline's chunk size).
const BLOCK: usize = 1 << 20;

const MIB: f64 = (1u64 << 20) as f64;

/// A failed benchmark step, naming the disk, file or URL.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("bench: the plan has no layer to fetch")]
    NoLayer,
    #[error("bench: scratch disk {path}: {source}")]
    Scratch { path: PathBuf, source: io::Error },
    #[error("bench: {what} {url}: {why}")]
    Http {
        what: &'static str,
        url: String,
        why: String,
    },
    #[error("bench: {what} {url}: {got} bytes, expected {want}")]
    Short {
        what: &'static str,
        url: String,
        got: u64,
        want: u64,
    },
    #[error("bench: zstd decode from {path}: {source}")]
    Decode { path: PathBuf, source: io::Error },
    #[error("bench: {path}: {source}")]
    Proc { path: PathBuf, source: io::Error },
    #[error("bench: fill the cache with {layer}: {source}")]
    Fill {
        layer: String,
        source: Box<FillError>,
    },
    #[error(
        "bench: the scratch disk {scratch} holds the layer cache ({cache}); name another disk"
    )]
    ScratchIsCache { scratch: String, cache: String },
    #[error("bench: {scratch} is not a whole disk (disks: {disks})")]
    NotADisk { scratch: String, disks: String },
    #[error("bench: the scratch disk {scratch} has {have} bytes, the benchmark writes {need}")]
    ScratchTooSmall {
        scratch: String,
        have: u64,
        need: u64,
    },
    #[error(
        "bench: the scratch disk {scratch} holds {what}; it is left untouched (the policy \
         does not set may_wipe)"
    )]
    ScratchForeign { scratch: String, what: String },
    #[error("bench: reboot after the benchmark: {0}")]
    Reboot(Errno),
}

/// What one benchmark run measured. Every rate is expressed in decoded layer bytes per
/// second ("how fast would the whole layer be through this stage alone").
#[derive(Debug, Clone, PartialEq)]
pub struct Results {
    /// `name@version` of the layer.
    pub layer: String,
    /// Decoded bytes of the layer (what lands in the cache).
    pub layer_bytes: u64,
    /// Bytes on the wire.
    pub wire_bytes: u64,
    /// The real thing: fill of the cache with the layer (fetch, decode, both hashes,
    /// write, fsync, commit).
    pub flash: Duration,
    /// carte-init's peak RSS (VmHWM) from its start to the end of the fill, KiB.
    pub peak_rss_kib: u64,
    /// Its peak RSS during the fill alone (the peak was reset just before), KiB.
    pub fill_peak_rss_kib: u64,
    /// The layer's wire bytes over HTTP into nowhere.
    pub http: Duration,
    /// `layer_bytes` written sequentially to the raw scratch disk in 1 MiB blocks, then
    /// fsync (`dd bs=1M conv=fsync`).
    pub dd: Duration,
    /// Reading the staged wire bytes back from the scratch disk, caches dropped (the
    /// input side of the zstd measure, shown on its own).
    pub read: Duration,
    /// zstd decoding of the staged wire bytes (read from the scratch disk, caches
    /// dropped) into nowhere; `None` for a layer sent without encoding.
    pub zstd: Option<Duration>,
    /// sha256 of `layer_bytes` bytes from memory.
    pub sha256: Duration,
}

fn mib_per_s(bytes: u64, d: Duration) -> f64 {
    let secs = d.as_secs_f64();
    if secs > 0.0 {
        bytes as f64 / MIB / secs
    } else {
        f64::INFINITY
    }
}

impl Results {
    /// Each stage alone, as (name, MiB/s of layer bytes).
    pub fn stages(&self) -> Vec<(&'static str, f64)> {
        let r = |d| mib_per_s(self.layer_bytes, d);
        let mut v = vec![("http", r(self.http)), ("dd", r(self.dd))];
        if let Some(z) = self.zstd {
            v.push(("zstd", r(z)));
        }
        v.push(("sha256", r(self.sha256)));
        v
    }

    /// The slowest stage: what a perfect pipeline could at best reach.
    pub fn bound(&self) -> (&'static str, f64) {
        self.stages()
            .into_iter()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or(("none", f64::INFINITY))
    }

    /// The rate of the stages run one after the other (no overlap at all): what the
    /// fill would reach with a single CPU and no pipelining.
    pub fn serial(&self) -> f64 {
        let secs: f64 = self.stages().iter().map(|(_, r)| 1.0 / r).sum();
        1.0 / secs
    }

    /// The fill's rate over the bound (1.0 = as fast as the slowest stage alone).
    pub fn ratio(&self) -> f64 {
        mib_per_s(self.layer_bytes, self.flash) / self.bound().1
    }

    /// The console line `carte-lab bench-flash` reads: `key=value` words after the marker.
    pub fn line(&self) -> String {
        let mut w = vec![
            RESULT_MARKER.to_string(),
            format!("layer={}", self.layer),
            format!("layer_bytes={}", self.layer_bytes),
            format!("wire_bytes={}", self.wire_bytes),
            format!("flash_s={:.3}", self.flash.as_secs_f64()),
            format!("flash_mibps={:.1}", mib_per_s(self.layer_bytes, self.flash)),
        ];
        for (name, rate) in self.stages() {
            w.push(format!("{name}_mibps={rate:.1}"));
        }
        w.push(format!(
            "read_mibps={:.1}",
            mib_per_s(self.layer_bytes, self.read)
        ));
        let (name, rate) = self.bound();
        w.push(format!("bound={name}"));
        w.push(format!("bound_mibps={rate:.1}"));
        w.push(format!("ratio={:.3}", self.ratio()));
        w.push(format!("serial_mibps={:.1}", self.serial()));
        w.push(format!("peak_rss_kib={}", self.peak_rss_kib));
        w.push(format!("fill_peak_rss_kib={}", self.fill_peak_rss_kib));
        w.join(" ")
    }
}

/// `VmHWM` of a `/proc/<pid>/status` text, in KiB.
pub fn vm_hwm_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
}

/// The layer the bench fetches: the largest of the plan's layers that is not the
/// kernel's modules.
pub fn pick_layer(layers: &[Layer]) -> Option<&Layer> {
    layers
        .iter()
        .filter(|l| l.kind != LayerKind::Kernel)
        .max_by_key(|l| l.uncompressed_size)
}

fn proc_err(path: &Path) -> impl Fn(io::Error) -> BenchError + '_ {
    move |source| BenchError::Proc {
        path: path.to_path_buf(),
        source,
    }
}

fn peak_rss(proc_root: &Path) -> Result<u64, BenchError> {
    let path = proc_root.join("self/status");
    let text = std::fs::read_to_string(&path).map_err(proc_err(&path))?;
    vm_hwm_kib(&text).ok_or_else(|| BenchError::Proc {
        path,
        source: io::Error::other("no VmHWM line"),
    })
}

/// Reset VmHWM to the current RSS (`clear_refs` 5, Linux 4.0+).
fn reset_peak_rss(proc_root: &Path) -> Result<(), BenchError> {
    let path = proc_root.join("self/clear_refs");
    std::fs::write(&path, "5").map_err(proc_err(&path))
}

/// Drop clean page cache, so a read measures the disk and not memory.
fn drop_caches(sys: &mut dyn Sys, proc_root: &Path) -> Result<(), BenchError> {
    sys.sync();
    let path = proc_root.join("sys/vm/drop_caches");
    std::fs::write(&path, "3").map_err(proc_err(&path))
}

/// Read `r` to its end in [`BLOCK`] pieces into `w`; returns the bytes moved.
fn pump(r: &mut dyn Read, w: &mut dyn Write) -> io::Result<u64> {
    let mut buf = vec![0u8; BLOCK];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// GET `url` and copy its body into `w`; the body must be `want` bytes long.
fn http_copy(
    agent: &ureq::Agent,
    what: &'static str,
    url: &str,
    want: u64,
    w: &mut dyn Write,
) -> Result<(), BenchError> {
    let http = |why: String| BenchError::Http {
        what,
        url: url.to_string(),
        why,
    };
    let resp = agent.get(url).call().map_err(|e| http(e.to_string()))?;
    if resp.status().as_u16() != 200 {
        return Err(http(format!("server answered {}", resp.status().as_u16())));
    }
    let mut body = resp.into_body().into_reader();
    let got = pump(&mut body, w).map_err(|e| http(e.to_string()))?;
    if got != want {
        return Err(BenchError::Short {
            what,
            url: url.to_string(),
            got,
            want,
        });
    }
    Ok(())
}

/// The lengths of the [`BLOCK`] pieces that make up `bytes` (the last one shorter).
fn pieces(bytes: u64) -> impl Iterator<Item = usize> {
    let block = BLOCK as u64;
    (0..bytes.div_ceil(block)).map(move |i| (bytes - i * block).min(block) as usize)
}

/// Write `bytes` to `path` from offset 0 in [`BLOCK`] pieces of a non-zero pattern, then
/// fsync: `dd if=<pattern> of=<path> bs=1M conv=fsync`.
pub fn dd_write(path: &Path, bytes: u64) -> io::Result<()> {
    let block: Vec<u8> = (0..BLOCK).map(|i| (i % 251) as u8 + 1).collect();
    let mut f = OpenOptions::new().write(true).open(path)?;
    for n in pieces(bytes) {
        f.write_all(&block[..n])?;
    }
    f.sync_all()
}

/// sha256 of `bytes` bytes of a pattern held in one [`BLOCK`] buffer.
pub fn sha256_of(bytes: u64) -> String {
    let block: Vec<u8> = (0..BLOCK).map(|i| (i % 253) as u8).collect();
    let mut h = Sha256::new();
    for n in pieces(bytes) {
        h.update(&block[..n]);
    }
    crate::fetch::hex(h.finalize())
}

/// Decode the first `wire` bytes of `path` as zstd into nowhere; returns the decoded
/// bytes.
pub fn zstd_decode(path: &Path, wire: u64) -> io::Result<u64> {
    let input = File::open(path)?.take(wire);
    let mut d = zstd::stream::read::Decoder::new(input)?;
    pump(&mut d, &mut io::sink())
}

/// Read the first `bytes` bytes of `path` into nowhere.
fn read_back(path: &Path, bytes: u64) -> io::Result<u64> {
    pump(&mut File::open(path)?.take(bytes), &mut io::sink())
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed())
}

/// True when `device` (`/dev/vda1`, `tmpfs`) is the disk `scratch` (`vdb`) or one of its
/// partitions.
pub fn on_disk(device: &str, scratch: &str) -> bool {
    device.strip_prefix("/dev/").is_some_and(|d| {
        d.strip_prefix(scratch).is_some_and(|rest| {
            rest.is_empty() || rest.bytes().all(|b| b.is_ascii_digit() || b == b'p')
        })
    })
}

/// Before anything runs: `scratch_name` must be a whole disk of the machine, not the one
/// holding the cache, big enough for `need` bytes, and blank unless the plan allows
/// wiping (the same rule as for the cache disk). Returns its device path.
pub fn check_scratch(
    env: &Env,
    plan: &Plan,
    (scratch_name, cache_device): (&str, &str),
    need: u64,
) -> Result<PathBuf, BenchError> {
    let scratch = scratch_name.to_string();
    let disks = disk::list_disks(&env.sys_root);
    let Some(d) = disks.iter().find(|d| d.name == scratch_name) else {
        let names: Vec<&str> = disks.iter().map(|d| d.name.as_str()).collect();
        return Err(BenchError::NotADisk {
            scratch,
            disks: names.join(" "),
        });
    };
    if on_disk(cache_device, scratch_name) {
        return Err(BenchError::ScratchIsCache {
            scratch,
            cache: cache_device.to_string(),
        });
    }
    let have = d.sectors * 512;
    if have < need {
        return Err(BenchError::ScratchTooSmall {
            scratch,
            have,
            need,
        });
    }
    let path = env.dev_root.join(scratch_name);
    let err = |source| BenchError::Scratch {
        path: path.clone(),
        source,
    };
    let mut f = File::open(&path).map_err(err)?;
    match gpt::probe(&mut f, have).map_err(err)? {
        Contents::Blank => {}
        Contents::Foreign(_) if plan.disk.may_wipe => {}
        Contents::Foreign(what) => return Err(BenchError::ScratchForeign { scratch, what }),
    }
    Ok(path)
}

/// The whole benchmark (see the module doc), with the cache on `disks.1`. With the real
/// `Sys` it ends in a reboot, also when it fails (after reporting why): a benchmark is
/// never retried.
pub fn run(
    sys: &mut dyn Sys,
    agent: &ureq::Agent,
    plan: &Plan,
    env: &Env,
    disks: (&str, &str),
    report: &mut dyn FnMut(Event),
) -> Result<(), BenchError> {
    let r = measure(sys, agent, plan, env, disks, report);
    if let Err(e) = &r {
        report(Event::failed(Stage::Fetch, e.to_string()));
    }
    sys.sync();
    sys.reboot().map_err(BenchError::Reboot)?;
    r
}

fn measure(
    sys: &mut dyn Sys,
    agent: &ureq::Agent,
    plan: &Plan,
    env: &Env,
    disks: (&str, &str),
    report: &mut dyn FnMut(Event),
) -> Result<(), BenchError> {
    let layer = pick_layer(&plan.layers).ok_or(BenchError::NoLayer)?;
    let scratch = check_scratch(env, plan, disks, layer.uncompressed_size.max(layer.size))?;
    let label = format!("{}@{}", layer.name, layer.version);
    let scratch_err = |source| BenchError::Scratch {
        path: scratch.clone(),
        source,
    };
    let say = |report: &mut dyn FnMut(Event), m: String| {
        report(Event {
            message: Some(format!("bench: {m}")),
            ..Event::stage(Stage::Fetch)
        })
    };

    // 1. The product path, from a cold cache.
    let boot_peak = peak_rss(&env.proc_root)?;
    drop_caches(sys, &env.proc_root)?;
    reset_peak_rss(&env.proc_root)?;
    let fill_err = |source| BenchError::Fill {
        layer: label.clone(),
        source: Box::new(source),
    };
    let (filled, flash) = timed(|| -> Result<(), BenchError> {
        let dir = env.layout.cache_mount.join("cache");
        let cache_err = |e| fill_err(FillError::Cache(e));
        let (mut cache, _) = Cache::open(&dir).map_err(cache_err)?;
        // A layer cached by an earlier run would be "filled" in no time.
        if cache.contains(&layer.sha256_written) {
            cache
                .evict(std::slice::from_ref(&layer.sha256_written))
                .map_err(cache_err)?;
        }
        let keep: HashSet<String> = [layer.sha256_written.clone()].into();
        let how = fill::How {
            stage: Stage::Fetch,
            attempts: 1,
        };
        fill::ensure(sys, agent, &mut cache, &[layer], &keep, how, report).map_err(fill_err)
    });
    filled?;
    let fill_peak = peak_rss(&env.proc_root)?;
    say(
        report,
        format!(
            "{label} fetched into the cache in {:.1}s",
            flash.as_secs_f64()
        ),
    );

    // 2. Each stage alone.
    let (r, http) = timed(|| http_copy(agent, "download", &layer.url, layer.size, &mut io::sink()));
    r?;
    say(
        report,
        format!("raw HTTP done in {:.1}s", http.as_secs_f64()),
    );
    let (r, dd) = timed(|| dd_write(&scratch, layer.uncompressed_size));
    r.map_err(scratch_err)?;
    say(
        report,
        format!("raw disk write done in {:.1}s", dd.as_secs_f64()),
    );
    let (read, zstd) = match layer.encoding {
        Encoding::None => (Duration::ZERO, None),
        Encoding::Zstd => {
            // Stage the wire bytes on the scratch disk: 512 MiB of RAM cannot hold them.
            let mut f = OpenOptions::new()
                .write(true)
                .open(&scratch)
                .map_err(scratch_err)?;
            http_copy(agent, "stage", &layer.url, layer.size, &mut f)?;
            f.sync_all().map_err(scratch_err)?;
            drop(f);
            drop_caches(sys, &env.proc_root)?;
            let (r, read) = timed(|| read_back(&scratch, layer.size));
            r.map_err(scratch_err)?;
            drop_caches(sys, &env.proc_root)?;
            let (r, zstd) = timed(|| zstd_decode(&scratch, layer.size));
            let decoded = r.map_err(|source| BenchError::Decode {
                path: scratch.clone(),
                source,
            })?;
            if decoded != layer.uncompressed_size {
                return Err(BenchError::Decode {
                    path: scratch.clone(),
                    source: io::Error::other(format!(
                        "decoded {decoded} bytes, the plan says {}",
                        layer.uncompressed_size
                    )),
                });
            }
            say(
                report,
                format!("zstd decode done in {:.1}s", zstd.as_secs_f64()),
            );
            (read, Some(zstd))
        }
    };
    let (digest, sha256) = timed(|| sha256_of(layer.uncompressed_size));
    std::hint::black_box(digest);

    let results = Results {
        layer: label,
        layer_bytes: layer.uncompressed_size,
        wire_bytes: layer.size,
        flash,
        peak_rss_kib: boot_peak.max(fill_peak),
        fill_peak_rss_kib: fill_peak,
        http,
        dd,
        read,
        zstd,
        sha256,
    };
    report(Event {
        message: Some(results.line()),
        ..Event::stage(Stage::Fetch)
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results() -> Results {
        Results {
            layer: "big@1".into(),
            layer_bytes: 100 << 20,
            wire_bytes: 40 << 20,
            flash: Duration::from_secs(4),
            peak_rss_kib: 20_000,
            fill_peak_rss_kib: 18_000,
            http: Duration::from_secs(2),
            dd: Duration::from_secs(1),
            read: Duration::from_millis(500),
            zstd: Some(Duration::from_millis(2500)),
            sha256: Duration::from_secs(1),
        }
    }

    #[test]
    fn the_bound_is_the_slowest_stage_and_the_ratio_is_against_it() {
        let r = results();
        assert_eq!(r.bound(), ("zstd", 40.0));
        assert!((r.ratio() - 25.0 / 40.0).abs() < 1e-9);
        // 1 / (1/50 + 1/100 + 1/40 + 1/100) MiB/s: every stage in turn.
        assert!((r.serial() - 1.0 / 0.065).abs() < 1e-9);
        assert_eq!(
            r.line(),
            "CARTE-BENCH layer=big@1 layer_bytes=104857600 wire_bytes=41943040 flash_s=4.000 \
             flash_mibps=25.0 http_mibps=50.0 dd_mibps=100.0 zstd_mibps=40.0 \
             sha256_mibps=100.0 read_mibps=200.0 bound=zstd bound_mibps=40.0 ratio=0.625 \
             serial_mibps=15.4 peak_rss_kib=20000 fill_peak_rss_kib=18000"
        );
        // Without encoding there is no zstd stage.
        let plain = Results { zstd: None, ..r };
        assert_eq!(plain.bound(), ("http", 50.0));
        assert!(!plain.line().contains("zstd_mibps"));
    }

    #[test]
    fn vm_hwm_is_read_from_proc_status() {
        let status =
            "Name:\tcarte-init\nVmPeak:\t  20000 kB\nVmHWM:\t   12345 kB\nVmRSS:\t 100 kB\n";
        assert_eq!(vm_hwm_kib(status), Some(12345));
        assert_eq!(vm_hwm_kib("VmRSS: 1 kB\n"), None);
        assert_eq!(vm_hwm_kib("VmHWM: lots kB\n"), None);
        // The real file of this process parses.
        let own = std::fs::read_to_string("/proc/self/status").expect("status");
        assert!(vm_hwm_kib(&own).is_some_and(|k| k > 0));
    }

    #[test]
    fn stage_helpers_move_exactly_the_bytes_asked() {
        let t = tempfile::tempdir().expect("tempdir");
        let disk = t.path().join("scratch");
        File::create(&disk).expect("create");
        let n = 3 * BLOCK as u64 + 17;
        dd_write(&disk, n).expect("dd");
        assert_eq!(std::fs::metadata(&disk).expect("meta").len(), n);
        assert_eq!(read_back(&disk, n).expect("read"), n);
        // A zstd stream staged at the start of a bigger disk decodes to its content.
        let data: Vec<u8> = (0..n).map(|i| (i % 7) as u8).collect();
        let wire = zstd::encode_all(&data[..], 3).expect("encode");
        std::fs::write(&disk, [&wire[..], &[0xaa; 4096]].concat()).expect("w");
        assert_eq!(zstd_decode(&disk, wire.len() as u64).expect("decode"), n);
        // sha256 over the pattern equals the one of the same bytes hashed at once.
        let pattern: Vec<u8> = (0..BLOCK + 5).map(|i| ((i % BLOCK) % 253) as u8).collect();
        let direct = crate::fetch::hex(Sha256::digest(&pattern));
        assert_eq!(sha256_of(pattern.len() as u64), direct);
    }

    #[test]
    fn the_scratch_disk_is_never_the_cache_disk() {
        assert!(on_disk("/dev/vdb1", "vdb"));
        assert!(on_disk("/dev/vdb", "vdb"));
        assert!(on_disk("/dev/nvme1n1p1", "nvme1n1"));
        assert!(!on_disk("/dev/vda1", "vdb"));
        assert!(!on_disk("/dev/vdba1", "vdb"));
        assert!(!on_disk("tmpfs", "vdb"));
    }

    /// A plan whose disk rule allows wiping or not (only `disk` matters here).
    fn plan(may_wipe: bool) -> Plan {
        serde_json::from_value(serde_json::json!({
            "machine": {"mac": "52:54:00:00:00:01"},
            "mode": "compose",
            "disk": {"select": "largest", "may_wipe": may_wipe},
            "layers": [],
            "machine_layer": "ephemeral",
            "init": "/sbin/init",
            "token": "t",
            "events_url": "http://192.0.2.1/e",
        }))
        .expect("plan")
    }

    #[test]
    fn the_scratch_disk_must_be_another_blank_whole_disk_big_enough() {
        let t = tempfile::tempdir().expect("tempdir");
        let env = Env {
            sys_root: t.path().join("sys"),
            dev_root: t.path().join("dev"),
            ..Env::default()
        };
        std::fs::create_dir_all(&env.dev_root).expect("mkdir");
        for (name, mib) in [("vda", 8u64), ("vdb", 4)] {
            let d = env.sys_root.join("block").join(name);
            std::fs::create_dir_all(d.join(format!("{name}1"))).expect("mkdir");
            std::fs::write(d.join("size"), format!("{}\n", mib << 11)).expect("w");
            std::fs::write(d.join(format!("{name}1/partition")), "1\n").expect("w");
            let f = File::create(env.dev_root.join(name)).expect("create");
            f.set_len(mib << 20).expect("len");
        }
        let check = |scratch: &str, cache: &str, need: u64, wipe: bool| {
            check_scratch(&env, &plan(wipe), (scratch, cache), need).map_err(|e| e.to_string())
        };
        assert_eq!(
            check("vdb", "/dev/vda1", 1 << 20, false),
            Ok(env.dev_root.join("vdb"))
        );
        assert_eq!(
            check("vda1", "/dev/vda2", 1 << 20, false),
            Err("bench: vda1 is not a whole disk (disks: vda vdb)".into())
        );
        assert_eq!(
            check("vda", "/dev/vda1", 1 << 20, false),
            Err(
                "bench: the scratch disk vda holds the layer cache (/dev/vda1); name another disk"
                    .into()
            )
        );
        assert_eq!(
            check("vdb", "/dev/vda1", 5 << 20, false),
            Err(
                "bench: the scratch disk vdb has 4194304 bytes, the benchmark writes 5242880"
                    .into()
            )
        );
        // Foreign data on it: left alone unless the plan allows wiping.
        let mut gpt = vec![0u8; 1024];
        gpt[512..520].copy_from_slice(b"EFI PART");
        std::fs::write(env.dev_root.join("vdb"), &gpt).expect("w");
        File::options()
            .write(true)
            .open(env.dev_root.join("vdb"))
            .and_then(|f| f.set_len(4 << 20))
            .expect("len");
        assert_eq!(
            check("vdb", "/dev/vda1", 1 << 20, false),
            Err(
                "bench: the scratch disk vdb holds a GPT; it is left untouched (the policy \
                 does not set may_wipe)"
                    .into()
            )
        );
        assert!(check("vdb", "/dev/vda1", 1 << 20, true).is_ok());
    }

    #[test]
    fn the_largest_layer_is_benchmarked() {
        let layer = |name: &str, size: u64| Layer {
            name: name.into(),
            version: 1,
            kind: if name == "modules" {
                LayerKind::Kernel
            } else {
                LayerKind::System
            },
            format: carte_contract::Format::Erofs,
            encoding: Encoding::Zstd,
            size: size / 2,
            uncompressed_size: size,
            sha256: "a".repeat(64),
            sha256_written: "b".repeat(64),
            url: format!("http://192.0.2.1/{name}"),
            mount_point: None,
            lazy: false,
            autostart: None,
            restore: None,
        };
        let layers = [
            layer("modules", 5000),
            layer("big", 1000),
            layer("small", 5),
        ];
        assert_eq!(pick_layer(&layers).map(|l| l.name.as_str()), Some("big"));
        assert!(pick_layer(&[]).is_none());
    }
}
