//! The raw bytes of a disk: telling a blank disk from one with foreign data (partition
//! table or filesystem signatures, or any non-zero byte in the first and last MiB), and
//! writing a fresh GPT (protective MBR, primary and backup header and entry array, CRC32)
//! with one Linux-filesystem partition named `carte`, aligned to 1 MiB.
//!
//! It works on anything `Read + Write + Seek` (a block device, or a sparse file in tests)
//! and never decides whether it may write: [`crate::disk`] does, from the plan's rule.

use std::io::{self, Read, Seek, SeekFrom, Write};

/// Bytes inspected at each end of the disk.
pub const PROBE_BYTES: u64 = 1 << 20;
/// Partition alignment.
const ALIGN: u64 = 1 << 20;
/// The smallest disk carte initialises.
pub const MIN_DISK_BYTES: u64 = 16 << 20;
const ENTRIES: u64 = 128;
const ENTRY_SIZE: u64 = 128;
const HEADER_SIZE: u32 = 92;
/// Linux filesystem data, `0FC63DAF-8483-4772-8E79-3D69D8477DE4`, in GPT byte order.
pub const LINUX_FS_TYPE: [u8; 16] = [
    0xAF, 0x3D, 0xC6, 0x0F, 0x83, 0x84, 0x72, 0x47, 0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47, 0x7D, 0xE4,
];

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contents {
    /// The first and last MiB are all zero.
    Blank,
    /// Something is there; the text names what (`a GPT`, `an ext2/3/4 filesystem`...).
    Foreign(String),
}

/// Where the partition ended up, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    /// First byte.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
}

fn read_at<D: Read + Seek>(disk: &mut D, offset: u64, buf: &mut [u8]) -> io::Result<()> {
    disk.seek(SeekFrom::Start(offset))?;
    disk.read_exact(buf)
}

fn has(buf: &[u8], offset: usize, magic: &[u8]) -> bool {
    buf.get(offset..offset + magic.len()) == Some(magic)
}

/// Look at the first and last [`PROBE_BYTES`] of a disk of `size` bytes.
pub fn probe<D: Read + Seek>(disk: &mut D, size: u64) -> io::Result<Contents> {
    let n = PROBE_BYTES.min(size);
    let mut head = vec![0u8; usize::try_from(n).unwrap_or(0)];
    read_at(disk, 0, &mut head)?;
    // Known signatures first, so the console can say what it refused to touch.
    let named: [(usize, &[u8], &str); 9] = [
        (512, b"EFI PART", "a GPT"),
        (4096, b"EFI PART", "a GPT (4K sectors)"),
        (1080, &[0x53, 0xEF], "an ext2/3/4 filesystem"),
        (0, b"XFSB", "an XFS filesystem"),
        (0x10040, b"_BHRfS_M", "a btrfs filesystem"),
        (512, b"LABELONE", "an LVM physical volume"),
        (4086, b"SWAPSPACE2", "a swap area"),
        (0x8001, b"CD001", "an ISO 9660 filesystem"),
        (510, &[0x55, 0xAA], "an MBR partition table or boot sector"),
    ];
    for (off, magic, what) in named {
        if has(&head, off, magic) {
            return Ok(Contents::Foreign(what.to_string()));
        }
    }
    if head.iter().any(|b| *b != 0) {
        return Ok(Contents::Foreign("non-zero data in the first MiB".into()));
    }
    let mut tail = vec![0u8; head.len()];
    read_at(disk, size - n, &mut tail)?;
    if tail.iter().any(|b| *b != 0) {
        return Ok(Contents::Foreign(
            "non-zero data in the last MiB (a backup GPT?)".into(),
        ));
    }
    Ok(Contents::Blank)
}

