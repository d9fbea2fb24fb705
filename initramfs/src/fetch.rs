//! The layer download pipeline: HTTP GET → (zstd decode) → sha256 → write to a temp file in
//! the cache (or any [`Sink`]: disk mode streams onto a whole disk), with a network+decode
//! thread, a thread hashing the decoded bytes, one hashing the wire bytes of an encoded
//! layer, and the caller's thread writing, overlapping through small bounded channels
//! (nothing is held whole in memory). A dropped
//! connection is resumed with `Range` from the last byte received, feeding the same decoder and hashers. At the
//! end the sizes and both hashes are checked and the file fsynced; only then does the
//! caller get a [`Verified`] for [`crate::cache::Cache::commit`]. On any failure the temp
//! file is removed: a mismatch or truncation never becomes a cached layer.
//!
//! It does not retry a failed download as a whole (the caller does, with backoff), and
//! does not touch the index.

use crate::cache::Verified;
use carte_contract::{Encoding, Layer};
use sha2::{Digest, Sha256};
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// Chunk size between the pipeline threads; with [`CHANNEL_DEPTH`] it bounds memory.
const CHUNK: usize = 1 << 20;
/// Chunks in flight per channel (16 MiB of decoded bytes): enough to ride out the page
/// cache's writeback stalls on a small machine without stopping the network and hash
/// threads (in a 512 MiB VM, 4 → 16 took a 1 GiB fill from 23.5 to 31.6 MiB/s).
const CHANNEL_DEPTH: usize = 16;

/// What to download and what it must turn out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Absolute URL.
    pub url: String,
    /// Bytes on the wire.
    pub size: u64,
    /// sha256 of the bytes on the wire.
    pub sha256: String,
    /// Wire encoding.
    pub encoding: Encoding,
    /// Bytes written after decoding.
    pub uncompressed_size: u64,
    /// sha256 of the bytes written.
    pub sha256_written: String,
}

impl From<&Layer> for Source {
    fn from(l: &Layer) -> Source {
        Source {
            url: l.url.clone(),
            size: l.size,
            sha256: l.sha256.clone(),
            encoding: l.encoding,
            uncompressed_size: l.uncompressed_size,
            sha256_written: l.sha256_written.clone(),
        }
    }
}

/// Knobs of one download.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// How many times a dropped connection is resumed before giving up.
    pub resumes: u32,
    /// Pause before a resume (doubles each time, up to 30 s).
    pub backoff: Duration,
    /// How often progress is reported.
    pub progress_every: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            resumes: 8,
            backoff: Duration::from_secs(1),
            progress_every: Duration::from_secs(3),
        }
    }
}

/// Progress of a download, on the wire bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Wire bytes received.
    pub done: u64,
    /// Wire bytes expected.
    pub total: u64,
    /// Average rate since the start, bytes per second.
    pub bytes_per_sec: f64,
    /// Estimated time left at that rate.
    pub eta: Option<Duration>,
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MB: f64 = 1e6;
        write!(
            f,
            "{:.1}/{:.1} MB, {:.1} MB/s",
            self.done as f64 / MB,
            self.total as f64 / MB,
            self.bytes_per_sec / MB
        )?;
        match self.eta {
            Some(eta) => write!(f, ", ETA {}s", eta.as_secs()),
            None => Ok(()),
        }
    }
}

impl Progress {
    fn at(done: u64, total: u64, elapsed: Duration) -> Progress {
        let secs = elapsed.as_secs_f64();
        let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
        let eta =
            (rate > 0.0).then(|| Duration::from_secs_f64(total.saturating_sub(done) as f64 / rate));
        Progress {
            done,
            total,
            bytes_per_sec: rate,
            eta,
        }
    }
}

/// Why a download failed. Every variant names the URL or the file.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("fetch {url}: {why}")]
    Http { url: String, why: String },
    #[error("fetch {url}: server answered {status}")]
    Status { url: String, status: u16 },
    #[error("fetch {url}: gave up after {resumes} resumes: {last}")]
    GaveUp {
        url: String,
        resumes: u32,
        last: String,
    },
    #[error("fetch {url}: {got} bytes received, {want} announced")]
    Length { url: String, got: u64, want: u64 },
    #[error("fetch {url}: sha256 of the bytes received is {got}, the plan says {want}")]
    Sha256 {
        url: String,
        got: String,
        want: String,
    },
    #[error("fetch {url}: decoded to {got} bytes, the plan says {want}")]
    WrittenLength { url: String, got: u64, want: u64 },
    #[error("fetch {url}: sha256 of the decoded bytes is {got}, the plan says {want}")]
    WrittenSha256 {
        url: String,
        got: String,
        want: String,
    },
    #[error("fetch {url}: zstd decode: {source}")]
    Decode { url: String, source: io::Error },
    #[error("fetch: write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// Lowercase hex of a digest (how plans and the cache name sha256s).
