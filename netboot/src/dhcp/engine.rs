//! One request in, at most one reply out: parse the facts, ask the policy, hand the
//! request to the mode's handler, route the reply. Pure apart from the lease file, so
//! tests drive it with crafted bytes and no sockets.
//!
//! It deliberately owns no socket and never blocks on the network; the socket loop
//! ([`super::socket`]) calls [`Engine::handle`] for every datagram.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::boot::{BootEnv, BootInfo, NoBoot};
use super::full::{FullMode, FullOutcome};
use super::leases::LeaseStore;
use super::packet::{self, Facts, MessageType};
use super::proxy::{self, ProxyPort};
use super::reply::Reply;
use super::route::{self, Ports};
use crate::config::{DhcpConfig, DhcpMode};
use crate::policy::{Answer, Decision, MachineFacts, Policy, PolicyHandle};
use crate::ratelimit::RateLimiter;

/// The policy selection seam: the daemon passes [`Policy::select`]; tests pass their own.
pub type SelectFn = dyn Fn(&Policy, &MachineFacts) -> Decision + Send + Sync;

/// Which socket a datagram arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    /// `config.port` (67).
    Dhcp,
    /// `config.proxy_port` (4011), proxy mode only.
    ProxyBoot,
}

/// A reply ready to send.
#[derive(Debug)]
pub struct Outgoing {
    pub reply: Reply,
    pub bytes: Vec<u8>,
    pub dest: SocketAddr,
}

enum ModeState {
    Full(Box<Mutex<FullMode>>),
    Proxy,
}

pub struct Engine {
    env: BootEnv,
    ports: Ports,
    mode: ModeState,
    policy: PolicyHandle,
    select: Arc<SelectFn>,
    malformed: RateLimiter,
    decisions: RateLimiter,
}

fn answer_name(a: &Answer) -> &'static str {
    match a {
        Answer::Boot(_) => "boot",
        Answer::Compose(_) => "compose",
        Answer::Local => "local",
        Answer::Wait => "wait",
        Answer::Ignore => "ignore",
    }
}

fn arch_name(f: &Facts) -> String {
    f.arch.map_or_else(|| "unknown".into(), |a| a.name())
}

impl Engine {
    /// `leases` is used in full mode (ignored otherwise). `DhcpMode::Off` behaves as
    /// proxy here; the daemon never starts DHCP when it is off.
    pub fn new(
        env: BootEnv,
        config: &DhcpConfig,
        policy: PolicyHandle,
        select: Arc<SelectFn>,
        leases: LeaseStore,
    ) -> Self {
        let mode = match config.mode {
            DhcpMode::Full => {
                ModeState::Full(Box::new(Mutex::new(FullMode::new(config.clone(), leases))))
            }
            DhcpMode::Proxy | DhcpMode::Off => ModeState::Proxy,
        };
        Self {
            env,
            ports: Ports {
                server: config.port,
                client: config.client_port,
            },
            mode,
            policy,
            select,
            malformed: RateLimiter::new(20, Duration::from_secs(10)),
            decisions: RateLimiter::new(200, Duration::from_secs(1)),
        }
    }

    fn drop_malformed(&self, peer: SocketAddr, why: &dyn std::fmt::Display) {
        if let Some(suppressed) = self.malformed.allow() {
            tracing::warn!(%peer, suppressed, "dhcp: dropped packet: {why}");
        }
    }

    /// An info line a client triggered, rate-limited with the decision lines.
    fn note(&self, what: &str) {
        if let Some(suppressed) = self.decisions.allow() {
            tracing::info!(suppressed, "{what}");
        }
    }

