//! Message files, format version 1:
//!
//! ```text
//! offset 0    8 bytes   magic "SEALPST1"
//! offset 8    80 bytes  crypto_box_seal(K, mailbox public key)
//! offset 88   24 bytes  secretstream header
//! offset 112  records   (see `sealed`): metadata JSON, then the message in 64 KiB chunks
//! ```

use std::io::{self, BufReader, Read, Write};

use serde::{Deserialize, Serialize};

use super::sealed::{self, Damage, SealedReader, SealedWriter, damaged};
use crate::crypto::{
    Decryptor, Encryptor, KeyPair, PublicKey, SEALED_STREAM_KEY_BYTES, STREAM_HEADER_BYTES,
    StreamKey,
};

/// The first eight bytes of every message file.
pub const MAGIC: &[u8; 8] = b"SEALPST1";
/// Bytes before the first record.
pub const HEADER_BYTES: usize = MAGIC.len() + SEALED_STREAM_KEY_BYTES + STREAM_HEADER_BYTES;

/// How a message reached the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The journal SMTP receiver.
    Smtp,
    /// Sent by a client through the SMTP proxy.
    SmtpProxy,
    /// Fetched by a client through the POP3 proxy.
    Pop3Proxy,
    /// `sealpost mailbox deliver` (for example a Postfix pipe transport).
    Cli,
}

impl Source {
    /// Its name in the metadata and in the custody log.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Smtp => "smtp",
            Source::SmtpProxy => "smtp-proxy",
            Source::Pop3Proxy => "pop3-proxy",
            Source::Cli => "cli",
        }
    }
}

/// Record 1 of a message file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// When the message was stored (RFC 3339, UTC).
    pub received: String,
    /// How it arrived.
    pub source: Source,
    /// Envelope sender (empty for the null sender `<>`).
    pub mail_from: String,
    /// Envelope recipients.
    pub rcpt_to: Vec<String>,
    /// The client's address, if it came over the network.
    pub client_ip: Option<String>,
    /// TLS protocol version of the client connection, if any.
    pub tls: Option<String>,
    /// Bytes of the message as stored and served by POP3.
    pub size: u64,
    /// For copies made by the POP3 proxy: where the message came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamOrigin>,
}

/// The upstream account a POP3-proxy copy was fetched from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamOrigin {
    /// Login name at the upstream server.
    pub user: String,
    /// Upstream host and port.
    pub host: String,
    /// The upstream's UIDL of the message.
    pub uidl: String,
}

/// Encrypts `body` into `out` as a complete message file for `public`.
/// `metadata.size` must already be the exact length of `body`.
pub fn write_message<W: Write, R: Read>(
    mut out: W,
    public: &PublicKey,
    metadata: &Metadata,
    body: &mut R,
) -> io::Result<W> {
    let key = StreamKey::generate().map_err(io::Error::other)?;
    let sealed_key = key.seal_to(public).map_err(io::Error::other)?;
    let (encryptor, header) = Encryptor::start(&key).map_err(io::Error::other)?;
    out.write_all(MAGIC)?;
    out.write_all(&sealed_key)?;
    out.write_all(&header)?;
    let mut writer = SealedWriter::new(out, encryptor);
    let json = serde_json::to_vec(metadata).map_err(io::Error::other)?;
    if json.len() > sealed::METADATA_MAX_BYTES {
        return Err(io::Error::other("message metadata is larger than 1 MiB"));
    }
    writer.write_record(&json)?;
    let copied = io::copy(body, &mut writer)?;
    if copied != metadata.size {
        return Err(io::Error::other(format!(
            "message body is {copied} bytes but {} were announced",
            metadata.size
        )));
    }
    writer.finish()
}

/// A message file being decrypted: metadata first, then the message bytes
/// through `Read`, every record verified, the final tag required.
pub struct MessageReader<R: Read> {
    records: SealedReader<BufReader<R>>,
    metadata: Metadata,
}

impl<R: Read> MessageReader<R> {
    /// Checks the header, opens the message key and reads the metadata.
    pub fn open(src: R, pair: &KeyPair) -> io::Result<MessageReader<R>> {
        let mut src = BufReader::with_capacity(sealed::CHUNK_BYTES + 4096, src);
        let mut header = [0u8; HEADER_BYTES];
        src.read_exact(&mut header).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                damaged(Damage::Truncated)
            } else {
                e
            }
        })?;
        if &header[..8] != MAGIC {
            return Err(damaged(Damage::BadHeader(
                "not a Sealpost message file (bad magic)",
            )));
        }
        let key = StreamKey::open_sealed(&header[8..8 + SEALED_STREAM_KEY_BYTES], pair).map_err(
            |_| {
                damaged(Damage::BadHeader(
                    "the message key cannot be opened with this mailbox's key",
                ))
            },
        )?;
        let stream_header: [u8; STREAM_HEADER_BYTES] = header[8 + SEALED_STREAM_KEY_BYTES..]
            .try_into()
            .map_err(|_| damaged(Damage::Truncated))?;
        let decryptor =
            Decryptor::start(&key, &stream_header).map_err(|_| damaged(Damage::BadRecord))?;
        let mut records = SealedReader::new(src, decryptor);
        let json = records
            .next_record(sealed::METADATA_MAX_BYTES)?
            .ok_or_else(|| damaged(Damage::Truncated))?;
        let metadata: Metadata = serde_json::from_slice(&json)
            .map_err(|_| damaged(Damage::BadHeader("the metadata record is not valid JSON")))?;
        Ok(MessageReader { records, metadata })
    }

    /// Record 1.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }
}

