//! The console's pages, rendered by maud, which escapes every value it is
//! given: a mailbox called `<script>` shows as text. They work without
//! JavaScript; one short script adds the "Copy" buttons. Styles and the
//! script are inline and allowed by their hashes in the
//! Content-Security-Policy, so no other script or style can run.

use std::sync::OnceLock;

use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::cert::Summary;
use crate::crypto;
use crate::status::{MailboxStatus, Report};

const STYLE: &str = "\
body{font-family:system-ui,sans-serif;margin:0;color:#1d2430;background:#f5f6f8}\
header{background:#1d2430;color:#fff;padding:.6em 1.2em;display:flex;gap:1.2em;align-items:center}\
header a{color:#fff}header form{margin-left:auto}\
main{padding:1em 1.2em;max-width:70em}\
table{border-collapse:collapse;background:#fff;width:100%}\
th,td{text-align:left;padding:.35em .6em;border-bottom:1px solid #dde}\
.attention{background:#fff1d6}.error{color:#a40000;font-weight:bold}\
.notice{color:#14612d;font-weight:bold}\
.secret{font-family:monospace;font-size:1.2em;background:#fff;border:1px solid #889;padding:.3em .5em}\
.warning{background:#fff1d6;border-left:4px solid #d08000;padding:.5em}\
section{background:#fff;padding:.2em 1em 1em;margin:1em 0;border:1px solid #dde}\
label{display:block;margin:.4em 0}input[type=text],input[type=password]{width:24em}";

const SCRIPT: &str = "\
document.querySelectorAll('button[data-copy]').forEach(function(b){\
b.hidden=false;b.addEventListener('click',function(){\
var t=document.getElementById(b.getAttribute('data-copy')).textContent;\
navigator.clipboard.writeText(t).then(function(){b.textContent='Copied';});});});";

fn csp_hash(text: &str) -> String {
    format!(
        "'sha256-{}'",
        crypto::base64_encode(&crypto::sha256(text.as_bytes()))
    )
}

/// The Content-Security-Policy of every answer: nothing but our own inline
/// style and script, forms only to ourselves, no framing.
pub fn content_security_policy() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        format!(
            "default-src 'none'; style-src {}; script-src {}; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
            csp_hash(STYLE),
            csp_hash(SCRIPT)
        )
    })
}

/// What the header of a logged-in page needs.
pub struct Chrome<'a> {
    /// The gateway's hostname.
    pub hostname: &'a str,
    /// The session's CSRF token (for the logout form); `None` when logged out.
    pub csrf: Option<&'a str>,
}

fn csrf_field(csrf: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(csrf); }
}

/// A whole page.
pub fn page(chrome: &Chrome<'_>, title: &str, content: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="same-origin";
                title { (title) " — Sealpost " (chrome.hostname) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    strong { "Sealpost " (chrome.hostname) }
                    @if let Some(csrf) = chrome.csrf {
                        a href="/" { "Dashboard" }
                        a href="/mailboxes/new" { "New mailbox" }
                        a href="/certificate" { "Certificate" }
                        form method="post" action="/logout" {
                            (csrf_field(csrf))
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (content)
                }
                script { (PreEscaped(SCRIPT)) }
            }
        }
    }
    .into_string()
}

/// Before any administrator password exists.
pub fn setup() -> Markup {
    html! {
        p { "The console has no administrator password yet, and there is no default one." }
        p { "Set one on the gateway's machine, then reload this page:" }
        pre { "sudo sealpost console passwd" }
        p { "(With a configuration file elsewhere: " code { "sealpost -c FILE console passwd" } ".)" }
    }
}

/// The login form; `csrf` is the double-submitted login token.
pub fn login(csrf: &str, error: Option<&str>) -> Markup {
    html! {
        @if let Some(error) = error { p.error { (error) } }
        form method="post" action="/login" {
            (csrf_field(csrf))
            label { "Administrator password " input type="password" name="password" autocomplete="current-password" required autofocus; }
            button type="submit" { "Log in" }
        }
    }
}

/// A short notice or error above a page's content.
pub fn messages(notice: Option<&str>, error: Option<&str>) -> Markup {
    Messages {
        notice,
        warning: None,
        error,
    }
    .render()
}

/// What a page says above its content: done, worth a look, or refused.
#[derive(Debug, Default, Clone, Copy)]
pub struct Messages<'a> {
    /// Something was done.
    pub notice: Option<&'a str>,
    /// Done or shown, but something is not as it should be.
    pub warning: Option<&'a str>,
    /// Refused.
    pub error: Option<&'a str>,
}

