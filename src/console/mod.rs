//! The HTTPS management console: the dashboard of `sealpost status` and
//! the operations of `sealpost mailbox`, in a browser.
//!
//! It runs behind the same acceptor, connection limits, TLS certificate and
//! deadlines as the mail listeners (TLS from the first byte, one request per
//! connection). The mailbox operations are the CLI's own (`admin`, `store`);
//! the administrator's failed logins go through the same delays and
//! lockouts as mail logins (its own `LoginThrottle`, listed by
//! `sealpost lockouts` as `console`).
//!
//! Security: a session is a random token in a `__Host-` cookie that is
//! `Secure`, `HttpOnly` and `SameSite=Strict` with an idle expiry; every
//! state-changing request is a POST carrying the session's CSRF token (the
//! login form a double-submitted one) and, when the browser sends one, an
//! `Origin` of this very console. Nothing secret is ever put in a URL or a
//! log line: passwords and tokens travel in bodies and cookies only.

pub mod http;
mod mailboxes;
pub mod metrics;
pub mod pages;
pub mod session;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use log::{info, warn};
use maud::Markup;

use crate::admin::{self, AdminError, NewPassword};
use crate::auth::{KdfSlots, LoginThrottle};
use crate::cert;
use crate::config::Config;
use crate::crypto::{self, Password};
use crate::net::acceptor::Accepted;
use crate::net::driver::{SessionEnv, Surroundings};
use crate::net::tls::TlsServer;
use crate::status::{self, Probe};
use crate::store::{Deletion, Mailbox, MailboxId, Status, Store, StoreError};

use http::{Form, Request, Response};
use pages::Chrome;
use session::{Active, Sessions, ShownOnce};

/// The session cookie (`__Host-`: Secure, path `/`, no domain; RFC 6265bis §4.1.3.2).
const SESSION_COOKIE: &str = "__Host-sealpost";
/// The login form's double-submitted CSRF cookie.
const LOGIN_COOKIE: &str = "__Host-sealpost-login";

/// The listeners the acceptor bound (configuration key, address), known
/// once it has bound them: the dashboard shows real ports, port 0 resolved.
#[derive(Clone, Default)]
pub struct Bound(Arc<std::sync::RwLock<Vec<(String, SocketAddr)>>>);

impl Bound {
    /// Records what was bound.
    pub fn set(&self, bound: Vec<(String, SocketAddr)>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = bound;
    }

