//! The MTA-STS policy (RFC 8461 §3.2) the gateway serves at
//! `https://mta-sts.<mailbox_domain>/.well-known/mta-sts.txt`, and its id
//! for the `_mta-sts` TXT record (§3.1).

use crate::config::Config;

/// Where the policy is served (RFC 8461 §3.3).
pub const POLICY_PATH: &str = "/.well-known/mta-sts.txt";

/// The MX names the policy lists: `mta_sts.mx`, else the hostname.
pub fn mx_names(config: &Config) -> Vec<String> {
    if config.mta_sts.mx.is_empty() {
        vec![config.hostname.clone()]
    } else {
        config.mta_sts.mx.clone()
    }
}

/// The policy text, if one is served: `version`, `mode`, one `mx` line per
/// MX, `max_age`, lines ended by CRLF (§3.2's `sts-policy-term`).
pub fn policy(config: &Config) -> Option<String> {
    if !config.mta_sts.serves_policy() {
        return None;
    }
    let mut text = format!("version: STSv1\r\nmode: {}\r\n", config.mta_sts.mode.name());
    for mx in mx_names(config) {
        text.push_str(&format!("mx: {mx}\r\n"));
    }
    text.push_str(&format!("max_age: {}\r\n", config.mta_sts.max_age_secs));
    Some(text)
}

/// The policy id (§3.1: 1 to 32 letters and digits): the first 20 hex
/// digits of the policy's SHA-256, so it changes whenever the policy does
/// and is the same on every node.
pub fn policy_id(policy: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, policy.as_bytes());
    crate::crypto::hex(&digest.as_ref()[..10])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StsMode;

    #[test]
    fn the_policy_lists_every_mx_and_its_id_follows_it() {
        let mut config = Config {
            hostname: "mx1.example.org".into(),
            ..Config::default()
        };
        assert_eq!(policy(&config), None);
        config.mta_sts.listen = vec!["127.0.0.1:0".parse().unwrap()];
        config.mta_sts.mx = vec!["mx1.example.org".into(), "standby.example.org".into()];
        let testing = policy(&config).unwrap();
        assert_eq!(
            testing,
            "version: STSv1\r\nmode: testing\r\nmx: mx1.example.org\r\nmx: standby.example.org\r\nmax_age: 604800\r\n"
        );
        config.mta_sts.mode = StsMode::Enforce;
        let enforce = policy(&config).unwrap();
        assert_ne!(policy_id(&testing), policy_id(&enforce));
        assert_eq!(policy_id(&enforce), policy_id(&policy(&config).unwrap()));
        let id = policy_id(&enforce);
        assert!(id.len() == 20 && id.bytes().all(|b| b.is_ascii_alphanumeric()));
    }
}