impl Messages<'_> {
    fn render(&self) -> Markup {
        html! {
            @if let Some(notice) = self.notice { p.notice role="status" { (notice) } }
            @if let Some(warning) = self.warning { p.warning role="status" { (warning) } }
            @if let Some(error) = self.error { p.error role="alert" { (error) } }
        }
    }
}

/// Seconds as a person reads them.
fn ago(secs: u64) -> String {
    match secs {
        0..120 => format!("{secs} s"),
        120..7200 => format!("{} min", secs / 60),
        7200..172_800 => format!("{} h", secs / 3600),
        _ => format!("{} days", secs / 86_400),
    }
}

fn bytes(n: u64) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

/// Whether a mailbox's line in the report needs attention.
fn needs_attention(report: &Report, mailbox: &MailboxStatus) -> bool {
    mailbox
        .oldest_age_secs
        .is_some_and(|a| a > report.max_pending_age_secs)
}

fn mailbox_rows(report: &Report) -> Markup {
    html! {
        table {
            thead { tr { th { "Name" } th { "Id" } th { "Status" } th { "Pending" } th { "Size" } th { "Oldest waiting" } th { "Last retrieval" } } }
            tbody {
                @for m in &report.mailboxes {
                    tr.attention[needs_attention(report, m)] {
                        td { a href={ "/mailboxes/" (m.id) } { (m.name) } }
                        td { code { (m.id) } }
                        td { (m.status) }
                        td.pending { (m.pending_messages) }
                        td { (bytes(m.pending_bytes)) }
                        td { @if let Some(a) = m.oldest_age_secs { (ago(a)) } @else { "—" } }
                        td { @if let Some(a) = m.last_retrieved_age_secs { (ago(a)) " ago" } @else { "never" } }
                    }
                }
            }
        }
        @if report.mailboxes.is_empty() {
            p { "No mailbox yet. " a href="/mailboxes/new" { "Create one" } "." }
        }
    }
}

/// The dashboard: what needs attention, mailboxes, listeners, certificate.
pub fn dashboard(report: &Report, notice: Option<&str>) -> Markup {
    html! {
        (messages(notice, None))
        @if report.attention.is_empty() {
            p.notice { "Nothing needs attention." }
        } @else {
            section.attention {
                h2 { "Needs attention" }
                ul { @for line in &report.attention { li { (line) } } }
            }
        }
        h2 { "Mailboxes" }
        (mailbox_rows(report))
        h2 { "Listeners" }
        table {
            thead { tr { th { "Key" } th { "Address" } th { "State" } } }
            tbody {
                @for l in &report.listeners {
                    tr.attention[l.answers == Some(false)] {
                        td { (l.key) } td { (l.address) }
                        td { @match l.answers { Some(true) => "serving", Some(false) => "not answering", None => "—" } }
                    }
                }
            }
        }
        h2 { "Certificate" }
        @match &report.certificate {
            Some(c) => p { (c.subject) ", valid until " (c.not_after) " (" (c.days_left) " days left). " a href="/certificate" { "Details" } }
            None => p.error { (report.certificate_error.as_deref().unwrap_or("no certificate")) }
        }
        @if let Some(alerts) = &report.alerts {
            h2 { "Alerts" }
            @if let Some(u) = &alerts.undeliverable {
                p.error role="alert" { "Alerts undeliverable: the relay failed " (u.failures) " time(s) in a row: " (u.error) }
            }
            @if alerts.active.is_empty() {
                p { "No condition is being reported." }
            } @else {
                ul { @for (_, a) in &alerts.active { li { (a.title) " (since " (when(Some(a.since))) ")" } } }
            }
            p { "Last mail sent: " @match &alerts.last_sent {
                Some((at, subject)) => { (subject) " at " (when(Some(*at))) }
                None => "none yet",
            } }
        }
        @if let Some(d) = &report.disk {
            h2 { "Disk" }
            p.error[d.below_reserve] {
                (crate::store::reserve::human(d.free_bytes)) " free of " (crate::store::reserve::human(d.total_bytes))
                "; new mail is refused below " (crate::store::reserve::human(d.reserve_bytes)) "."
            }
        }
        @if let Some(c) = &report.custody {
            h2 { "Chain of custody" }
            p.error[c.tsa_error.is_some()] {
                (c.head) " entries; "
                @match (c.anchored, &c.anchored_at) {
                    (Some(seq), Some(at)) => { "last anchor at entry " (seq) " (" (at) ")" }
                    (Some(seq), None) => { "last anchor at entry " (seq) }
                    _ => "no anchor yet",
                }
                "; " (c.unanchored) " entries since."
                @if let Some(e) = &c.tsa_error { " The time-stamping authority fails: " (e) }
            }
        }
        p { small { "Checked " (report.checked_at) ". Mail waiting longer than " (report.max_pending_age_secs / 3600) " h needs attention." } }
    }
}