    /// What was bound.
    pub fn get(&self) -> Vec<(String, SocketAddr)> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// What the console runs with; rebuilt on each reload, except the sessions
/// and the throttle, which carry over.
pub struct ConsoleService {
    /// The running configuration.
    pub config: Arc<Config>,
    /// The mailboxes.
    pub store: Store,
    /// TLS, deadlines, shutdown, connection limits.
    pub env: SessionEnv,
    /// Failed administrator logins.
    pub throttle: Arc<LoginThrottle>,
    /// Open sessions.
    pub sessions: Arc<Sessions>,
    /// The cap on concurrent key derivations.
    pub kdf_slots: Arc<KdfSlots>,
    /// The bound listeners.
    pub bound: Bound,
}

/// The headers of every answer (besides the Content-Security-Policy).
/// `Referrer-Policy: same-origin`, not `no-referrer`: under `no-referrer` a
/// browser sends `Origin: null` with our own forms (Fetch, "serializing a
/// request origin"), and the Origin check could not tell them from a
/// foreign page's. Our URLs carry no secret, and no other site sees them.
const SECURITY_HEADERS: [(&str, &str); 5] = [
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),
    ("X-Content-Type-Options", "nosniff"),
    ("Cache-Control", "no-store"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
];

fn cookie(name: &str, value: &str, max_age: Option<u64>) -> String {
    let age = max_age
        .map(|s| format!("; Max-Age={s}"))
        .unwrap_or_default();
    format!("{name}={value}; Secure; HttpOnly; SameSite=Strict; Path=/{age}")
}

fn clear_cookie(name: &str) -> String {
    cookie(name, "", Some(0))
}

/// Whether an operation failed because the current password was wrong.
fn is_wrong_password(e: &AdminError) -> bool {
    matches!(
        e,
        AdminError::Store(StoreError::WrongPassword(_))
            | AdminError::Crypto(crypto::CryptoError::WrongPassword)
    )
}

/// A notice for `?done=` after a redirect: fixed texts only, so the URL
/// never carries anything but a word.
/// What a mailbox operation came to.
enum Outcome {
    /// Done: the redirect (or page) to answer with.
    Done(Response),
    /// Refused before anything changed: the mailbox page again, with this
    /// error and status.
    Again(String, u16),
    /// Refused by the store or the password rules.
    Failed(AdminError),
}

impl From<Result<Response, AdminError>> for Outcome {
    fn from(result: Result<Response, AdminError>) -> Outcome {
        match result {
            Ok(response) => Outcome::Done(response),
            Err(e) => Outcome::Failed(e),
        }
    }
}

/// The redirect after an operation on `id` (Post/Redirect/Get).
fn done(id: &MailboxId, word: &str) -> Response {
    Response::redirect(&format!("/mailboxes/{id}?done={word}"))
}

fn notice_for(done: Option<String>) -> Option<&'static str> {
    Some(match done?.as_str() {
        "updated" => "Saved.",
        "suspended" => "The mailbox is suspended: new mail is refused for now.",
        "active" => "The mailbox accepts mail again.",
        "password" => "The password was changed; the stored mail stays readable with the new one.",
        "reset" => "The password was reset with new keys.",
        "deleted" => "The mailbox was deleted.",
        "created" => "The mailbox was created.",
        "installed" => "Installed: every new connection gets this certificate.",
        "removed" => "Removed: the self-signed certificate is served again.",
        "removed-acme" => {
            "Removed: the ACME certificate is served again, or ordered now if there is none yet."
        }
        "renew" => {
            "Asked: the renewer orders a new certificate within 30 seconds. Reload this page to see how it went."
        }
        _ => return None,
    })
}

impl ConsoleService {
    /// Serves one connection: TLS, one request, one answer.
    pub fn run(&self, accepted: Accepted) {
        let Some(mut opened) = self.env.open(accepted, true, "console") else {
            return;
        };
        let peer = opened.conn.peer();
        let timeouts = self.env.timeouts;
        let wait = if Surroundings::overloaded(&self.env) {
            timeouts.overload.min(timeouts.handshake)
        } else {
            timeouts.handshake
        };
        let mut unread = false;
        let response = match http::read_request(&mut opened.conn, Instant::now() + wait) {
            Ok(request) => {
                let response = self.handle(&request, peer);
                info!(
                    "console {peer}: {} {} {}",
                    request.method,
                    request.path,
                    response.status()
                );
                response
            }
            Err(e) => {
                if opened.conn.heard_from_client() {
                    info!("console {peer}: {e}");
                } else {
                    // Connected and left without a word: a probe.
                    log::debug!("console {peer}: {e}");
                }
                match e.status() {
                    Some(code) => {
                        unread = true;
                        self.problem(code, &e.to_string(), None)
                    }
                    None => {
                        opened.conn.close();
                        return;
                    }
                }
            }
        };
        let mut security: Vec<(&str, &str)> = SECURITY_HEADERS.to_vec();
        security.push(("Content-Security-Policy", pages::content_security_policy()));
        // Only while a CA-signed certificate is served (RFC 6797 section
        // 7.2: never over a certificate the browser had to be told to
        // accept), and for a day: going back to the self-signed one then
        // locks a browser out of the console for at most a day.
        if crate::cert::ca_signed_in_use(&self.config) {
            security.push(("Strict-Transport-Security", "max-age=86400"));
        }
        let mut bytes = response.to_bytes(&security);
        if let Err(e) = opened.conn.send(&bytes, Instant::now() + timeouts.command) {
            info!("console {peer}: write failed: {e}");
        }
        // A page may have shown a generated password.
        zeroize::Zeroize::zeroize(&mut bytes);
        if unread {
            opened.conn.close_lingering();
        } else {
            opened.conn.close();
        }
    }