pub(crate) fn hex(d: impl AsRef<[u8]>) -> String {
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A body reader that resumes with `Range` when the connection drops, hashing every wire
/// byte exactly once. Stops with an error after `resumes` failed attempts.
struct ResumingBody {
    agent: ureq::Agent,
    url: String,
    size: u64,
    offset: u64,
    wire_hash: WireHash,
    body: Option<ureq::BodyReader<'static>>,
    resumes_left: u32,
    resumes_used: u32,
    backoff: Duration,
    shared_offset: Arc<AtomicU64>,
    /// The precise error behind the last `io::Error` we returned.
    failure: Option<FetchError>,
}

impl ResumingBody {
    fn open(&mut self) -> Result<ureq::BodyReader<'static>, FetchError> {
        let mut req = self.agent.get(&self.url);
        if self.offset > 0 {
            req = req.header("Range", format!("bytes={}-", self.offset));
        }
        let resp = req.call().map_err(|e| FetchError::Http {
            url: self.url.clone(),
            why: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let skip = match status {
            200 => {
                if let Some(len) = header("content-length").and_then(|v| v.parse::<u64>().ok()) {
                    if len != self.size {
                        return Err(FetchError::Length {
                            url: self.url.clone(),
                            got: len,
                            want: self.size,
                        });
                    }
                }
                // A server that ignores Range resends from the start: skip what we have.
                self.offset
            }
            206 => {
                let want = format!(
                    "bytes {}-{}/{}",
                    self.offset,
                    self.size.saturating_sub(1),
                    self.size
                );
                let got = header("content-range").unwrap_or_default();
                if got != want {
                    return Err(FetchError::Http {
                        url: self.url.clone(),
                        why: format!("resume answered content-range {got:?}, expected {want:?}"),
                    });
                }
                0
            }
            status => {
                return Err(FetchError::Status {
                    url: self.url.clone(),
                    status,
                })
            }
        };
        let mut body = resp.into_body().into_reader();
        if skip > 0 {
            let skipped = io::copy(&mut (&mut body).take(skip), &mut io::sink()).map_err(|e| {
                FetchError::Http {
                    url: self.url.clone(),
                    why: format!("skipping {skip} bytes already received: {e}"),
                }
            })?;
            if skipped != skip {
                return Err(FetchError::Http {
                    url: self.url.clone(),
                    why: "connection dropped while skipping bytes already received".into(),
                });
            }
        }
        Ok(body)
    }

    /// Record a failed attempt; `Err` when the budget is spent or the failure is final.
    fn lost(&mut self, why: FetchError) -> Result<(), FetchError> {
        self.body = None;
        let fatal = matches!(why, FetchError::Status { status, .. } if (400..500).contains(&status))
            || matches!(why, FetchError::Length { .. });
        if fatal {
            return Err(why);
        }
        if self.resumes_left == 0 {
            return Err(FetchError::GaveUp {
                url: self.url.clone(),
                resumes: self.resumes_used,
                last: why.to_string(),
            });
        }
        self.resumes_left -= 1;
        self.resumes_used += 1;
        std::thread::sleep(self.backoff);
        self.backoff = (self.backoff * 2).min(Duration::from_secs(30));
        Ok(())
    }

    fn read_inner(&mut self, buf: &mut [u8]) -> Result<usize, FetchError> {
        loop {
            if self.offset >= self.size {
                return Ok(0);
            }
            if self.body.is_none() {
                match self.open() {
                    Ok(b) => self.body = Some(b),
                    Err(e) => {
                        self.lost(e)?;
                        continue;
                    }
                }
            }
            let Some(body) = self.body.as_mut() else {
                continue;
            };
            // Never read past the announced size.
            let room = usize::try_from(self.size - self.offset).unwrap_or(usize::MAX);
            let n = buf.len().min(room);
            match body.read(&mut buf[..n]) {
                Ok(0) => {
                    let e = FetchError::Http {
                        url: self.url.clone(),
                        why: format!("connection closed at byte {} of {}", self.offset, self.size),
                    };
                    self.lost(e)?;
                }
                Ok(n) => {
                    if let WireHash::Thread { tx, .. } = &self.wire_hash {
                        // A failed send means the hash thread died; joining it reports that.
                        let _ = tx.send(buf[..n].to_vec());
                    }
                    self.offset += n as u64;
                    self.shared_offset.store(self.offset, Ordering::Relaxed);
                    return Ok(n);
                }
                Err(e) => {
                    let e = FetchError::Http {
                        url: self.url.clone(),
                        why: format!("read at byte {}: {e}", self.offset),
                    };
                    self.lost(e)?;
                }
            }
        }
    }
}

impl Read for ResumingBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_inner(buf).map_err(|e| {
            let msg = e.to_string();
            self.failure = Some(e);
            io::Error::other(msg)
        })
    }
}

