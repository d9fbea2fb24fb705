//! Rendering iPXE scripts: the entry script (`/boot.ipxe`) and the per-machine script for
//! a policy [`Decision`].
//!
//! **Rendering only reads the chosen setup; it never selects.** The caller hands in the
//! decision and the facts of the request. Nothing here does IO. Values that would break
//! the script (line breaks, spaces in a URL, a `..` path) are a [`RenderError`], which the
//! HTTP layer answers with 500, never with a "not found". An image setup
//! ([`Answer::Compose`]) is rendered by [`render_compose`] from what the HTTP layer
//! resolved for it at request time ([`ResolvedKernel`]); [`render`] refuses it.

use std::fmt::Write as _;

use imaged::model::{Digest, ImageRef};

use crate::arch::ClientArch;
use crate::mac::MacAddr;
use crate::policy::{Answer, ComposeSpec, Decision};

/// Where machines fetch kernel-image artefacts without a token (content-addressed).
pub const BOOT_BLOBS_PATH: &str = "/boot/blobs/sha256";

/// How many times `/boot.ipxe` tries to fetch the per-machine script before giving up.
pub const ENTRY_TRIES: u32 = 5;
/// Seconds the entry script sleeps between tries.
pub const ENTRY_RETRY_SECS: u32 = 3;
/// Seconds a parked (`wait`) machine sleeps before it asks again.
pub const WAIT_SECS: u32 = 10;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    #[error("render {setup}: {what} {value:?} contains a line break or control character")]
    ControlChar {
        setup: String,
        what: &'static str,
        value: String,
    },
    #[error("render {setup}: {what} {value:?} is not a relative path under the data folder or an http(s) URL")]
    BadPath {
        setup: String,
        what: &'static str,
        value: String,
    },
    #[error("render {setup}: an image setup needs its kernel resolved first")]
    Unresolved { setup: String },
}

/// The kernel version an image setup boots, resolved when the script is asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedKernel {
    /// The exact version (`@latest` already resolved).
    pub version: ImageRef,
    /// `uname -r` of that version.
    pub release: String,
    /// sha256 of its `vmlinuz` artefact.
    pub vmlinuz: Digest,
    /// sha256 of its `modules` cpio artefact.
    pub modules: Digest,
}

/// What the renderer needs to know about the request besides the decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptContext<'a> {
    /// `http://IP:PORT` as machines see it, without a trailing slash.
    pub base: &'a str,
    pub mac: MacAddr,
    /// `None` when iPXE did not say (or said something we do not know).
    pub arch: Option<ClientArch>,
}

/// The per-machine script URL, with iPXE variables the machine fills in itself.
/// `netX` is the interface iPXE last opened, i.e. the one it booted from.
pub fn machine_url(base: &str) -> String {
    format!(
        "{}/ipxe/${{netX/mac}}?arch=${{buildarch}}&platform=${{platform}}&uuid=${{uuid}}",
        base.trim_end_matches('/')
    )
}

/// The entry script handed out by DHCP: fetch the per-machine script, retrying a bounded
/// number of times (renewing the address in between), then give up visibly and `exit` so
/// the firmware moves on to its next boot device.
pub fn entry_script(base: &str) -> String {
    let base = base.trim_end_matches('/');
    let url = machine_url(base);
    let mut s =
        String::from("#!ipxe\n# carte entry script: chain this machine's script from netbootd.\n");
    for try_no in 1..=ENTRY_TRIES {
        // `--replace` ends this script on success, so an `exit` in the machine's script
        // never falls back into the retry lines below. The trailing `||` swallows a
        // failed fetch so the script goes on to the next try.
        let _ = writeln!(s, "chain --replace --autofree {url} ||");
        if try_no < ENTRY_TRIES {
            let _ = writeln!(
                s,
                "echo carte: cannot fetch the boot script from {base} (try {try_no} of {ENTRY_TRIES}), retrying in {ENTRY_RETRY_SECS} s"
            );
            let _ = writeln!(s, "sleep {ENTRY_RETRY_SECS}");
            let _ = writeln!(s, "ifconf netX || dhcp netX ||");
        }
    }
    let _ = writeln!(s, "echo carte: cannot reach netbootd at {base}; giving up");
    s.push_str("exit\n");
    s
}

