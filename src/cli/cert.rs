//! `sealpost cert show`: the certificate the gateway serves, as an
//! administrator compares it with what a client shows on first connect;
//! `cert renew` and `cert next-key` for ACME.

use getopts::Options;

use super::{CliError, Context, context_with, parse_options};
use crate::cert;

const SUMMARY: &str = "show [--json | --pem] | renew [--rotate-key] | next-key\n\n\
show: prints the subject, names (SANs), validity and SHA-256 fingerprint of\n\
the certificate the gateway serves: tls.cert_file, one installed from the\n\
console, the ACME one, or the generated one under data_dir/tls/. --pem\n\
prints the certificate itself, for clients to trust (sealpost cert show\n\
--pem > sealpost.pem). Exits 1 when there is none (yet) or it cannot be read.\n\n\
renew: asks the running gateway for a new ACME order at once (within a\n\
minute), past its back-off; --rotate-key orders it for the next key made by\n\
next-key. next-key: makes the next certificate key of a key rollover;\n\
sealpost dns then prints its TLSA record, to publish before renew --rotate-key.";

/// Runs `sealpost cert …`.
pub fn run(context: &Context, args: Vec<String>) -> Result<(), CliError> {
    let mut opts = Options::new();
    opts.optflag("", "json", "print as JSON");
    opts.optflag(
        "",
        "pem",
        "print the certificate chain in PEM, for clients to trust",
    );
    opts.optflag("", "rotate-key", "renew: with the next key (see next-key)");
    let Some(m) = parse_options("cert", SUMMARY, &mut opts, &args)? else {
        return Ok(());
    };
    let words: Vec<&str> = m.free.iter().map(String::as_str).collect();
    let context = context_with(context, &m);
    match words.as_slice() {
        ["show"] => {}
        ["renew"] | ["next-key"] => return acme_command(&context, words[0], &m),
        _ => {
            return Err(CliError::usage(
                "cert: the commands are `cert show`, `cert renew` and `cert next-key` (see sealpost cert --help)",
            ));
        }
    }
    let config = context.config()?;
    let file = cert::in_use(&config);
    if !file.exists() && config.tls.cert_file.is_none() {
        return Err(CliError::failed(format!(
            "{}: no certificate yet; `sealpost serve` generates it at first start",
            file.display()
        )));
    }
    let s = cert::summary(&file).map_err(|e| CliError::failed(e.to_string()))?;
    if m.opt_present("pem") {
        // The certificates only, re-encoded: never a key that shares the file.
        let certs =
            crate::net::tls::load_certs(&file).map_err(|e| CliError::failed(e.to_string()))?;
        for der in certs {
            outln!("-----BEGIN CERTIFICATE-----");
            let b64 = crate::crypto::base64_encode(&der);
            for line in b64.as_bytes().chunks(64) {
                outln!("{}", String::from_utf8_lossy(line));
            }
            outln!("-----END CERTIFICATE-----");
        }
        return Ok(());
    }
    if m.opt_present("json") {
        let json = serde_json::to_string_pretty(&s).map_err(|e| CliError::failed(e.to_string()))?;
        outln!("{json}");
        return Ok(());
    }
    outln!("File:        {}", s.file.display());
    outln!("Subject:     {}", s.subject);
    outln!("Names:       {}", s.names.join(", "));
    outln!("Valid from:  {}", s.not_before);
    outln!("Valid until: {} ({} days left)", s.not_after, s.days_left);
    outln!("SHA-256:     {}", s.sha256);
    Ok(())
}

/// `cert renew` and `cert next-key`.
fn acme_command(context: &Context, word: &str, m: &getopts::Matches) -> Result<(), CliError> {
    let config = context.config()?;
    // The files must belong to the gateway's user, as everything under
    // the data directory does.
    super::identity::become_data_owner(&config.data_dir)?;
    if config.acme.is_none() {
        return Err(CliError::failed(
            "ACME is off: configure the acme section first (see README, Certificates)",
        ));
    }
    if word == "next-key" {
        crate::acme::make_next_key(&config).map_err(CliError::failed)?;
        outln!(
            "the next key is in {}: publish its TLSA record (sealpost dns), wait at least the record's TTL, then run sealpost cert renew --rotate-key",
            crate::acme::key_paths(&config).1.display()
        );
        return Ok(());
    }
    let rotate = m.opt_present("rotate-key");
    if rotate && !crate::acme::key_paths(&config).1.exists() {
        return Err(CliError::failed(
            "there is no next key: run sealpost cert next-key and publish its TLSA record first",
        ));
    }
    crate::acme::request_renewal(&config, rotate).map_err(CliError::failed)?;
    outln!(
        "renewal requested: the gateway orders within a minute; sealpost status shows the outcome"
    );
    Ok(())
}