impl<R: Read> Read for MessageReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.records.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sealed::damage_of;

    pub(crate) fn sample_metadata(size: u64) -> Metadata {
        Metadata {
            received: "2026-11-22T19:20:32Z".into(),
            source: Source::Smtp,
            mail_from: "journal@example.com".into(),
            rcpt_to: vec!["mbx-0123456789abcdef0123456789abcdef@localhost".into()],
            client_ip: Some("192.0.2.7".into()),
            tls: Some("TLSv1.3".into()),
            size,
            upstream: None,
        }
    }

    fn sealed_file(pair: &KeyPair, body: &[u8]) -> Vec<u8> {
        write_message(
            Vec::new(),
            pair.public(),
            &sample_metadata(body.len() as u64),
            &mut &body[..],
        )
        .unwrap()
    }

    fn read_all(file: &[u8], pair: &KeyPair) -> io::Result<(Metadata, Vec<u8>)> {
        let mut reader = MessageReader::open(file, pair)?;
        let mut out = Vec::new();
        reader.read_to_end(&mut out)?;
        Ok((reader.metadata().clone(), out))
    }

    #[test]
    fn a_message_round_trips_with_its_metadata() {
        let pair = KeyPair::generate().unwrap();
        let body = b"Subject: hi\r\n\r\nbody\r\n";
        let file = sealed_file(&pair, body);
        assert_eq!(&file[..8], b"SEALPST1");
        let (meta, back) = read_all(&file, &pair).unwrap();
        assert_eq!(back, body);
        assert_eq!(meta, sample_metadata(body.len() as u64));
    }

    #[test]
    fn metadata_json_uses_the_documented_field_names() {
        let json = serde_json::to_value(sample_metadata(5)).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "client_ip",
                "mail_from",
                "rcpt_to",
                "received",
                "size",
                "source",
                "tls"
            ]
        );
        assert_eq!(json["source"], "smtp");
        let proxy = Metadata {
            source: Source::Pop3Proxy,
            ..sample_metadata(1)
        };
        assert_eq!(serde_json::to_value(proxy).unwrap()["source"], "pop3-proxy");
    }

    #[test]
    fn an_empty_message_is_valid() {
        let pair = KeyPair::generate().unwrap();
        let (_, back) = read_all(&sealed_file(&pair, b""), &pair).unwrap();
        assert!(back.is_empty());
    }

    #[test]
    fn another_mailboxs_key_cannot_open_it() {
        let pair = KeyPair::generate().unwrap();
        let other = KeyPair::generate().unwrap();
        let err = read_all(&sealed_file(&pair, b"secret"), &other)
            .err()
            .unwrap();
        assert!(matches!(damage_of(&err), Some(Damage::BadHeader(_))));
    }

    #[test]
    fn a_bad_magic_or_short_header_is_damage() {
        let pair = KeyPair::generate().unwrap();
        let mut file = sealed_file(&pair, b"x");
        file[0] = b'X';
        let err = read_all(&file, &pair).err().unwrap();
        assert!(err.to_string().contains("bad magic"));
        let err = read_all(&file[..50], &pair).err().unwrap();
        assert_eq!(damage_of(&err), Some(&Damage::Truncated));
    }

    #[test]
    fn truncation_and_trailing_bytes_in_a_large_message_are_damage() {
        let pair = KeyPair::generate().unwrap();
        let body = vec![b'a'; 200_000];
        let file = sealed_file(&pair, &body);
        for cut in [
            HEADER_BYTES,
            HEADER_BYTES + 10,
            file.len() / 2,
            file.len() - 1,
        ] {
            assert!(read_all(&file[..cut], &pair).is_err(), "cut {cut}");
        }
        let mut longer = file.clone();
        longer.push(0);
        let err = read_all(&longer, &pair).err().unwrap();
        assert_eq!(damage_of(&err), Some(&Damage::TrailingBytes));
    }

    #[test]
    fn a_body_that_does_not_match_the_announced_size_is_refused() {
        let pair = KeyPair::generate().unwrap();
        let result = write_message(
            Vec::new(),
            pair.public(),
            &sample_metadata(3),
            &mut &b"four"[..],
        );
        assert!(result.is_err());
    }
}
