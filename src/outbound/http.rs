//! HTTP/1.1 as a client, as little as the gateway's own endpoints need:
//! one request per connection (`Connection: close`), the answer's head
//! parsed by `httparse`, its body by `Content-Length`, chunked transfer
//! coding (RFC 9112 §7.1) or the end of the connection, and never more than
//! [`MAX_BODY`]. Redirects are not followed: an ACME server or a
//! time-stamping authority that answers with one is misconfigured or not
//! the one configured, and the error names where it pointed.
//!
//! Hand-written around httparse rather than a client crate (ureq, reqwest)
//! because every byte must move under the deadline-bound stream and the
//! shutdown flag the rest of the gateway uses, which none of them takes.

use std::time::Instant;

use super::{Endpoint, OutboundError, Url};

/// Largest answer body: an ACME certificate chain is a few KiB.
pub const MAX_BODY: usize = 1024 * 1024;
/// Largest answer head.
const MAX_HEAD: usize = 16 * 1024;

/// An answer.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    headers: Vec<(String, String)>,
    /// The body, decoded from its transfer coding.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text, for error messages: at most 300 characters,
    /// control characters dropped.
    pub fn body_excerpt(&self) -> String {
        String::from_utf8_lossy(&self.body)
            .chars()
            .filter(|c| !c.is_control())
            .take(300)
            .collect()
    }
}

/// Sends one request to `url` through `endpoint` and reads the answer,
/// all before the endpoint's timeout.
pub fn exchange(
    endpoint: &Endpoint,
    method: &str,
    url: &Url,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response, OutboundError> {
    let deadline = Instant::now() + endpoint.timeout;
    let fail = |why: String| OutboundError(format!("{} {}: {why}", endpoint.what, url.authority()));
    let mut stream = endpoint.connect(url, deadline)?;
    let mut request = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: Sealpost/{}\r\nConnection: close\r\n",
        url.path,
        url.authority(),
        env!("CARGO_PKG_VERSION")
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    stream
        .write_all(&bytes, deadline)
        .map_err(|e| fail(format!("sending the request: {e}")))?;
    let mut received = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut at_end = false;
    loop {
        if let Some(response) = parse(&received, method == "HEAD", at_end).map_err(&fail)? {
            stream.close(Instant::now() + std::time::Duration::from_millis(200));
            return check_redirect(response).map_err(fail);
        }
        if at_end {
            return Err(fail(
                "the server closed the connection before a whole answer".into(),
            ));
        }
        let n = endpoint
            .read(&mut stream, &mut buf, deadline)
            .map_err(&fail)?;
        at_end = n == 0;
        received.extend_from_slice(&buf[..n]);
        if received.len() > MAX_HEAD + MAX_BODY + 64 * 1024 {
            return Err(fail(format!(
                "the answer is larger than {} KiB",
                MAX_BODY / 1024
            )));
        }
    }
}

fn check_redirect(response: Response) -> Result<Response, String> {
    if (300..400).contains(&response.status) && response.status != 304 {
        return Err(format!(
            "answered {} redirecting to {:?}, which is not followed: configure the URL it names if it is trusted",
            response.status,
            response.header("location").unwrap_or("nowhere")
        ));
    }
    Ok(response)
}

/// The answer in `received`, once whole (`None` until then). `at_end`: the
/// server closed the connection, which ends a body without a length.
fn parse(received: &[u8], head_only: bool, at_end: bool) -> Result<Option<Response>, String> {
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut slots);
    let head_len = match parsed.parse(received) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if received.len() > MAX_HEAD => {
            return Err(format!(
                "the answer's head is larger than {} KiB",
                MAX_HEAD / 1024
            ));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("not an HTTP answer ({e})")),
    };
    let status = parsed.code.unwrap_or(0);
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let mut response = Response {
        status,
        headers,
        body: Vec::new(),
    };
    let rest = &received[head_len..];
    if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok(Some(response));
    }
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(length) = response.header("content-length") {
        let length: usize = length
            .trim()
            .parse()
            .map_err(|_| format!("a bad Content-Length {length:?}"))?;
        if length > MAX_BODY {
            return Err(format!("the answer is larger than {} KiB", MAX_BODY / 1024));
        }
        (rest.len() >= length).then(|| rest[..length].to_vec())
    } else {
        at_end.then(|| rest.to_vec())
    };
    match body {
        Some(body) if body.len() > MAX_BODY => {
            Err(format!("the answer is larger than {} KiB", MAX_BODY / 1024))
        }
        Some(body) => {
            response.body = body;
            Ok(Some(response))
        }
        None => Ok(None),
    }
}

