//! The PROXY protocol header a trusted load balancer sends first on each
//! connection, naming the real client (HAProxy's proxy-protocol.txt,
//! versions 1 and 2). The framing is ours, because it must read exactly the
//! header and not one byte of what follows (a TLS ClientHello, say), under
//! the handshake deadline: 12 bytes tell the version, then version 2 says
//! its length (§2.2, bytes 15-16) and version 1 ends at CRLF within 107
//! bytes (§2.1). The decoding of the complete header is the `ppp` crate's.

use std::fmt;
use std::io::{self, Read};
use std::net::SocketAddr;

/// §2.2: the first 12 bytes of every version 2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// §2.1: "PROXY " starts every version 1 header.
pub const V1_PREFIX: &[u8] = b"PROXY ";
/// §2.1: a version 1 header is at most 107 bytes, CRLF included.
const V1_MAX_BYTES: usize = 107;
/// Version 2 addresses take at most 216 bytes (§2.2, AF_UNIX); TLVs may
/// follow. More than this is refused rather than read.
const V2_MAX_PAYLOAD: usize = 1024;

/// Why a connection that had to start with a header did not.
#[derive(Debug)]
pub enum HeaderError {
    /// It started with something else.
    Missing,
    /// It started like a header but is not a valid one.
    Invalid(String),
    /// Longer than any header a load balancer sends.
    TooLong,
    /// The connection failed, closed or ran past the deadline first.
    Io(io::Error),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Missing => f.write_str("no PROXY protocol header"),
            HeaderError::Invalid(why) => write!(f, "invalid PROXY protocol header: {why}"),
            HeaderError::TooLong => f.write_str("PROXY protocol header too long"),
            HeaderError::Io(e) => write!(f, "PROXY protocol header not received: {e}"),
        }
    }
}

impl From<io::Error> for HeaderError {
    fn from(e: io::Error) -> HeaderError {
        HeaderError::Io(e)
    }
}

/// Reads one header from `src`, consuming exactly its bytes. `Ok(None)`
/// for a header that names no client: version 2 `LOCAL` (the balancer's own
/// health check), `UNKNOWN` or an unspecified family; the connection's own
/// address then stands.
pub fn read_header<R: Read>(src: &mut R) -> Result<Option<SocketAddr>, HeaderError> {
    let mut buf = vec![0u8; V2_SIGNATURE.len()];
    src.read_exact(&mut buf)?;
    if buf == V2_SIGNATURE {
        buf.resize(16, 0);
        src.read_exact(&mut buf[12..])?;
        let payload = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
        if payload > V2_MAX_PAYLOAD {
            return Err(HeaderError::TooLong);
        }
        buf.resize(16 + payload, 0);
        src.read_exact(&mut buf[16..])?;
        let header =
            ppp::v2::Header::try_from(&buf[..]).map_err(|e| HeaderError::Invalid(e.to_string()))?;
        if header.command == ppp::v2::Command::Local {
            return Ok(None);
        }
        return Ok(match header.addresses {
            ppp::v2::Addresses::IPv4(a) => Some((a.source_address, a.source_port).into()),
            ppp::v2::Addresses::IPv6(a) => Some((a.source_address, a.source_port).into()),
            ppp::v2::Addresses::Unspecified | ppp::v2::Addresses::Unix(_) => None,
        });
    }
    if !buf.starts_with(V1_PREFIX) {
        return Err(HeaderError::Missing);
    }
    while !buf.ends_with(b"\r\n") {
        if buf.len() >= V1_MAX_BYTES {
            return Err(HeaderError::TooLong);
        }
        let mut byte = [0u8];
        src.read_exact(&mut byte)?;
        buf.push(byte[0]);
    }
    let header =
        ppp::v1::Header::try_from(&buf[..]).map_err(|e| HeaderError::Invalid(e.to_string()))?;
    Ok(match header.addresses {
        ppp::v1::Addresses::Tcp4(a) => Some((a.source_address, a.source_port).into()),
        ppp::v1::Addresses::Tcp6(a) => Some((a.source_address, a.source_port).into()),
        ppp::v1::Addresses::Unknown => None,
    })
}

