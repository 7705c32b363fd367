//! A small HTTPS client for the console tests: real TLS (rustls, trusting
//! the gateway's certificate), a cookie jar like a browser's, and the raw
//! answer (status, every header, body) for the test to look at.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::gateway::tls;

/// One answer.
#[derive(Debug, Clone)]
pub struct Page {
    /// The status code.
    pub status: u16,
    /// Every header, in order.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub body: String,
}

impl Page {
    /// The first header called `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header called `name`.
    pub fn headers(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The value of the first `name="csrf"` hidden field.
    pub fn csrf(&self) -> String {
        self.field_value("csrf")
            .unwrap_or_else(|| panic!("no csrf field in:\n{}", self.body))
    }

    /// The `value` of the first input called `name`.
    pub fn field_value(&self, name: &str) -> Option<String> {
        let at = self.body.find(&format!("name=\"{name}\" value=\""))?;
        let rest = &self.body[at + name.len() + 15..];
        Some(rest[..rest.find('"')?].to_string())
    }

    /// The text of the element with `id` (`id="password">…<`).
    pub fn text_of(&self, id: &str) -> Option<String> {
        let at = self.body.find(&format!("id=\"{id}\">"))?;
        let rest = &self.body[at + id.len() + 6..];
        Some(rest[..rest.find('<')?].to_string())
    }
}

/// A browser-like client of one console.
pub struct Client {
    addr: SocketAddr,
    cert: PathBuf,
    /// The cookies it holds, by name.
    pub cookies: HashMap<String, String>,
}

impl Client {
    /// A client with no cookies.
    pub fn new(addr: SocketAddr, cert: &Path) -> Client {
        Client {
            addr,
            cert: cert.to_path_buf(),
            cookies: HashMap::new(),
        }
    }

    /// `Host` as a browser sends it.
    pub fn host(&self) -> String {
        format!("localhost:{}", self.addr.port())
    }

    fn cookie_header(&self) -> String {
        if self.cookies.is_empty() {
            return String::new();
        }
        let mut pairs: Vec<String> = self
            .cookies
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        pairs.sort();
        format!("Cookie: {}\r\n", pairs.join("; "))
    }

    /// Sends `request` as it is and reads the answer (the console closes
    /// the connection after it).
    pub fn raw(&mut self, request: &[u8]) -> Page {
        let tcp = TcpStream::connect(self.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut stream = tls(tcp, &self.cert);
        stream.write_all(request).unwrap();
        stream.flush().unwrap();
        let mut bytes = Vec::new();
        let mut chunk = [0u8; 16384];
        loop {
            match stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
                // Closed without close_notify: what arrived is the answer.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("reading the answer: {e}"),
            }
        }
        let page = parse(&bytes);
        for set in page.headers("set-cookie") {
            let pair = set.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if set.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_string(), value.to_string());
            }
        }
        page
    }

    /// GET `path`.
    pub fn get(&mut self, path: &str) -> Page {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\n{}\r\n",
            self.host(),
            self.cookie_header()
        );
        self.raw(request.as_bytes())
    }

    /// POST a form to `path`, from this console's own origin.
    pub fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let origin = format!("https://{}", self.host());
        self.post_from(path, fields, Some(&origin))
    }

    /// POST a form with the given `Origin` (or none).
    pub fn post_from(&mut self, path: &str, fields: &[(&str, &str)], origin: Option<&str>) -> Page {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let origin = origin
            .map(|o| format!("Origin: {o}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\n{origin}{}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            self.host(),
            self.cookie_header(),
            body.len()
        );
        self.raw(request.as_bytes())
    }

    /// Logs in with `password` the way the form does; returns the answer.
    pub fn login(&mut self, password: &str) -> Page {
        let form = self.get("/login");
        let csrf = form.csrf();
        self.post("/login", &[("csrf", &csrf), ("password", password)])
    }
}

/// Parses a whole HTTP/1.1 answer.
fn parse(bytes: &[u8]) -> Page {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!(
            "not a whole HTTP answer ({other:?}): {:?}",
            String::from_utf8_lossy(bytes)
        ),
    };
    let headers: Vec<(String, String)> = response
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(0);
    let body = &bytes[head..];
    assert_eq!(body.len(), length, "Content-Length matches the body");
    Page {
        status: response.code.unwrap(),
        headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}