/// Renders the per-machine script for `decision`.
pub fn render(decision: &Decision, ctx: &ScriptContext<'_>) -> Result<String, RenderError> {
    let base = ctx.base.trim_end_matches('/');
    let mut s = String::from("#!ipxe\n");
    let who = format!(
        "machine {} (group {}, setup {})",
        ctx.mac, decision.group, decision.setup
    );
    check_line(&decision.setup, "group", &decision.group)?;
    check_line(&decision.setup, "setup name", &decision.setup)?;
    match &decision.answer {
        Answer::Boot(spec) => {
            let kernel = artefact_url(&decision.setup, "kernel", &spec.kernel, base)?;
            let initrds = spec
                .initrds
                .iter()
                .map(|i| artefact_url(&decision.setup, "initrd", i, base))
                .collect::<Result<Vec<_>, _>>()?;
            boot_lines(
                &mut s,
                decision,
                &kernel,
                &initrds,
                &spec.cmdline,
                &[],
                ctx,
                base,
            )?
        }
        Answer::Compose(_) => {
            return Err(RenderError::Unresolved {
                setup: decision.setup.clone(),
            })
        }
        Answer::Local => {
            let _ = writeln!(s, "echo carte: {who}: booting the local disk");
            if ctx.arch == Some(ClientArch::Bios) {
                s.push_str("sanboot --no-describe --drive 0x80 ||\n");
                s.push_str("echo carte: local disk boot failed; leaving iPXE\n");
            }
            // UEFI (and an unknown firmware): leaving iPXE makes the firmware boot its
            // next entry, which is the local disk in a sane boot order.
            s.push_str("exit\n");
        }
        Answer::Wait => {
            let _ = writeln!(
                s,
                "echo carte: {who}: waiting for a setup; asking again every {WAIT_SECS} s"
            );
            s.push_str(":carte-wait\n");
            let _ = writeln!(s, "sleep {WAIT_SECS}");
            // `--replace` so a long wait does not nest scripts without bound.
            let _ = writeln!(
                s,
                "chain --replace --autofree {} || goto carte-wait-failed",
                machine_url(base)
            );
            s.push_str(":carte-wait-failed\n");
            let _ = writeln!(
                s,
                "echo carte: cannot reach netbootd at {base}; still waiting"
            );
            s.push_str("ifconf netX || dhcp netX ||\n");
            s.push_str("goto carte-wait\n");
        }
        Answer::Ignore => {
            let _ = writeln!(s, "echo carte: {who}: not booted by netbootd; leaving iPXE");
            s.push_str("exit\n");
        }
    }
    Ok(s)
}

/// Renders the per-machine script of an image setup: the resolved kernel version's
/// `vmlinuz`, then two initrds, the carte initramfs (`initramfs`, a path under the data
/// folder) and that version's `modules` cpio. The kernel artefacts are fetched from the
/// content-addressed [`BOOT_BLOBS_PATH`]. `token` is this boot's token (`carte.token=`),
/// with which carte-init fetches its plan.
pub fn render_compose(
    decision: &Decision,
    spec: &ComposeSpec,
    kernel: &ResolvedKernel,
    initramfs: &str,
    token: &str,
    ctx: &ScriptContext<'_>,
) -> Result<String, RenderError> {
    let base = ctx.base.trim_end_matches('/');
    let setup = &decision.setup;
    check_line(setup, "group", &decision.group)?;
    check_line(setup, "setup name", setup)?;
    let blob = |d: &Digest| format!("{base}{BOOT_BLOBS_PATH}/{d}");
    let initrds = [
        artefact_url(setup, "initramfs", initramfs, base)?,
        blob(&kernel.modules),
    ];
    check_line(setup, "token", token)?;
    let extra = [
        format!("carte.token={token}"),
        format!("carte.setup={setup}"),
        format!("carte.kernel={}", kernel.version),
    ];
    let mut s = String::from("#!ipxe\n");
    let _ = writeln!(
        s,
        "echo carte: kernel {} (release {}) with the carte initramfs",
        kernel.version, kernel.release
    );
    check_line(setup, "kernel release", &kernel.release)?;
    boot_lines(
        &mut s,
        decision,
        &blob(&kernel.vmlinuz),
        &initrds,
        &spec.cmdline,
        &extra,
        ctx,
        base,
    )?;
    Ok(s)
}

