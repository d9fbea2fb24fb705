//! Option negotiation: blksize (RFC 2348), tsize and timeout (RFC 2349), windowsize (RFC 7440).
//!
//! A pure function from the client's options, the server limits and the file size to the
//! transfer parameters and the OACK to send. It does not refuse requests: an option with a
//! bad value, or one we do not know, is left out of the OACK and the default applies.

use std::time::Duration;

use crate::config::TftpConfig;

/// RFC 2348 bounds for blksize.
const BLKSIZE_MIN: u32 = 8;
pub const BLKSIZE_MAX: u16 = 65464;
/// Largest `timeout` option granted, in seconds.
pub const MAX_TIMEOUT_SECS: u8 = 10;
/// Classic TFTP block size, used when blksize is not negotiated.
pub const DEFAULT_BLKSIZE: u16 = 512;
/// Keeps a window well below half the 16-bit block space, so an ACK number always
/// identifies one block of the window even across rollover.
const WINDOWSIZE_LIMIT: u16 = 4096;

/// What a transfer runs with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub blksize: u16,
    pub windowsize: u16,
    pub timeout: Duration,
    /// Accepted options in the client's order; empty means no OACK (classic transfer).
    pub oack: Vec<(String, String)>,
}

/// Decides the transfer parameters. Duplicated options: the first occurrence counts.
/// `config.max_blksize == 0` means blksize is never granted.
pub fn negotiate(requested: &[(String, String)], config: &TftpConfig, size: u64) -> Negotiated {
    let mut n = Negotiated {
        blksize: DEFAULT_BLKSIZE,
        windowsize: 1,
        timeout: Duration::from_secs(u64::from(config.timeout_secs.max(1))),
        oack: Vec::new(),
    };
    let mut seen: Vec<&str> = Vec::new();
    for (name, value) in requested {
        if seen.contains(&name.as_str()) {
            continue;
        }
        seen.push(name);
        let granted = match name.as_str() {
            "blksize" => value
                .parse::<u32>()
                .ok()
                .filter(|v| (BLKSIZE_MIN..=u32::from(BLKSIZE_MAX)).contains(v))
                .filter(|_| config.max_blksize != 0)
                .map(|v| {
                    let cap = config.max_blksize.clamp(BLKSIZE_MIN as u16, BLKSIZE_MAX);
                    n.blksize = u16::try_from(v).unwrap_or(BLKSIZE_MAX).min(cap);
                    n.blksize.to_string()
                }),
            // The RRQ carries 0; the answer is the real size whatever was sent.
            "tsize" => value.parse::<u64>().ok().map(|_| size.to_string()),
            // Above the cap the option is declined (the default applies): a request that
            // is never acknowledged would otherwise hold its transfer slot for up to
            // 255 s times the retries.
            "timeout" => value
                .parse::<u8>()
                .ok()
                .filter(|&v| (1..=MAX_TIMEOUT_SECS).contains(&v))
                .map(|v| {
                    n.timeout = Duration::from_secs(u64::from(v));
                    v.to_string()
                }),
            "windowsize" => value.parse::<u16>().ok().filter(|&v| v >= 1).map(|v| {
                let cap = config.max_windowsize.clamp(1, WINDOWSIZE_LIMIT);
                n.windowsize = v.min(cap);
                n.windowsize.to_string()
            }),
            _ => None,
        };
        if let Some(value) = granted {
            n.oack.push((name.clone(), value));
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        requested: &[(&str, &str)],
        size: u64,
        blksize: u16,
        windowsize: u16,
        oack: &[(&str, &str)],
    ) {
        let config = TftpConfig {
            max_blksize: 1468,
            max_windowsize: 16,
            timeout_secs: 3,
            ..TftpConfig::default()
        };
        let requested: Vec<(String, String)> = requested
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let n = negotiate(&requested, &config, size);
        let oack: Vec<(String, String)> = oack
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(
            (n.blksize, n.windowsize, n.oack),
            (blksize, windowsize, oack),
            "requested {requested:?}"
        );
    }

    #[test]
    fn negotiates_within_limits() {
        check(&[], 10, 512, 1, &[]);
        check(&[("tsize", "0")], 1234, 512, 1, &[("tsize", "1234")]);
        check(&[("blksize", "1024")], 1, 1024, 1, &[("blksize", "1024")]);
        check(&[("blksize", "65464")], 1, 1468, 1, &[("blksize", "1468")]);
        check(&[("blksize", "8")], 1, 8, 1, &[("blksize", "8")]);
        check(&[("windowsize", "8")], 1, 512, 8, &[("windowsize", "8")]);
        check(&[("windowsize", "64")], 1, 512, 16, &[("windowsize", "16")]);
        check(
            &[("blksize", "1408"), ("tsize", "0"), ("windowsize", "4")],
            77,
            1408,
            4,
            &[("blksize", "1408"), ("tsize", "77"), ("windowsize", "4")],
        );
    }

    #[test]
    fn leaves_out_bad_and_unknown_options() {
        check(&[("blksize", "7")], 1, 512, 1, &[]);
        check(&[("blksize", "65465")], 1, 512, 1, &[]);
        check(&[("blksize", "abc")], 1, 512, 1, &[]);
        check(&[("blksize", "-1")], 1, 512, 1, &[]);
        check(&[("windowsize", "0")], 1, 512, 1, &[]);
        check(&[("windowsize", "70000")], 1, 512, 1, &[]);
        check(&[("timeout", "0")], 1, 512, 1, &[]);
        check(&[("timeout", "256")], 1, 512, 1, &[]);
        check(&[("timeout", "11")], 1, 512, 1, &[]);
        check(&[("timeout", "255")], 1, 512, 1, &[]);
        check(&[("tsize", "x")], 1, 512, 1, &[]);
        check(&[("multicast", "")], 1, 512, 1, &[]);
        check(
            &[("blksize", "600"), ("blksize", "700")],
            1,
            600,
            1,
            &[("blksize", "600")],
        );
    }

    #[test]
    fn timeout_option_overrides_the_default() {
        let config = TftpConfig::default();
        let n = negotiate(&[], &config, 0);
        assert_eq!(n.timeout, Duration::from_secs(1));
        let n = negotiate(&[("timeout".into(), "9".into())], &config, 0);
        assert_eq!(n.timeout, Duration::from_secs(9));
        assert_eq!(n.oack, vec![("timeout".to_string(), "9".to_string())]);
        let off = TftpConfig {
            max_blksize: 0,
            ..TftpConfig::default()
        };
        assert_eq!(
            negotiate(&[("blksize".into(), "1024".into())], &off, 0).blksize,
            512
        );
    }
}
