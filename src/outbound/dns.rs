//! A stub resolver for `sealpost dns --check`: one question to the system's
//! name servers (`/etc/resolv.conf`), over UDP and, when the answer is
//! truncated, over TCP (RFC 1035 §4.2), under one deadline.
//!
//! The messages are `hickory-proto`'s; only this exchange is ours, because
//! `hickory-resolver` runs on tokio and the gateway has no async runtime.
//! The answers are not DNSSEC-validated here: the check compares what is
//! published with what should be, and a validating resolver in
//! `/etc/resolv.conf` does the rest.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

/// One answer, as the check compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// An IPv4 or IPv6 address (A, AAAA), whatever CNAMEs led there.
    Address(IpAddr),
    /// MX: preference and exchange (lowercase, without the final dot).
    Mx(u16, String),
    /// TXT: the character-strings joined (RFC 7208 §3.3 reads them so).
    Txt(String),
    /// TLSA: usage, selector, matching type, data in lowercase hex.
    Tlsa(u8, u8, u8, String),
}

/// The system's name servers, port 53.
fn servers() -> Result<Vec<SocketAddr>, String> {
    let text = std::fs::read("/etc/resolv.conf").map_err(|e| format!("/etc/resolv.conf: {e}"))?;
    let config = resolv_conf::Config::parse(&text).map_err(|e| format!("/etc/resolv.conf: {e}"))?;
    Ok(config
        .get_nameservers_or_local()
        .into_iter()
        .map(|ip| SocketAddr::new(IpAddr::from(ip), 53))
        .collect())
}

/// The answers to `name`/`kind`; empty when the name has none (NXDOMAIN,
/// or no data of that kind).
pub fn query(name: &str, kind: RecordType, deadline: Instant) -> Result<Vec<Answer>, String> {
    let qname = Name::from_ascii(format!("{}.", name.trim_end_matches('.')))
        .map_err(|e| format!("{name}: {e}"))?;
    let mut last = String::from("/etc/resolv.conf names no name server");
    for server in servers()? {
        match ask(server, &qname, kind, deadline) {
            Ok(message) => return answers(&message, kind),
            Err(e) => last = format!("{server}: {e}"),
        }
    }
    Err(format!("{kind} {name}: {last}"))
}

fn ask(
    server: SocketAddr,
    name: &Name,
    kind: RecordType,
    deadline: Instant,
) -> Result<Message, String> {
    let mut random = [0u8; 2];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random)
        .map_err(|_| "no random numbers")?;
    let id = u16::from_ne_bytes(random);
    let mut request = Message::new(id, MessageType::Query, OpCode::Query);
    request.metadata.recursion_desired = true;
    request.add_query(Query::query(name.clone(), kind));
    let bytes = request.to_vec().map_err(|e| e.to_string())?;
    let left = || {
        let left = deadline.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left).ok_or("no answer in time")
    };
    let local: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let socket = UdpSocket::bind(local).map_err(|e| e.to_string())?;
    socket.connect(server).map_err(|e| e.to_string())?;
    socket.send(&bytes).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4096];
    let message = loop {
        socket
            .set_read_timeout(Some(left()?))
            .map_err(|e| e.to_string())?;
        let n = socket.recv(&mut buf).map_err(|e| e.to_string())?;
        // Another answer (a late one, a forged one) is not ours.
        if let Ok(m) = Message::from_vec(&buf[..n])
            && m.metadata.id == id
            && m.queries.first().is_some_and(|q| q.name() == name)
        {
            break m;
        }
    };
    if !message.metadata.truncation {
        return Ok(message);
    }
    // Too long for UDP: the same question over TCP, with its length prefix.
    let mut tcp = TcpStream::connect_timeout(&server, left()?).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(left()?))
        .map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(left()?))
        .map_err(|e| e.to_string())?;
    let len = u16::try_from(bytes.len()).map_err(|e| e.to_string())?;
    tcp.write_all(&[&len.to_be_bytes()[..], &bytes].concat())
        .map_err(|e| e.to_string())?;
    let mut len = [0u8; 2];
    tcp.read_exact(&mut len).map_err(|e| e.to_string())?;
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
    tcp.read_exact(&mut body).map_err(|e| e.to_string())?;
    let message = Message::from_vec(&body).map_err(|e| e.to_string())?;
    if message.metadata.id != id {
        return Err("an answer to another question".into());
    }
    Ok(message)
}

fn answers(message: &Message, kind: RecordType) -> Result<Vec<Answer>, String> {
    match message.metadata.response_code {
        ResponseCode::NoError | ResponseCode::NXDomain => {}
        other => return Err(format!("the name server answered {other}")),
    }
    let hex = crate::crypto::hex;
    Ok(message
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::A(a) if kind == RecordType::A => Some(Answer::Address(IpAddr::V4(a.0))),
            RData::AAAA(a) if kind == RecordType::AAAA => Some(Answer::Address(IpAddr::V6(a.0))),
            RData::MX(mx) if kind == RecordType::MX => Some(Answer::Mx(
                mx.preference,
                mx.exchange
                    .to_ascii()
                    .trim_end_matches('.')
                    .to_ascii_lowercase(),
            )),
            RData::TXT(txt) if kind == RecordType::TXT => Some(Answer::Txt(
                txt.txt_data
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect(),
            )),
            RData::TLSA(t) if kind == RecordType::TLSA => Some(Answer::Tlsa(
                t.cert_usage.into(),
                t.selector.into(),
                t.matching.into(),
                hex(&t.cert_data),
            )),
            _ => None,
        })
        .collect())
}

/// Every address of `name` (A and AAAA).
pub fn addresses(name: &str, deadline: Instant) -> Result<Vec<IpAddr>, String> {
    let mut out = Vec::new();
    for kind in [RecordType::A, RecordType::AAAA] {
        for answer in query(name, kind, deadline)? {
            if let Answer::Address(ip) = answer {
                out.push(ip);
            }
        }
    }
    Ok(out)
}

/// The deadline for one check's questions.
pub const TIMEOUT: Duration = Duration::from_secs(10);
