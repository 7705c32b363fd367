//! `sealpost serve`: opens the store, sets up TLS, binds every configured
//! listener and runs until SIGTERM/SIGINT.

use std::sync::Arc;
use std::time::Duration;

use log::{info, warn};

use crate::config::Config;
use crate::net::acceptor::{Acceptor, Control, Service};
use crate::net::limits::ConnectionLimits;
use crate::net::signals;
use crate::net::tls::TlsServer;
use crate::smtp::server::Settings;
use crate::smtp::session::SmtpService;
use crate::store::Store;

/// Runs the gateway until a stop signal; returns after the grace period.
pub fn serve(config: Config) -> Result<(), String> {
    // Before any other thread exists, so that every thread inherits the mask.
    signals::block().map_err(|e| format!("cannot set up signal handling: {e}"))?;
    let store = Store::open(&config.data_dir).map_err(|e| e.to_string())?;
    let tls = Arc::new(TlsServer::load(&config).map_err(|e| e.to_string())?);
    let control = Arc::new(Control::default());
    let limits = ConnectionLimits::new(
        config.limits.max_connections as usize,
        config.limits.max_connections_per_ip as usize,
    );

    let smtp = Arc::new(SmtpService {
        settings: Settings {
            hostname: config.hostname.clone(),
            max_message_bytes: config.smtp.max_message_bytes,
            max_recipients: config.smtp.max_recipients as usize,
            require_tls: config.smtp.require_tls,
            max_line_bytes: config.limits.max_line_bytes as usize,
        },
        store: store.clone(),
        mailbox_domain: config.mailbox_domain.clone(),
        tls: Arc::clone(&tls),
        allowed_clients: config.smtp.allowed_clients.clone(),
        command_timeout: Duration::from_secs(config.limits.command_timeout_secs),
        data_timeout: Duration::from_secs(config.limits.data_timeout_secs),
        handshake_timeout: Duration::from_secs(config.limits.tls_handshake_timeout_secs),
        shutdown: Arc::clone(&control.shutdown),
    });
    let busy = format!(
        "421 4.7.0 {} Too many connections, try again later\r\n",
        config.hostname
    );
    let (plain, implicit) = (Arc::clone(&smtp), Arc::clone(&smtp));
    let services = vec![
        Service {
            name: "smtp",
            busy_reply: busy.into_bytes(),
            handler: Arc::new(move |a| plain.run(a, false)),
        },
        Service {
            name: "smtps",
            busy_reply: Vec::new(),
            handler: Arc::new(move |a| implicit.run(a, true)),
        },
    ];
    let mut bindings = Vec::new();
    for (i, addr) in config.smtp.listen.iter().enumerate() {
        bindings.push((format!("smtp.listen[{i}]"), *addr, 0));
    }
    for (i, addr) in config.smtp.listen_tls.iter().enumerate() {
        bindings.push((format!("smtp.listen_tls[{i}]"), *addr, 1));
    }
    for (section, listeners) in [
        ("pop3", &config.pop3),
        ("smtp_proxy", &config.smtp_proxy),
        ("pop3_proxy", &config.pop3_proxy),
    ] {
        if !listeners.listen.is_empty() || !listeners.listen_tls.is_empty() {
            warn!(
                "{section}: this service is not available in this version; its listeners are not opened"
            );
        }
    }
    if bindings.is_empty() {
        return Err("no listener is configured (every listen list is empty)".into());
    }

    let acceptor =
        Acceptor::bind(&bindings, services, Arc::clone(&limits)).map_err(|e| e.to_string())?;
    signals::spawn_handler(Arc::clone(&control), acceptor.waker())
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    info!(
        "Sealpost {} ready (data in {})",
        env!("CARGO_PKG_VERSION"),
        config.data_dir.display()
    );
    acceptor
        .run(&control, || match tls.reload() {
            Ok(fp) => info!("TLS certificate reloaded (SHA-256 {fp})"),
            Err(e) => warn!("TLS certificate reload failed, keeping the old certificate: {e}"),
        })
        .map_err(|e| format!("acceptor failed: {e}"))?;

    let grace = Duration::from_secs(config.limits.shutdown_grace_secs);
    let open = limits.active();
    if open > 0 {
        info!(
            "waiting up to {}s for {open} open session(s)",
            grace.as_secs()
        );
    }
    if limits.wait_until_idle(grace) {
        info!("stopped");
    } else {
        warn!(
            "{} session(s) still open after limits.shutdown_grace_secs; closing them (nothing they had not confirmed is kept)",
            limits.active()
        );
    }
    Ok(())
}