/// The `kernel`, `initrd` and `boot` lines with carte's arguments appended to `cmdline`
/// (then `extra`), and the visible failure path.
#[allow(clippy::too_many_arguments)]
fn boot_lines(
    s: &mut String,
    decision: &Decision,
    kernel: &str,
    initrds: &[String],
    cmdline: &str,
    extra: &[String],
    ctx: &ScriptContext<'_>,
    base: &str,
) -> Result<(), RenderError> {
    let setup = &decision.setup;
    check_line(setup, "cmdline", cmdline)?;

    let mac = ctx.mac;
    let mut cmdline: Vec<String> = cmdline.split_whitespace().map(str::to_string).collect();
    cmdline.push(format!("carte.server={base}"));
    cmdline.push(format!("carte.mac={mac}"));
    // BOOTIF: "01" is the ARP hardware type of Ethernet, as pxelinux sends it.
    cmdline.push(format!("BOOTIF=01-{}", mac.hyphenated()));
    cmdline.push("ip=${netX/ip}::${netX/gateway}:${netX/netmask}:::off".to_string());
    cmdline.extend(extra.iter().cloned());
    // The Linux EFI stub loads initrds named on its command line; BIOS kernels ignore it.
    for n in 0..initrds.len() {
        cmdline.push(format!("initrd=initrd{n}"));
    }

    let _ = writeln!(
        s,
        "echo carte: machine {mac} (group {}, setup {setup}): booting {kernel}",
        decision.group
    );
    // A failed download must say so on the console, not just drop back to the firmware.
    let _ = writeln!(
        s,
        "kernel {kernel} {} || goto carte-boot-failed",
        cmdline.join(" ")
    );
    for (n, url) in initrds.iter().enumerate() {
        let _ = writeln!(s, "initrd --name initrd{n} {url} || goto carte-boot-failed");
    }
    s.push_str("boot || goto carte-boot-failed\n");
    s.push_str(":carte-boot-failed\n");
    let _ = writeln!(
        s,
        "echo carte: machine {mac}: cannot boot {kernel} from {base}; leaving iPXE"
    );
    s.push_str("exit\n");
    Ok(())
}

/// Maps a kernel/initrd reference to the URL iPXE fetches: an http(s) URL as is, a
/// relative path to `{base}/files/<path>` (percent-encoded, so `$` is never expanded).
fn artefact_url(
    setup: &str,
    what: &'static str,
    value: &str,
    base: &str,
) -> Result<String, RenderError> {
    check_line(setup, what, value)?;
    let bad = || RenderError::BadPath {
        setup: setup.to_string(),
        what,
        value: value.to_string(),
    };
    if value.starts_with("http://") || value.starts_with("https://") {
        if value.chars().any(char::is_whitespace) {
            return Err(bad());
        }
        return Ok(value.to_string());
    }
    if value.is_empty()
        || value.starts_with('/')
        || value.contains("://")
        || value
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(bad());
    }
    Ok(format!("{base}/files/{}", encode_path(value)))
}

fn check_line(setup: &str, what: &'static str, value: &str) -> Result<(), RenderError> {
    if value.chars().any(char::is_control) {
        return Err(RenderError::ControlChar {
            setup: setup.to_string(),
            what,
            value: value.to_string(),
        });
    }
    Ok(())
}

