//! Where a reply goes (RFC 2131 section 4.1).
//!
//! Relayed requests go back to the relay (giaddr, server port); clients that have an
//! address (ciaddr) get unicast; everyone else gets a limited broadcast on the bound
//! interface. We deliberately never unicast to yiaddr before the client has its address:
//! that needs a hand-made ARP entry (SIOCSARP), and a broadcast reaches the client
//! whether or not it set the broadcast flag, so the flag is honoured by always
//! broadcasting. Proxy boot-server (4011) replies go back to the request's source.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use super::packet::{Facts, MessageType};
use super::reply::Reply;

/// The ports in use: ours (67 or a test port) and the clients' (68 or a test port).
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub server: u16,
    pub client: u16,
}

/// The destination of `reply` to `facts`, which came from `peer`. Sets the broadcast flag
/// on relayed NAKs so the relay broadcasts them.
pub fn destination(
    reply: &mut Reply,
    facts: &Facts,
    peer: SocketAddr,
    ports: Ports,
    to_peer: bool,
) -> SocketAddr {
    if to_peer {
        return peer;
    }
    let nak = reply.message_type == MessageType::Nak;
    if !facts.giaddr.is_unspecified() {
        if nak {
            reply.flags |= 0x8000;
        }
        return SocketAddr::V4(SocketAddrV4::new(facts.giaddr, ports.server));
    }
    if !nak && !facts.ciaddr.is_unspecified() {
        return SocketAddr::V4(SocketAddrV4::new(facts.ciaddr, ports.client));
    }
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::BROADCAST, ports.client))
}
