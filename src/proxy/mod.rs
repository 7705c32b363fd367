//! What the SMTP and POP3 recording proxies share: the login name that
//! chooses the upstream, the target policy, and the TLS client.

pub mod login_name;
pub mod relay;
pub mod store_relay;
pub mod target;
pub mod upstream;