/// Whether `start` (the first bytes a client sent) begins like a header:
/// what an untrusted client must not send. Five bytes tell: `PROXY`, or
/// CR LF CR LF NUL, which no mail client sends first.
pub fn looks_like_header(start: &[u8]) -> bool {
    const TELLING: usize = 5;
    start.len() >= TELLING
        && [V1_PREFIX, &V2_SIGNATURE[..]].iter().any(|signature| {
            let n = start.len().min(signature.len());
            start[..n] == signature[..n]
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Hands out at most `step` bytes per read: every split of the input.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn v2(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&((addresses.len() + tlvs.len()) as u16).to_be_bytes());
        h.extend_from_slice(addresses);
        h.extend_from_slice(tlvs);
        h
    }

    fn v2_tcp4() -> Vec<u8> {
        // 192.0.2.7:40001 -> 198.51.100.1:25, and a NOOP TLV (type 4).
        v2(
            1,
            0x11,
            &[192, 0, 2, 7, 198, 51, 100, 1, 0x9c, 0x41, 0, 25],
            &[4, 0, 1, 42],
        )
    }

    /// Each valid header, what it names, and at every split the bytes after
    /// it are left unread.
    #[test]
    fn every_version_and_family_at_every_split_consumes_exactly_the_header() {
        let mut v6 = Vec::new();
        v6.extend_from_slice(
            &"2001:db8::7"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        v6.extend_from_slice(
            &"2001:db8::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        v6.extend_from_slice(&[0x9c, 0x41, 0, 25]);
        let cases: Vec<(Vec<u8>, Option<&str>)> = vec![
            (
                b"PROXY TCP4 192.0.2.7 198.51.100.1 40001 25\r\n".to_vec(),
                Some("192.0.2.7:40001"),
            ),
            (
                b"PROXY TCP6 2001:db8::7 2001:db8::1 40001 25\r\n".to_vec(),
                Some("[2001:db8::7]:40001"),
            ),
            (b"PROXY UNKNOWN\r\n".to_vec(), None),
            (v2_tcp4(), Some("192.0.2.7:40001")),
            (v2(1, 0x21, &v6, &[]), Some("[2001:db8::7]:40001")),
            (v2(0, 0x00, &[], &[]), None),
            (
                v2(0, 0x11, &[192, 0, 2, 7, 198, 51, 100, 1, 0, 1, 0, 2], &[]),
                None,
            ),
        ];
        for (header, expected) in cases {
            let mut input = header.clone();
            input.extend_from_slice(b"\x16\x03\x01 after");
            for step in 1..=input.len() {
                let mut src = Trickle { data: &input, step };
                let got = read_header(&mut src).unwrap_or_else(|e| panic!("{header:?}: {e}"));
                assert_eq!(got, expected.map(|e| e.parse().unwrap()), "{header:?}");
                assert_eq!(src.data, b"\x16\x03\x01 after", "step {step}");
            }
        }
    }

    #[test]
    fn bad_headers_are_refused_with_the_reason() {
        let missing = read_header(&mut &b"EHLO client.example\r\n"[..]);
        assert!(matches!(missing, Err(HeaderError::Missing)), "{missing:?}");
        let mut long = b"PROXY TCP4 ".to_vec();
        long.extend(std::iter::repeat_n(b'1', 200));
        assert!(matches!(
            read_header(&mut &long[..]),
            Err(HeaderError::TooLong)
        ));
        let bad = read_header(&mut &b"PROXY TCP4 1.2.3 4.5.6.7 1 2\r\n"[..]);
        assert!(matches!(bad, Err(HeaderError::Invalid(_))), "{bad:?}");
        let mut version3 = v2_tcp4();
        version3[12] = 0x31;
        assert!(matches!(
            read_header(&mut &version3[..]),
            Err(HeaderError::Invalid(_))
        ));
        let mut huge = v2_tcp4();
        huge[14..16].copy_from_slice(&60_000u16.to_be_bytes());
        assert!(matches!(
            read_header(&mut &huge[..]),
            Err(HeaderError::TooLong)
        ));
        let truncated = &v2_tcp4()[..20];
        assert!(matches!(
            read_header(&mut &truncated[..]),
            Err(HeaderError::Io(_))
        ));
        assert!(looks_like_header(b"PROXY TCP4"));
        assert!(looks_like_header(&V2_SIGNATURE[..6]));
        assert!(!looks_like_header(b"EHLO x"));
        assert!(!looks_like_header(b"PROX"), "too few bytes to tell");
        assert!(!looks_like_header(b"\r\n\r\nQ"));
    }

    proptest! {
        /// Any bytes at all: an answer, never a panic, and never a read
        /// beyond the longest header.
        #[test]
        fn arbitrary_input_never_panics_or_overreads(data in proptest::collection::vec(any::<u8>(), 0..1200), step in 1usize..64) {
            let mut src = Trickle { data: &data, step };
            let _ = read_header(&mut src);
            prop_assert!(data.len() - src.data.len() <= 16 + V2_MAX_PAYLOAD);
        }

        /// Any valid version 1 TCP4 header names its source.
        #[test]
        fn any_v1_tcp4_header_names_its_source(a in any::<[u8; 4]>(), b in any::<[u8; 4]>(), sp in any::<u16>(), dp in any::<u16>()) {
            let src = std::net::Ipv4Addr::from(a);
            let dst = std::net::Ipv4Addr::from(b);
            let text = format!("PROXY TCP4 {src} {dst} {sp} {dp}\r\n");
            let got = read_header(&mut text.as_bytes()).unwrap();
            prop_assert_eq!(got, Some(SocketAddr::from((src, sp))));
        }
    }
}