/// What the network thread hands back when done.
struct WireResult {
    received: u64,
    /// The wire hash, when it was not the hash thread's (zstd layers).
    sha256: Option<String>,
}

/// Where the wire bytes are hashed.
enum WireHash {
    /// Unencoded layers: the wire bytes are the decoded bytes, which the hash thread
    /// hashes anyway.
    ByHashThread,
    /// zstd layers: a copy of each read goes to a thread of its own, since decoding keeps
    /// the network thread busy.
    Thread {
        tx: mpsc::SyncSender<Vec<u8>>,
        handle: std::thread::JoinHandle<String>,
    },
}

impl WireHash {
    fn for_encoding(encoding: Encoding) -> WireHash {
        match encoding {
            Encoding::None => WireHash::ByHashThread,
            Encoding::Zstd => {
                let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(CHANNEL_DEPTH);
                let handle = std::thread::spawn(move || {
                    let mut h = Sha256::new();
                    for piece in rx.iter() {
                        h.update(&piece);
                    }
                    hex(h.finalize())
                });
                WireHash::Thread { tx, handle }
            }
        }
    }

    /// The digest of everything sent, once the sender is gone; `Err` if the thread died.
    fn finish(self) -> Result<Option<String>, ()> {
        match self {
            WireHash::ByHashThread => Ok(None),
            WireHash::Thread { tx, handle } => {
                drop(tx);
                handle.join().map(Some).map_err(|_| ())
            }
        }
    }
}

/// How [`send_all`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// The reader reached its end.
    All,
    /// The writer is gone (it failed and reports its own error): stop downloading.
    WriterGone,
}

