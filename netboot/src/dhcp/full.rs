//! Full mode: addresses from the pool (reservations from the policy win), leases, and the
//! DISCOVER / REQUEST / RELEASE / DECLINE / INFORM state machine of RFC 2131.
//!
//! It deliberately does no IO besides the lease file (through [`LeaseStore`]), does not
//! decide boot information (the caller passes the [`BootInfo`], or none, in), and serves
//! one pool on one subnet: a relay (giaddr) on another subnet gets no address.
//!
//! One deliberate leniency: an INIT-REBOOT request (no server id, no ciaddr) for a free
//! pool address from a machine we have no record of is ACKed rather than ignored, so a
//! machine keeps its address when the lease file was lost.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::boot::{BootEnv, BootInfo};
use super::leases::{LeaseError, LeaseStore};
use super::packet::{Facts, MessageType};
use super::reply::Reply;
use crate::config::DhcpConfig;
use crate::mac::MacAddr;
use crate::policy::Policy;
use crate::ratelimit::RateLimiter;

/// How long an OFFER holds its address for the client to REQUEST it.
pub const OFFER_HOLD_SECS: u64 = 30;
/// How long a DECLINEd address stays out of use.
pub const DECLINE_QUARANTINE_SECS: u64 = 600;

/// What the full-mode handler did with a request.
#[derive(Debug)]
pub enum FullOutcome {
    Reply(Box<Reply>),
    /// Nothing to send; the reason is logged.
    Silent(String),
}

/// Why an address cannot go to a machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    OutsidePool,
    ReservedForOther(MacAddr),
    InUse(MacAddr),
    Declined,
    ServerAddress,
}

#[derive(Debug)]
pub struct FullMode {
    pub config: DhcpConfig,
    pub leases: LeaseStore,
    /// A failing disk would otherwise log once per request.
    write_errors: RateLimiter,
}

fn mask(prefix_len: u8) -> Ipv4Addr {
    match prefix_len {
        0 => Ipv4Addr::UNSPECIFIED,
        p => Ipv4Addr::from(u32::MAX << (32 - u32::from(p.min(32)))),
    }
}

fn reservation(policy: &Policy, mac: MacAddr) -> Option<Ipv4Addr> {
    policy.machines.get(&mac).and_then(|m| m.ip)
}

fn reserved_by(policy: &Policy, ip: Ipv4Addr) -> Option<MacAddr> {
    policy
        .machines
        .iter()
        .find(|(_, m)| m.ip == Some(ip))
        .map(|(mac, _)| *mac)
}

impl FullMode {
    pub fn new(config: DhcpConfig, leases: LeaseStore) -> Self {
        Self {
            config,
            leases,
            write_errors: RateLimiter::new(5, Duration::from_secs(60)),
        }
    }

    fn in_pool(&self, ip: Ipv4Addr) -> bool {
        self.config
            .pool
            .is_some_and(|p| (u32::from(p.first)..=u32::from(p.last)).contains(&u32::from(ip)))
    }

    /// Whether `ip` is in the pool's network (`prefix_len`).
    fn on_pool_subnet(&self, ip: Ipv4Addr) -> bool {
        let m = u32::from(mask(self.config.prefix_len));
        self.config
            .pool
            .is_some_and(|p| u32::from(p.first) & m == u32::from(ip) & m)
    }

    /// Whether `ip` may go to `mac` at `now`. A reservation for `mac` always may.
    pub fn check(
        &self,
        env: &BootEnv,
        policy: &Policy,
        mac: MacAddr,
        ip: Ipv4Addr,
        now: u64,
    ) -> Result<(), Refusal> {
        if reservation(policy, mac) == Some(ip) {
            return Ok(());
        }
        if let Some(other) = reserved_by(policy, ip) {
            return Err(Refusal::ReservedForOther(other));
        }
        if !self.in_pool(ip) {
            return Err(Refusal::OutsidePool);
        }
        if ip == env.server_ip {
            return Err(Refusal::ServerAddress);
        }
        if self.leases.is_declined(ip, now) {
            return Err(Refusal::Declined);
        }
        match self.leases.taken(now).get(&ip) {
            Some(holder) if *holder != mac => Err(Refusal::InUse(*holder)),
            _ => Ok(()),
        }
    }

