//! Proxy mode: boot information beside another DHCP server, never an address.
//!
//! On port 67 it answers a boot client's DISCOVER with a proxy OFFER (yiaddr 0, vendor
//! class PXEClient or HTTPClient, boot file); on the PXE boot-server port (4011) it
//! answers a REQUEST with an ACK carrying the boot file. It deliberately never hands out
//! an address and never NAKs (the real DHCP server owns addresses), and sends no PXE boot
//! menu: discovery control 8 tells PXE ROMs to take the boot file as given.

use super::boot::{BootEnv, BootInfo};
use super::packet::{Facts, MessageType};
use super::reply::Reply;

/// Which socket a request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyPort {
    /// The DHCP server port (67): broadcasts from clients.
    Dhcp,
    /// The PXE boot-server port (4011): unicast requests after the proxy OFFER.
    BootServer,
}

/// The proxy answer to `facts`, or why there is none.
pub fn handle(
    env: &BootEnv,
    facts: &Facts,
    port: ProxyPort,
    boot: &BootInfo,
) -> Result<Reply, String> {
    let kind = match (port, facts.message_type) {
        (ProxyPort::Dhcp, Some(MessageType::Discover)) => MessageType::Offer,
        (ProxyPort::BootServer, Some(MessageType::Request | MessageType::Inform)) => {
            MessageType::Ack
        }
        (p, t) => return Err(format!("{t:?} on {p:?} not answered in proxy mode")),
    };
    let mut reply = Reply::to(facts, kind);
    if port == ProxyPort::BootServer {
        reply.ciaddr = facts.ciaddr;
    }
    reply.set_ip(54, env.server_ip);
    env.apply(&mut reply, boot);
    if reply.option(60).is_none() {
        // iPXE (and PXE ROMs) recognise a proxy offer by vendor class PXEClient.
        reply.set(60, "PXEClient");
    }
    if let BootInfo::Tftp { .. } = boot {
        // PXE vendor options: discovery control (6) = 8, "use the boot file given".
        reply.set(43, vec![6, 1, 8, 255]);
    }
    if let Some(uuid) = &facts.uuid_raw {
        // PXE spec: proxy replies echo the client machine identifier.
        reply.set(97, uuid.clone());
    }
    Ok(reply)
}
