//! Debian packages: the `ar` container parsed here, and its `data.tar.*` member opened.
//!
//! A `.deb` is an ar archive (`!<arch>\n`, then 60-byte member headers) holding
//! `debian-binary`, `control.tar.*` and `data.tar.{xz,zst,gz,}`. Only the data member is read;
//! maintainer scripts are not run (a kernel package's postinst only runs depmod and
//! initramfs hooks; `kernel.rs` runs depmod itself when needed).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use super::archive;
use super::error::{Error, IoContext, Result};

/// One ar member: its name, and where its bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub offset: u64,
    pub size: u64,
}

/// Lists the members of the ar archive at `path`.
pub fn members(path: &Path) -> Result<Vec<Member>> {
    let bad = |what: String| Error::BadArchive {
        archive: path.to_path_buf(),
        what,
    };
    let mut f = File::open(path).ctx("open deb", path)?;
    let len = f.metadata().ctx("stat deb", path)?.len();
    let mut magic = [0u8; 8];
    f.read_exact(&mut magic)
        .map_err(|_| bad("too short for an ar archive".into()))?;
    if &magic != b"!<arch>\n" {
        return Err(bad("not an ar archive (no !<arch> magic)".into()));
    }
    let mut out = Vec::new();
    let mut pos = 8u64;
    while pos + 60 <= len {
        f.seek(SeekFrom::Start(pos)).ctx("seek deb", path)?;
        let mut h = [0u8; 60];
        f.read_exact(&mut h).ctx("read ar header", path)?;
        if &h[58..60] != b"`\n" {
            return Err(bad(format!("bad ar header at offset {pos}")));
        }
        let name = String::from_utf8_lossy(&h[0..16])
            .trim_end()
            .trim_end_matches('/')
            .to_string();
        let size: u64 = String::from_utf8_lossy(&h[48..58])
            .trim()
            .parse()
            .map_err(|_| bad(format!("bad ar member size at offset {pos}")))?;
        let offset = pos + 60;
        if offset + size > len {
            return Err(bad(format!("ar member {name} runs past the end")));
        }
        out.push(Member { name, offset, size });
        // Members are padded to an even offset.
        pos = offset + size + (size % 2);
    }
    Ok(out)
}

/// A reader of the decompressed `data.tar` of the package at `path`.
pub fn open_data(path: &Path) -> Result<Box<dyn Read>> {
    let m = members(path)?
        .into_iter()
        .find(|m| m.name.starts_with("data.tar"))
        .ok_or_else(|| Error::BadArchive {
            archive: path.to_path_buf(),
            what: "no data.tar member".into(),
        })?;
    let mut f = File::open(path).ctx("open deb", path)?;
    f.seek(SeekFrom::Start(m.offset)).ctx("seek deb", path)?;
    let mut head = [0u8; 6];
    let n = f.read(&mut head).ctx("read deb", path)?;
    f.seek(SeekFrom::Start(m.offset)).ctx("seek deb", path)?;
    archive::decompress(f.take(m.size), archive::sniff(&head[..n]), path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn ar_members_are_found_with_padding() {
        let mut ar = b"!<arch>\n".to_vec();
        for (name, data) in [
            ("debian-binary", &b"2.0\n"[..]),
            ("odd/", b"abc"),
            ("data.tar/", b"xy"),
        ] {
            ar.extend(
                format!(
                    "{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                    0,
                    0,
                    0,
                    100644,
                    data.len()
                )
                .as_bytes(),
            );
            ar.extend(data);
            if data.len() % 2 == 1 {
                ar.push(b'\n');
            }
        }
        let mut f = tempfile::NamedTempFile::new().expect("temp");
        f.write_all(&ar).expect("write");
        let ms = members(f.path()).expect("members");
        let names: Vec<_> = ms.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["debian-binary", "odd", "data.tar"]);
        assert_eq!(ms[1].size, 3);
        assert_eq!(&ar[ms[2].offset as usize..][..2], b"xy");
    }

    #[test]
    fn non_ar_is_refused() {
        let mut f = tempfile::NamedTempFile::new().expect("temp");
        f.write_all(b"not an archive at all").expect("write");
        assert!(matches!(members(f.path()), Err(Error::BadArchive { .. })));
    }
}
