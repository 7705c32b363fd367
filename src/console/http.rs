//! HTTP/1.1 for the console, as little of it as a browser needs: one
//! request per connection (`Connection: close`), its head parsed by
//! `httparse`, a body only by `Content-Length` (RFC 9112 §6.3) and small.
//! The glue around httparse is ours because it must read under the
//! connection's deadline and within fixed sizes, which no blocking HTTP
//! server crate lets a caller bound the same way as the mail listeners.

use std::fmt;
use std::io;
use std::time::Instant;

use crate::net::conn::{Connection, Input, OnShutdown};

/// Largest request head (request line and headers).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest request body: the console's forms are short.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Most header fields in a request.
const MAX_HEADERS: usize = 48;

/// A parsed request.
#[derive(Debug)]
pub struct Request {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// What followed `?`, if anything.
    pub query: String,
    headers: Vec<(String, String)>,
    /// The body (forms are `application/x-www-form-urlencoded`).
    pub body: Vec<u8>,
}

impl Request {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A cookie's value (RFC 6265 §5.4: `name=value` pairs joined by `; `).
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
            .flat_map(|(_, v)| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }

    /// The form fields of the body, decoded.
    pub fn form(&self) -> Form {
        Form(form_urlencoded::parse(&self.body).into_owned().collect())
    }

    /// A query parameter, decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_bytes())
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.into_owned())
    }
}

impl Drop for Request {
    /// A body may carry passwords.
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.body);
    }
}

/// Decoded form fields.
pub struct Form(Vec<(String, String)>);

impl Form {
    /// A field's value; empty when absent.
    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// Whether a checkbox was ticked (`value="yes"`).
    pub fn ticked(&self, name: &str) -> bool {
        self.get(name) == "yes"
    }
}

impl Drop for Form {
    /// Forms carry passwords.
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for (_, value) in &mut self.0 {
            value.zeroize();
        }
    }
}

/// Why no request could be read.
#[derive(Debug)]
pub enum HttpError {
    /// The client went away, or sent nothing before the deadline: no answer.
    Gone,
    /// The request is malformed: 400 with the reason.
    Bad(&'static str),
    /// The head is larger than [`MAX_HEAD_BYTES`]: 431.
    HeadTooLarge,
    /// The body is larger than [`MAX_BODY_BYTES`]: 413.
    BodyTooLarge,
    /// A body framing the console does not take (chunked): 411.
    LengthRequired,
    /// The request started but did not finish before the deadline: 408.
    TimedOut,
    /// Reading failed.
    Io(io::Error),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Gone => f.write_str("the client sent no request"),
            HttpError::Bad(why) => write!(f, "bad request: {why}"),
            HttpError::HeadTooLarge => {
                write!(f, "request head larger than {MAX_HEAD_BYTES} bytes")
            }
            HttpError::BodyTooLarge => {
                write!(f, "request body larger than {MAX_BODY_BYTES} bytes")
            }
            HttpError::LengthRequired => f.write_str("a body without Content-Length"),
            HttpError::TimedOut => f.write_str("the request did not arrive in time"),
            HttpError::Io(e) => write!(f, "read failed: {e}"),
        }
    }
}

impl HttpError {
    /// The status to answer with, if any answer is due.
    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::Gone | HttpError::Io(_) => None,
            HttpError::Bad(_) => Some(400),
            HttpError::HeadTooLarge => Some(431),
            HttpError::BodyTooLarge => Some(413),
            HttpError::LengthRequired => Some(411),
            HttpError::TimedOut => Some(408),
        }
    }
}

/// What the head says about the body that follows.
fn body_length(headers: &[httparse::Header<'_>]) -> Result<usize, HttpError> {
    let mut length: Option<usize> = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::LengthRequired);
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let text =
                std::str::from_utf8(h.value).map_err(|_| HttpError::Bad("Content-Length"))?;
            // RFC 9110 §8.6: digits only; differing repeats are an error.
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HttpError::Bad("Content-Length is not a number"));
            }
            let n = text.parse::<usize>().map_err(|_| HttpError::BodyTooLarge)?;
            if length.is_some_and(|l| l != n) {
                return Err(HttpError::Bad("conflicting Content-Length headers"));
            }
            length = Some(n);
        }
    }
    let n = length.unwrap_or(0);
    if n > MAX_BODY_BYTES {
        return Err(HttpError::BodyTooLarge);
    }
    Ok(n)
}

/// The head of `buf` if it is whole: the request without its body, and
/// where the body starts.
fn parse_head(buf: &[u8]) -> Result<Option<(Request, usize, usize)>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeadTooLarge),
        Err(_) => return Err(HttpError::Bad("not an HTTP/1.1 request")),
    };
    let (Some(method), Some(target)) = (parsed.method, parsed.path) else {
        return Err(HttpError::Bad("no request line"));
    };
    // Only origin-form (RFC 9112 §3.2.1): no proxy requests.
    if !target.starts_with('/') {
        return Err(HttpError::Bad("the request target must be a path"));
    }
    let body = body_length(parsed.headers)?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut fields = Vec::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let value =
            std::str::from_utf8(h.value).map_err(|_| HttpError::Bad("a header is not text"))?;
        fields.push((h.name.to_owned(), value.to_owned()));
    }
    let request = Request {
        method: method.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        headers: fields,
        body: Vec::new(),
    };
    Ok(Some((request, head_len, body)))
}