    /// The address to offer `mac`: its reservation, its current lease or offer, the
    /// address it asks for, or the first free one in the pool.
    pub fn choose(
        &self,
        env: &BootEnv,
        policy: &Policy,
        facts: &Facts,
        mac: MacAddr,
        now: u64,
    ) -> Option<Ipv4Addr> {
        if let Some(ip) = reservation(policy, mac) {
            return Some(ip);
        }
        let ok = |ip: Ipv4Addr| self.check(env, policy, mac, ip, now).is_ok();
        let known = self
            .leases
            .offered(mac, now)
            .or_else(|| self.leases.bound(mac))
            .map(|l| l.ip);
        if let Some(ip) = known.filter(|ip| ok(*ip)) {
            return Some(ip);
        }
        if let Some(ip) = facts.requested_ip.filter(|ip| ok(*ip)) {
            return Some(ip);
        }
        let pool = self.config.pool?;
        let taken = self.leases.taken(now);
        (u32::from(pool.first)..=u32::from(pool.last))
            .map(Ipv4Addr::from)
            .find(|ip| !taken.contains_key(ip) && ok(*ip))
    }

    fn lease_options(&self, env: &BootEnv, policy: &Policy, mac: MacAddr, reply: &mut Reply) {
        reply.set_ip(54, env.server_ip);
        reply.set_ip(1, mask(self.config.prefix_len));
        if let Some(r) = self.config.router {
            reply.set_ip(3, r);
        }
        if !self.config.dns.is_empty() {
            let dns: Vec<u8> = self.config.dns.iter().flat_map(|d| d.octets()).collect();
            reply.set(6, dns);
        }
        if let Some(name) = policy.machines.get(&mac).and_then(|m| m.hostname.clone()) {
            reply.set(12, name.into_bytes());
        }
    }

    fn lease_times(&self, reply: &mut Reply) {
        let secs = self.config.lease_secs;
        reply.set_u32(51, secs);
        reply.set_u32(58, secs / 2);
        reply.set_u32(59, (u64::from(secs) * 7 / 8) as u32);
    }

    fn answer(
        &self,
        env: &BootEnv,
        policy: &Policy,
        facts: &Facts,
        kind: MessageType,
        yiaddr: Ipv4Addr,
        boot: Option<&BootInfo>,
    ) -> Reply {
        let mut reply = Reply::to(facts, kind);
        reply.yiaddr = yiaddr;
        if kind == MessageType::Ack {
            reply.ciaddr = facts.ciaddr;
        }
        if let Some(mac) = facts.mac {
            self.lease_options(env, policy, mac, &mut reply);
        }
        self.lease_times(&mut reply);
        if let Some(info) = boot {
            env.apply(&mut reply, info);
        }
        reply
    }

    fn nak(env: &BootEnv, facts: &Facts, why: &str) -> FullOutcome {
        let mut reply = Reply::to(facts, MessageType::Nak);
        reply.set_ip(54, env.server_ip);
        reply.set(56, why.as_bytes().to_vec());
        FullOutcome::Reply(Box::new(reply))
    }

    fn persist(&self, result: Result<(), LeaseError>) {
        if let Err(e) = result {
            if let Some(suppressed) = self.write_errors.allow() {
                tracing::error!(suppressed, "{e}; the lease is kept in memory only");
            }
        }
    }

