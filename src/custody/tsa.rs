//! RFC 3161 time-stamps: the request for a chain's head hash, and the
//! check of the token that comes back (RFC 3161 sections 2.4.1 and 2.4.2,
//! CMS SignedData of RFC 5652 section 5).
//!
//! Why the DER here is read by hand and not by a crate: only a fixed path
//! through a handful of elements is needed, with the raw bytes of two of
//! them (the signed attributes, re-tagged as a SET, are what is signed;
//! the encapsulated TSTInfo is what the message-digest attribute hashes).
//! The signature and the TSA's certificate are checked by webpki.

use std::time::{SystemTime, UNIX_EPOCH};

use rustls_pki_types::{CertificateDer, UnixTime};

use crate::crypto;

const OID_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
const OID_SIGNED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];
const OID_TST_INFO: &[u8] = &[
    0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x01, 0x04,
];
const OID_CONTENT_TYPE: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x03];
const OID_MESSAGE_DIGEST: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x04];
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_RSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
const OID_ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
/// id-kp-timeStamping (RFC 3161 section 2.3), the EKU the signer must have.
const EKU_TIME_STAMPING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x08];

/// A request for `digest` (a chain entry's hash, itself a SHA-256):
/// version 1, SHA-256 imprint, a random nonce, certReq true so that the
/// token carries the TSA's certificate. Returns (request, nonce).
pub fn request(digest: &[u8; 32]) -> (Vec<u8>, [u8; 8]) {
    let mut nonce = [0u8; 8];
    crypto::random_bytes(&mut nonce);
    // Positive and minimal: the top bit clear, the first byte not zero.
    nonce[0] = (nonce[0] & 0x7f) | 0x40;
    let algorithm = tlv(0x30, &[tlv(0x06, OID_SHA256), vec![0x05, 0x00]].concat());
    let imprint = tlv(0x30, &[algorithm, tlv(0x04, digest)].concat());
    let body = [
        tlv(0x02, &[1]),
        imprint,
        tlv(0x02, &nonce),
        vec![0x01, 0x01, 0xff],
    ]
    .concat();
    (tlv(0x30, &body), nonce)
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|&b| b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// One DER element: its tag, its content, and all its bytes.
#[derive(Clone, Copy)]
struct Der<'a> {
    tag: u8,
    content: &'a [u8],
    raw: &'a [u8],
}

/// Reads the elements of a constructed element's content, in order.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn next(&mut self) -> Result<Der<'a>, String> {
        let bad = || "not valid DER".to_string();
        let input = self.0;
        let tag = *input.first().ok_or_else(bad)?;
        let first = *input.get(1).ok_or_else(bad)?;
        let (len, head) = if first < 0x80 {
            (first as usize, 2)
        } else {
            let n = (first & 0x7f) as usize;
            if n == 0 || n > 4 {
                return Err(bad());
            }
            let bytes = input.get(2..2 + n).ok_or_else(bad)?;
            (
                bytes.iter().fold(0usize, |a, &b| (a << 8) | b as usize),
                2 + n,
            )
        };
        let end = head.checked_add(len).ok_or_else(bad)?;
        let content = input.get(head..end).ok_or_else(bad)?;
        self.0 = &input[end..];
        Ok(Der {
            tag,
            content,
            raw: &input[..end],
        })
    }

    fn expect(&mut self, tag: u8, what: &str) -> Result<Der<'a>, String> {
        let der = self.next().map_err(|e| format!("{what}: {e}"))?;
        if der.tag != tag {
            return Err(format!("{what}: unexpected element (tag {:#04x})", der.tag));
        }
        Ok(der)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> Der<'a> {
    fn reader(&self) -> Reader<'a> {
        Reader(self.content)
    }
}

/// What a checked token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// The imprint (what was time-stamped).
    pub digest: Vec<u8>,
    /// The TSA's time (GeneralizedTime, as written).
    pub gen_time: String,
}

/// Reads a TimeStampResp: its status must be granted (0) or granted with
/// modifications (1); returns the token (the ContentInfo) it carries.
pub fn token_of_response(response: &[u8]) -> Result<&[u8], String> {
    let mut top = Reader(response);
    let resp = top.expect(0x30, "the response")?;
    let mut r = resp.reader();
    let status = r.expect(0x30, "the response's status")?;
    let code = status.reader().expect(0x02, "the status code")?;
    match code.content {
        [0] | [1] => {}
        other => {
            let text = String::from_utf8_lossy(status.content)
                .chars()
                .filter(|c| c.is_ascii_graphic() || *c == ' ')
                .collect::<String>();
            return Err(format!(
                "the TSA refused: status {} {}",
                other.first().copied().unwrap_or(255),
                text.trim()
            ));
        }
    }
    Ok(r.expect(0x30, "the time-stamp token")?.raw)
}

