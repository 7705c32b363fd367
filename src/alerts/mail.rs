//! An alert as a mail: its kind, its Message-ID and the whole text.

use super::*;

/// What a mail says about its condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// It started.
    Started,
    /// It still holds.
    Reminder,
    /// It cleared.
    Cleared,
    /// `sealpost alerts test`.
    Test,
}

/// A random Message-ID local part.
fn message_id(hostname: &str) -> String {
    format!("<{}.alert@{hostname}>", crate::crypto::random_hex(12))
}

/// The whole mail (CRLF lines): headers and a plain-text body.
pub fn compose(
    config: &Config,
    alerts: &AlertsConfig,
    kind: Kind,
    title: &str,
    body: &str,
) -> (String, Vec<u8>) {
    let host = &config.hostname;
    let subject = match kind {
        Kind::Started => format!("[Sealpost {host}] Attention: {title}"),
        Kind::Reminder => format!("[Sealpost {host}] Still: {title}"),
        Kind::Cleared => format!("[Sealpost {host}] Resolved: {title}"),
        Kind::Test => format!("[Sealpost {host}] Test: alerts reach you"),
    };
    let lead = match kind {
        Kind::Started => "Something on this gateway needs your attention.",
        Kind::Reminder => "This still needs your attention.",
        Kind::Cleared => "This no longer needs attention; nothing more to do.",
        Kind::Test => {
            "This is a test mail (sealpost alerts test): alerts from this gateway reach you."
        }
    };
    let text = format!(
        "{lead}\n\n{body}\n\n-- \nSealpost on {host}. sealpost status shows the whole state.\n"
    );
    let mut mail = String::new();
    for (name, value) in [
        ("From", format!("Sealpost <{}>", alerts.sender(host))),
        ("To", alerts.to.join(", ")),
        ("Subject", subject.clone()),
        ("Date", timestamp::rfc5322(SystemTime::now())),
        ("Message-ID", message_id(host)),
        ("Auto-Submitted", "auto-generated".into()),
        ("MIME-Version", "1.0".into()),
        ("Content-Type", "text/plain; charset=utf-8".into()),
        ("Content-Transfer-Encoding", "8bit".into()),
    ] {
        mail.push_str(&format!("{name}: {value}\r\n"));
    }
    mail.push_str("\r\n");
    for line in text.lines() {
        mail.push_str(line);
        mail.push_str("\r\n");
    }
    (subject, mail.into_bytes())
}
