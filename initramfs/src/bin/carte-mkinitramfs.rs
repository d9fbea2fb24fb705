//! carte-mkinitramfs: packs carte-init and carte-shim into the boot initramfs, a
//! zstd-compressed newc cpio with `/init`, `/bin/carte-shim`, the mount-point folders and
//! `/dev/console` (so the kernel can give /init a console even before devtmpfs).
//!
//! Usage: `carte-mkinitramfs --init PATH --shim PATH --out PATH`. It does not build the
//! binaries (scripts/build-initramfs does) and adds no kernel modules (those come as a
//! second initrd from the kernel layer).

use anyhow::{bail, Context, Result};
use carte_init::newc::Writer;
use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;

const DIRS: [&str; 8] = ["bin", "dev", "proc", "sys", "run", "tmp", "carte", "lib"];

fn main() -> Result<()> {
    let mut init = None;
    let mut shim = None;
    let mut out = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let slot = match a.as_str() {
            "--init" => &mut init,
            "--shim" => &mut shim,
            "--out" => &mut out,
            other => bail!("unknown argument {other:?}; usage: --init PATH --shim PATH --out PATH"),
        };
        *slot = Some(PathBuf::from(
            args.next().with_context(|| format!("{a} needs a value"))?,
        ));
    }
    let (Some(init), Some(shim), Some(out)) = (init, shim, out) else {
        bail!("usage: carte-mkinitramfs --init PATH --shim PATH --out PATH");
    };
    let init_bytes = std::fs::read(&init).with_context(|| format!("read {}", init.display()))?;
    let shim_bytes = std::fs::read(&shim).with_context(|| format!("read {}", shim.display()))?;

    let tmp = out.with_extension("tmp");
    let file = File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    let zstd =
        zstd::stream::Encoder::new(BufWriter::new(file), 19).context("start zstd encoder")?;
    let mut w = Writer::new(zstd);
    for d in DIRS {
        w.dir(d, 0o755).with_context(|| format!("write dir {d}"))?;
    }
    w.char_dev("dev/console", 0o600, 5, 1)
        .context("write dev/console")?;
    w.char_dev("dev/null", 0o666, 1, 3)
        .context("write dev/null")?;
    w.file("init", 0o755, &init_bytes).context("write init")?;
    w.file("bin/carte-shim", 0o755, &shim_bytes)
        .context("write bin/carte-shim")?;
    let zstd = w.finish().context("write trailer")?;
    let buf = zstd.finish().context("finish zstd")?;
    let file = buf
        .into_inner()
        .map_err(|e| e.into_error())
        .context("flush")?;
    file.sync_all()
        .with_context(|| format!("fsync {}", tmp.display()))?;
    std::fs::rename(&tmp, &out).with_context(|| format!("rename to {}", out.display()))?;
    println!("carte-mkinitramfs: wrote {}", out.display());
    Ok(())
}
