//! Conditional and partial downloads as a pure decision: given a file's length and ETag
//! and the request's `Range`, `If-Range` and `If-None-Match`, what to answer.
//!
//! Only single byte ranges are honoured; a multi-range request gets the whole file (RFC
//! 9110 lets a server ignore Range), never multipart. No IO here.

/// What to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// 200 with the whole file.
    Full,
    /// 206 with bytes `start..=end`.
    Partial { start: u64, end: u64 },
    /// 304: the client's copy is current.
    NotModified,
    /// 416: the range lies outside the file.
    Unsatisfiable,
}

/// Whether an `If-None-Match` value matches `etag` (quoted, e.g. `"abc"`).
fn none_match_hits(value: &str, etag: &str) -> bool {
    value
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t == etag || t.strip_prefix("W/") == Some(etag))
}

/// Parses `bytes=a-b`, `bytes=a-` or `bytes=-n` against `len`. `None` means "ignore the
/// header" (malformed, multi-range or another unit); `Some(Err(()))` means unsatisfiable.
fn parse_range(value: &str, len: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    if a.is_empty() {
        let n = num(b)?;
        if n == 0 || len == 0 {
            return Some(Err(()));
        }
        return Some(Ok((len.saturating_sub(n), len - 1)));
    }
    let start = num(a)?;
    let end = if b.is_empty() { u64::MAX } else { num(b)? };
    if end < start {
        return None;
    }
    if start >= len {
        return Some(Err(()));
    }
    Some(Ok((start, end.min(len - 1))))
}

/// Decides the answer. `etag` is the quoted strong ETag of the file.
pub fn plan(
    len: u64,
    etag: &str,
    range: Option<&str>,
    if_range: Option<&str>,
    if_none_match: Option<&str>,
) -> Plan {
    if if_none_match.is_some_and(|v| none_match_hits(v, etag)) {
        return Plan::NotModified;
    }
    let Some(range) = range else {
        return Plan::Full;
    };
    // If-Range with another validator (or a date, which we do not track): send it all.
    if if_range.is_some_and(|v| v.trim() != etag) {
        return Plan::Full;
    }
    match parse_range(range, len) {
        None => Plan::Full,
        Some(Err(())) => Plan::Unsatisfiable,
        Some(Ok((start, end))) => Plan::Partial { start, end },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: &str = "\"abc\"";

    fn check(range: Option<&str>, if_range: Option<&str>, inm: Option<&str>, expected: Plan) {
        assert_eq!(
            plan(100, E, range, if_range, inm),
            expected,
            "range={range:?} if-range={if_range:?} if-none-match={inm:?}"
        );
    }

    #[test]
    fn decisions() {
        use Plan::*;
        check(None, None, None, Full);
        check(Some("bytes=0-9"), None, None, Partial { start: 0, end: 9 });
        check(
            Some("bytes=90-"),
            None,
            None,
            Partial { start: 90, end: 99 },
        );
        check(
            Some("bytes=90-1000"),
            None,
            None,
            Partial { start: 90, end: 99 },
        );
        check(
            Some("bytes=-10"),
            None,
            None,
            Partial { start: 90, end: 99 },
        );
        check(
            Some("bytes=-1000"),
            None,
            None,
            Partial { start: 0, end: 99 },
        );
        check(
            Some("bytes=99-99"),
            None,
            None,
            Partial { start: 99, end: 99 },
        );
        check(Some("bytes=100-"), None, None, Unsatisfiable);
        check(Some("bytes=-0"), None, None, Unsatisfiable);
        check(Some("bytes=0-1,5-6"), None, None, Full);
        check(Some("bytes=5-1"), None, None, Full);
        check(Some("items=0-1"), None, None, Full);
        check(Some("bytes=a-b"), None, None, Full);
        check(Some("bytes=+1-2"), None, None, Full);
        check(
            Some("bytes=0-9"),
            Some(E),
            None,
            Partial { start: 0, end: 9 },
        );
        check(Some("bytes=0-9"), Some("\"old\""), None, Full);
        check(None, None, Some(E), NotModified);
        check(None, None, Some("\"x\", \"abc\""), NotModified);
        check(None, None, Some("W/\"abc\""), NotModified);
        check(None, None, Some("*"), NotModified);
        check(
            Some("bytes=0-9"),
            None,
            Some("\"other\""),
            Partial { start: 0, end: 9 },
        );
        assert_eq!(plan(0, E, Some("bytes=0-"), None, None), Unsatisfiable);
    }
}