    /// Handles one datagram from `peer` at unix time `now`.
    pub fn handle(&self, bytes: &[u8], peer: SocketAddr, port: Port, now: u64) -> Option<Outgoing> {
        let facts = match packet::parse(bytes) {
            Ok(f) => f,
            Err(e) => {
                self.drop_malformed(peer, &e);
                return None;
            }
        };
        let Some(mac) = facts.mac else {
            let why = format!(
                "htype {} hlen {} is not ethernet; not routed",
                facts.htype, facts.hlen
            );
            self.drop_malformed(peer, &why);
            return None;
        };
        let span = tracing::info_span!(
            "dhcp",
            %mac,
            xid = %format_args!("{:08x}", facts.xid),
            %peer,
            msg = ?facts.message_type,
        );
        let _enter = span.enter();
        let policy = self.policy.current();

        let mut reply = match &self.mode {
            ModeState::Full(full) => {
                let mut full = full.lock().unwrap_or_else(|p| p.into_inner());
                if matches!(
                    facts.message_type,
                    Some(MessageType::Release | MessageType::Decline)
                ) {
                    // Freeing an address needs no policy decision.
                    if let FullOutcome::Silent(why) =
                        full.handle(&self.env, &policy, &facts, mac, None, now)
                    {
                        self.note(&why);
                    }
                    return None;
                }
                let (decision, boot) = self.decide(&policy, &facts, mac)?;
                match full.handle(&self.env, &policy, &facts, mac, boot.as_ref(), now) {
                    FullOutcome::Reply(r) => {
                        self.log_decision(&facts, &decision, boot.as_ref(), &r);
                        *r
                    }
                    FullOutcome::Silent(why) => {
                        self.note(&format!(
                            "answer {}, no reply: {why}",
                            answer_name(&decision.answer)
                        ));
                        return None;
                    }
                }
            }
            ModeState::Proxy => {
                let proxy_port = match port {
                    Port::Dhcp => ProxyPort::Dhcp,
                    Port::ProxyBoot => ProxyPort::BootServer,
                };
                let wanted = match proxy_port {
                    ProxyPort::Dhcp => facts.message_type == Some(MessageType::Discover),
                    ProxyPort::BootServer => matches!(
                        facts.message_type,
                        Some(MessageType::Request | MessageType::Inform)
                    ),
                };
                if !wanted || !facts.is_boot_client() {
                    // Not ours to answer: the lab's DHCP server handles it.
                    tracing::debug!("proxy: not a boot request, left to the dhcp server");
                    return None;
                }
                let (decision, boot) = self.decide(&policy, &facts, mac)?;
                let boot = boot?;
                match proxy::handle(&self.env, &facts, proxy_port, &boot) {
                    Ok(r) => {
                        self.log_decision(&facts, &decision, Some(&boot), &r);
                        r
                    }
                    Err(why) => {
                        self.note(&format!("no reply: {why}"));
                        return None;
                    }
                }
            }
        };
        let dest = route::destination(
            &mut reply,
            &facts,
            peer,
            self.ports,
            port == Port::ProxyBoot,
        );
        let bytes = reply.encode();
        Some(Outgoing { reply, bytes, dest })
    }

    /// Asks the policy; `None` means send nothing at all (answer `ignore`). The boot
    /// information is `None` for clients that get an address only.
    fn decide(
        &self,
        policy: &Policy,
        facts: &Facts,
        mac: crate::mac::MacAddr,
    ) -> Option<(Decision, Option<BootInfo>)> {
        let decision = (self.select)(
            policy,
            &MachineFacts {
                mac,
                arch: facts.arch,
                uuid: facts.uuid.clone(),
            },
        );
        if decision.answer == Answer::Ignore {
            if let Some(suppressed) = self.decisions.allow() {
                tracing::info!(
                    arch = %arch_name(facts),
                    ipxe = facts.is_ipxe,
                    group = %decision.group,
                    setup = %decision.setup,
                    answer = "ignore",
                    suppressed,
                    "decision: ignore, nothing sent"
                );
            }
            return None;
        }
        let boot = match self.env.boot_info(facts) {
            Ok(b) => Some(b),
            Err(NoBoot::NotABootClient) => None,
            Err(why) => {
                if let Some(suppressed) = self.decisions.allow() {
                    tracing::warn!(
                        arch = %arch_name(facts),
                        vendor_class = ?facts.vendor_class,
                        suppressed,
                        "no boot answer: {why}"
                    );
                }
                None
            }
        };
        Some((decision, boot))
    }

    fn log_decision(&self, facts: &Facts, d: &Decision, boot: Option<&BootInfo>, r: &Reply) {
        if let Some(suppressed) = self.decisions.allow() {
            tracing::info!(
                arch = %arch_name(facts),
                ipxe = facts.is_ipxe,
                group = %d.group,
                setup = %d.setup,
                answer = answer_name(&d.answer),
                reply = ?r.message_type,
                yiaddr = %r.yiaddr,
                boot = %boot.map_or_else(|| "none".into(), BootInfo::describe),
                suppressed,
                "decision"
            );
        }
    }
}
