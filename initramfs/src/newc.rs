//! Writing a newc ("070701") cpio archive, the format the kernel unpacks as an initramfs.
//! Written by hand so the archive can hold `/dev/console` without root (no mknod needed).
//!
//! Only what an initramfs needs: directories, regular files, character devices. No hard
//! links, no symlinks, no reading of archives (tests parse the output themselves).

use std::io::{self, Write};

/// A newc archive being written.
pub struct Writer<W: Write> {
    out: W,
    ino: u32,
    written: u64,
}

impl<W: Write> Writer<W> {
    /// Start an archive on `out`.
    pub fn new(out: W) -> Writer<W> {
        Writer {
            out,
            ino: 1,
            written: 0,
        }
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0u8; 3][..n])
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) -> io::Result<()> {
        let size = u32::try_from(data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file over 4 GiB"))?;
        let namesize = u32::try_from(name.len() + 1)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name too long"))?;
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let ino = self.ino;
        self.ino += 1;
        let header = format!(
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{size:08x}{:08x}{:08x}{:08x}{:08x}{namesize:08x}{:08x}",
            0, 0, 0, 0, 0, rdev.0, rdev.1, 0
        );
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        self.put(data)?;
        self.pad()
    }

    /// A directory (`name` without leading slash, e.g. `dev`).
    pub fn dir(&mut self, name: &str, perm: u32) -> io::Result<()> {
        self.entry(name, 0o040000 | perm, (0, 0), &[])
    }

    /// A regular file with these contents.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.entry(name, 0o100000 | perm, (0, 0), data)
    }

    /// A character device node.
    pub fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) -> io::Result<()> {
        self.entry(name, 0o020000 | perm, (major, minor), &[])
    }

    /// Write the trailer and return the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.entry("TRAILER!!!", 0, (0, 0), &[])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, mode, rdevmajor, rdevminor, data) of every entry.
    fn parse(mut b: &[u8]) -> Vec<(String, u32, u32, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let total = b.len();
        loop {
            let field = |h: &[u8], i: usize| {
                let s = std::str::from_utf8(&h[6 + 8 * i..14 + 8 * i]).expect("ascii");
                u32::from_str_radix(s, 16).expect("hex")
            };
            assert_eq!(&b[..6], b"070701");
            let (mode, size, maj, min, namesize) = (
                field(b, 1),
                field(b, 6),
                field(b, 9),
                field(b, 10),
                field(b, 11),
            );
            let name_end = 110 + namesize as usize;
            let name = String::from_utf8(b[110..name_end - 1].to_vec()).expect("name");
            assert_eq!(b[name_end - 1], 0);
            let data_start = (total - b.len() + name_end).div_ceil(4) * 4 - (total - b.len());
            let data = b[data_start..data_start + size as usize].to_vec();
            let next =
                (total - b.len() + data_start + size as usize).div_ceil(4) * 4 - (total - b.len());
            if name == "TRAILER!!!" {
                return out;
            }
            out.push((name, mode, maj, min, data));
            b = &b[next..];
        }
    }

    #[test]
    fn archive_round_trips_through_a_parser() {
        let mut w = Writer::new(Vec::new());
        w.dir("dev", 0o755).expect("dir");
        w.char_dev("dev/console", 0o600, 5, 1).expect("dev");
        w.file("init", 0o755, b"#!hello").expect("file");
        w.file("bin/x", 0o644, b"").expect("file");
        let bytes = w.finish().expect("finish");
        assert_eq!(bytes.len() % 4, 0);
        let entries = parse(&bytes);
        assert_eq!(
            entries,
            [
                ("dev".into(), 0o040755, 0, 0, vec![]),
                ("dev/console".into(), 0o020600, 5, 1, vec![]),
                ("init".into(), 0o100755, 0, 0, b"#!hello".to_vec()),
                ("bin/x".into(), 0o100644, 0, 0, vec![]),
            ]
        );
    }

    #[test]
    fn system_cpio_reads_it_when_present() {
        // Cross-check against GNU cpio where installed (scripts/setup installs it).
        let Ok(out) = std::process::Command::new("cpio").arg("--version").output() else {
            return;
        };
        assert!(out.status.success());
        let mut w = Writer::new(Vec::new());
        w.dir("d", 0o755).expect("dir");
        w.file("d/f", 0o644, b"abc").expect("file");
        let bytes = w.finish().expect("finish");
        let mut child = std::process::Command::new("cpio")
            .args(["-t", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn cpio");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&bytes)
            .expect("write");
        let out = child.wait_with_output().expect("cpio");
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout), "d\nd/f\n");
    }
}
