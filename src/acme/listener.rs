//! The two small web listeners certificates need, under the same acceptor,
//! connection share (`Pool::Web`), deadlines and request limits as the
//! console:
//! - `acme.http_listen` (plain HTTP, port 80): only
//!   `/.well-known/acme-challenge/<token>` (RFC 8555 §8.3);
//! - `mta_sts.listen` (HTTPS, port 443): TLS-ALPN-01 for a handshake that
//!   offers `acme-tls/1` (RFC 8737 §3), and the MTA-STS policy at
//!   `/.well-known/mta-sts.txt` (RFC 8461 §3.3) unless `mta_sts.mode` is
//!   `off`, when the listener serves only the ACME protocol.
//!
//! Everything else is a 404, and a bad request its 4xx, then the
//! connection closes.

use std::sync::Arc;
use std::time::Instant;

use log::info;
use rustls::ServerConfig;

use super::challenge::{ACME_TLS_ALPN, AlpnResolver, Challenges};
use crate::console::http::{self, Response};
use crate::net::acceptor::Accepted;
use crate::net::driver::SessionEnv;

/// The HTTP-01 path prefix.
const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// One of the two listeners.
pub struct WebService {
    /// Sessions' settings (its pool is `Pool::Web`).
    pub env: SessionEnv,
    /// The published challenges.
    pub challenges: Arc<Challenges>,
    /// The policy, when one is served (HTTPS only).
    pub policy: Option<String>,
    /// HTTPS (the `mta_sts.listen` listener) or plain HTTP-01.
    pub https: bool,
}

impl WebService {
    /// The TLS configuration of the HTTPS listener, from the served one:
    /// the ALPN resolver in front of its certificate, and `acme-tls/1`
    /// (plus `http/1.1` where the policy is served) as the protocols.
    fn tls_config(&self) -> Arc<ServerConfig> {
        let mut config = (*self.env.tls.current()).clone();
        let served = self.policy.is_some();
        config.cert_resolver = Arc::new(AlpnResolver {
            inner: served.then(|| Arc::clone(&config.cert_resolver)),
            challenges: Arc::clone(&self.challenges),
        });
        config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
        if served {
            config.alpn_protocols.push(b"http/1.1".to_vec());
        }
        Arc::new(config)
    }

    /// Serves one connection: one request, one answer.
    pub fn run(&self, accepted: Accepted) {
        let name = if self.https { "mta-sts" } else { "acme-http" };
        let Some(mut opened) = self.env.open(accepted, false, name) else {
            return;
        };
        let peer = opened.conn.peer();
        let timeouts = self.env.timeouts;
        let deadline = Instant::now() + timeouts.handshake;
        if self.https
            && let Err(e) = opened.conn.start_tls(self.tls_config(), deadline)
        {
            // A probe (`sealpost status`) connects and leaves.
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                log::debug!("{name} {peer}: TLS handshake failed: {e}");
            } else {
                info!("{name} {peer}: TLS handshake failed: {e}");
            }
            return;
        }
        // After a TLS-ALPN-01 handshake the certificate authority closes:
        // that ends here as a request never sent.
        let mut unread = false;
        let response = match http::read_request(&mut opened.conn, deadline) {
            Ok(request) => {
                let response = self.answer(&request.method, &request.path);
                info!(
                    "{name} {peer}: {} {} {}",
                    request.method,
                    request.path,
                    response.status()
                );
                response
            }
            Err(e) => match e.status() {
                Some(code) => {
                    info!("{name} {peer}: {e}");
                    unread = true;
                    Response::text(code, format!("{e}\n"))
                }
                None => {
                    log::debug!("{name} {peer}: {e}");
                    opened.conn.close();
                    return;
                }
            },
        };
        let bytes = response.to_bytes(&[("Cache-Control", "no-store")]);
        if let Err(e) = opened.conn.send(&bytes, Instant::now() + timeouts.command) {
            info!("{name} {peer}: write failed: {e}");
        }
        if unread {
            opened.conn.close_lingering();
        } else {
            opened.conn.close();
        }
    }

    fn answer(&self, method: &str, path: &str) -> Response {
        if method != "GET" {
            return Response::text(405, "only GET\n".into()).with_header("Allow", "GET".into());
        }
        if !self.https {
            if let Some(token) = path.strip_prefix(CHALLENGE_PREFIX)
                && let Some(answer) = self.challenges.http_answer(token)
            {
                return Response::text(200, answer);
            }
        } else if path == super::mta_sts::POLICY_PATH
            && let Some(policy) = &self.policy
        {
            return Response::text(200, policy.clone());
        }
        Response::text(404, "not found\n".into())
    }
}