/// Zero the first and last [`PROBE_BYTES`] (old tables and signatures), for a wipe.
pub fn zero_ends<D: Write + Seek>(disk: &mut D, size: u64) -> io::Result<()> {
    let n = PROBE_BYTES.min(size);
    let zeros = vec![0u8; usize::try_from(n).unwrap_or(0)];
    disk.seek(SeekFrom::Start(0))?;
    disk.write_all(&zeros)?;
    disk.seek(SeekFrom::Start(size - n))?;
    disk.write_all(&zeros)?;
    Ok(())
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn header(
    my_lba: u64,
    other_lba: u64,
    first_usable: u64,
    last_usable: u64,
    disk_guid: [u8; 16],
    entries_lba: u64,
    entries_crc: u32,
) -> [u8; HEADER_SIZE as usize] {
    let mut h = [0u8; HEADER_SIZE as usize];
    h[0..8].copy_from_slice(b"EFI PART");
    put_u32(&mut h, 8, 0x0001_0000);
    put_u32(&mut h, 12, HEADER_SIZE);
    put_u64(&mut h, 24, my_lba);
    put_u64(&mut h, 32, other_lba);
    put_u64(&mut h, 40, first_usable);
    put_u64(&mut h, 48, last_usable);
    h[56..72].copy_from_slice(&disk_guid);
    put_u64(&mut h, 72, entries_lba);
    put_u32(&mut h, 80, ENTRIES as u32);
    put_u32(&mut h, 84, ENTRY_SIZE as u32);
    put_u32(&mut h, 88, entries_crc);
    let crc = crc32fast::hash(&h);
    put_u32(&mut h, 16, crc);
    h
}

/// Write a GPT with one partition named `name` covering the disk (1 MiB aligned) onto a
/// disk of `size` bytes with `sector`-byte logical blocks. `guids` are the disk's and the
/// partition's unique GUIDs.
pub fn write<D: Write + Seek>(
    disk: &mut D,
    size: u64,
    sector: u64,
    name: &str,
    guids: ([u8; 16], [u8; 16]),
) -> io::Result<Partition> {
    if size < MIN_DISK_BYTES || !(sector == 512 || sector == 4096) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("disk of {size} bytes with {sector}-byte sectors is not supported"),
        ));
    }
    let lbas = size / sector;
    let entry_lbas = (ENTRIES * ENTRY_SIZE).div_ceil(sector);
    let first_usable = 2 + entry_lbas;
    let last_usable = lbas - 2 - entry_lbas;
    let first = ALIGN / sector;
    let last = ((last_usable + 1) * sector / ALIGN * ALIGN) / sector - 1;

    let mut entries = vec![0u8; usize::try_from(ENTRIES * ENTRY_SIZE).unwrap_or(0)];
    entries[0..16].copy_from_slice(&LINUX_FS_TYPE);
    entries[16..32].copy_from_slice(&guids.1);
    put_u64(&mut entries, 32, first);
    put_u64(&mut entries, 40, last);
    for (i, unit) in name.encode_utf16().take(36).enumerate() {
        entries[56 + 2 * i..58 + 2 * i].copy_from_slice(&unit.to_le_bytes());
    }
    let entries_crc = crc32fast::hash(&entries);

    // Protective MBR: one 0xEE partition from LBA 1 over the whole disk (capped at 2 TiB).
    let mut mbr = vec![0u8; usize::try_from(sector).unwrap_or(512)];
    let p = &mut mbr[446..462];
    p[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
    p[4] = 0xEE;
    p[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
    p[8..12].copy_from_slice(&1u32.to_le_bytes());
    let covered = u32::try_from(lbas - 1).unwrap_or(u32::MAX);
    p[12..16].copy_from_slice(&covered.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xAA;

    let backup_entries = lbas - 1 - entry_lbas;
    let primary = header(
        1,
        lbas - 1,
        first_usable,
        last_usable,
        guids.0,
        2,
        entries_crc,
    );
    let backup = header(
        lbas - 1,
        1,
        first_usable,
        last_usable,
        guids.0,
        backup_entries,
        entries_crc,
    );
    let at = |lba: u64| SeekFrom::Start(lba * sector);
    let pad = |h: &[u8]| {
        let mut s = vec![0u8; usize::try_from(sector).unwrap_or(512)];
        s[..h.len()].copy_from_slice(h);
        s
    };
    disk.seek(at(0))?;
    disk.write_all(&mbr)?;
    disk.write_all(&pad(&primary))?;
    disk.write_all(&entries)?;
    disk.seek(at(backup_entries))?;
    disk.write_all(&entries)?;
    disk.seek(at(lbas - 1))?;
    disk.write_all(&pad(&backup))?;
    disk.flush()?;
    Ok(Partition {
        start: first * sector,
        len: (last - first + 1) * sector,
    })
}

/// 16 random bytes as a version-4 GUID (from `/dev/urandom`; a fallback mixes the time
/// and `salt` when it cannot be read, which is unique enough for one disk).
pub fn random_guid(salt: &str) -> [u8; 16] {
    let mut g = [0u8; 16];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut g))
        .is_ok();
    if !ok {
        use sha2::{Digest, Sha256};
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let d = Sha256::digest(format!("{now} {salt}"));
        g.copy_from_slice(&d[..16]);
    }
    g[7] = (g[7] & 0x0F) | 0x40;
    g[8] = (g[8] & 0x3F) | 0x80;
    g
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    fn disk(size: u64) -> (tempfile::TempDir, File) {
        let d = tempfile::tempdir().expect("tempdir");
        let f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(d.path().join("disk"))
            .expect("create");
        f.set_len(size).expect("size");
        (d, f)
    }

    fn at(f: &mut File, off: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        read_at(f, off, &mut b).expect("read");
        b
    }

    fn u32_at(b: &[u8], i: usize) -> u32 {
        u32::from_le_bytes(b[i..i + 4].try_into().expect("4"))
    }

    fn u64_at(b: &[u8], i: usize) -> u64 {
        u64::from_le_bytes(b[i..i + 8].try_into().expect("8"))
    }

    /// Check a header at `lba`: signature, its own CRC, the entries' CRC; returns it.
    fn check_header(f: &mut File, lba: u64) -> Vec<u8> {
        let mut h = at(f, lba * 512, 92);
        assert_eq!(&h[0..8], b"EFI PART");
        let crc = u32_at(&h, 16);
        h[16..20].fill(0);
        assert_eq!(crc32fast::hash(&h), crc, "header crc at lba {lba}");
        assert_eq!(u64_at(&h, 24), lba);
        let entries = at(f, u64_at(&h, 72) * 512, 128 * 128);
        assert_eq!(crc32fast::hash(&entries), u32_at(&h, 88), "entries crc");
        h
    }

    #[test]
    fn blank_disk_gets_a_valid_gpt_with_the_carte_partition() {
        let size = 64 << 20;
        let (_d, mut f) = disk(size);
        assert_eq!(probe(&mut f, size).expect("probe"), Contents::Blank);
        let p = write(&mut f, size, 512, "carte", ([1; 16], [2; 16])).expect("write");
        assert_eq!(p.start, 1 << 20);
        assert_eq!(
            p.start + p.len,
            size - (1 << 20),
            "end aligned down to 1 MiB"
        );
        let mbr = at(&mut f, 0, 512);
        assert_eq!((mbr[450], mbr[510], mbr[511]), (0xEE, 0x55, 0xAA));
        let lbas = size / 512;
        let primary = check_header(&mut f, 1);
        let backup = check_header(&mut f, lbas - 1);
        assert_eq!(u64_at(&primary, 32), lbas - 1);
        assert_eq!(u64_at(&backup, 32), 1);
        assert_eq!(u64_at(&backup, 72), lbas - 33);
        let entry = at(&mut f, 2 * 512, 128);
        assert_eq!(entry[0..16], LINUX_FS_TYPE);
        assert_eq!(u64_at(&entry, 32), 2048);
        let name: Vec<u16> = entry[56..66]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(String::from_utf16_lossy(&name), "carte");
        assert_eq!(&entry[66..68], &[0, 0]);
        assert_eq!(
            probe(&mut f, size).expect("probe"),
            Contents::Foreign("a GPT".into())
        );
    }

    fn check_probe(plant: &[(u64, &[u8])], want: &str) {
        let size = 32 << 20;
        let (_d, mut f) = disk(size);
        for (off, bytes) in plant {
            f.seek(SeekFrom::Start(*off)).expect("seek");
            f.write_all(bytes).expect("plant");
        }
        assert_eq!(
            probe(&mut f, size).expect("probe"),
            Contents::Foreign(want.into()),
            "{plant:?}"
        );
    }

    #[test]
    fn foreign_signatures_are_named() {
        check_probe(
            &[(510, &[0x55, 0xAA])],
            "an MBR partition table or boot sector",
        );
        check_probe(&[(510, &[0x55, 0xAA]), (512, b"EFI PART")], "a GPT");
        check_probe(&[(1080, &[0x53, 0xEF])], "an ext2/3/4 filesystem");
        check_probe(&[(0, b"XFSB")], "an XFS filesystem");
        check_probe(&[(4000, &[1])], "non-zero data in the first MiB");
        check_probe(
            &[((32 << 20) - 512, b"EFI PART")],
            "non-zero data in the last MiB (a backup GPT?)",
        );
    }

    #[test]
    fn zero_ends_makes_a_disk_blank_and_tiny_disks_are_refused() {
        let size = 32 << 20;
        let (_d, mut f) = disk(size);
        write(&mut f, size, 512, "carte", ([1; 16], [2; 16])).expect("write");
        zero_ends(&mut f, size).expect("zero");
        assert_eq!(probe(&mut f, size).expect("probe"), Contents::Blank);
        let e = write(&mut f, 8 << 20, 512, "carte", ([1; 16], [2; 16])).expect_err("small");
        assert!(e.to_string().contains("not supported"), "{e}");
    }

    #[test]
    fn random_guids_are_version_4_and_differ() {
        let (a, b) = (random_guid("x"), random_guid("x"));
        assert_ne!(a, b);
        assert_eq!(a[7] >> 4, 4);
        assert_eq!(a[8] & 0xC0, 0x80);
    }
}
