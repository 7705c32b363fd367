//! An RFC 8555 client, synchronous, on the gateway's outbound HTTP client:
//! the directory (§7.1.1), nonces (§7.2) with `badNonce` retried (§6.5),
//! the account (§7.3), an order (§7.4), its authorizations and challenges
//! (§7.5, §8), finalization with a CSR and the certificate download.
//!
//! Hand-written on ring, rcgen and the outbound client rather than taken
//! from `instant-acme`: that crate is async (its polling needs tokio's
//! timer, its transport hyper), and the gateway is a synchronous program
//! whose every outbound byte must move under its own deadlines and stop
//! flag. The protocol is a dozen JSON requests; what is subtle is cited.

use std::time::{Duration, Instant};

use log::{debug, info};
use serde_json::{Value, json};

use super::jws::{AccountKey, b64};
use crate::outbound::http::{self, Response};
use crate::outbound::{Endpoint, OutboundError, Url};

/// How a name is proven (RFC 8555 §8.3, RFC 8737).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ChallengeKind {
    /// A file at `http://<name>/.well-known/acme-challenge/<token>` (port 80).
    #[serde(rename = "http-01")]
    Http01,
    /// A certificate presented for `acme-tls/1` on port 443.
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

impl ChallengeKind {
    /// The challenge type as ACME names it.
    pub fn name(self) -> &'static str {
        match self {
            ChallengeKind::Http01 => "http-01",
            ChallengeKind::TlsAlpn01 => "tls-alpn-01",
        }
    }
}

/// Where challenge answers are put for the listeners to serve.
pub trait Publish {
    /// Makes `key_authorization` answerable for `name` by `kind`.
    fn publish(
        &self,
        kind: ChallengeKind,
        name: &str,
        token: &str,
        key_authorization: &str,
    ) -> Result<(), String>;
    /// Stops answering it.
    fn withdraw(&self, kind: ChallengeKind, name: &str, token: &str);
}

/// How long to wait for a challenge or an order to leave `pending`/`processing`.
const POLL_FOR: Duration = Duration::from_secs(120);
/// `badNonce` retries of one request (RFC 8555 §6.5 tells the client to retry).
const NONCE_RETRIES: usize = 8;

struct Directory {
    new_nonce: Url,
    new_account: Url,
    new_order: Url,
}

/// A session with an ACME server under one account key.
pub struct Client<'a> {
    endpoint: &'a Endpoint,
    key: &'a AccountKey,
    directory: Directory,
    kid: Option<String>,
    nonce: Option<String>,
}

fn fail(text: impl Into<String>) -> OutboundError {
    OutboundError(text.into())
}

fn json_of(response: &Response, what: &str) -> Result<Value, OutboundError> {
    serde_json::from_slice(&response.body).map_err(|_| {
        fail(format!(
            "the ACME server's {what} is not JSON: {:?}",
            response.body_excerpt()
        ))
    })
}

fn url_in(value: &Value, field: &str, base: &Url) -> Result<Url, OutboundError> {
    let text = value[field]
        .as_str()
        .ok_or_else(|| fail(format!("the ACME server's answer has no {field}")))?;
    base.join(text)
}

/// An RFC 7807 problem document in one line: its detail and type.
fn problem(response: &Response) -> String {
    match serde_json::from_slice::<Value>(&response.body) {
        Ok(p) if p.get("type").is_some() => format!(
            "{} ({})",
            p["detail"].as_str().unwrap_or("no detail"),
            p["type"].as_str().unwrap_or_default()
        ),
        _ => format!("HTTP {}: {:?}", response.status, response.body_excerpt()),
    }
}

