//! Raw whole-disk images: kept byte for byte, zstd-encoded for transfer.
//!
//! zstd turns long zero runs into a few bytes, so an empty or sparse disk costs little to send;
//! the machine decodes while writing. It does not inspect partitions or filesystems.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::path::Path;

use super::error::{IoContext, Result};
use super::layer::{BuiltLayer, Encoding, Format, HashingReader, HashingWriter, Partial};
use super::BuildOptions;

/// Encodes `path` into `out_dir/disk.raw.zst`, hashing both the raw and the encoded bytes.
pub fn from_raw_disk(path: &Path, opts: &BuildOptions) -> Result<BuiltLayer> {
    std::fs::create_dir_all(&opts.out_dir).ctx("create output directory", &opts.out_dir)?;
    let partial = Partial::new(opts.out_dir.join("disk.raw.zst"));
    let out = partial.path().to_path_buf();
    let src = File::open(path).ctx("open raw disk image", path)?;
    let mut reader = HashingReader::new(BufReader::with_capacity(1 << 20, src));
    let file = File::create(&out).ctx("create encoded disk image", &out)?;
    let sink = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
    let mut enc = zstd::Encoder::new(sink, opts.zstd_level).ctx("start zstd encoder", &out)?;
    io::copy(&mut reader, &mut enc).ctx("encode raw disk image", path)?;
    let sink = enc.finish().ctx("finish zstd frame", &out)?;
    let (encoded_sha256, size, mut buffered) = sink.finish();
    buffered.flush().ctx("write encoded disk image", &out)?;
    let (sha256, uncompressed_size) = reader.finish();
    Ok(BuiltLayer {
        path: partial.commit()?,
        format: Format::RawDisk,
        encoding: Encoding::Zstd,
        size,
        uncompressed_size,
        sha256,
        encoded_sha256: Some(encoded_sha256),
        content_bytes: None,
    })
}