    /// Handles one request from `mac`. `boot` is the boot information the client gets
    /// (none for plain DHCP clients or unknown arches).
    pub fn handle(
        &mut self,
        env: &BootEnv,
        policy: &Policy,
        facts: &Facts,
        mac: MacAddr,
        boot: Option<&BootInfo>,
        now: u64,
    ) -> FullOutcome {
        let lease_end = now + u64::from(self.config.lease_secs);
        let assigns = matches!(
            facts.message_type,
            Some(MessageType::Discover | MessageType::Request)
        );
        if assigns
            && !facts.giaddr.is_unspecified()
            && !self.on_pool_subnet(facts.giaddr)
            && reservation(policy, mac).is_none()
        {
            // One pool, one subnet: a relay elsewhere needs addresses we do not have.
            return FullOutcome::Silent(format!(
                "relay {} is not on the pool's subnet",
                facts.giaddr
            ));
        }
        match facts.message_type {
            Some(MessageType::Discover) => match self.choose(env, policy, facts, mac, now) {
                Some(ip) => {
                    self.leases.offer(mac, ip, now, now + OFFER_HOLD_SECS);
                    FullOutcome::Reply(Box::new(self.answer(
                        env,
                        policy,
                        facts,
                        MessageType::Offer,
                        ip,
                        boot,
                    )))
                }
                None => FullOutcome::Silent("pool exhausted".into()),
            },
            Some(MessageType::Request) => {
                let ip = match (facts.server_id, facts.ciaddr, facts.requested_ip) {
                    (Some(sid), _, _) if sid != env.server_ip => {
                        // SELECTING another server's offer: release ours.
                        self.leases.drop_offer(mac);
                        return FullOutcome::Silent(format!("request for server {sid}"));
                    }
                    (Some(_), ciaddr, requested) => {
                        requested.or((!ciaddr.is_unspecified()).then_some(ciaddr))
                    }
                    (None, ciaddr, _) if !ciaddr.is_unspecified() => Some(ciaddr),
                    (None, _, requested) => requested,
                };
                let Some(ip) = ip else {
                    return FullOutcome::Silent("request names no address".into());
                };
                match self.check(env, policy, mac, ip, now) {
                    Ok(()) => {
                        // A renewal while the file still holds more than half a lease
                        // is kept in memory: rewriting and fsyncing on every REQUEST let
                        // one chatty client cap the server at a few dozen answers a second.
                        let half = u64::from(self.config.lease_secs) / 2;
                        let fresh_on_disk = self.leases.bound(mac).is_some_and(|l| l.ip == ip)
                            && self
                                .leases
                                .expires_on_disk(mac)
                                .is_some_and(|end| end >= now + half);
                        if fresh_on_disk {
                            self.leases.extend(mac, lease_end);
                        } else {
                            let result = self.leases.bind(mac, ip, lease_end);
                            self.persist(result);
                        }
                        FullOutcome::Reply(Box::new(self.answer(
                            env,
                            policy,
                            facts,
                            MessageType::Ack,
                            ip,
                            boot,
                        )))
                    }
                    Err(why) => Self::nak(env, facts, &format!("{ip}: {why:?}")),
                }
            }
            Some(MessageType::Release) => {
                if facts.server_id.is_some_and(|s| s != env.server_ip) {
                    return FullOutcome::Silent("release for another server".into());
                }
                match self.leases.release(mac, facts.ciaddr) {
                    Ok(true) => FullOutcome::Silent(format!("released {}", facts.ciaddr)),
                    Ok(false) => {
                        FullOutcome::Silent(format!("release of unknown {}", facts.ciaddr))
                    }
                    Err(e) => {
                        self.persist(Err(e));
                        FullOutcome::Silent("released in memory only".into())
                    }
                }
            }
            Some(MessageType::Decline) => {
                if facts.server_id.is_some_and(|s| s != env.server_ip) {
                    return FullOutcome::Silent("decline for another server".into());
                }
                let Some(ip) = facts.requested_ip else {
                    return FullOutcome::Silent("decline names no address".into());
                };
                // Only the address this machine was offered or holds: any other would let
                // one client quarantine addresses at will (and end other machines' leases),
                // and grow the lease file without bound.
                let own = [self.leases.offered(mac, now), self.leases.bound(mac)]
                    .into_iter()
                    .flatten()
                    .any(|l| l.ip == ip);
                if !own {
                    return FullOutcome::Silent(format!("decline of {ip}, not this machine's"));
                }
                let result = self.leases.decline(ip, now + DECLINE_QUARANTINE_SECS);
                self.persist(result);
                FullOutcome::Silent(format!("declined {ip}, quarantined"))
            }
            Some(MessageType::Inform) => {
                let mut reply = Reply::to(facts, MessageType::Ack);
                reply.ciaddr = facts.ciaddr;
                self.lease_options(env, policy, mac, &mut reply);
                if let Some(info) = boot {
                    env.apply(&mut reply, info);
                }
                FullOutcome::Reply(Box::new(reply))
            }
            other => FullOutcome::Silent(format!("message type {other:?} not handled")),
        }
    }
}
