//! A newc ("070701") cpio writer, the initramfs format the kernel unpacks.
//!
//! Only what an initramfs needs: directories and regular files, written in the order given,
//! with fixed owner root and a fixed mtime so the same input gives the same bytes. No hard
//! links, no symlinks, no device nodes.

use std::io::{self, Write};

/// Writes newc entries to `w`.
pub struct CpioWriter<W> {
    w: W,
    ino: u32,
    mtime: u32,
}

impl<W: Write> CpioWriter<W> {
    pub fn new(w: W, mtime: u32) -> Self {
        CpioWriter { w, ino: 1, mtime }
    }

    /// A directory with permission bits `perm`.
    pub fn dir(&mut self, name: &str, perm: u32) -> io::Result<()> {
        self.entry(name, 0o040000 | perm, 2, &[])
    }

    /// A regular file with permission bits `perm` holding `data`.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.entry(name, 0o100000 | perm, 1, data)
    }

    /// Writes the trailer and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.ino = 0;
        self.entry("TRAILER!!!", 0, 1, &[])?;
        Ok(self.w)
    }

    fn entry(&mut self, name: &str, mode: u32, nlink: u32, data: &[u8]) -> io::Result<()> {
        let size = u32::try_from(data.len()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name}: too large for newc"),
            )
        })?;
        let namesize = name.len() + 1;
        let ino = if mode == 0 { 0 } else { self.ino };
        self.ino += 1;
        let header = format!(
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{size:08x}{:08x}{:08x}{:08x}{:08x}{namesize:08x}{:08x}",
            0, 0, self.mtime, 0, 0, 0, 0, 0
        );
        self.w.write_all(header.as_bytes())?;
        self.w.write_all(name.as_bytes())?;
        self.w.write_all(&[0])?;
        pad(&mut self.w, 110 + namesize)?;
        self.w.write_all(data)?;
        pad(&mut self.w, data.len())
    }
}

/// Pads to the next multiple of 4 after `len` bytes.
fn pad(w: &mut impl Write, len: usize) -> io::Result<()> {
    let n = (4 - len % 4) % 4;
    w.write_all(&[0u8; 3][..n])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout_is_aligned_and_ends_with_trailer() {
        let mut c = CpioWriter::new(Vec::new(), 0);
        c.dir("lib", 0o755).expect("dir");
        c.file("lib/a", 0o644, b"hello").expect("file");
        let out = c.finish().expect("finish");
        assert!(out.starts_with(b"070701"));
        // header 110 + "lib\0" = 114 -> padded to 116.
        assert_eq!(&out[116..122], b"070701");
        assert_eq!(out.len() % 4, 0);
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("lib/a\0"));
        assert!(text.contains("hello"));
        assert!(text.contains("TRAILER!!!"));
        // The file's size field (7th field) is 5.
        let second = &out[116..];
        assert_eq!(&second[6 + 6 * 8..6 + 7 * 8], b"00000005");
    }
}