/// Percent-encodes everything but RFC 3986 unreserved characters and `/`.
fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{BootSpec, MachineLayer, SyncPolicy};

    const BASE: &str = "http://192.0.2.1:8080";

    fn mac() -> MacAddr {
        MacAddr([0x52, 0x54, 0x00, 0xab, 0xcd, 0xef])
    }

    fn decision(answer: Answer) -> Decision {
        Decision {
            group: "lab".into(),
            setup: "s1".into(),
            answer,
        }
    }

    fn boot(kernel: &str, initrds: &[&str], cmdline: &str) -> Answer {
        Answer::Boot(BootSpec {
            kernel: kernel.into(),
            initrds: initrds.iter().map(|s| s.to_string()).collect(),
            cmdline: cmdline.into(),
        })
    }

    /// Renders and returns the script's lines without comments and `echo` lines.
    fn lines(answer: Answer, arch: Option<ClientArch>) -> Vec<String> {
        let ctx = ScriptContext {
            base: BASE,
            mac: mac(),
            arch,
        };
        let script = render(&decision(answer), &ctx).expect("renders");
        assert!(script.starts_with("#!ipxe\n"), "{script}");
        script
            .lines()
            .filter(|l| !l.starts_with("echo ") && !l.starts_with('#'))
            .map(str::to_string)
            .collect()
    }

    fn check(answer: Answer, arch: Option<ClientArch>, want: &[&str]) {
        assert_eq!(lines(answer, arch), want, "arch {arch:?}");
    }

    const CARTE_ARGS: &str = "carte.server=http://192.0.2.1:8080 carte.mac=52:54:00:ab:cd:ef \
        BOOTIF=01-52-54-00-ab-cd-ef ip=${netX/ip}::${netX/gateway}:${netX/netmask}:::off";

    const FAILED: &str = " || goto carte-boot-failed";

    #[test]
    fn boot_renders_kernel_initrds_and_cmdline_for_every_arch() {
        for arch in [
            Some(ClientArch::Bios),
            Some(ClientArch::EfiX64),
            Some(ClientArch::EfiIa32),
            Some(ClientArch::EfiArm64),
            None,
        ] {
            check(
                boot(
                    "debian/vmlinuz",
                    &["carte/init.cpio.gz", "https://mirror.example/mods.cpio"],
                    "console=ttyS0  quiet",
                ),
                arch,
                &[
                    &format!(
                        "kernel {BASE}/files/debian/vmlinuz console=ttyS0 quiet {CARTE_ARGS} \
                         initrd=initrd0 initrd=initrd1{FAILED}"
                    ),
                    &format!("initrd --name initrd0 {BASE}/files/carte/init.cpio.gz{FAILED}"),
                    &format!("initrd --name initrd1 https://mirror.example/mods.cpio{FAILED}"),
                    &format!("boot{FAILED}"),
                    ":carte-boot-failed",
                    "exit",
                ],
            );
        }
    }

    #[test]
    fn boot_without_initrds_or_cmdline() {
        check(
            boot("http://198.51.100.7/k", &[], ""),
            Some(ClientArch::EfiX64),
            &[
                &format!("kernel http://198.51.100.7/k {CARTE_ARGS}{FAILED}"),
                &format!("boot{FAILED}"),
                ":carte-boot-failed",
                "exit",
            ],
        );
    }

    #[test]
    fn relative_paths_are_percent_encoded() {
        check(
            boot("k ${x}/vmlinuz+1", &[], ""),
            Some(ClientArch::Bios),
            &[
                &format!("kernel {BASE}/files/k%20%24%7Bx%7D/vmlinuz%2B1 {CARTE_ARGS}{FAILED}"),
                &format!("boot{FAILED}"),
                ":carte-boot-failed",
                "exit",
            ],
        );
    }

    #[test]
    fn local_is_sanboot_on_bios_and_exit_elsewhere() {
        check(
            Answer::Local,
            Some(ClientArch::Bios),
            &["sanboot --no-describe --drive 0x80 ||", "exit"],
        );
        for arch in [
            Some(ClientArch::EfiX64),
            Some(ClientArch::EfiIa32),
            Some(ClientArch::EfiArm64),
            None,
        ] {
            check(Answer::Local, arch, &["exit"]);
        }
    }

    #[test]
    fn wait_sleeps_and_chains_the_machine_url_again() {
        let url = machine_url(BASE);
        assert_eq!(
            url,
            "http://192.0.2.1:8080/ipxe/${netX/mac}?arch=${buildarch}&platform=${platform}&uuid=${uuid}"
        );
        for arch in [Some(ClientArch::Bios), Some(ClientArch::EfiX64)] {
            check(
                Answer::Wait,
                arch,
                &[
                    ":carte-wait",
                    "sleep 10",
                    &format!("chain --replace --autofree {url} || goto carte-wait-failed"),
                    ":carte-wait-failed",
                    "ifconf netX || dhcp netX ||",
                    "goto carte-wait",
                ],
            );
        }
    }

    #[test]
    fn ignore_leaves_ipxe() {
        for arch in [Some(ClientArch::Bios), Some(ClientArch::EfiX64), None] {
            check(Answer::Ignore, arch, &["exit"]);
        }
    }

    #[test]
    fn every_answer_says_something_visible() {
        let ctx = ScriptContext {
            base: BASE,
            mac: mac(),
            arch: Some(ClientArch::Bios),
        };
        for answer in [
            Answer::Local,
            Answer::Wait,
            Answer::Ignore,
            boot("k", &[], ""),
        ] {
            let script = render(&decision(answer.clone()), &ctx).expect("renders");
            let echo = script.lines().find(|l| {
                l.starts_with("echo carte: machine 52:54:00:ab:cd:ef (group lab, setup s1)")
            });
            assert!(echo.is_some(), "{answer:?}: {script}");
        }
    }

    #[test]
    fn boot_failure_is_visible() {
        let ctx = ScriptContext {
            base: BASE,
            mac: mac(),
            arch: Some(ClientArch::EfiX64),
        };
        let script = render(&decision(boot("k", &[], "")), &ctx).expect("renders");
        let tail: Vec<&str> = script.lines().rev().take(3).collect();
        assert_eq!(
            tail,
            [
                "exit",
                "echo carte: machine 52:54:00:ab:cd:ef: cannot boot http://192.0.2.1:8080/files/k \
                 from http://192.0.2.1:8080; leaving iPXE",
                ":carte-boot-failed",
            ]
        );
    }

    #[test]
    fn bad_values_are_render_errors() {
        let ctx = ScriptContext {
            base: BASE,
            mac: mac(),
            arch: None,
        };
        let fails = |answer: Answer| render(&decision(answer), &ctx).is_err();
        assert!(fails(boot("k", &[], "quiet\nshell")));
        assert!(fails(boot("../etc/passwd", &[], "")));
        assert!(fails(boot("/boot/vmlinuz", &[], "")));
        assert!(fails(boot("a//b", &[], "")));
        assert!(fails(boot("", &[], "")));
        assert!(fails(boot("k", &["a/./b"], "")));
        assert!(fails(boot("http://x/a b", &[], "")));
        assert!(fails(boot("ftp://x/a", &[], "")));
        assert!(!fails(boot("k", &["i"], "a=b")));
    }

    #[test]
    fn entry_script_retries_a_bounded_number_of_times_then_gives_up() {
        let script = entry_script("http://192.0.2.1:8080/");
        assert!(script.starts_with("#!ipxe\n"));
        let url = machine_url(BASE);
        let chains: Vec<&str> = script.lines().filter(|l| l.starts_with("chain ")).collect();
        assert_eq!(chains.len(), ENTRY_TRIES as usize);
        for line in chains {
            assert_eq!(line, format!("chain --replace --autofree {url} ||"));
        }
        assert_eq!(
            script.lines().filter(|l| *l == "sleep 3").count(),
            ENTRY_TRIES as usize - 1
        );
        assert_eq!(
            script
                .lines()
                .filter(|l| *l == "ifconf netX || dhcp netX ||")
                .count(),
            ENTRY_TRIES as usize - 1
        );
        let tail: Vec<&str> = script.lines().rev().take(2).collect();
        assert_eq!(
            tail,
            [
                "exit",
                "echo carte: cannot reach netbootd at http://192.0.2.1:8080; giving up"
            ]
        );
    }

    fn compose_spec() -> ComposeSpec {
        ComposeSpec {
            kernel: "linux@latest".parse().expect("ref"),
            layers: vec!["debian@7".parse().expect("ref")],
            user: vec![],
            project: None,
            machine: MachineLayer::Persist,
            sync: SyncPolicy::Never,
            disk: crate::policy::DiskChoice::Largest,
            flash: None,
            wipe: false,
            cmdline: "console=ttyS0".into(),
        }
    }

    fn resolved() -> ResolvedKernel {
        ResolvedKernel {
            version: "linux@3".parse().expect("ref"),
            release: "6.1.0-57-amd64".into(),
            vmlinuz: Digest::from_bytes(&[0xaa; 32]),
            modules: Digest::from_bytes(&[0xbb; 32]),
        }
    }

    #[test]
    fn image_setup_boots_vmlinuz_with_initramfs_and_modules() {
        let spec = compose_spec();
        let ctx = ScriptContext {
            base: BASE,
            mac: mac(),
            arch: Some(ClientArch::Bios),
        };
        let d = decision(Answer::Compose(spec.clone()));
        let script = render_compose(
            &d,
            &spec,
            &resolved(),
            "carte/initramfs.cpio.zst",
            "carte_t0k",
            &ctx,
        )
        .expect("ok");
        let got: Vec<&str> = script
            .lines()
            .filter(|l| !l.starts_with("echo ") && !l.starts_with('#'))
            .collect();
        let (vm, mods) = ("aa".repeat(32), "bb".repeat(32));
        assert_eq!(
            got,
            [
                format!(
                    "kernel {BASE}/boot/blobs/sha256/{vm} console=ttyS0 {CARTE_ARGS} \
                     carte.token=carte_t0k carte.setup=s1 carte.kernel=linux@3 initrd=initrd0 \
                     initrd=initrd1{FAILED}"
                )
                .as_str(),
                &format!("initrd --name initrd0 {BASE}/files/carte/initramfs.cpio.zst{FAILED}"),
                &format!("initrd --name initrd1 {BASE}/boot/blobs/sha256/{mods}{FAILED}"),
                &format!("boot{FAILED}"),
                ":carte-boot-failed",
                "exit",
            ]
        );
        assert!(script.contains("echo carte: kernel linux@3 (release 6.1.0-57-amd64)"));
        // The plain renderer cannot resolve images: a 500, never a silent fallback.
        assert_eq!(
            render(&d, &ctx),
            Err(RenderError::Unresolved { setup: "s1".into() })
        );
        assert!(render_compose(&d, &spec, &resolved(), "../initramfs", "t", &ctx).is_err());
    }
}
