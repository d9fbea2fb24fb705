//! What a builder hands back (`BuiltLayer`), and the streaming sha256 helpers it is measured with.
//!
//! It does not store anything: the store ingests `BuiltLayer::path` and records these fields.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::error::{IoContext, Result};

/// Filesystem (or file kind) of a built layer file, once transfer encoding is undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Compressed read-only erofs image (default for read-only layers).
    Erofs,
    /// ext4 image sized to the content plus headroom (writable layers).
    Ext4,
    /// A whole-disk image written as is.
    RawDisk,
    /// A kernel image (`vmlinuz`), booted by iPXE.
    Kernel,
    /// A zstd-compressed newc cpio; the kernel unpacks it itself, so it is not transfer encoding.
    CpioZstd,
}

impl Format {
    /// The name used in layer metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Erofs => "erofs",
            Format::Ext4 => "ext4",
            Format::RawDisk => "raw",
            Format::Kernel => "vmlinuz",
            Format::CpioZstd => "cpio.zst",
        }
    }
}

/// How the file at `BuiltLayer::path` is encoded for transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Sent as written.
    None,
    /// zstd frame(s); the machine decodes while writing.
    Zstd,
}

impl Encoding {
    /// The name used in layer metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::None => "none",
            Encoding::Zstd => "zstd",
        }
    }
}

/// One built layer file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltLayer {
    /// The file to store and send (encoded if `encoding` is not `None`).
    pub path: PathBuf,
    /// What the decoded bytes are.
    pub format: Format,
    /// Transfer encoding of `path`.
    pub encoding: Encoding,
    /// Size in bytes of `path` (what is sent).
    pub size: u64,
    /// Size in bytes once decoded (what is written on the machine); equals `size` when not encoded.
    pub uncompressed_size: u64,
    /// sha256 (hex) of the decoded bytes, as written on the machine.
    pub sha256: String,
    /// sha256 (hex) of the encoded bytes as sent; `None` when not encoded (then it is `sha256`).
    pub encoded_sha256: Option<String>,
    /// Bytes of file content in the source tree, when the layer was built from a tree.
    pub content_bytes: Option<u64>,
}

impl BuiltLayer {
    /// Describes an unencoded file already written at `path`, hashing it.
    pub fn plain(path: &Path, format: Format, content_bytes: Option<u64>) -> Result<Self> {
        let (sha256, size) = sha256_file(path)?;
        Ok(BuiltLayer {
            path: path.to_path_buf(),
            format,
            encoding: Encoding::None,
            size,
            uncompressed_size: size,
            sha256,
            encoded_sha256: None,
            content_bytes,
        })
    }

    /// The digest of what is sent: `encoded_sha256` if encoded, else `sha256`.
    pub fn sent_sha256(&self) -> &str {
        self.encoded_sha256.as_deref().unwrap_or(&self.sha256)
    }
}

/// sha256 (hex) and length of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let mut f = File::open(path).ctx("open for hashing", path)?;
    let mut w = HashingWriter::new(io::sink());
    io::copy(&mut f, &mut w).ctx("hash", path)?;
    let (hex, n, _) = w.finish();
    Ok((hex, n))
}

/// A writer that hashes and counts what passes through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Returns the hex digest, the byte count and the inner writer.
    pub fn finish(self) -> (String, u64, W) {
        (hex(&self.hasher.finalize()), self.count, self.inner)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes and counts what is read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Returns the hex digest and byte count of everything read so far.
    pub fn finish(self) -> (String, u64) {
        (hex(&self.hasher.finalize()), self.count)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// An output file written under a temporary name beside its final one, renamed into place only
/// when complete; removed if dropped uncommitted, so a failed build leaves no half file.
pub(crate) struct Partial {
    tmp: PathBuf,
    dest: PathBuf,
    done: bool,
}

impl Partial {
    pub(crate) fn new(dest: PathBuf) -> Self {
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dest.with_file_name(format!(".{name}.partial"));
        Partial {
            tmp,
            dest,
            done: false,
        }
    }

    /// Where to write.
    pub(crate) fn path(&self) -> &Path {
        &self.tmp
    }

    /// Renames the finished file to its final name and returns that name.
    pub(crate) fn commit(mut self) -> Result<PathBuf> {
        std::fs::rename(&self.tmp, &self.dest).ctx("rename finished layer", &self.dest)?;
        self.done = true;
        Ok(self.dest.clone())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