    fn chrome<'a>(&'a self, csrf: Option<&'a str>) -> Chrome<'a> {
        Chrome {
            hostname: &self.config.hostname,
            csrf,
        }
    }

    fn page(&self, status: u16, csrf: Option<&str>, title: &str, content: Markup) -> Response {
        Response::html(status, pages::page(&self.chrome(csrf), title, content))
    }

    fn problem(&self, status: u16, message: &str, csrf: Option<&str>) -> Response {
        self.page(status, csrf, "Problem", pages::problem(message))
    }

    /// Whether a POST comes from a page of this console: browsers send
    /// `Origin` with every POST (RFC 6454 §7.3), and a foreign one is refused
    /// before the CSRF token is even looked at.
    fn same_origin(request: &Request) -> bool {
        match (request.header("origin"), request.header("host")) {
            (None, _) => true,
            (Some(origin), Some(host)) => origin.eq_ignore_ascii_case(&format!("https://{host}")),
            (Some(_), None) => false,
        }
    }

    fn handle(&self, request: &Request, peer: SocketAddr) -> Response {
        let method = request.method.as_str();
        if !matches!(method, "GET" | "POST") {
            return self
                .problem(405, "Only GET and POST are used here.", None)
                .with_header("Allow", "GET, POST".into());
        }
        let hash = match self.store.console_password_hash() {
            Ok(Some(hash)) => hash,
            Ok(None) => {
                return self.page(503, None, "Set an administrator password", pages::setup());
            }
            Err(e) => {
                warn!("console: {e}");
                return self.problem(500, &format!("The store cannot be read: {e}"), None);
            }
        };
        if method == "POST" && !Self::same_origin(request) {
            return self.problem(
                403,
                "This form came from another site; it was refused.",
                None,
            );
        }
        // Decoded once: the CSRF check and the handler read the same fields.
        let form = request.form();
        match (method, request.path.as_str()) {
            ("GET", "/login") => return self.login_form(None, 200),
            ("POST", "/login") => return self.login(request, &form, peer, &hash),
            _ => {}
        }
        let idle = Duration::from_secs(self.config.console.session_idle_secs);
        let session = request
            .cookie(SESSION_COOKIE)
            .and_then(|token| self.sessions.resume(token, &hash, idle));
        let Some(session) = session else {
            return Response::redirect("/login");
        };
        if method == "POST" && !session.csrf_matches(form.get("csrf")) {
            warn!(
                "console {peer}: {} without a valid CSRF token refused",
                request.path
            );
            return self.problem(
                403,
                "The form was stale or not sent by this console; nothing was changed. Reload the page and try again.",
                Some(&session.csrf),
            );
        }
        self.route(request, &form, &session, peer)
    }

