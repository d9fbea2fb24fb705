//! TFTP packets (RFC 1350, OACK from RFC 2347): parsing from bytes and encoding to bytes.
//!
//! Pure functions, no IO. Parsing never panics on any input; it does not judge whether a
//! request is allowed or its options sensible (see `options.rs` and `path.rs`).

/// Opcodes on the wire.
const RRQ: u16 = 1;
const WRQ: u16 = 2;
const DATA: u16 = 3;
const ACK: u16 = 4;
const ERROR: u16 = 5;
const OACK: u16 = 6;

/// The transfer mode a request names. Both are served byte for byte (see `mod.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Octet,
    Netascii,
}

/// A read or write request: file name, mode and options in the order the client sent them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub filename: String,
    pub mode: Mode,
    /// Option names lowercased; values as sent.
    pub options: Vec<(String, String)>,
}

/// A decoded packet. DATA and OACK carry no payload here: the server never needs to read them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    Rrq(Request),
    Wrq(Request),
    Data { block: u16 },
    Ack { block: u16 },
    Error { code: u16, message: String },
    Oack,
}

/// TFTP error codes (RFC 1350, 8 from RFC 2347).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    NotDefined = 0,
    FileNotFound = 1,
    AccessViolation = 2,
    IllegalOperation = 4,
    UnknownTransferId = 5,
    OptionRefused = 8,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("packet shorter than its opcode")]
    TooShort,
    #[error("unknown opcode {0}")]
    UnknownOpcode(u16),
    #[error("{0} packet has the wrong length")]
    BadLength(&'static str),
    #[error("request strings are not NUL-terminated")]
    Unterminated,
    #[error("request field is not UTF-8")]
    NotUtf8,
    #[error("request has an empty file name")]
    EmptyFilename,
    #[error("request mode {0:?} is not octet or netascii")]
    BadMode(String),
}

/// Parses one datagram.
pub fn parse(buf: &[u8]) -> Result<Packet, ParseError> {
    let (op, body) = match buf {
        [a, b, rest @ ..] => (u16::from_be_bytes([*a, *b]), rest),
        _ => return Err(ParseError::TooShort),
    };
    match op {
        RRQ => parse_request(body).map(Packet::Rrq),
        WRQ => parse_request(body).map(Packet::Wrq),
        DATA => match body {
            [a, b, ..] => Ok(Packet::Data {
                block: u16::from_be_bytes([*a, *b]),
            }),
            _ => Err(ParseError::BadLength("DATA")),
        },
        ACK => match body {
            // Some clients pad; the block number is all that matters.
            [a, b, ..] => Ok(Packet::Ack {
                block: u16::from_be_bytes([*a, *b]),
            }),
            _ => Err(ParseError::BadLength("ACK")),
        },
        ERROR => match body {
            [a, b, msg @ ..] => {
                // Lenient: a missing terminator or odd bytes must not hide a client's ERROR,
                // since that ERROR is what ends a UEFI size probe.
                let end = msg.iter().position(|&c| c == 0).unwrap_or(msg.len());
                Ok(Packet::Error {
                    code: u16::from_be_bytes([*a, *b]),
                    message: String::from_utf8_lossy(&msg[..end]).into_owned(),
                })
            }
            _ => Err(ParseError::BadLength("ERROR")),
        },
        OACK => Ok(Packet::Oack),
        other => Err(ParseError::UnknownOpcode(other)),
    }
}

fn parse_request(body: &[u8]) -> Result<Request, ParseError> {
    let Some((&0, strings)) = body.split_last() else {
        return Err(ParseError::Unterminated);
    };
    let mut fields = strings.split(|&c| c == 0);
    let filename = utf8(fields.next())?;
    if filename.is_empty() {
        return Err(ParseError::EmptyFilename);
    }
    let mode = utf8(fields.next())?.to_ascii_lowercase();
    let mode = match mode.as_str() {
        "octet" => Mode::Octet,
        "netascii" => Mode::Netascii,
        _ => return Err(ParseError::BadMode(mode)),
    };
    let mut options = Vec::new();
    // A dangling name without a value (or trailing NUL padding) is ignored, not fatal.
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        let (Ok(name), Ok(value)) = (std::str::from_utf8(name), std::str::from_utf8(value)) else {
            continue;
        };
        if !name.is_empty() {
            options.push((name.to_ascii_lowercase(), value.to_string()));
        }
    }
    Ok(Request {
        filename,
        mode,
        options,
    })
}

