//! Disk mode: stream a whole-disk image (the plan's one `raw` layer, usually zstd) onto
//! the chosen disk through the fetch pipeline ([`crate::fetch::stream`]), writing only the
//! blocks that hold a non-zero byte and seeking over the rest ([`SparseSink`]). The zero
//! runs are then discarded (`BLKDISCARD`) where the device supports it. The pipeline checks
//! both sha256s of the stream before the disk is fsynced; the caller reports and reboots.
//!
//! The same rule as the carte partition guards the disk: a disk holding foreign data is
//! only overwritten when the policy sets `may_wipe`. Without discard support, a zero run
//! keeps whatever the disk held there before (a filesystem image never reads it).

use crate::disk::{self, BlockDisk, DiskPaths};
use crate::fetch::{self, FetchError, Sink, Source};
use crate::gpt::{self, Contents};
use crate::sys::{Errno, Sys};
use carte_contract::{DiskRule, Format, Layer};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// Granularity of the zero test: a block is skipped only when all of it is zero.
pub const BLOCK: usize = 64 << 10;

/// Disk mode failures, naming the layer or device.
#[derive(Debug, thiserror::Error)]
pub enum FlashError {
    #[error("flash: the plan has no raw disk image layer")]
    NoImage,
    #[error("flash: layer {name} is {format:?}, a disk image must be raw")]
    NotRaw { name: String, format: Format },
    #[error("flash: {0}")]
    Disk(#[from] disk::DiskError),
    #[error("flash: image of {image} bytes does not fit {device} ({disk} bytes)")]
    TooBig {
        image: u64,
        disk: u64,
        device: String,
    },
    #[error("flash: {step} {device}: {source}")]
    Io {
        step: &'static str,
        device: String,
        source: io::Error,
    },
    #[error("flash: {0}")]
    Fetch(#[from] FetchError),
}

/// Writes a stream at increasing offsets of a file or device, skipping all-zero blocks;
/// records the zero runs (merged) for discard.
pub struct SparseSink {
    file: File,
    offset: u64,
    carry: Vec<u8>,
    /// (offset, length) of the runs of zero blocks, merged, in order.
    pub zero_runs: Vec<(u64, u64)>,
    /// Bytes actually written.
    pub written: u64,
}

impl SparseSink {
    /// A sink writing from offset 0 of `file`.
    pub fn new(file: File) -> SparseSink {
        SparseSink {
            file,
            offset: 0,
            carry: Vec::with_capacity(BLOCK),
            zero_runs: Vec::new(),
            written: 0,
        }
    }

    fn block(&mut self, b: &[u8]) -> io::Result<()> {
        let len = b.len() as u64;
        if b.iter().all(|x| *x == 0) {
            match self.zero_runs.last_mut() {
                Some((start, l)) if *start + *l == self.offset => *l += len,
                _ => self.zero_runs.push((self.offset, len)),
            }
        } else {
            self.file.write_all_at(b, self.offset)?;
            self.written += len;
        }
        self.offset += len;
        Ok(())
    }
}

impl Sink for SparseSink {
    fn write_chunk(&mut self, mut chunk: &[u8]) -> io::Result<()> {
        if !self.carry.is_empty() {
            let take = (BLOCK - self.carry.len()).min(chunk.len());
            self.carry.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            if self.carry.len() < BLOCK {
                return Ok(());
            }
            let full = std::mem::take(&mut self.carry);
            self.block(&full)?;
            self.carry = full;
            self.carry.clear();
        }
        let mut blocks = chunk.chunks_exact(BLOCK);
        for b in &mut blocks {
            self.block(b)?;
        }
        self.carry.extend_from_slice(blocks.remainder());
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        if !self.carry.is_empty() {
            let rest = std::mem::take(&mut self.carry);
            self.block(&rest)?;
        }
        // A regular file (tests, an image file) gets its full length even when it ends
        // in zeros; a block device already has its size.
        let m = self.file.metadata()?;
        if m.file_type().is_file() && m.len() < self.offset {
            self.file.set_len(self.offset)?;
        }
        self.file.sync_all()
    }
}

/// What a flash did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flashed {
    /// The device written.
    pub device: PathBuf,
    /// Image bytes (the decoded stream).
    pub image: u64,
    /// Bytes actually written (non-zero blocks).
    pub written: u64,
    /// Bytes in zero runs that were discarded (0 when the device cannot discard).
    pub discarded: u64,
    /// What the disk held before (`nothing (blank)`, or what `may_wipe` allowed over).
    pub before: String,
}

/// The image layer of a disk-mode plan.
pub fn image_layer(layers: &[Layer]) -> Result<&Layer, FlashError> {
    let l = layers.first().ok_or(FlashError::NoImage)?;
    if l.format != Format::Raw {
        return Err(FlashError::NotRaw {
            name: l.name.clone(),
            format: l.format,
        });
    }
    Ok(l)
}

fn pick(paths: &DiskPaths, rule: &DiskRule) -> Result<BlockDisk, FlashError> {
    let disks = disk::list_disks(&paths.sys_root);
    disk::choose(&disks, &rule.select).cloned().ok_or_else(|| {
        FlashError::Disk(disk::DiskError::NoDisk {
            rule: format!("{:?}", rule.select),
        })
    })
}

/// Write the image of `layer` onto the disk `rule` picks. Does not reboot.
pub fn flash(
    sys: &mut dyn Sys,
    agent: &ureq::Agent,
    paths: &DiskPaths,
    rule: &DiskRule,
    layer: &Layer,
    opts: fetch::Options,
    progress: &mut dyn FnMut(&fetch::Progress),
) -> Result<Flashed, FlashError> {
    let d = pick(paths, rule)?;
    let dev = paths.dev_root.join(&d.name);
    let device = dev.display().to_string();
    let size = d.sectors * 512;
    if layer.uncompressed_size > size {
        return Err(FlashError::TooBig {
            image: layer.uncompressed_size,
            disk: size,
            device,
        });
    }
    let io = |step: &'static str| {
        let device = device.clone();
        move |source| FlashError::Io {
            step,
            device,
            source,
        }
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&dev)
        .map_err(io("open"))?;
    let before = match gpt::probe(&mut file, size).map_err(io("read"))? {
        Contents::Blank => "nothing (blank)".to_string(),
        Contents::Foreign(what) if rule.may_wipe => format!("{what} (may_wipe)"),
        Contents::Foreign(what) => {
            return Err(FlashError::Disk(disk::DiskError::Foreign { device, what }))
        }
    };
    let mut sink = SparseSink::new(file);
    let image = fetch::stream(agent, &Source::from(layer), &mut sink, &dev, opts, progress)?;
    let mut discarded = 0;
    for (off, len) in &sink.zero_runs {
        // BLKDISCARD wants whole sectors; a run at the very end may be shorter.
        let start = off.div_ceil(4096) * 4096;
        let end = (off + len) / 4096 * 4096;
        if end <= start {
            continue;
        }
        match sys.discard(&dev, start, end - start) {
            Ok(()) => discarded += end - start,
            // No discard on this device (or not a block device): the holes stay as they are.
            Err(Errno::EOPNOTSUPP) | Err(Errno::ENOTTY) => break,
            Err(errno) => {
                return Err(FlashError::Io {
                    step: "discard",
                    device,
                    source: io::Error::from(errno),
                })
            }
        }
    }
    sys.sync();
    Ok(Flashed {
        device: dev,
        image,
        written: sink.written,
        discarded,
        before,
    })
}

/// One line for the console and the event.
pub fn describe(f: &Flashed) -> String {
    format!(
        "wrote {} image bytes onto {} ({} in non-zero blocks, {} discarded; it held {})",
        f.image,
        f.device.display(),
        f.written,
        f.discarded,
        f.before
    )
}

#[cfg(test)]
mod tests;
