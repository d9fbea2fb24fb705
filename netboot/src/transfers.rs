//! Transfer accounting: how many bytes of each blob netbootd has sent since it started.
//!
//! The blob route wraps each response body in a [`CountingReader`], which adds what the
//! body really read from the file (a cut-off download counts what went out, a HEAD or a
//! 304 counts nothing). Admins read the totals at `GET /api/v1/transfers`; the end-to-end
//! tests use them to show that a reboot moves no layer and a kernel change moves only the
//! kernel. In memory only, like machine states: a restart starts from zero.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, ReadBuf};

/// What was sent of one blob.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    /// Response bodies started (full or ranged GETs).
    pub requests: u64,
    /// Body bytes read from the blob and handed to the connection.
    pub bytes: u64,
}

/// Totals per blob digest (lowercase hex sha256).
#[derive(Debug, Default)]
pub struct Transfers {
    by_digest: Mutex<BTreeMap<String, Arc<Counters>>>,
}

/// One blob's counters, shared by every reader of that blob.
#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    bytes: AtomicU64,
}

impl Transfers {
    /// Counts one more response body for `digest`; the reader adds its bytes as they go.
    /// The map is locked here only, not per chunk read.
    pub fn reader<R>(&self, digest: &str, inner: R) -> CountingReader<R> {
        // A poisoned lock only means another request panicked mid-update; the counts
        // stay usable.
        let counters = self
            .by_digest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(digest.to_string())
            .or_default()
            .clone();
        counters.requests.fetch_add(1, Ordering::Relaxed);
        CountingReader { inner, counters }
    }

    /// A copy of every total.
    pub fn snapshot(&self) -> BTreeMap<String, Sent> {
        self.by_digest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(d, c)| {
                let sent = Sent {
                    requests: c.requests.load(Ordering::Relaxed),
                    bytes: c.bytes.load(Ordering::Relaxed),
                };
                (d.clone(), sent)
            })
            .collect()
    }
}

/// An `AsyncRead` that adds every byte it yields to its blob's total.
pub struct CountingReader<R> {
    inner: R,
    counters: Arc<Counters>,
}

impl<R: AsyncRead + Unpin> AsyncRead for CountingReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            self.counters.bytes.fetch_add(n, Ordering::Relaxed);
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn counts_what_was_read_per_digest() {
        let t = Arc::new(Transfers::default());
        let mut whole = t.reader("aa", &b"0123456789"[..]);
        let mut out = Vec::new();
        whole.read_to_end(&mut out).await.expect("read");
        // A body cut off after 4 bytes counts 4.
        let mut cut = t.reader("aa", &b"0123456789"[..]);
        let mut four = [0u8; 4];
        cut.read_exact(&mut four).await.expect("read");
        drop(cut);
        // A HEAD or 304 never makes a reader.
        let s = t.snapshot();
        assert_eq!(
            s.get("aa"),
            Some(&Sent {
                requests: 2,
                bytes: 14
            })
        );
        assert_eq!(s.get("bb"), None);
    }
}