fn utf8(field: Option<&[u8]>) -> Result<String, ParseError> {
    let field = field.ok_or(ParseError::Unterminated)?;
    std::str::from_utf8(field)
        .map(str::to_string)
        .map_err(|_| ParseError::NotUtf8)
}

/// DATA header followed by `data`.
pub fn encode_data(block: u16, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + data.len());
    out.extend_from_slice(&data_header(block));
    out.extend_from_slice(data);
    out
}

/// The first four bytes of a DATA packet, for senders that fill their own buffers.
pub fn data_header(block: u16) -> [u8; 4] {
    let [op0, op1] = DATA.to_be_bytes();
    let [b0, b1] = block.to_be_bytes();
    [op0, op1, b0, b1]
}

pub fn encode_error(code: ErrorCode, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + message.len());
    out.extend_from_slice(&ERROR.to_be_bytes());
    out.extend_from_slice(&(code as u16).to_be_bytes());
    out.extend_from_slice(message.as_bytes());
    out.push(0);
    out
}

pub fn encode_oack(options: &[(String, String)]) -> Vec<u8> {
    let mut out = OACK.to_be_bytes().to_vec();
    for (name, value) in options {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &[u8], expected: Result<Packet, ParseError>) {
        assert_eq!(parse(input), expected, "input {input:?}");
    }

    fn rrq(filename: &str, mode: Mode, options: &[(&str, &str)]) -> Result<Packet, ParseError> {
        Ok(Packet::Rrq(Request {
            filename: filename.into(),
            mode,
            options: options
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        }))
    }

    #[test]
    fn parses_requests() {
        check(
            b"\0\x01ipxe.efi\0octet\0",
            rrq("ipxe.efi", Mode::Octet, &[]),
        );
        check(
            b"\0\x01a\0OCTET\0TSIZE\x000\0blksize\x001468\0",
            rrq("a", Mode::Octet, &[("tsize", "0"), ("blksize", "1468")]),
        );
        check(b"\0\x01a\0NetAscii\0", rrq("a", Mode::Netascii, &[]));
        // Dangling option name and trailing padding are ignored.
        check(
            b"\0\x01a\0octet\0tsize\x000\0junk\0",
            rrq("a", Mode::Octet, &[("tsize", "0")]),
        );
        check(b"\0\x01a\0octet\0\0", rrq("a", Mode::Octet, &[]));
        assert!(matches!(
            parse(b"\0\x02up\0octet\0"),
            Ok(Packet::Wrq(Request { .. }))
        ));
    }

    #[test]
    fn rejects_malformed_packets() {
        check(b"", Err(ParseError::TooShort));
        check(b"\x01", Err(ParseError::TooShort));
        check(b"\0\x01", Err(ParseError::Unterminated));
        check(b"\0\x01ipxe.efi", Err(ParseError::Unterminated));
        check(b"\0\x01ipxe.efi\0octet", Err(ParseError::Unterminated));
        check(b"\0\x01ipxe.efi\0", Err(ParseError::Unterminated));
        check(b"\0\x01\0octet\0", Err(ParseError::EmptyFilename));
        check(b"\0\x01\xff\xfe\0octet\0", Err(ParseError::NotUtf8));
        check(b"\0\x01a\0mail\0", Err(ParseError::BadMode("mail".into())));
        check(b"\0\x04\x01", Err(ParseError::BadLength("ACK")));
        check(b"\0\x03", Err(ParseError::BadLength("DATA")));
        check(b"\0\x05", Err(ParseError::BadLength("ERROR")));
        check(b"\0\x63abc", Err(ParseError::UnknownOpcode(99)));
    }

    #[test]
    fn parses_replies_from_clients() {
        check(b"\0\x04\x12\x34", Ok(Packet::Ack { block: 0x1234 }));
        check(b"\0\x03\0\x01data", Ok(Packet::Data { block: 1 }));
        check(
            b"\0\x05\0\x08user aborted\0",
            Ok(Packet::Error {
                code: 8,
                message: "user aborted".into(),
            }),
        );
        check(
            b"\0\x05\0\0no terminator",
            Ok(Packet::Error {
                code: 0,
                message: "no terminator".into(),
            }),
        );
    }

    #[test]
    fn encodes_packets() {
        assert_eq!(encode_data(0x0102, b"xy"), b"\0\x03\x01\x02xy");
        assert_eq!(
            encode_error(ErrorCode::FileNotFound, "nope"),
            b"\0\x05\0\x01nope\0"
        );
        assert_eq!(
            encode_oack(&[("tsize".into(), "42".into())]),
            b"\0\x06tsize\x0042\0"
        );
    }
}
