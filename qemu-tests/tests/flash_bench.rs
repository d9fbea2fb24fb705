//! carte-init's flash benchmark, small enough for CI: a 160 MiB layer fetched into the
//! disk cache of a 512 MiB machine through the real PXE boot path, then each pipeline
//! stage measured alone in the same VM. It asserts outcomes, not speeds: the layer was
//! fetched and verified, every stage produced a rate, and carte-init's peak RSS stayed
//! within 64 MiB (the goal whatever the layer size; `scripts/bench-flash` measures the
//! 1 GiB run and prints the ratios).

use qemu_tests::{flash_bench, prereq};

const RSS_LIMIT_KIB: f64 = 64.0 * 1024.0;

#[test]
fn a_large_layer_is_flashed_within_the_memory_budget() -> anyhow::Result<()> {
    if !prereq::ready("a_large_layer_is_flashed_within_the_memory_budget") {
        return Ok(());
    }
    let run = flash_bench::run(&flash_bench::Spec {
        layer_mib: 160,
        memory_mb: 512,
        cpus: 2,
    })?;
    let line = || format!("{:?}", run.fields);
    assert!(
        run.num("layer_bytes")? >= 150.0 * 1024.0 * 1024.0,
        "layer too small: {}",
        line()
    );
    for key in [
        "flash_mibps",
        "http_mibps",
        "dd_mibps",
        "zstd_mibps",
        "sha256_mibps",
        "bound_mibps",
        "ratio",
    ] {
        let v = run.num(key)?;
        assert!(v.is_finite() && v > 0.0, "{key} = {v}: {}", line());
    }
    for key in ["fill_peak_rss_kib", "peak_rss_kib"] {
        let v = run.num(key)?;
        assert!(
            v > 0.0 && v <= RSS_LIMIT_KIB,
            "carte-init {key} = {v} KiB, over 64 MiB: {}",
            line()
        );
    }
    eprintln!(
        "flash bench (160 MiB): {} MiB/s, ratio {} against {}, peak RSS {} KiB",
        run.fields["flash_mibps"],
        run.fields["ratio"],
        run.fields["bound"],
        run.fields["peak_rss_kib"]
    );
    Ok(())
}
