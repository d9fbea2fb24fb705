//! The script routes: `GET /boot.ipxe` (the entry script) and `GET /ipxe/{mac}` (the
//! per-machine script). They turn the request into [`MachineFacts`], ask the [`Select`]
//! seam, log the decision and hand it to [`crate::ipxe`]. They never write iPXE syntax
//! themselves and never choose a setup. For an image setup they first resolve its kernel
//! version in the store and check that the carte initramfs is there.
//!
//! [`Select`]: super::Select

use std::sync::LazyLock;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::error::RequestError;
use super::state::AppState;
use crate::arch::ClientArch;
use crate::ipxe::{self, ScriptContext};
use crate::mac::MacAddr;
use crate::policy::{Answer, Decision, MachineFacts};
use crate::ratelimit::RateLimiter;

static BAD_REQUESTS: LazyLock<RateLimiter> =
    LazyLock::new(|| RateLimiter::new(20, Duration::from_secs(60)));
static RENDER_FAILED: LazyLock<RateLimiter> =
    LazyLock::new(|| RateLimiter::new(20, Duration::from_secs(60)));

/// Decision lines: every one while machines boot, not a flood's worth.
static DECISIONS: LazyLock<RateLimiter> =
    LazyLock::new(|| RateLimiter::new(200, Duration::from_secs(1)));

/// The query iPXE sends with the per-machine URL ([`ipxe::machine_url`]).
#[derive(Debug, Default, serde::Deserialize)]
pub struct ScriptQuery {
    /// iPXE `${buildarch}`: `i386`, `x86_64`, `arm32`, `arm64`. Also accepted as
    /// `buildarch=`, the name of the iPXE setting, which people type by hand.
    #[serde(alias = "buildarch")]
    pub arch: Option<String>,
    /// iPXE `${platform}`: `pcbios` or `efi`.
    pub platform: Option<String>,
    /// iPXE `${uuid}`: the SMBIOS UUID, empty when the firmware has none.
    pub uuid: Option<String>,
}

pub async fn entry(State(state): State<AppState>) -> Response {
    script_response(ipxe::entry_script(&state.public_base))
}

pub async fn machine(
    State(state): State<AppState>,
    Path(mac): Path<String>,
    Query(query): Query<ScriptQuery>,
) -> Response {
    let mac: MacAddr = match mac.parse() {
        Ok(mac) => mac,
        Err(e) => {
            if let Some(suppressed) = BAD_REQUESTS.allow() {
                tracing::warn!(suppressed, "refused script request: {e}");
            }
            return RequestError::BadMac(e).into_response();
        }
    };
    tracing::Span::current().record("mac", tracing::field::display(mac));
    let facts = facts_from_query(mac, &query);
    let decision = state.select.select(&facts);
    if let Some(suppressed) = DECISIONS.allow() {
        tracing::info!(
            mac = %mac,
            arch = %facts.arch.map(|a| a.name()).unwrap_or_else(|| "unknown".into()),
            uuid = %facts.uuid.as_deref().unwrap_or("-"),
            group = %decision.group,
            setup = %decision.setup,
            answer = %answer_name(&decision.answer),
            suppressed,
            "boot decision"
        );
    }
    let ctx = ScriptContext {
        base: &state.public_base,
        mac,
        arch: facts.arch,
    };
    let flashed = match &decision.answer {
        Answer::Compose(spec) => still_flashed(&state, &decision.setup, spec, mac).await,
        _ => false,
    };
    let rendered = match &decision.answer {
        Answer::Compose(_) if flashed => {
            // Disk mode, done: the machine boots the image it flashed from its disk.
            if let Some(suppressed) = DECISIONS.allow() {
                tracing::info!(%mac, setup = %decision.setup, suppressed, "image already flashed: answering local");
            }
            let local = Decision {
                answer: Answer::Local,
                ..decision.clone()
            };
            ipxe::render(&local, &ctx).map_err(RequestError::Render)
        }
        Answer::Compose(spec) => match resolve(&state, &decision.setup, spec, mac).await {
            Ok(boot) => ipxe::render_compose(
                &decision,
                spec,
                &boot.kernel,
                &boot.initramfs,
                &boot.token,
                &ctx,
            )
            .map_err(RequestError::Render),
            Err(e) => Err(e),
        },
        _ => ipxe::render(&decision, &ctx).map_err(RequestError::Render),
    };
    match rendered {
        Ok(script) => script_response(script),
        Err(e) => {
            // Any client can ask for any MAC's script: bound the log lines.
            if let Some(suppressed) = RENDER_FAILED.allow() {
                tracing::error!(suppressed, "{e}");
            }
            e.into_response()
        }
    }
}

/// True when `spec` flashes a disk image and `mac` has reported that very image version
/// flashed for this setup: its disk holds it, so it boots locally.
async fn still_flashed(
    state: &AppState,
    setup: &str,
    spec: &crate::policy::ComposeSpec,
    mac: MacAddr,
) -> bool {
    let (Some(images), Some(image)) = (&state.images, &spec.flash) else {
        return false;
    };
    let Some(done) = images.machines.flashed(mac) else {
        return false;
    };
    if done.setup != setup || done.image != image.name {
        return false;
    }
    let store = images.store.clone();
    let image = image.clone();
    let now =
        tokio::task::spawn_blocking(move || crate::images::resolve_version(&store, &image)).await;
    matches!(now, Ok(Ok(v)) if u64::from(v) == done.version)
}