/// Checks a token (RFC 3161 section 2.4.2): a CMS SignedData over a
/// TSTInfo, whose message digest attribute matches the TSTInfo, signed by
/// a certificate in the token that chains to one in `ca_pem` with the
/// timeStamping EKU, valid at the token's time. Returns what it stamps.
pub fn check_token(token: &[u8], ca_pem: &[u8]) -> Result<Stamp, String> {
    let content_info = Reader(token).expect(0x30, "the token")?;
    let mut ci = content_info.reader();
    if ci.expect(0x06, "the content type")?.content != OID_SIGNED_DATA {
        return Err("the token is not a CMS SignedData".into());
    }
    let explicit = ci.expect(0xa0, "the signed data")?;
    let signed = explicit.reader().expect(0x30, "the signed data")?;
    let mut sd = signed.reader();
    sd.expect(0x02, "the version")?;
    sd.expect(0x31, "the digest algorithms")?;
    let encap = sd.expect(0x30, "the encapsulated content")?;
    let mut e = encap.reader();
    if e.expect(0x06, "the content type")?.content != OID_TST_INFO {
        return Err("the token does not hold a TSTInfo".into());
    }
    let tst_der = e
        .expect(0xa0, "the TSTInfo")?
        .reader()
        .expect(0x04, "the TSTInfo")?
        .content;
    let mut certificates = Vec::new();
    let mut next = sd.next()?;
    if next.tag == 0xa0 {
        let mut certs = next.reader();
        while !certs.is_empty() {
            certificates.push(certs.next()?.raw);
        }
        next = sd.next()?;
    }
    if next.tag == 0xa1 {
        next = sd.next()?;
    }
    if next.tag != 0x31 {
        return Err("the token has no signer".into());
    }
    let signer = next.reader().expect(0x30, "the signer")?;
    let stamp = read_tst_info(tst_der)?;
    check_signer(signer, tst_der, &certificates, ca_pem, &stamp)?;
    Ok(stamp)
}

fn read_tst_info(der: &[u8]) -> Result<Stamp, String> {
    let info = Reader(der).expect(0x30, "the TSTInfo")?;
    let mut r = info.reader();
    r.expect(0x02, "the TSTInfo's version")?;
    r.expect(0x06, "the policy")?;
    let imprint = r.expect(0x30, "the message imprint")?;
    let mut m = imprint.reader();
    let algorithm = m.expect(0x30, "the imprint's algorithm")?;
    if algorithm.reader().expect(0x06, "the algorithm")?.content != OID_SHA256 {
        return Err("the imprint is not SHA-256".into());
    }
    let digest = m.expect(0x04, "the imprint")?.content.to_vec();
    r.expect(0x02, "the serial number")?;
    let time = r.expect(0x18, "the time")?;
    Ok(Stamp {
        digest,
        gen_time: String::from_utf8_lossy(time.content).into_owned(),
    })
}

