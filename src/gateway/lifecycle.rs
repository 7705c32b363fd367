//! The gateway's life after start: systemd notifications, SIGHUP reloads
//! and the drain at stop.

use super::*;

/// Tells systemd (`Type=notify`, sd_notify(3)) about a state change; does
/// nothing when not started by systemd (no `NOTIFY_SOCKET`).
pub(super) fn notify_systemd(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        warn!("cannot notify the service manager: {e}");
    }
}

/// SIGHUP: reads `config_file` again and, if it is valid, rebuilds every
/// service from it, the way `postfix reload` and `doveadm reload` behave.
/// Sessions already open finish with the settings they started with. What
/// cannot change without a restart (listeners, `data_dir`, `control_socket`, `flush`)
/// is logged and keeps its running value. An invalid file changes nothing.
pub(super) fn reload(
    config_file: &Path,
    running: &mut Config,
    store: &Store,
    shared: &Shared,
) -> Option<Vec<Service>> {
    info!("SIGHUP: reloading {}", config_file.display());
    let mut next = match Config::load(config_file) {
        Ok(config) => config,
        Err(e) => {
            warn!("reload failed, keeping the running configuration: {e}");
            return None;
        }
    };
    for key in keep_restart_only(&mut next, running) {
        warn!("{key} changed: it takes effect after a restart (systemctl restart sealpost)");
    }
    let services = match build(&next, store, shared) {
        Ok(services) => services,
        Err(e) => {
            warn!("reload failed, keeping the running configuration: {e}");
            return None;
        }
    };
    shared.update(&next);
    *shared.tls.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(&services.tls));
    cert::warn_if_expiring(&next);
    *running = next;
    info!("configuration reloaded");
    Some(services.services)
}

/// Puts back into `next` the running values of what only a restart can
/// change; returns the keys that differed.
fn keep_restart_only(next: &mut Config, running: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if next.all_listeners() != running.all_listeners() {
        changed.push("a listen address");
        next.smtp.listen = running.smtp.listen.clone();
        next.smtp.listen_tls = running.smtp.listen_tls.clone();
        next.pop3 = running.pop3.clone();
        next.smtp_proxy.listen = running.smtp_proxy.listen.clone();
        next.smtp_proxy.listen_tls = running.smtp_proxy.listen_tls.clone();
        next.pop3_proxy.listen = running.pop3_proxy.listen.clone();
        next.pop3_proxy.listen_tls = running.pop3_proxy.listen_tls.clone();
        next.console.listen = running.console.listen.clone();
    }
    if next.data_dir != running.data_dir {
        changed.push("data_dir");
        next.data_dir = running.data_dir.clone();
    }
    if next.node != running.node {
        changed.push("node");
        next.node = running.node.clone();
    }
    if next.control_socket != running.control_socket {
        changed.push("control_socket");
        next.control_socket = running.control_socket.clone();
    }
    if next.flush != running.flush {
        changed.push("flush");
        next.flush = running.flush;
    }
    if next.custody != running.custody {
        changed.push("custody");
        next.custody = running.custody.clone();
    }
    // The renewer and the web listeners are set up at start.
    if next.acme != running.acme || next.mta_sts != running.mta_sts {
        changed.push("acme or mta_sts");
        next.acme = running.acme.clone();
        next.mta_sts = running.mta_sts.clone();
    }
    changed
}

/// Gives open sessions the grace period to finish.
pub(super) fn drain(signals: StopAndReload, limits: &ConnectionLimits, grace: Duration) {
    let open = limits.active();
    if open > 0 {
        info!(
            "waiting up to {}s for {open} open session(s)",
            grace.as_secs()
        );
    }
    if signals.drain(limits, grace) {
        info!("stopped");
    } else {
        warn!(
            "{} session(s) still open after limits.shutdown_grace_secs; closing them (nothing they had not confirmed is kept)",
            limits.active()
        );
    }
}