    fn route(
        &self,
        request: &Request,
        form: &Form,
        session: &Active,
        peer: SocketAddr,
    ) -> Response {
        let csrf = session.csrf.as_str();
        let parts: Vec<&str> = request.path.trim_start_matches('/').split('/').collect();
        match (request.method.as_str(), parts.as_slice()) {
            ("GET", [""]) => self.dashboard(csrf, notice_for(request.query_param("done"))),
            ("POST", ["logout"]) => {
                if let Some(token) = request.cookie(SESSION_COOKIE) {
                    self.sessions.close(token);
                }
                Response::redirect("/login").with_header("Set-Cookie", clear_cookie(SESSION_COOKIE))
            }
            ("GET", ["mailboxes", "new"]) => self.page(
                200,
                Some(csrf),
                "New mailbox",
                pages::new_mailbox(csrf, "", "", None),
            ),
            ("POST", ["mailboxes"]) => self.create(form, session),
            ("GET", ["certificate"]) => {
                self.certificate_page(csrf, notice_for(request.query_param("done")), None, 200)
            }
            ("POST", ["certificate"]) => self.install_certificate(form, csrf),
            ("POST", ["certificate", "remove"]) => self.remove_certificate(csrf),
            ("POST", ["certificate", "renew"]) => self.renew_certificate(csrf),
            (method, ["mailboxes", id, rest @ ..]) => {
                let Ok(id) = id.parse::<MailboxId>() else {
                    return self.problem(404, "There is no such mailbox.", Some(csrf));
                };
                match (method, rest) {
                    ("GET", []) => match self.sessions.take_once(session, &id) {
                        // The page a creation or a password change
                        // redirected to: the generated password, this once.
                        Some(once) => self.shown(&id, &once, csrf),
                        None => self.mailbox_page(
                            &id,
                            csrf,
                            notice_for(request.query_param("done")),
                            None,
                            200,
                        ),
                    },
                    ("POST", [op]) => self.mailbox_op(form, &id, op, session, peer),
                    _ => self.problem(404, "There is no such page.", Some(csrf)),
                }
            }
            _ => self.problem(404, "There is no such page.", Some(csrf)),
        }
    }

    fn certificate_page(
        &self,
        csrf: &str,
        notice: Option<&str>,
        error: Option<&str>,
        status: u16,
    ) -> Response {
        let source = if self.config.tls.cert_file.is_some() {
            pages::CertSource::Configured
        } else if cert::is_installed(&self.config) {
            pages::CertSource::Installed
        } else if self.config.acme.is_some() && crate::acme::served(&self.config).is_some() {
            pages::CertSource::Acme
        } else {
            pages::CertSource::Generated
        };
        let acme = self.config.acme.as_ref().map(|_| pages::AcmeView {
            state: crate::acme::state(&self.config),
            names: crate::acme::names(&self.config),
            renewal: crate::acme::served(&self.config)
                .map(|(from, until, _, _)| crate::acme::renewal_time(from, until)),
        });
        let summary = cert::summary(&cert::in_use(&self.config)).map_err(|e| e.to_string());
        let warning = summary.as_ref().ok().and_then(|s| {
            (!s.names.iter().any(|n| n.eq_ignore_ascii_case(&self.config.hostname))).then(|| {
                format!(
                    "This certificate does not name {}, the hostname clients are told to connect to: they will refuse it unless they connect by a name it carries ({}).",
                    self.config.hostname,
                    s.names.join(", ")
                )
            })
        });
        let content = pages::certificate(
            summary.as_ref().map_err(String::as_str),
            source,
            acme.as_ref(),
            csrf,
            pages::Messages {
                notice,
                warning: warning.as_deref(),
                error,
            },
        );
        self.page(status, Some(csrf), "Certificate", content)
    }

    /// Installs a pasted certificate and serves it on every listener at once.
    fn install_certificate(&self, form: &Form, csrf: &str) -> Response {
        match cert::install(&self.config, form.get("certificate"), form.get("key")) {
            Ok(installed) => {
                self.env.tls.replace(installed.server);
                info!(
                    "console: certificate installed: {} (SHA-256 {})",
                    installed.summary.subject, installed.summary.sha256
                );
                // Post/Redirect/Get: a refresh does not post it again. The
                // page warns when the certificate does not name hostname.
                Response::redirect("/certificate?done=installed")
            }
            Err(e) => {
                let error = format!("{e}; nothing was changed.");
                self.certificate_page(csrf, None, Some(&error), 400)
            }
        }
    }

    /// Removes an installed certificate; the generated one is served again.
    fn remove_certificate(&self, csrf: &str) -> Response {
        let served = cert::uninstall(&self.config).and_then(|_| {
            let (cert_file, key_file) = cert::files(&self.config)?;
            TlsServer::load(&cert_file, &key_file)
        });
        match served {
            Ok(server) => {
                self.env.tls.replace_with(&server);
                info!("console: installed certificate removed");
                Response::redirect(if self.config.acme.is_some() {
                    "/certificate?done=removed-acme"
                } else {
                    "/certificate?done=removed"
                })
            }
            Err(e) => {
                warn!("console: {e}");
                self.certificate_page(csrf, None, Some(&e.to_string()), 500)
            }
        }
    }

