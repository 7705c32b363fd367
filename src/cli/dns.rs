//! `sealpost dns`: the DNS records an administrator must publish for the
//! configured names, in zone-file syntax, each with a one-line reason.

use std::net::IpAddr;

use getopts::Options;

use super::{CliError, Context, context_with, parse_options};
use crate::acme::{self, mta_sts};
use crate::config::Config;

const SUMMARY: &str = "\n\n\
Prints the records to publish for mailbox_domain and hostname, in zone-file\n\
syntax with a comment saying why: MX for every MX of the MTA-STS policy,\n\
A/AAAA from the specific listen addresses, the mta-sts host, the\n\
_mta-sts TXT record with the current policy id, the TLS-RPT record when\n\
mta_sts.tls_rpt is set, and TLSA 3 1 1 for the served key and, during a key\n\
rollover (sealpost cert next-key), the next one.";

/// TTL printed with every record.
const TTL: u32 = 3600;

/// Runs `sealpost dns`.
pub fn run(context: &Context, args: Vec<String>) -> Result<(), CliError> {
    let mut opts = Options::new();
    opts.optflag(
        "",
        "check",
        "look each record up through the system's resolver, say which are missing or stale, and whether MTA-STS enforce mode is safe",
    );
    let Some(m) = parse_options("dns", SUMMARY, &mut opts, &args)? else {
        return Ok(());
    };
    if !m.free.is_empty() {
        return Err(CliError::usage(
            "dns takes no arguments (see sealpost dns --help)",
        ));
    }
    let config = context_with(context, &m).config()?;
    let wanted = wanted(&config)?;
    if m.opt_present("check") {
        return super::dns_check::check(&config, &wanted);
    }
    for entry in &wanted {
        outln!("{}", entry.zone());
    }
    Ok(())
}

/// SHA-256 of a DER SubjectPublicKeyInfo, as TLSA `3 1 1` writes it (RFC
/// 6698 §2.1: selector 1 = the SPKI, matching type 1 = SHA-256).
pub fn tlsa_digest(spki: &[u8]) -> String {
    crate::crypto::hex(ring::digest::digest(&ring::digest::SHA256, spki).as_ref())
}

fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

/// One line of the output: a reason, or a record to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A comment line (without its `; `).
    Comment(String),
    /// A record: its owner (without the final dot) and what it holds.
    Record(String, Record),
}

/// What a record holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// MX preference and exchange.
    Mx(u16, String),
    /// An address of the hostname (A or AAAA).
    Address(IpAddr),
    /// The name the owner is an alias of.
    Cname(String),
    /// The `_mta-sts` TXT record with this policy id.
    StsId(String),
    /// The TLS-RPT TXT record with this `rua`.
    TlsRpt(String),
    /// TLSA `3 1 1` with this digest; `true` for the next key.
    Tlsa(String, bool),
}

impl Entry {
    /// The line in zone-file syntax.
    pub fn zone(&self) -> String {
        let Entry::Record(owner, record) = self else {
            let Entry::Comment(text) = self else {
                unreachable!()
            };
            return format!("; {text}");
        };
        let data = match record {
            Record::Mx(preference, exchange) => format!("MX {preference} {}", fqdn(exchange)),
            Record::Address(ip) if ip.is_ipv4() => format!("A {ip}"),
            Record::Address(ip) => format!("AAAA {ip}"),
            Record::Cname(target) => format!("CNAME {}", fqdn(target)),
            Record::StsId(id) => format!("TXT \"v=STSv1; id={id}\""),
            Record::TlsRpt(rua) => format!("TXT \"v=TLSRPTv1; rua={rua}\""),
            Record::Tlsa(digest, _) => format!("TLSA 3 1 1 {digest}"),
        };
        format!("{} {TTL} IN {data}", fqdn(owner))
    }
}

