//! Sealpost: an email archiving gateway. An SMTP journal receiver and a POP3
//! server in front of an encrypted mailbox store, plus recording SMTP and POP3
//! proxies. `docs/architecture.md` says what each module is and may touch;
//! README.md says what the product does.
//!
//! No `unsafe` but where a module allows it for what the standard library
//! and rustix do not offer safely (`cli::identity`: process-wide setuid;
//! `net::activation`: owning the descriptors systemd passes), each block
//! with its SAFETY comment; every public item is documented; no function is over 80
//! lines (the `[lints]` table of Cargo.toml and clippy.toml).

pub mod acme;
pub mod admin;
pub mod alerts;
pub mod auth;
pub mod cert;
pub mod cli;
pub mod config;
pub mod console;
pub mod control;
pub mod crypto;
pub mod custody;
pub mod dot_stuffing;
pub mod failure;
pub mod gateway;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod outbound;
pub mod pop3;
pub mod proxy;
pub mod sasl;
pub mod smtp;
pub mod status;
pub mod store;
pub mod timestamp;