/// What an image setup's script needs, found at request time.
struct ComposeBoot {
    kernel: ipxe::ResolvedKernel,
    initramfs: String,
    token: String,
}

/// Prepares one boot of an image setup: resolves its kernel version (`@latest` now),
/// checks that the carte initramfs exists, makes this boot's token and issues the plan
/// carte-init will fetch with it. Any failure is the setup's 500.
async fn resolve(
    state: &AppState,
    setup: &str,
    spec: &crate::policy::ComposeSpec,
    mac: MacAddr,
) -> Result<ComposeBoot, RequestError> {
    let fail = |why: String| RequestError::ImageSetup {
        setup: setup.to_string(),
        why,
    };
    let Some(images) = &state.images else {
        return Err(fail("netbootd runs without an image store".into()));
    };
    let initramfs = state.data_dir.join(&images.initramfs);
    if !tokio::fs::metadata(&initramfs)
        .await
        .is_ok_and(|m| m.is_file())
    {
        // The relative name only: request errors never show where the data folder is.
        return Err(fail(format!(
            "the carte initramfs {} is missing from the data folder (build it with \
             scripts/build-initramfs)",
            images.initramfs
        )));
    }
    let store = images.store.clone();
    let spec = spec.clone();
    let base = state.public_base.clone();
    let (kernel, plan) = tokio::task::spawn_blocking(move || {
        let kernel =
            crate::images::resolve_kernel(&store, &spec.kernel).map_err(|e| e.to_string())?;
        let token = imaged::token::generate().map_err(|e| e.to_string())?;
        let plan = crate::plan::build(&store, &spec, &kernel, mac, None, &token, &base)
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((kernel, plan))
    })
    .await
    .map_err(|e| fail(format!("store task failed: {e}")))?
    .map_err(fail)?;
    let token = plan.token.clone();
    images.machines.issue(mac, setup, plan);
    Ok(ComposeBoot {
        kernel,
        initramfs: images.initramfs.clone(),
        token,
    })
}

/// The facts of a script request: the MAC from the path, the arch from iPXE's platform
/// and build arch, the UUID lowercased (dropped when it is not a UUID).
pub fn facts_from_query(mac: MacAddr, query: &ScriptQuery) -> MachineFacts {
    MachineFacts {
        mac,
        arch: arch_from_ipxe(
            query.platform.as_deref().unwrap_or(""),
            query.arch.as_deref().unwrap_or(""),
        ),
        uuid: query.uuid.as_deref().and_then(normalise_uuid),
    }
}

/// iPXE's `${platform}` and `${buildarch}` to a client arch. A BIOS iPXE is `pcbios`
/// whatever it was built for; anything unknown stays unknown, never BIOS.
pub fn arch_from_ipxe(platform: &str, buildarch: &str) -> Option<ClientArch> {
    match (platform, buildarch) {
        ("pcbios", _) => Some(ClientArch::Bios),
        ("efi", "x86_64") => Some(ClientArch::EfiX64),
        ("efi", "i386") => Some(ClientArch::EfiIa32),
        ("efi", "arm64") => Some(ClientArch::EfiArm64),
        ("efi", "arm32") => Some(ClientArch::EfiArm32),
        _ => None,
    }
}

/// `8-4-4-4-12` hex digits, lowercased; anything else is `None`.
fn normalise_uuid(s: &str) -> Option<String> {
    let s = s.trim().to_ascii_lowercase();
    let groups: Vec<&str> = s.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    let ok = groups.len() == lens.len()
        && groups
            .iter()
            .zip(lens)
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()));
    ok.then_some(s)
}

fn answer_name(answer: &Answer) -> &'static str {
    match answer {
        Answer::Boot(_) => "boot",
        Answer::Compose(_) => "compose",
        Answer::Local => "local",
        Answer::Wait => "wait",
        Answer::Ignore => "ignore",
    }
}

fn script_response(script: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            // Scripts follow the live policy; a cached one would hide an edit.
            (header::CACHE_CONTROL, "no-store"),
        ],
        script,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_from_platform_and_buildarch() {
        let check = |p: &str, b: &str, want: Option<ClientArch>| {
            assert_eq!(arch_from_ipxe(p, b), want, "{p} {b}")
        };
        check("pcbios", "i386", Some(ClientArch::Bios));
        check("pcbios", "x86_64", Some(ClientArch::Bios));
        check("efi", "x86_64", Some(ClientArch::EfiX64));
        check("efi", "i386", Some(ClientArch::EfiIa32));
        check("efi", "arm64", Some(ClientArch::EfiArm64));
        check("efi", "arm32", Some(ClientArch::EfiArm32));
        check("efi", "riscv64", None);
        check("", "", None);
        check("${platform}", "${buildarch}", None);
    }

    #[test]
    fn uuid_is_lowercased_or_dropped() {
        let check =
            |s: &str, want: Option<&str>| assert_eq!(normalise_uuid(s).as_deref(), want, "{s}");
        check(
            "A1B2C3D4-0000-1111-2222-333344445555",
            Some("a1b2c3d4-0000-1111-2222-333344445555"),
        );
        check("", None);
        check("not-a-uuid", None);
        check("a1b2c3d4-0000-1111-2222-33334444555g", None);
    }
}
