//! `sealpost cert show`: the certificate the gateway serves, as an
//! administrator compares it with what a client shows on first connect.

use getopts::Options;

use super::{CliError, Context, context_with, parse_options};
use crate::cert;

const SUMMARY: &str = "show [--json | --pem]\n\n\
Prints the subject, names (SANs), validity and SHA-256 fingerprint of the\n\
certificate the gateway serves: tls.cert_file, or the generated one under\n\
data_dir/tls/. --pem prints the certificate itself, for clients to trust\n\
(sealpost cert show --pem > sealpost.pem). Exits 1 when there is none (yet)\n\
or it cannot be read.";

/// Runs `sealpost cert …`.
pub fn run(context: &Context, args: Vec<String>) -> Result<(), CliError> {
    let mut opts = Options::new();
    opts.optflag("", "json", "print as JSON");
    opts.optflag(
        "",
        "pem",
        "print the certificate chain in PEM, for clients to trust",
    );
    let Some(m) = parse_options("cert", SUMMARY, &mut opts, &args)? else {
        return Ok(());
    };
    let words: Vec<&str> = m.free.iter().map(String::as_str).collect();
    if words != ["show"] {
        return Err(CliError::usage(
            "cert: the command is `cert show` (see sealpost cert --help)",
        ));
    }
    let context = context_with(context, &m);
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
