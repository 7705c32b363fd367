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
    let Some(m) = parse_options("dns", SUMMARY, &mut opts, &args)? else {
        return Ok(());
    };
    if !m.free.is_empty() {
        return Err(CliError::usage(
            "dns takes no arguments (see sealpost dns --help)",
        ));
    }
    let config = context_with(context, &m).config()?;
    for line in records(&config)? {
        outln!("{line}");
    }
    Ok(())
}

/// SHA-256 of a DER SubjectPublicKeyInfo, as TLSA `3 1 1` writes it (RFC
/// 6698 §2.1: selector 1 = the SPKI, matching type 1 = SHA-256).
pub fn tlsa_digest(spki: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, spki)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

/// The records, with their reasons as comment lines.
pub fn records(config: &Config) -> Result<Vec<String>, CliError> {
    let domain = &config.mailbox_domain;
    let mut out = vec![format!("; DNS records for {domain} (sealpost dns)")];
    out.push(
        "; MX: where senders deliver the journal mail; every MX of the policy, lowest first".into(),
    );
    for (i, mx) in mta_sts::mx_names(config).iter().enumerate() {
        out.push(format!(
            "{} {TTL} IN MX {} {}",
            fqdn(domain),
            10 * (i + 1),
            fqdn(mx)
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
    out.push(format!(
        "; A/AAAA: {} must resolve to this gateway",
        config.hostname
    ));
    if addrs.is_empty() {
        out.push(format!(
            "; (every listener is on a wildcard or loopback address: publish the public address, e.g. {} {TTL} IN A 203.0.113.25)",
            fqdn(&config.hostname)
        ));
    }
    for ip in &addrs {
        let kind = if ip.is_ipv4() { "A" } else { "AAAA" };
        out.push(format!("{} {TTL} IN {kind} {ip}", fqdn(&config.hostname)));
    }
    if let Some(policy) = mta_sts::policy(config) {
        out.push("; MTA-STS: the policy host, this gateway (mta_sts.listen, port 443)".into());
        out.push(format!(
            "{} {TTL} IN CNAME {}",
            fqdn(&format!("mta-sts.{domain}")),
            fqdn(&config.hostname)
        ));
        out.push("; MTA-STS: the policy id; it changes whenever the policy does".into());
        out.push(format!(
            "{} {TTL} IN TXT \"v=STSv1; id={}\"",
            fqdn(&format!("_mta-sts.{domain}")),
            mta_sts::policy_id(&policy)
        ));
    }
    if let Some(rua) = &config.mta_sts.tls_rpt {
        out.push("; TLS-RPT (RFC 8460): where senders report TLS failures".into());
        out.push(format!(
            "{} {TTL} IN TXT \"v=TLSRPTv1; rua={rua}\"",
            fqdn(&format!("_smtp._tls.{domain}"))
        ));
    }
    tlsa(config, &mut out)?;
    Ok(out)
}

/// TLSA `3 1 1` for port 25 of the hostname: the served key, and the next.
fn tlsa(config: &Config, out: &mut Vec<String>) -> Result<(), CliError> {
    let owner = fqdn(&format!("_25._tcp.{}", config.hostname));
    let file = crate::cert::in_use(config);
    match crate::net::tls::load_certs(&file) {
        Ok(chain) => {
            let (_, cert) = x509_parser::parse_x509_certificate(chain[0].as_ref())
                .map_err(|e| CliError::failed(format!("{}: {e}", file.display())))?;
            out.push("; TLSA (DANE): the key served now".into());
            out.push(format!(
                "{owner} {TTL} IN TLSA 3 1 1 {}",
                tlsa_digest(cert.public_key().raw)
            ));
        }
        Err(_) => out.push(format!(
            "; TLSA: no certificate yet ({}); run sealpost serve once",
            file.display()
        )),
    }
    let next = acme::key_paths(config).1;
    if let Ok(pem) = std::fs::read_to_string(&next) {
        let key = rcgen::KeyPair::from_pem(&pem)
            .map_err(|e| CliError::failed(format!("{}: {e}", next.display())))?;
        out.push(
            "; TLSA: the next key (rollover): publish, wait at least the TTL, then sealpost cert renew --rotate-key".into(),
        );
        out.push(format!(
            "{owner} {TTL} IN TLSA 3 1 1 {}",
            tlsa_digest(&rcgen::PublicKeyData::subject_public_key_info(&key))
        ));
    }
    Ok(())
}
