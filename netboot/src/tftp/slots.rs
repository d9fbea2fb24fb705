//! Counting running transfers, in total and per client address, so a flood of read
//! requests (each would hold a socket, a file and up to a window of blocks for as long as
//! the client's timeout allows) cannot take every file descriptor of the daemon.
//!
//! It does not queue: a request over a limit is refused at once and the client retries.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

/// The limits and what is in use.
#[derive(Clone, Debug)]
pub struct Slots {
    max_total: usize,
    max_per_client: usize,
    counts: Arc<Mutex<Counts>>,
}

/// One running transfer; freed when dropped (the transfer ended, failed or was aborted).
#[derive(Debug)]
pub struct Slot {
    client: IpAddr,
    counts: Arc<Mutex<Counts>>,
}

/// Which limit a request hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Full {
    Total(usize),
    Client(usize),
}

impl Slots {
    /// Limits below 1 are taken as 1.
    pub fn new(max_total: usize, max_per_client: usize) -> Self {
        Self {
            max_total: max_total.max(1),
            max_per_client: max_per_client.max(1),
            counts: Arc::default(),
        }
    }

    /// A slot for a transfer to `client`, or which limit is reached.
    pub fn take(&self, client: IpAddr) -> Result<Slot, Full> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if counts.total >= self.max_total {
            return Err(Full::Total(self.max_total));
        }
        let mine = counts.per_client.entry(client).or_insert(0);
        if *mine >= self.max_per_client {
            return Err(Full::Client(self.max_per_client));
        }
        *mine += 1;
        counts.total += 1;
        Ok(Slot {
            client,
            counts: self.counts.clone(),
        })
    }

    /// Transfers running now.
    pub fn in_use(&self) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_client.get_mut(&self.client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_client.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_total_and_per_client_and_frees_on_drop() {
        let a: IpAddr = "192.0.2.10".parse().expect("ip");
        let b: IpAddr = "192.0.2.11".parse().expect("ip");
        let c: IpAddr = "192.0.2.12".parse().expect("ip");
        let slots = Slots::new(3, 2);
        let a1 = slots.take(a).expect("a1");
        let _a2 = slots.take(a).expect("a2");
        assert_eq!(slots.take(a).err(), Some(Full::Client(2)));
        let _b1 = slots.take(b).expect("b1");
        assert_eq!(slots.take(c).err(), Some(Full::Total(3)));
        drop(a1);
        assert_eq!(slots.in_use(), 2);
        let _c1 = slots.take(c).expect("freed slot is reused");
        assert_eq!(slots.take(a).err(), Some(Full::Total(3)));
    }
}