impl<'a> Client<'a> {
    /// Reads the directory (§7.1.1).
    pub fn open(endpoint: &'a Endpoint, key: &'a AccountKey) -> Result<Client<'a>, OutboundError> {
        let response = http::exchange(endpoint, "GET", &endpoint.url, &[], &[])?;
        if response.status != 200 {
            return Err(fail(format!(
                "the ACME directory {} answered {}",
                endpoint.url.authority(),
                problem(&response)
            )));
        }
        let dir = json_of(&response, "directory")?;
        let base = &endpoint.url;
        Ok(Client {
            endpoint,
            key,
            directory: Directory {
                new_nonce: url_in(&dir, "newNonce", base)?,
                new_account: url_in(&dir, "newAccount", base)?,
                new_order: url_in(&dir, "newOrder", base)?,
            },
            kid: None,
            nonce: None,
        })
    }

    fn fresh_nonce(&mut self) -> Result<String, OutboundError> {
        let response = http::exchange(self.endpoint, "HEAD", &self.directory.new_nonce, &[], &[])?;
        response
            .header("replay-nonce")
            .map(str::to_string)
            .ok_or_else(|| fail("the ACME server gave no Replay-Nonce"))
    }

    /// A signed POST (§6.2); `payload` `None` is POST-as-GET. A `badNonce`
    /// refusal is retried with the nonce it carries (§6.5); any other
    /// error status is an error with the problem's words.
    fn post(&mut self, url: &Url, payload: Option<&Value>) -> Result<Response, OutboundError> {
        for _ in 0..NONCE_RETRIES {
            let nonce = match self.nonce.take() {
                Some(n) => n,
                None => self.fresh_nonce()?,
            };
            let body = self
                .key
                .sign(&url.text, &nonce, self.kid.as_deref(), payload)
                .map_err(fail)?;
            let response = http::exchange(
                self.endpoint,
                "POST",
                url,
                &[("Content-Type", "application/jose+json")],
                &body,
            )?;
            self.nonce = response.header("replay-nonce").map(str::to_string);
            if response.status == 400 && problem(&response).contains(":badNonce") {
                debug!("ACME: badNonce, retrying with a new nonce");
                continue;
            }
            if response.status >= 400 {
                return Err(fail(format!(
                    "the ACME server refused: {}",
                    problem(&response)
                )));
            }
            return Ok(response);
        }
        Err(fail(format!(
            "the ACME server refused {NONCE_RETRIES} nonces in a row"
        )))
    }

    /// Finds or creates the account (§7.3), agreeing to the terms.
    pub fn account(&mut self, contact: Option<&str>) -> Result<(), OutboundError> {
        let mut payload = json!({ "termsOfServiceAgreed": true });
        if let Some(contact) = contact {
            payload["contact"] = json!([format!("mailto:{contact}")]);
        }
        let url = self.directory.new_account.clone();
        let response = self.post(&url, Some(&payload))?;
        let kid = response
            .header("location")
            .ok_or_else(|| fail("the ACME server gave no account URL"))?;
        self.kid = Some(kid.to_string());
        Ok(())
    }

    /// Orders a certificate for `names`, proves each by `kind` through
    /// `publish`, finalizes with `csr_der` and returns the PEM chain.
    pub fn order(
        &mut self,
        names: &[String],
        kind: ChallengeKind,
        publish: &dyn Publish,
        csr_der: &[u8],
    ) -> Result<String, OutboundError> {
        let identifiers: Vec<Value> = names
            .iter()
            .map(|n| json!({ "type": "dns", "value": n }))
            .collect();
        let new_order = self.directory.new_order.clone();
        let response = self.post(&new_order, Some(&json!({ "identifiers": identifiers })))?;
        let order_url = self.endpoint.url.join(
            response
                .header("location")
                .ok_or_else(|| fail("the ACME server gave no order URL"))?,
        )?;
        let order = json_of(&response, "order")?;
        let authorizations: Vec<Url> = order["authorizations"]
            .as_array()
            .ok_or_else(|| fail("the order lists no authorizations"))?
            .iter()
            .filter_map(Value::as_str)
            .map(|a| self.endpoint.url.join(a))
            .collect::<Result<_, _>>()?;
        for authz in &authorizations {
            self.authorize(authz, kind, publish)?;
        }
        let finalize = url_in(&order, "finalize", &self.endpoint.url)?;
        self.post(&finalize, Some(&json!({ "csr": b64(csr_der) })))?;
        let order = self.poll(&order_url, "order", &["pending", "processing", "ready"])?;
        if order["status"] != "valid" {
            return Err(fail(format!(
                "the order ended {}: {}",
                order["status"],
                order["error"]["detail"].as_str().unwrap_or("no detail")
            )));
        }
        let certificate = url_in(&order, "certificate", &self.endpoint.url)?;
        let response = self.post(&certificate, None)?;
        String::from_utf8(response.body)
            .map_err(|_| fail("the certificate the ACME server sent is not PEM text"))
    }

    /// Proves one authorization (§7.5.1), unless it is valid already.
    fn authorize(
        &mut self,
        url: &Url,
        kind: ChallengeKind,
        publish: &dyn Publish,
    ) -> Result<(), OutboundError> {
        let authz = json_of(&self.post(url, None)?, "authorization")?;
        let name = authz["identifier"]["value"]
            .as_str()
            .unwrap_or("?")
            .to_string();
        if authz["status"] == "valid" {
            info!("ACME: {name} is already authorized");
            return Ok(());
        }
        let challenge = authz["challenges"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == kind.name()))
            .ok_or_else(|| {
                fail(format!(
                    "the ACME server offers no {} challenge for {name}",
                    kind.name()
                ))
            })?;
        let token = challenge["token"].as_str().unwrap_or_default().to_string();
        if token.is_empty()
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(fail(format!(
                "the {} challenge's token is unusable",
                kind.name()
            )));
        }
        let challenge_url = url_in(challenge, "url", &self.endpoint.url)?;
        let key_authorization = self.key.key_authorization(&token);
        publish
            .publish(kind, &name, &token, &key_authorization)
            .map_err(fail)?;
        info!("ACME: proving {name} by {}", kind.name());
        // §7.5.1: the client says it is ready with an empty JSON object.
        let outcome = self
            .post(&challenge_url, Some(&json!({})))
            .and_then(|_| self.poll(url, "authorization", &["pending"]));
        publish.withdraw(kind, &name, &token);
        let authz = outcome?;
        if authz["status"] == "valid" {
            info!("ACME: {name} proven by {}", kind.name());
            return Ok(());
        }
        let why = authz["challenges"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == kind.name()))
            .and_then(|c| c["error"]["detail"].as_str())
            .unwrap_or("no reason given");
        Err(fail(format!(
            "the ACME server could not verify {name} by {}: {why}",
            kind.name()
        )))
    }

    /// POST-as-GET `url` until its status leaves `waiting`, following
    /// Retry-After (§7.5.1, §7.4) within bounds, until [`POLL_FOR`] ends.
    fn poll(&mut self, url: &Url, what: &str, waiting: &[&str]) -> Result<Value, OutboundError> {
        let until = Instant::now() + POLL_FOR;
        loop {
            let response = self.post(url, None)?;
            let value = json_of(&response, what)?;
            let status = value["status"].as_str().unwrap_or_default();
            if !waiting.contains(&status) {
                return Ok(value);
            }
            if Instant::now() >= until {
                return Err(fail(format!(
                    "the {what} was still {status} after {} s",
                    POLL_FOR.as_secs()
                )));
            }
            let wait = response
                .header("retry-after")
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(1)
                .clamp(1, 10);
            self.pause(Duration::from_secs(wait))?;
        }
    }

    /// Waits `wait`, unless the gateway stops meanwhile.
    fn pause(&self, wait: Duration) -> Result<(), OutboundError> {
        let until = Instant::now() + wait;
        while Instant::now() < until {
            if self.endpoint.stopping() {
                return Err(fail("the gateway is stopping"));
            }
            std::thread::sleep(Duration::from_millis(100).min(until - Instant::now()));
        }
        Ok(())
    }
}
