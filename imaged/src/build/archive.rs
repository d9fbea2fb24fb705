//! Opening a possibly compressed tar stream: plain, gzip, zstd or xz, told apart by magic bytes.
//!
//! It does not look inside the tar; `stage.rs` unpacks it. xz is decoded by the pure-Rust
//! `lzma-rs` into a temporary file (it has no streaming reader), the others stream.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use super::error::{Error, IoContext, Result};

/// Compression of a stream, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
    Xz,
}

/// Tells the compression from the first bytes of a stream.
pub fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Compression::Xz
    } else {
        Compression::None
    }
}

/// Opens `path` and returns a reader of its decompressed bytes.
pub fn open_decompressed(path: &Path) -> Result<Box<dyn Read>> {
    let mut f = File::open(path).ctx("open archive", path)?;
    let mut head = [0u8; 6];
    let n = read_up_to(&mut f, &mut head).ctx("read archive", path)?;
    f.seek(SeekFrom::Start(0)).ctx("rewind archive", path)?;
    decompress(f, sniff(&head[..n]), path)
}

/// Wraps `r` in the decoder for `c`.
pub fn decompress<R: Read + 'static>(r: R, c: Compression, path: &Path) -> Result<Box<dyn Read>> {
    Ok(match c {
        Compression::None => Box::new(BufReader::new(r)),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(r))),
        Compression::Zstd => Box::new(zstd::Decoder::new(r).ctx("start zstd decoder", path)?),
        Compression::Xz => {
            let mut tmp = tempfile::tempfile().ctx("create temporary file for xz", path)?;
            let mut input = BufReader::new(r);
            let mut out = io::BufWriter::new(&mut tmp);
            lzma_rs::xz_decompress(&mut input, &mut out).map_err(|e| Error::BadArchive {
                archive: path.to_path_buf(),
                what: format!("xz: {e}"),
            })?;
            drop(out);
            tmp.seek(SeekFrom::Start(0)).ctx("rewind xz output", path)?;
            Box::new(BufReader::new(tmp))
        }
    })
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_bytes_select_the_decoder() {
        assert_eq!(sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0]), Compression::Zstd);
        assert_eq!(sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(sniff(b"\xfd7zXZ\0"), Compression::Xz);
        assert_eq!(sniff(b"usr/"), Compression::None);
        assert_eq!(sniff(b""), Compression::None);
    }
}