/// The records to publish, with their reasons as comments.
pub fn wanted(config: &Config) -> Result<Vec<Entry>, CliError> {
    let domain = config.mailbox_domain.trim_end_matches('.').to_string();
    let host = config.hostname.trim_end_matches('.').to_string();
    let note = |text: &str| Entry::Comment(text.to_string());
    let mut out = vec![note(&format!("DNS records for {domain} (sealpost dns)"))];
    out.push(note(
        "MX: where senders deliver the journal mail; every MX of the policy, lowest first",
    ));
    for (i, mx) in mta_sts::mx_names(config).iter().enumerate() {
        let preference = u16::try_from(10 * (i + 1)).unwrap_or(u16::MAX);
        out.push(Entry::Record(
            domain.clone(),
            Record::Mx(preference, mx.trim_end_matches('.').to_ascii_lowercase()),
        ));
    }
    let mut addrs: Vec<IpAddr> = config
        .all_listeners()
        .iter()
        .map(|(_, a)| a.ip())
        .filter(|ip| !ip.is_unspecified() && !ip.is_loopback())
        .collect();
    addrs.sort();
    addrs.dedup();
    out.push(note(&format!(
        "A/AAAA: {host} must resolve to this gateway"
    )));
    if addrs.is_empty() {
        out.push(note(&format!(
            "(every listener is on a wildcard or loopback address: publish the public address, e.g. {} {TTL} IN A 203.0.113.25)",
            fqdn(&host)
        )));
    }
    for ip in addrs {
        out.push(Entry::Record(host.clone(), Record::Address(ip)));
    }
    if let Some(policy) = mta_sts::policy(config) {
        out.push(note(
            "MTA-STS: the policy host, this gateway (mta_sts.listen, port 443)",
        ));
        out.push(Entry::Record(
            format!("mta-sts.{domain}"),
            Record::Cname(host.clone()),
        ));
        out.push(note(
            "MTA-STS: the policy id; it changes whenever the policy does",
        ));
        out.push(Entry::Record(
            format!("_mta-sts.{domain}"),
            Record::StsId(mta_sts::policy_id(&policy)),
        ));
    }
    if let Some(rua) = &config.mta_sts.tls_rpt {
        out.push(note(
            "TLS-RPT (RFC 8460): where senders report TLS failures",
        ));
        out.push(Entry::Record(
            format!("_smtp._tls.{domain}"),
            Record::TlsRpt(rua.clone()),
        ));
    }
    tlsa(config, &host, &mut out)?;
    Ok(out)
}

/// TLSA `3 1 1` for port 25 of the hostname: the served key, and the next.
fn tlsa(config: &Config, host: &str, out: &mut Vec<Entry>) -> Result<(), CliError> {
    let owner = format!("_25._tcp.{host}");
    let file = crate::cert::in_use(config);
    match crate::net::tls::load_certs(&file) {
        Ok(chain) => {
            let (_, cert) = x509_parser::parse_x509_certificate(chain[0].as_ref())
                .map_err(|e| CliError::failed(format!("{}: {e}", file.display())))?;
            out.push(Entry::Comment("TLSA (DANE): the key served now".into()));
            out.push(Entry::Record(
                owner.clone(),
                Record::Tlsa(tlsa_digest(cert.public_key().raw), false),
            ));
        }
        Err(_) => out.push(Entry::Comment(format!(
            "TLSA: no certificate yet ({}); run sealpost serve once",
            file.display()
        ))),
    }
    let next = acme::key_paths(config).1;
    if let Ok(pem) = std::fs::read_to_string(&next) {
        let key = rcgen::KeyPair::from_pem(&pem)
            .map_err(|e| CliError::failed(format!("{}: {e}", next.display())))?;
        out.push(Entry::Comment(
            "TLSA: the next key (rollover): publish, wait at least the TTL, then sealpost cert renew --rotate-key".into(),
        ));
        out.push(Entry::Record(
            owner,
            Record::Tlsa(
                tlsa_digest(&rcgen::PublicKeyData::subject_public_key_info(&key)),
                true,
            ),
        ));
    }
    Ok(())
}
