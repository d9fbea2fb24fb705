//! Parsing a `Range` request header against a file size (RFC 9110 §14). Only single
//! byte ranges are honoured; a multi-range request gets the whole file (which the RFC
//! allows), and a malformed header is ignored. Pure: no IO.

/// What to send for a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeSpec {
    /// The whole file, 200.
    Full,
    /// Bytes `start..=end`, 206.
    Partial { start: u64, end: u64 },
    /// 416 with `Content-Range: bytes */size`.
    Unsatisfiable,
}

/// Decides what `header` (the `Range` value, if any) asks of a file of `size` bytes.
pub fn parse_range(header: Option<&str>, size: u64) -> RangeSpec {
    let Some(value) = header else {
        return RangeSpec::Full;
    };
    let value = value.trim();
    let Some((unit, set)) = value.split_once('=') else {
        return RangeSpec::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || set.contains(',') {
        return RangeSpec::Full;
    }
    let Some((first, last)) = set.trim().split_once('-') else {
        return RangeSpec::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    match (number(first), number(last)) {
        // `-n`: the last n bytes.
        (None, Some(n)) if first.is_empty() => {
            if n == 0 || size == 0 {
                RangeSpec::Unsatisfiable
            } else {
                RangeSpec::Partial {
                    start: size - n.min(size),
                    end: size - 1,
                }
            }
        }
        // `a-`: from a to the end.
        (Some(start), None) if last.is_empty() => {
            if start >= size {
                RangeSpec::Unsatisfiable
            } else {
                RangeSpec::Partial {
                    start,
                    end: size - 1,
                }
            }
        }
        (Some(start), Some(end)) if start <= end => {
            if start >= size {
                RangeSpec::Unsatisfiable
            } else {
                RangeSpec::Partial {
                    start,
                    end: end.min(size - 1),
                }
            }
        }
        _ => RangeSpec::Full,
    }
}

/// A run of ASCII digits; too large for u64 saturates (still past any real file).
fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeSpec::*;

    fn check(header: Option<&str>, size: u64, want: RangeSpec) {
        assert_eq!(parse_range(header, size), want, "{header:?} of {size}");
    }

    #[test]
    fn single_ranges() {
        check(None, 10, Full);
        check(Some("bytes=0-0"), 10, Partial { start: 0, end: 0 });
        check(Some("bytes=2-5"), 10, Partial { start: 2, end: 5 });
        check(Some("bytes=2-500"), 10, Partial { start: 2, end: 9 });
        check(Some("bytes=7-"), 10, Partial { start: 7, end: 9 });
        check(Some("bytes=-3"), 10, Partial { start: 7, end: 9 });
        check(Some("bytes=-30"), 10, Partial { start: 0, end: 9 });
        check(Some("Bytes = 1-2"), 10, Partial { start: 1, end: 2 });
    }

    #[test]
    fn unsatisfiable() {
        check(Some("bytes=10-"), 10, Unsatisfiable);
        check(Some("bytes=10-20"), 10, Unsatisfiable);
        check(Some("bytes=-0"), 10, Unsatisfiable);
        check(Some("bytes=0-"), 0, Unsatisfiable);
        check(Some("bytes=-5"), 0, Unsatisfiable);
        check(Some("bytes=99999999999999999999999-"), 10, Unsatisfiable);
    }

    #[test]
    fn ignored_headers_give_the_whole_file() {
        for h in [
            "bytes=0-1,4-5",
            "bytes=5-2",
            "bytes=",
            "bytes=-",
            "bytes=a-b",
            "items=0-1",
            "0-1",
            "bytes=1-2-3",
        ] {
            check(Some(h), 10, Full);
        }
    }
}