/// Read `reader` to its end in chunks and send them; stops as soon as the writer is gone.
fn send_all(reader: &mut dyn Read, tx: &mpsc::SyncSender<Vec<u8>>) -> io::Result<Sent> {
    loop {
        let mut chunk = vec![0u8; CHUNK];
        let mut filled = 0;
        while filled < CHUNK {
            match reader.read(&mut chunk[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            return Ok(Sent::All);
        }
        chunk.truncate(filled);
        if tx.send(chunk).is_err() {
            return Ok(Sent::WriterGone);
        }
    }
}

/// Hash side: hash each decoded chunk and pass it on to the writer. Stops quietly when
/// either side is gone; returns the digest of everything it saw.
fn hash_and_forward(rx: mpsc::Receiver<Vec<u8>>, tx: mpsc::SyncSender<Vec<u8>>) -> String {
    let mut hasher = Sha256::new();
    for chunk in rx.iter() {
        hasher.update(&chunk);
        if tx.send(chunk).is_err() {
            break;
        }
    }
    hex(hasher.finalize())
}

/// Network + decode side: read, decode, send chunks. Returns the wire totals.
fn produce(
    mut body: ResumingBody,
    encoding: Encoding,
    tx: mpsc::SyncSender<Vec<u8>>,
) -> Result<WireResult, FetchError> {
    let url = body.url.clone();
    let decode_err = |source| FetchError::Decode {
        url: url.clone(),
        source,
    };
    let r = match encoding {
        Encoding::None => send_all(&mut body, &tx),
        Encoding::Zstd => match zstd::stream::read::Decoder::new(&mut body) {
            Ok(mut decoder) => send_all(&mut decoder, &tx),
            Err(e) => Err(e),
        },
    };
    // Bytes after the last zstd frame still count for the wire hash and size; after a
    // write failure nothing more is downloaded.
    let r = r.and_then(|sent| match sent {
        Sent::All => io::copy(&mut body, &mut io::sink()).map(|_| ()),
        Sent::WriterGone => Ok(()),
    });
    let failure = body.failure.take();
    let received = body.offset;
    let sha256 = body.wire_hash.finish().map_err(|()| FetchError::Http {
        url: url.clone(),
        why: "wire hash thread panicked".into(),
    });
    if let Err(e) = r {
        // A network failure is more precise than the decoder's view of it.
        return Err(failure.unwrap_or_else(|| decode_err(e)));
    }
    Ok(WireResult {
        received,
        sha256: sha256?,
    })
}

/// Download `src` into `temp` and verify it. On success the file is complete, fsynced and
/// verified; on failure it has been removed.
pub fn fetch(
    agent: &ureq::Agent,
    src: &Source,
    temp: &Path,
    opts: Options,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Verified, FetchError> {
    let r = fetch_inner(agent, src, temp, opts, progress);
    if r.is_err() {
        // Best effort: the cache also clears tmp/ when it opens.
        let _ = std::fs::remove_file(temp);
    }
    r
}

/// Where the decoded bytes go: a cache temp file, or a whole disk in `disk` mode.
pub trait Sink {
    /// Take the next decoded bytes, in stream order.
    fn write_chunk(&mut self, chunk: &[u8]) -> io::Result<()>;
    /// Everything arrived and was verified: make it durable (fsync).
    fn finish(&mut self) -> io::Result<()>;
}

/// A plain file, written sequentially.
struct FileSink(File);

impl Sink for FileSink {
    fn write_chunk(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.0.write_all(chunk)
    }

    fn finish(&mut self) -> io::Result<()> {
        self.0.sync_all()
    }
}

fn fetch_inner(
    agent: &ureq::Agent,
    src: &Source,
    temp: &Path,
    opts: Options,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Verified, FetchError> {
    let file = File::create(temp).map_err(|source| FetchError::Write {
        path: temp.to_path_buf(),
        source,
    })?;
    let written = stream(agent, src, &mut FileSink(file), temp, opts, progress)?;
    Ok(Verified::after_checking(
        temp.to_path_buf(),
        src.sha256_written.clone(),
        written,
    ))
}

/// Download `src` into `sink` (named `target` in errors), checking sizes and both hashes;
/// `sink.finish()` runs only once everything matched. Returns the decoded bytes written.
/// The caller cleans up the target on failure.
pub fn stream(
    agent: &ureq::Agent,
    src: &Source,
    sink: &mut dyn Sink,
    target: &Path,
    opts: Options,
    progress: &mut dyn FnMut(&Progress),
) -> Result<u64, FetchError> {
    let werr = |source| FetchError::Write {
        path: target.to_path_buf(),
        source,
    };
    let shared_offset = Arc::new(AtomicU64::new(0));
    let body = ResumingBody {
        agent: agent.clone(),
        url: src.url.clone(),
        size: src.size,
        offset: 0,
        wire_hash: WireHash::for_encoding(src.encoding),
        body: None,
        resumes_left: opts.resumes,
        resumes_used: 0,
        backoff: opts.backoff,
        shared_offset: shared_offset.clone(),
        failure: None,
    };
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(CHANNEL_DEPTH);
    let encoding = src.encoding;
    let producer = std::thread::spawn(move || produce(body, encoding, tx));
    // The decoded bytes are hashed on their own thread, so hashing and writing overlap.
    let (htx, hrx) = mpsc::sync_channel::<Vec<u8>>(CHANNEL_DEPTH);
    let hasher = std::thread::spawn(move || hash_and_forward(rx, htx));

    let start = Instant::now();
    let mut last_report = start;
    let mut written: u64 = 0;
    let mut write_error = None;
    for chunk in hrx.iter() {
        written += chunk.len() as u64;
        if written > src.uncompressed_size {
            write_error = Some(FetchError::WrittenLength {
                url: src.url.clone(),
                got: written,
                want: src.uncompressed_size,
            });
            break;
        }
        if let Err(e) = sink.write_chunk(&chunk) {
            write_error = Some(werr(e));
            break;
        }
        if last_report.elapsed() >= opts.progress_every {
            last_report = Instant::now();
            let done = shared_offset.load(Ordering::Relaxed);
            progress(&Progress::at(done, src.size, start.elapsed()));
        }
    }
    // Dropping the receiver makes the hasher stop at its next send, then the producer.
    drop(hrx);
    let panicked = |what: &str| FetchError::Http {
        url: src.url.clone(),
        why: format!("{what} thread panicked"),
    };
    let decoded_sha = hasher.join().map_err(|_| panicked("hash"))?;
    let wire = producer.join().map_err(|_| panicked("download"))?;
    if let Some(e) = write_error {
        return Err(e);
    }
    let wire = wire?;
    progress(&Progress::at(wire.received, src.size, start.elapsed()));
    if wire.received != src.size {
        return Err(FetchError::Length {
            url: src.url.clone(),
            got: wire.received,
            want: src.size,
        });
    }
    // Unencoded, the decoded bytes are the wire bytes.
    let wire_sha = wire.sha256.unwrap_or_else(|| decoded_sha.clone());
    if wire_sha != src.sha256 {
        return Err(FetchError::Sha256 {
            url: src.url.clone(),
            got: wire_sha,
            want: src.sha256.clone(),
        });
    }
    if written != src.uncompressed_size {
        return Err(FetchError::WrittenLength {
            url: src.url.clone(),
            got: written,
            want: src.uncompressed_size,
        });
    }
    if decoded_sha != src.sha256_written {
        return Err(FetchError::WrittenSha256 {
            url: src.url.clone(),
            got: decoded_sha,
            want: src.sha256_written.clone(),
        });
    }
    sink.finish().map_err(werr)?;
    Ok(written)
}

#[cfg(test)]
mod tests;