/// The signer's signed attributes, signature and certificate.
fn check_signer(
    signer: Der,
    tst_der: &[u8],
    certificates: &[&[u8]],
    ca_pem: &[u8],
    stamp: &Stamp,
) -> Result<(), String> {
    let mut s = signer.reader();
    s.expect(0x02, "the signer's version")?;
    s.next()?; // sid: matched below by trying the token's certificates
    let digest_alg = s.expect(0x30, "the signer's digest algorithm")?;
    if digest_alg.reader().expect(0x06, "the algorithm")?.content != OID_SHA256 {
        return Err("the signer's digest is not SHA-256".into());
    }
    let attrs = s.expect(0xa0, "the signed attributes")?;
    let sig_alg = s.expect(0x30, "the signature algorithm")?;
    let signature = s.expect(0x04, "the signature")?.content;
    let mut content_type_ok = false;
    let mut digest_ok = false;
    let mut a = attrs.reader();
    while !a.is_empty() {
        let attr = a.expect(0x30, "an attribute")?;
        let mut ar = attr.reader();
        let oid = ar.expect(0x06, "an attribute type")?.content;
        let value = ar.expect(0x31, "an attribute value")?.reader().next()?;
        if oid == OID_CONTENT_TYPE {
            content_type_ok = value.content == OID_TST_INFO;
        } else if oid == OID_MESSAGE_DIGEST {
            digest_ok = value.content == crypto::sha256(tst_der);
        }
    }
    if !content_type_ok || !digest_ok {
        return Err("the signed attributes do not match the TSTInfo".into());
    }
    // RFC 5652 section 5.4: the signature is over the attributes' DER
    // with the SET OF tag, not the [0] IMPLICIT one.
    let mut signed = attrs.raw.to_vec();
    signed[0] = 0x31;
    let algorithm = match sig_alg.reader().expect(0x06, "the algorithm")?.content {
        OID_RSA | OID_RSA_SHA256 => webpki::ring::RSA_PKCS1_2048_8192_SHA256,
        OID_ECDSA_SHA256 => webpki::ring::ECDSA_P256_SHA256,
        _ => return Err("the signature algorithm is not supported".into()),
    };
    let anchors_der: Vec<CertificateDer> = rustls_pki_types::pem::PemObject::pem_slice_iter(ca_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the TSA CA file: {e}"))?;
    if anchors_der.is_empty() {
        return Err("the TSA CA file holds no certificate".into());
    }
    let anchors: Vec<_> = anchors_der
        .iter()
        .filter_map(|c| webpki::anchor_from_trusted_cert(c).ok())
        .collect();
    let time = UnixTime::since_unix_epoch(
        generalized_time(&stamp.gen_time)
            .ok_or("the token's time cannot be read")?
            .duration_since(UNIX_EPOCH)
            .map_err(|_| "the token's time is before 1970")?,
    );
    let intermediates: Vec<CertificateDer> = certificates
        .iter()
        .map(|c| CertificateDer::from(c.to_vec()))
        .collect();
    let mut last = "the token carries no certificate (certReq)".to_string();
    for der in &intermediates {
        let Ok(cert) = webpki::EndEntityCert::try_from(der) else {
            continue;
        };
        if cert
            .verify_signature(algorithm, &signed, signature)
            .is_err()
        {
            last = "the signature does not verify with the token's certificate".into();
            continue;
        }
        return cert
            .verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &anchors,
                &intermediates,
                time,
                webpki::KeyUsage::required(EKU_TIME_STAMPING),
                None,
                None,
            )
            .map(|_| ())
            .map_err(|e| format!("the TSA's certificate is not trusted for time-stamping: {e:?}"));
    }
    Err(last)
}

/// `YYYYMMDDhhmmss[.f]Z` as a time.
fn generalized_time(text: &str) -> Option<SystemTime> {
    // Parsed, not built from numbers: a month 13 from a hostile token is
    // an error, never a panic.
    let civil = jiff::civil::DateTime::strptime("%Y%m%d%H%M%S", text.get(..14)?).ok()?;
    let ts = civil.to_zoned(jiff::tz::TimeZone::UTC).ok()?;
    Some(SystemTime::from(ts.timestamp()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_der_with_the_digest_and_a_positive_nonce() {
        let digest = [7u8; 32];
        let (req, nonce) = request(&digest);
        let top = Reader(&req).expect(0x30, "req").unwrap();
        assert_eq!(top.raw.len(), req.len());
        let mut r = top.reader();
        assert_eq!(r.expect(0x02, "v").unwrap().content, [1]);
        let imprint = r.expect(0x30, "imprint").unwrap();
        assert!(imprint.raw.windows(32).any(|w| w == digest));
        assert_eq!(r.expect(0x02, "nonce").unwrap().content, nonce);
        assert!(nonce[0] & 0x80 == 0 && nonce[0] != 0);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"\x30",
            b"\x30\x84\xff\xff\xff\xff",
            b"\x30\x03\x02\x01",
        ] {
            assert!(token_of_response(bad).is_err());
            assert!(check_token(bad, b"").is_err());
        }
    }

    #[test]
    fn generalized_time_reads_utc() {
        let t = generalized_time("20261207080910Z").unwrap();
        assert_eq!(crate::timestamp::rfc3339(t), "2026-12-07T08:09:10Z");
        for bad in [
            "20261307080910Z",
            "20261200080910Z",
            "2026120708",
            "2026-12-07T08Z",
        ] {
            assert_eq!(generalized_time(bad), None, "{bad}");
        }
    }
}