/// Reads one request before `deadline`.
pub fn read_request(conn: &mut Connection, deadline: Instant) -> Result<Request, HttpError> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let mut read = |buf: &mut Vec<u8>| -> Result<(), HttpError> {
        match conn.read_input(&mut chunk, &|| deadline, OnShutdown::Stop) {
            Ok(Input::Data(n)) => {
                buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Ok(Input::TimedOut) if !buf.is_empty() => Err(HttpError::TimedOut),
            Ok(_) => Err(HttpError::Gone),
            Err(e) => Err(HttpError::Io(e)),
        }
    };
    let (mut request, head_len, body_len) = loop {
        if let Some(head) = parse_head(&buf)? {
            break head;
        }
        if buf.len() >= MAX_HEAD_BYTES {
            return Err(HttpError::HeadTooLarge);
        }
        read(&mut buf)?;
    };
    while buf.len() < head_len + body_len {
        read(&mut buf)?;
    }
    request.body = buf[head_len..head_len + body_len].to_vec();
    // The read buffer held the body (a password, perhaps) too.
    zeroize::Zeroize::zeroize(&mut buf);
    Ok(request)
}

/// An answer.
pub struct Response {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        303 => "See Other",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

impl Response {
    /// An HTML page.
    pub fn html(status: u16, page: String) -> Response {
        Response {
            status,
            headers: vec![("Content-Type", "text/html; charset=utf-8".into())],
            body: page.into_bytes(),
        }
    }

    /// Plain text (the MTA-STS policy, an ACME key authorization, a 404).
    pub fn text(status: u16, text: String) -> Response {
        Response {
            status,
            headers: vec![("Content-Type", "text/plain; charset=utf-8".into())],
            body: text.into_bytes(),
        }
    }

    /// A metrics exposition: OpenMetrics 1.0, or Prometheus' text format
    /// 0.0.4.
    pub fn exposition(text: String, openmetrics: bool) -> Response {
        let kind = if openmetrics {
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        } else {
            "text/plain; version=0.0.4; charset=utf-8"
        };
        Response {
            status: 200,
            headers: vec![("Content-Type", kind.into())],
            body: text.into_bytes(),
        }
    }

    /// 303 See Other to `location` (a path of ours).
    pub fn redirect(location: &str) -> Response {
        Response {
            status: 303,
            headers: vec![("Location", location.to_owned())],
            body: Vec::new(),
        }
    }

    /// Adds a header (`Set-Cookie`, `Allow`, …).
    pub fn with_header(mut self, name: &'static str, value: String) -> Response {
        self.headers.push((name, value));
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The whole response; `security` are the headers every answer carries.
    pub fn to_bytes(&self, security: &[(&str, &str)]) -> Vec<u8> {
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (name, value) in security {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.body.len()
        ));
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

impl Drop for Response {
    /// A page may show a generated password.
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOGIN: &[u8] = b"POST /login HTTP/1.1\r\nHost: gw:8450\r\nCookie: a=1; __Host-pre=xyz\r\n\
Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 27\r\n\r\npassword=a%20b%26c&csrf=xyz";

    #[test]
    fn a_request_is_whole_only_with_its_head_at_every_split() {
        for cut in 0..LOGIN.len() {
            let head = parse_head(&LOGIN[..cut]).unwrap();
            let end = LOGIN.len() - 27;
            assert_eq!(head.is_some(), cut >= end, "cut {cut}");
        }
        let (mut request, head_len, body) = parse_head(LOGIN).unwrap().unwrap();
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("POST", "/login")
        );
        assert_eq!(body, 27);
        request.body = LOGIN[head_len..].to_vec();
        assert_eq!(request.cookie("__Host-pre"), Some("xyz"));
        assert_eq!(request.cookie("pre"), None);
        let form = request.form();
        assert_eq!(form.get("password"), "a b&c");
        assert_eq!(form.get("missing"), "");
    }

    #[test]
    fn chunked_bodies_and_bad_lengths_are_refused() {
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(
            parse_head(chunked),
            Err(HttpError::LengthRequired)
        ));
        let twice = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert!(matches!(parse_head(twice), Err(HttpError::Bad(_))));
        let signed = b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n";
        assert!(matches!(parse_head(signed), Err(HttpError::Bad(_))));
        let huge = b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n";
        assert!(matches!(parse_head(huge), Err(HttpError::BodyTooLarge)));
        let absolute = b"GET http://elsewhere/ HTTP/1.1\r\n\r\n";
        assert!(matches!(parse_head(absolute), Err(HttpError::Bad(_))));
        assert!(matches!(
            parse_head(b"\x16\x03\x01garbage\r\n\r\n"),
            Err(HttpError::Bad(_))
        ));
    }

    #[test]
    fn a_query_is_split_from_the_path_and_decoded() {
        let (request, _, _) = parse_head(b"GET /mailboxes/x?done=a%20b HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(request.path, "/mailboxes/x");
        assert_eq!(request.query_param("done").as_deref(), Some("a b"));
    }

    #[test]
    fn every_response_carries_the_security_headers_and_closes() {
        let bytes = Response::redirect("/login").to_bytes(&[("X-Frame-Options", "DENY")]);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("HTTP/1.1 303 See Other\r\n"), "{text}");
        assert!(text.contains("X-Frame-Options: DENY\r\n"));
        assert!(text.contains("Location: /login\r\n"));
        assert!(text.ends_with("Content-Length: 0\r\nConnection: close\r\n\r\n"));
    }
}
