//! The `metrics` listener: the Prometheus text exposition at `/metrics`,
//! plain HTTP (keep it on loopback or behind a firewall), on the console's
//! request reader, deadlines and limits, with the small connection share of
//! the web listeners (`Pool::Web`). Everything else is a 404, a method but
//! GET a 405.
//!
//! The exposition is `prometheus-client`'s (the Prometheus project's own
//! Rust crate), so names, help, types and label escaping follow the format.
//! Counters come from `crate::metrics` (events counted where they happen);
//! gauges are read at each scrape from what `status` gathers, the
//! connection pools, the key-derivation cap and the login throttles. Label
//! values are mailbox ids, services, sources and reasons the code names:
//! nothing a client sends becomes a label.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use log::info;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::http::{self, Response};
use crate::auth::KdfSlots;
use crate::auth::throttle::LoginThrottle;
use crate::config::Config;
use crate::net::acceptor::Accepted;
use crate::net::driver::SessionEnv;
use crate::status;
use crate::store::Store;

type Labels = Vec<(String, String)>;
type Floats = Family<Labels, Gauge<f64, AtomicU64>>;

/// The path served.
pub const PATH: &str = "/metrics";

/// The listener's service.
pub struct MetricsService {
    /// Sessions' settings (its pool is `Pool::Web`).
    pub env: SessionEnv,
    /// The configuration in force.
    pub config: Arc<Config>,
    /// The mailbox store.
    pub store: Store,
    /// The key-derivation cap.
    pub kdf: Arc<KdfSlots>,
    /// Each service's login throttle.
    pub throttles: Vec<(&'static str, Arc<LoginThrottle>)>,
    /// What the acceptor bound, for `status`' view of the listeners.
    pub bound: super::Bound,
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

/// A counter family filled from `crate::metrics`' counter `name`, its two
/// label values named `a` and `b` (`b` empty: one label).
fn counted(registry: &mut Registry, name: &str, help: &str, counter: &str, a: &str, b: &str) {
    let family: Family<Labels, Counter> = Family::default();
    for (x, y, n) in crate::metrics::snapshot(counter) {
        let set = if b.is_empty() {
            labels(&[(a, x)])
        } else {
            labels(&[(a, x), (b, y)])
        };
        family.get_or_create(&set).inc_by(n);
    }
    registry.register(name, help, family);
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: f64) {
    let g: Gauge<f64, AtomicU64> = Gauge::default();
    g.set(value);
    registry.register(name, help, g);
}

impl MetricsService {
    /// Serves one connection: one request, one answer.
    pub fn run(&self, accepted: Accepted) {
        let Some(mut opened) = self.env.open(accepted, false, "metrics") else {
            return;
        };
        let peer = opened.conn.peer();
        let deadline = Instant::now() + self.env.timeouts.handshake;
        let (response, unread) = match http::read_request(&mut opened.conn, deadline) {
            Ok(request) => {
                let openmetrics = request
                    .header("accept")
                    .is_some_and(|a| a.contains("application/openmetrics-text"));
                (
                    self.answer(&request.method, &request.path, openmetrics),
                    false,
                )
            }
            Err(e) => match e.status() {
                Some(code) => {
                    info!("metrics {peer}: {e}");
                    (Response::text(code, format!("{e}\n")), true)
                }
                None => {
                    log::debug!("metrics {peer}: {e}");
                    opened.conn.close();
                    return;
                }
            },
        };
        let bytes = response.to_bytes(&[("Cache-Control", "no-store")]);
        if let Err(e) = opened
            .conn
            .send(&bytes, Instant::now() + self.env.timeouts.command)
        {
            info!("metrics {peer}: write failed: {e}");
        }
        if unread {
            opened.conn.close_lingering();
        } else {
            opened.conn.close();
        }
    }

    fn answer(&self, method: &str, path: &str, openmetrics: bool) -> Response {
        if method != "GET" {
            return Response::text(405, "only GET\n".into()).with_header("Allow", "GET".into());
        }
        if path != PATH {
            return Response::text(404, "not found: the metrics are at /metrics\n".into());
        }
        let text = self.exposition();
        if openmetrics {
            Response::exposition(text, true)
        } else {
            Response::exposition(classic(&text), false)
        }
    }

    /// The whole exposition, as of now.
    pub fn exposition(&self) -> String {
        let mut registry = Registry::with_prefix("sealpost");
        counted(
            &mut registry,
            "messages_stored",
            "Messages stored, by source",
            "stored_messages",
            "source",
            "",
        );
        counted(
            &mut registry,
            "stored_bytes",
            "Bytes of messages stored, by source",
            "stored_bytes",
            "source",
            "",
        );
        counted(
            &mut registry,
            "deliveries_refused",
            "Deliveries refused, by service and reason",
            "refused",
            "service",
            "reason",
        );
        counted(
            &mut registry,
            "tls_handshakes_failed",
            "TLS handshakes that failed, by service",
            "tls_failed",
            "service",
            "",
        );
        self.live(&mut registry);
        let bound = self.bound.get();
        let report = status::gather(
            &self.config,
            &self.store,
            status::DEFAULT_MAX_PENDING_AGE,
            status::Probe::Serving(&bound),
        );
        reported(&mut registry, &report);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }

    /// Connections, logins, lockouts and key derivations, as they are now.
    fn live(&self, registry: &mut Registry) {
        let connections: Family<Labels, Gauge> = Family::default();
        for (pool, n) in self.env.limits.in_use() {
            // The login throttles' spelling (`smtp-proxy`); `web` for the
            // ACME and MTA-STS listeners and this one.
            let service = match pool.name() {
                "smtp_proxy" => "smtp-proxy",
                "pop3_proxy" => "pop3-proxy",
                "acme/mta_sts" => "web",
                other => other,
            };
            connections
                .get_or_create(&labels(&[("service", service)]))
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        registry.register("connections", "Connections open, by service", connections);
        let logins: Family<Labels, Counter> = Family::default();
        let lockouts: Family<Labels, Gauge> = Family::default();
        for (service, throttle) in &self.throttles {
            let (succeeded, failed) = throttle.outcomes();
            logins
                .get_or_create(&labels(&[("service", service), ("result", "succeeded")]))
                .inc_by(succeeded);
            logins
                .get_or_create(&labels(&[("service", service), ("result", "failed")]))
                .inc_by(failed);
            lockouts
                .get_or_create(&labels(&[("service", service)]))
                .set(i64::try_from(throttle.lockouts().len()).unwrap_or(i64::MAX));
        }
        registry.register("logins", "Logins, by service and result", logins);
        registry.register("lockouts", "Lockouts in force, by service", lockouts);
        let kdf = self.kdf.usage();
        gauge(
            registry,
            "kdf_in_flight",
            "Key derivations running now",
            kdf.in_flight as f64,
        );
        gauge(
            registry,
            "kdf_max",
            "Key derivations allowed at once",
            kdf.max as f64,
        );
    }
}

/// Prometheus' text format 0.0.4 from the OpenMetrics text
/// `prometheus-client` writes, for a client that does not ask for
/// OpenMetrics (promtool, curl, an older scraper): a counter's `HELP` and
/// `TYPE` name its samples (`…_total`), and there is no `# EOF` or
/// `# UNIT` line. Everything else is the same in both formats.
pub fn classic(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|meta| {
            let rest = line.strip_prefix(meta)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{meta}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// The per-mailbox gauges of what `status` gathered.
fn mailbox_gauges(registry: &mut Registry, report: &status::Report) {
    let now = jiff::Timestamp::now().as_second() as f64;
    let families: [(&str, &str); 5] = [
        (
            "mailbox_pending_messages",
            "Messages waiting to be retrieved, by mailbox",
        ),
        (
            "mailbox_pending_bytes",
            "Bytes waiting to be retrieved, by mailbox",
        ),
        (
            "mailbox_oldest_age_seconds",
            "How long the oldest message has waited, by mailbox",
        ),
        (
            "mailbox_last_retrieval_timestamp_seconds",
            "Unix time of the last POP3 login, by mailbox",
        ),
        (
            "mailbox_last_delivery_timestamp_seconds",
            "Unix time of the last delivery (to the minute), by mailbox",
        ),
    ];
    let per: Vec<Floats> = families.iter().map(|_| Floats::default()).collect();
    for mb in &report.mailboxes {
        let set = labels(&[("mailbox", &mb.id)]);
        per[0].get_or_create(&set).set(mb.pending_messages as f64);
        per[1].get_or_create(&set).set(mb.pending_bytes as f64);
        if let Some(age) = mb.oldest_age_secs {
            per[2].get_or_create(&set).set(age as f64);
        }
        if let Some(age) = mb.last_retrieved_age_secs {
            per[3].get_or_create(&set).set(now - age as f64);
        }
        if let Some(age) = mb.last_delivery_age_secs {
            per[4].get_or_create(&set).set(now - age as f64);
        }
    }
    for ((name, help), family) in families.into_iter().zip(per) {
        registry.register(name, help, family);
    }
}

/// The gauges of what `status` gathered.
fn reported(registry: &mut Registry, report: &status::Report) {
    mailbox_gauges(registry, report);
    if let Some(expiry) = report
        .certificate
        .as_ref()
        .and_then(|c| c.not_after.parse::<jiff::Timestamp>().ok())
    {
        gauge(
            registry,
            "certificate_expiry_timestamp_seconds",
            "Unix time the served TLS certificate expires",
            expiry.as_second() as f64,
        );
    }
    if let Some(d) = &report.disk {
        gauge(
            registry,
            "disk_free_bytes",
            "Bytes free on the data directory's file system",
            d.free_bytes as f64,
        );
        gauge(
            registry,
            "disk_reserve_bytes",
            "The disk reserve: below it, new mail gets a temporary error",
            d.reserve_bytes as f64,
        );
    }
    if let Some(c) = &report.custody {
        gauge(
            registry,
            "custody_entries",
            "Entries in this node's chain of custody",
            c.head as f64,
        );
        gauge(
            registry,
            "custody_unanchored_entries",
            "Entries written since the last RFC 3161 anchor",
            c.unanchored as f64,
        );
        gauge(
            registry,
            "custody_anchor_failing",
            "1 while the time-stamping authority fails",
            f64::from(u8::from(c.tsa_error.is_some())),
        );
    }
    if let Some(a) = &report.alerts {
        gauge(
            registry,
            "alert_conditions",
            "Alert conditions reported and not yet cleared",
            a.active.len() as f64,
        );
        gauge(
            registry,
            "alerts_undeliverable",
            "1 while the alerts' relay fails",
            f64::from(u8::from(a.undeliverable.is_some())),
        );
    }
    gauge(
        registry,
        "attention",
        "Problems that need an administrator (sealpost status)",
        report.attention.len() as f64,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_classic_format_names_counters_by_their_samples_and_has_no_eof() {
        let open = "# HELP x_stored Stored.\n# TYPE x_stored counter\n# UNIT x_stored bytes\nx_stored_total{a=\"b\"} 1\n# HELP x_up Up.\n# TYPE x_up gauge\nx_up 1\n# EOF\n";
        assert_eq!(
            classic(open),
            "# HELP x_stored_total Stored.\n# TYPE x_stored_total counter\nx_stored_total{a=\"b\"} 1\n# HELP x_up Up.\n# TYPE x_up gauge\nx_up 1\n"
        );
    }
}
