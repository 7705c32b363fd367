//! Sending one alert through the relay with the SMTP client machine the
//! proxy already has (`smtp::upstream`): its opening (TLS as the relay
//! needs it, AUTH only with credentials), one command at a time, and its
//! DATA transfer, performed by the blocking upstream link under the
//! gateway's shutdown flag. The relay is the administrator's own choice,
//! so it may be on a loopback or private address (the outbound policy).

use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::config::{AlertsConfig, RelayTls};
use crate::crypto::Password;
use crate::net::upstream::UpstreamLink;
use crate::proxy::login_name::Target;
use crate::proxy::target::TargetPolicy;
use crate::proxy::upstream::{Dialer, Progress, UpstreamTls};
use crate::smtp::upstream::{Link, Login, Outbound, SendOutcome, TlsPolicy};

/// The dialer for the relay: it alone is allowed, private addresses too.
fn dialer(alerts: &AlertsConfig, hostname: &str) -> Result<Dialer, String> {
    let relay = &alerts.smarthost;
    let host = match relay.host.contains(':') {
        true => format!("[{}]", relay.host),
        false => relay.host.clone(),
    };
    let pattern = format!("{host}:{}", relay.port)
        .parse()
        .map_err(|e| format!("alerts.smarthost: {e}"))?;
    let timeout = Duration::from_secs(relay.timeout_secs);
    Ok(Dialer {
        policy: TargetPolicy {
            allowed: vec![pattern],
            allow_private: true,
        },
        tls: UpstreamTls::new(relay.ca_file.as_deref())
            .map_err(|e| format!("alerts.smarthost.ca_file: {e}"))?,
        hostname: hostname.to_string(),
        connect_timeout: timeout,
        io_timeout: timeout,
        implicit_tls_ports: match relay.tls {
            RelayTls::Implicit => vec![relay.port],
            _ => Vec::new(),
        },
    })
}

/// The relay's password, from its file (first line).
fn password(alerts: &AlertsConfig) -> Result<Option<(String, Password)>, String> {
    let relay = &alerts.smarthost;
    let (Some(user), Some(file)) = (&relay.username, &relay.password_file) else {
        return Ok(None);
    };
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?,
    );
    let line = text.lines().next().unwrap_or("").to_string();
    if line.is_empty() {
        return Err(format!("{}: empty", file.display()));
    }
    Ok(Some((user.clone(), Password::new(line))))
}

/// One command on the open link; its reply, which must be `expected`.
fn command(
    link: &mut Link,
    up: &mut UpstreamLink,
    text: &str,
    expected: u16,
) -> Result<(), String> {
    let mut request = link.command(text).map_err(|e| e.0)?;
    loop {
        let response = up.perform(request);
        match link.reply(response).map_err(|e| e.0)? {
            Progress::Io(next) => request = next,
            Progress::Done(reply) if reply.code == expected => return Ok(()),
            Progress::Done(reply) => {
                let verb = text.split([' ', ':']).next().unwrap_or(text);
                return Err(format!(
                    "the relay answered {verb} with {} {}",
                    reply.code, reply.text
                ));
            }
        }
    }
}

/// Sends `message` (CRLF lines, headers included) to every `alerts.to`.
pub fn send(
    alerts: &AlertsConfig,
    hostname: &str,
    message: &[u8],
    shutdown: Arc<AtomicBool>,
) -> Result<(), String> {
    let dialer = dialer(alerts, hostname)?;
    let credentials = password(alerts)?;
    let relay = &alerts.smarthost;
    let target = Target {
        host: relay.host.to_ascii_lowercase(),
        port: Some(relay.port),
    };
    let policy = match relay.tls {
        RelayTls::None => TlsPolicy::Off,
        _ => TlsPolicy::Required,
    };
    let mut up = UpstreamLink::watching(shutdown);
    let (mut login, mut progress) = Login::open(&dialer, &target, policy);
    let creds = credentials.as_ref().map(|(u, p)| (u.as_str(), p));
    let mut link = loop {
        match progress {
            Progress::Io(request) => {
                let response = up.perform(request);
                progress = login.step_with(response, creds);
            }
            Progress::Done(Ok(link)) => break link,
            Progress::Done(Err(e)) => return Err(format!("{}:{}: {e}", relay.host, relay.port)),
        }
    };
    command(
        &mut link,
        &mut up,
        &format!("MAIL FROM:<{}>", alerts.sender(hostname)),
        250,
    )?;
    for to in &alerts.to {
        command(&mut link, &mut up, &format!("RCPT TO:<{to}>"), 250)?;
    }
    let (mut transfer, mut request) =
        Outbound::start(&link, Box::new(Cursor::new(message.to_vec())));
    let outcome = loop {
        let response = up.perform(request);
        match transfer.on(&mut link, response) {
            Progress::Io(next) => request = next,
            Progress::Done(outcome) => break outcome,
        }
    };
    let result = match outcome {
        SendOutcome::Reply(reply) if reply.code == 250 => Ok(()),
        SendOutcome::Reply(reply) => Err(format!(
            "the relay refused the message: {} {}",
            reply.code, reply.text
        )),
        SendOutcome::LostBeforeEnd(why) | SendOutcome::LostAfterEnd(why) => {
            Err(format!("the connection to the relay broke: {why}"))
        }
    };
    if result.is_ok() {
        let _ = command(&mut link, &mut up, "QUIT", 221);
    }
    result
}