/// The new-mailbox form, refilled after an error.
pub fn new_mailbox(csrf: &str, name: &str, description: &str, error: Option<&str>) -> Markup {
    html! {
        (messages(None, error))
        form method="post" action="/mailboxes" {
            (csrf_field(csrf))
            label { "Name " input type="text" name="name" value=(name) required maxlength="200"; }
            label { "Description " input type="text" name="description" value=(description) maxlength="2000"; }
            p { "A strong password is generated and shown once." }
            button type="submit" { "Create mailbox" }
        }
    }
}

/// How an archiver reaches a mailbox.
pub struct Access<'a> {
    /// Mailbox id, the POP3 user name.
    pub id: &'a str,
    /// `<id>@<mailbox_domain>`.
    pub address: &'a str,
    /// `host:port` of each POP3 listener with its kind.
    pub pop3: &'a [String],
}

fn access(access: &Access<'_>) -> Markup {
    html! {
        table {
            tr { th { "Journal address" } td { code #address { (access.address) } " " button type="button" data-copy="address" hidden { "Copy" } } }
            tr { th { "POP3 user name" } td { code { (access.id) } } }
            tr { th { "POP3 server" } td { @for p in access.pop3 { (p) br; } } }
        }
    }
}

/// A password shown once: after creating a mailbox or setting a new password.
pub fn password_once(heading: &str, password: &str, access_to: &Access<'_>) -> Markup {
    html! {
        p.notice role="status" { (heading) }
        p.warning {
            strong { "Copy this password now. " }
            "It is shown only this once and cannot be shown again: Sealpost keeps no copy, only the key it unlocks. "
            "Without it the stored mail cannot be read."
        }
        p { "Password: " span.secret #password { (password) } " " button type="button" data-copy="password" hidden { "Copy" } }
        (access(access_to))
        p { a href={ "/mailboxes/" (access_to.id) } { "Go to the mailbox" } }
    }
}

/// One mailbox, with every operation.
pub struct MailboxView<'a> {
    /// Its state, as the dashboard shows it.
    pub status: &'a MailboxStatus,
    /// Its description.
    pub description: &'a str,
    /// How the archiver reaches it.
    pub access: Access<'a>,
    /// Whether it is a standby's public-only copy.
    pub public_only: bool,
}

/// The mailbox page.
pub fn mailbox(
    view: &MailboxView<'_>,
    csrf: &str,
    notice: Option<&str>,
    error: Option<&str>,
) -> Markup {
    let m = view.status;
    let action = |what: &str| format!("/mailboxes/{}/{what}", m.id);
    let suspended = m.status == "suspended";
    html! {
        (messages(notice, error))
        table {
            tr { th { "Name" } td { (m.name) } }
            tr { th { "Description" } td { (view.description) } }
            tr { th { "Status" } td { (m.status) @if view.public_only { " (standby copy: public key only)" } } }
            tr { th { "Pending" } td.pending { (m.pending_messages) " message(s), " (bytes(m.pending_bytes)) } }
            tr { th { "Oldest waiting" } td { @if let Some(a) = m.oldest_age_secs { (ago(a)) } @else { "—" } } }
            tr { th { "Last retrieval" } td { @if let Some(t) = &m.last_retrieved { (t) } @else { "never" } } }
            @if m.retired_messages > 0 {
                tr { th { "Sealed to a retired key" } td.retired { (m.retired_messages) " message(s), moved aside by a password reset: "
                    code { "sealpost mailbox export " (m.id) " --retired" } " reads them with the old password; "
                    code { "sealpost mailbox purge-retired " (m.id) " --force" } " deletes them." } }
            }
        }
        (access(&view.access))
        section {
            h2 { "Name and description" }
            form method="post" action=(action("edit")) {
                (csrf_field(csrf))
                label { "Name " input type="text" name="name" value=(m.name) required maxlength="200"; }
                label { "Description " input type="text" name="description" value=(view.description) maxlength="2000"; }
                button type="submit" { "Save" }
            }
        }
        section {
            h2 { @if suspended { "Resume" } @else { "Suspend" } }
            p { @if suspended { "New mail is refused (senders retry later). Resume to accept it again." }
                @else { "Suspending refuses new mail with a temporary error, so senders retry; the archiver can still collect." } }
            form method="post" action=(action("status")) {
                (csrf_field(csrf))
                input type="hidden" name="status" value=(if suspended { "active" } else { "suspended" });
                button type="submit" { @if suspended { "Resume" } @else { "Suspend" } }
            }
        }
        section {
            h2 { "Change password" }
            p { "Needs the current password. The stored mail stays readable." }
            form method="post" action=(action("password")) {
                (csrf_field(csrf))
                label { "Current password " input type="password" name="old" autocomplete="off" required; }
                label { "New password (leave empty to have a strong one generated) " input type="password" name="new" autocomplete="new-password"; }
                button type="submit" { "Change password" }
            }
        }
        section {
            h2 { "Reset password" }
            p.warning { "For a lost password: makes new keys. The " (m.pending_messages) " message(s) stored so far "
                "were sealed to the old key: they are moved aside (the archiver no longer sees them) and can be read only with the old password." }
            form method="post" action=(action("reset")) {
                (csrf_field(csrf))
                label { input type="checkbox" name="confirm" value="yes" required; " I understand that the mail stored so far becomes unreadable" }
                label { "New password (leave empty to have a strong one generated) " input type="password" name="new" autocomplete="new-password"; }
                button type="submit" { "Reset password" }
            }
        }
        section {
            h2 { "Delete" }
            @if suspended {
                form method="post" action=(action("delete")) {
                    (csrf_field(csrf))
                    p { "A journal rule that still points at a deleted mailbox gets a permanent error, and its sender disables the rule." }
                    @if m.pending_messages > 0 {
                        p.warning { (m.pending_messages) " message(s) have not been retrieved yet." }
                        label { input type="checkbox" name="confirm" value="yes"; " Delete them too" }
                    }
                    label { "Type the mailbox's name, " strong { (m.name) } ", to confirm " input type="text" name="confirm_name" autocomplete="off" required; }
                    button type="submit" { "Delete mailbox" }
                }
            } @else {
                p { "Only a suspended mailbox can be deleted. Suspend it first: senders whose journal rule still points at it then get a temporary error while the rule is changed." }
            }
        }
    }
}

/// Where the served certificate comes from, for the certificate page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertSource {
    /// `tls.cert_file` in gateway.json: changed there, not here.
    Configured,
    /// Installed from this console.
    Installed,
    /// Generated self-signed.
    Generated,
    /// Ordered from the ACME certificate authority by the gateway.
    Acme,
}

/// The ACME renewer, for the certificate page.
pub struct AcmeView {
    /// What the renewer did last.
    pub state: crate::acme::State,
    /// The names it orders.
    pub names: Vec<String>,
    /// Unix time the served ACME certificate falls due, if there is one.
    pub renewal: Option<i64>,
}

/// A Unix time as people read it, in UTC.
fn when(unix: Option<i64>) -> String {
    unix.and_then(|t| jiff::Timestamp::from_second(t).ok())
        .map_or_else(
            || "never".to_string(),
            |t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
        )
}

/// The ACME section: what is ordered, how it went, and "Renew now".
fn acme_section(acme: &AcmeView, source: CertSource, csrf: &str) -> Markup {
    let state = &acme.state;
    html! {
        section {
            h2 { "ACME" }
            @if source == CertSource::Installed {
                p.warning role="status" { "ACME is off while the certificate installed here is served. Remove it below to go back to the certificate the gateway orders itself." }
            }
            table {
                tr { th { "Names" } td { (acme.names.join(", ")) } }
                tr { th { "Last attempt" } td { (when(state.last_attempt)) } }
                tr { th { "Last certificate issued" } td { (when(state.last_success)) } }
                tr { th { "Next renewal" } td {
                    @if let Some(next) = state.next_attempt.filter(|_| state.last_error.is_some()) {
                        "retry after " (when(Some(next)))
                    } @else if acme.renewal.is_some() {
                        (when(acme.renewal))
                    } @else {
                        "as soon as the renewer looks (there is no ACME certificate yet)"
                    }
                } }
                tr { th { "Orders in the last day" } td { (state.orders.len()) " of " (crate::acme::MAX_ORDERS_PER_DAY) } }
            }
            @if let Some(error) = &state.last_error {
                p.error role="alert" { "The last renewal failed (" (state.failures) " time(s) in a row); the current certificate is still served: " (error) }
            }
            @if source != CertSource::Installed {
                form method="post" action="/certificate/renew" {
                    (csrf_field(csrf))
                    button type="submit" { "Renew now" }
                }
            }
        }
    }
}

/// The certificate page, with the upload form unless the configuration
/// names the files.
pub fn certificate(
    summary: Result<&Summary, &str>,
    source: CertSource,
    acme: Option<&AcmeView>,
    csrf: &str,
    said: Messages<'_>,
) -> Markup {
    html! {
        (said.render())
        @match summary {
            Ok(c) => table {
                tr { th { "File" } td { code { (c.file.display()) } } }
                tr { th { "Subject" } td { (c.subject) } }
                tr { th { "Names" } td { (c.names.join(", ")) } }
                tr { th { "Valid from" } td { (c.not_before) } }
                tr { th { "Valid until" } td { (c.not_after) " (" (c.days_left) " days left)" } }
                tr { th { "SHA-256" } td { code { (c.sha256) } } }
            },
            Err(e) => p.error { (e) },
        }
        p { "Clients compare the SHA-256 above with what they are shown on first connect." }
        @if let Some(acme) = acme {
            (acme_section(acme, source, csrf))
        }
        @if source == CertSource::Configured {
            p { "This certificate comes from " code { "tls.cert_file" } " and " code { "tls.key_file" }
                " in gateway.json: replace those files and reload the gateway (" code { "systemctl reload sealpost" } ")." }
        } @else {
            section {
                h2 { "Install a certificate" }
                p { "Paste the certificate chain (the server's certificate first) and its private key, both in PEM. "
                    "They are checked to go together and to be valid now before anything changes; every listener uses them from the next connection." }
                form method="post" action="/certificate" {
                    (csrf_field(csrf))
                    label { "Certificate chain (PEM)" br; textarea name="certificate" rows="8" cols="70" required {} }
                    label { "Private key (PEM)" br; textarea name="key" rows="6" cols="70" autocomplete="off" required {} }
                    button type="submit" { "Install certificate" }
                }
            }
            @if source == CertSource::Installed {
                section {
                    h2 { @if acme.is_some() { "Go back to the ACME certificate" } @else { "Go back to the self-signed certificate" } }
                    form method="post" action="/certificate/remove" {
                        (csrf_field(csrf))
                        button type="submit" { "Remove the installed certificate" }
                    }
                }
            }
        }
    }
}

/// A page that only says what went wrong.
pub fn problem(message: &str) -> Markup {
    html! {
        p.error { (message) }
        p { a href="/" { "Back to the dashboard" } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_and_the_policy_allows_only_our_inline_code() {
        let hostile = "<script>alert(1)</script>";
        let html = page(
            &Chrome {
                hostname: hostile,
                csrf: Some("\"><x>"),
            },
            hostile,
            problem(hostile),
        );
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!html.contains("\"><x>"));
        let csp = content_security_policy();
        assert!(csp.contains(&csp_hash(SCRIPT)) && csp.contains(&csp_hash(STYLE)));
        assert!(!csp.contains("unsafe-inline"));
    }

    #[test]
    fn the_certificate_page_says_acme_is_off_while_a_pasted_certificate_is_served() {
        let acme = AcmeView {
            state: crate::acme::State {
                last_error: Some("acme.directory: <refused>".into()),
                failures: 2,
                next_attempt: Some(1_800_000_000),
                ..Default::default()
            },
            names: vec!["mail.example.org".into()],
            renewal: None,
        };
        let said = Messages {
            notice: None,
            warning: None,
            error: None,
        };
        let render =
            |source| certificate(Err("none"), source, Some(&acme), "t", said).into_string();
        let installed = render(CertSource::Installed);
        assert!(installed.contains("ACME is off while the certificate installed here is served"));
        assert!(!installed.contains("Renew now"), "no order while it is off");
        assert!(installed.contains("Go back to the ACME certificate"));
        let generated = render(CertSource::Generated);
        assert!(!generated.contains("ACME is off"));
        assert!(generated.contains("Renew now") && generated.contains("/certificate/renew"));
        assert!(generated.contains("2 time(s) in a row"));
        assert!(
            generated.contains("&lt;refused&gt;"),
            "the error is escaped"
        );
        assert!(
            generated.contains("retry after 2027-01-15 08:00:00 UTC"),
            "{generated}"
        );
    }

    #[test]
    fn ages_and_sizes_read_as_people_write_them() {
        assert_eq!(ago(59), "59 s");
        assert_eq!(ago(3600), "60 min");
        assert_eq!(ago(3 * 86_400), "3 days");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(10 * 1024), "10.0 KiB");
    }
}