    /// "Renew now": asks every node's renewer for an order at its next look,
    /// as `sealpost cert renew` does.
    fn renew_certificate(&self, csrf: &str) -> Response {
        if self.config.acme.is_none() {
            return self.problem(404, "ACME is not configured.", Some(csrf));
        }
        match crate::acme::request_renewal(&self.config, false) {
            Ok(()) => {
                info!("console: ACME renewal asked for");
                Response::redirect("/certificate?done=renew")
            }
            Err(e) => {
                warn!("console: {e}");
                self.certificate_page(csrf, None, Some(&e), 500)
            }
        }
    }

    fn login_form(&self, error: Option<&str>, status: u16) -> Response {
        let token = Sessions::login_token();
        self.page(status, None, "Log in", pages::login(&token, error))
            .with_header("Set-Cookie", cookie(LOGIN_COOKIE, &token, None))
    }

    fn login(&self, request: &Request, form: &Form, peer: SocketAddr, hash: &str) -> Response {
        let expected = request.cookie(LOGIN_COOKIE).unwrap_or("");
        if expected.is_empty()
            || !crypto::constant_time_eq(expected.as_bytes(), form.get("csrf").as_bytes())
        {
            return self.login_form(Some("The login form had expired. Please try again."), 403);
        }
        let attempt = match self.throttle.begin(peer.ip(), None) {
            Ok(attempt) => attempt,
            Err(_) => {
                warn!("console {peer}: login refused: too many failed logins from this address");
                let minutes = self.throttle.settings().lockout.as_secs().div_ceil(60);
                return self.login_form(
                    Some(&format!(
                        "Too many failed logins from your address. Try again in {minutes} minute(s), or end the lockout on the gateway with: sealpost lockouts clear {}",
                        peer.ip()
                    )),
                    429,
                );
            }
        };
        let password = Password::new(form.get("password").to_owned());
        let right = self
            .kdf_slots
            .run(|| crypto::verify_password_hash(hash, &password));
        if right {
            attempt.succeeded();
            let token = self.sessions.open(hash);
            info!("console {peer}: administrator logged in");
            Response::redirect("/")
                .with_header("Set-Cookie", cookie(SESSION_COOKIE, &token, None))
                .with_header("Set-Cookie", clear_cookie(LOGIN_COOKIE))
        } else {
            let delay = attempt.failed();
            warn!("console {peer}: wrong administrator password");
            Surroundings::hold_back(&self.env, delay);
            self.login_form(Some("Wrong password."), 401)
        }
    }

    fn dashboard(&self, csrf: &str, notice: Option<&str>) -> Response {
        let bound = self.bound.get();
        let report = status::gather(
            &self.config,
            &self.store,
            status::DEFAULT_MAX_PENDING_AGE,
            Probe::Serving(&bound),
        );
        self.page(
            200,
            Some(csrf),
            "Dashboard",
            pages::dashboard(&report, notice),
        )
    }

    /// Where the archiver connects: the hostname and each bound POP3 port,
    /// implicit TLS first (an IPv4 and an IPv6 wildcard share a line).
    fn pop3_endpoints(&self) -> Vec<String> {
        let bound = self.bound.get();
        let mut endpoints = Vec::new();
        for (prefix, kind) in [("pop3.listen_tls[", "TLS"), ("pop3.listen[", "STLS")] {
            for (_, addr) in bound.iter().filter(|(key, _)| key.starts_with(prefix)) {
                let line = format!("{} port {} ({kind})", self.config.hostname, addr.port());
                if !endpoints.contains(&line) {
                    endpoints.push(line);
                }
            }
        }
        endpoints
    }

    fn address(&self, id: &MailboxId) -> String {
        format!("{id}@{}", self.config.mailbox_domain)
    }
}