/// A chunked body (RFC 9112 §7.1), once its last chunk and trailers are in.
fn dechunk(mut rest: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut body = Vec::new();
    loop {
        let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
            return if rest.len() > 1024 {
                Err("a bad chunk size line".into())
            } else {
                Ok(None)
            };
        };
        let line = std::str::from_utf8(&rest[..end]).map_err(|_| "a bad chunk size line")?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size =
            usize::from_str_radix(size, 16).map_err(|_| format!("a bad chunk size {size:?}"))?;
        if size > MAX_BODY || body.len() + size > MAX_BODY {
            return Err(format!("the answer is larger than {} KiB", MAX_BODY / 1024));
        }
        rest = &rest[end + 2..];
        if size == 0 {
            // Trailers, if any, end with an empty line.
            let mut trailers = rest;
            loop {
                let Some(end) = trailers.windows(2).position(|w| w == b"\r\n") else {
                    return Ok(None);
                };
                if end == 0 {
                    return Ok(Some(body));
                }
                trailers = &trailers[end + 2..];
            }
        }
        if rest.len() < size + 2 {
            return Ok(None);
        }
        if &rest[size..size + 2] != b"\r\n" {
            return Err("a chunk does not end where its size says".into());
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(bytes: &[u8]) -> Response {
        parse(bytes, false, false).unwrap().unwrap()
    }

    #[test]
    fn bodies_by_length_by_chunks_and_by_close_at_every_split() {
        let cases: [(&[u8], &[u8], bool); 3] = [
            (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", b"hello", false),
            (
                b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nhel\r\n2\r\nlo\r\n0\r\nT: v\r\n\r\n",
                b"hello",
                false,
            ),
            (b"HTTP/1.1 200 OK\r\n\r\nhello", b"hello", true),
        ];
        for (bytes, body, needs_end) in cases {
            for split in 0..bytes.len() {
                assert!(
                    parse(&bytes[..split], false, false).unwrap().is_none(),
                    "{split}"
                );
            }
            let got = parse(bytes, false, needs_end).unwrap().unwrap();
            assert_eq!(got.body, body);
        }
        let head = whole(b"HTTP/1.1 200 OK\r\nReplay-Nonce: abc\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(head.header("replay-nonce"), Some("abc"));
        assert!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true, false)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn huge_garbage_and_redirects_are_errors() {
        let huge = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert!(
            parse(huge.as_bytes(), false, false)
                .unwrap_err()
                .contains("larger")
        );
        let chunk = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
            MAX_BODY + 1
        );
        assert!(
            parse(chunk.as_bytes(), false, false)
                .unwrap_err()
                .contains("larger")
        );
        assert!(
            parse(b"SMTP 220 hello\r\n\r\n", false, false)
                .unwrap_err()
                .contains("not an HTTP answer")
        );
        assert!(
            parse(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                false,
                false
            )
            .is_err()
        );
        let moved = whole(
            b"HTTP/1.1 302 Found\r\nLocation: https://evil.example/\r\nContent-Length: 0\r\n\r\n",
        );
        let e = check_redirect(moved).unwrap_err();
        assert!(
            e.contains("evil.example") && e.contains("not followed"),
            "{e}"
        );
    }
}
