//! The gateway's running counts for the `metrics` listener: events counted
//! where they happen (messages stored, deliveries refused, TLS handshakes
//! failed), by labels the code names (`&'static str`), so that no text
//! from a client can ever become a label and their number stays bounded.
//! The exposition (`console::metrics`) reads them with what it gathers at
//! each scrape.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// One counter: its name and up to two label values.
pub type Key = (&'static str, &'static str, &'static str);

static COUNTS: Mutex<BTreeMap<Key, u64>> = Mutex::new(BTreeMap::new());

/// Adds `by` to counter `name` with the label values `a`, `b`.
pub fn add(name: &'static str, a: &'static str, b: &'static str, by: u64) {
    let mut counts = COUNTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    *counts.entry((name, a, b)).or_default() += by;
}

/// Every counter of `name`: its two label values and its count.
pub fn snapshot(name: &str) -> Vec<(&'static str, &'static str, u64)> {
    COUNTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .filter(|((n, _, _), _)| *n == name)
        .map(|((_, a, b), v)| (*a, *b, *v))
        .collect()
}

/// A message stored by `source` (`journal`, `smtp-proxy`, `pop3-proxy`).
pub fn stored(source: &'static str, bytes: u64) {
    add("stored_messages", source, "", 1);
    add("stored_bytes", source, "", bytes);
}

/// A delivery `service` refused, and why.
pub fn refused(service: &'static str, reason: &'static str) {
    add("refused", service, reason, 1);
}

/// A TLS handshake of `service` that failed.
pub fn tls_failed(service: &'static str) {
    add("tls_failed", service, "", 1);
}
