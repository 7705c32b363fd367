//! `sealpost serve`: opens the store, sets up TLS, binds every configured
//! listener and runs until SIGTERM/SIGINT.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use log::{info, warn};
use sd_notify::NotifyState;

use crate::acme::challenge::Challenges;
use crate::acme::listener::WebService;
use crate::acme::{self, mta_sts};
use crate::auth::{KdfSlots, LoginThrottle, ThrottleSettings};
use crate::cert;
use crate::config::{Config, Listeners};
use crate::console::session::Sessions;
use crate::console::{Bound, ConsoleService};
use crate::control::{self, Throttles};
use crate::net::acceptor::{Accepted, Acceptor, Control, Service};
use crate::net::driver::{SessionEnv, Timeouts};
use crate::net::error_limit::ErrorPolicy;
use crate::net::limits::{ConnectionLimits, Pool};
use crate::net::signals::StopAndReload;
use crate::net::tls::TlsServer;
use crate::pop3::maildrop::LoginContext;
use crate::pop3::proxy::Settings as Pop3ProxySettings;
use crate::pop3::proxy_service::Pop3ProxyService;
use crate::pop3::server::Settings as Pop3Settings;
use crate::pop3::session::Pop3Service;
use crate::proxy::store_relay::ProxyContext;
use crate::proxy::target::TargetPolicy;
use crate::proxy::upstream::{Dialer, UpstreamTls};
use crate::smtp::proxy::Settings as ProxySettings;
use crate::smtp::proxy_service::SmtpProxyService;
use crate::smtp::server::Settings as SmtpSettings;
use crate::smtp::session::SmtpService;

use crate::console::metrics::MetricsService;
use crate::store::reserve::DiskReserve;
use crate::store::{self, Source, Store};

mod lifecycle;
use lifecycle::{drain, notify_systemd, reload};

/// The services behind the listeners, with their bindings.
struct Services {
    services: Vec<Service>,
    bindings: Vec<(String, std::net::SocketAddr, usize)>,
    /// The TLS configuration they serve.
    tls: Arc<TlsServer>,
}

impl Services {
    /// The pools of the services that have a listener.
    fn active_pools(&self) -> Vec<Pool> {
        self.bindings
            .iter()
            .map(|(_, _, i)| self.services[*i].pool)
            .collect()
    }

    /// Adds a service's two listener kinds: `run(accepted, implicit_tls)`.
    /// `busy` is what a plain listener says when the connection limits are reached.
    fn add<F>(
        &mut self,
        section: &str,
        pool: Pool,
        names: [&'static str; 2],
        listeners: &Listeners,
        busy: Vec<u8>,
        run: Arc<F>,
    ) where
        F: Fn(Accepted, bool) + Send + Sync + 'static,
    {
        let kinds = [
            (&listeners.listen, false, busy),
            (&listeners.listen_tls, true, Vec::new()),
        ];
        for ((addrs, implicit, busy_reply), name) in kinds.into_iter().zip(names) {
            let key = if implicit { "listen_tls" } else { "listen" };
            for (i, addr) in addrs.iter().enumerate() {
                self.bindings
                    .push((format!("{section}.{key}[{i}]"), *addr, self.services.len()));
            }
            let run = Arc::clone(&run);
            self.services.push(Service {
                name,
                busy_reply,
                handler: Arc::new(move |accepted| run(accepted, implicit)),
                pool,
            });
        }
    }

    /// Adds one service on the listeners `addrs` of `key` (`console.listen`):
    /// TLS from the first byte or plain HTTP, so nothing is said when busy.
    fn add_one(
        &mut self,
        key: &str,
        addrs: &[std::net::SocketAddr],
        name: &'static str,
        pool: Pool,
        handler: Arc<dyn Fn(Accepted) + Send + Sync>,
    ) {
        for (i, addr) in addrs.iter().enumerate() {
            self.bindings
                .push((format!("{key}[{i}]"), *addr, self.services.len()));
        }
        self.services.push(Service {
            name,
            busy_reply: Vec::new(),
            handler,
            pool,
        });
    }
}

/// What lives as long as the gateway, across reloads: the stop and reload
/// flags, the connection counts and the failed-login counts. A reload gives
/// the last two new limits and keeps what they counted.
struct Shared {
    control: Arc<Control>,
    limits: Arc<ConnectionLimits>,
    /// Each service counts its own failed logins: a mail client with an
    /// expired provider password behind the archiver's NAT must not lock
    /// the archiver out of POP3.
    throttles: Throttles,
    /// The web console's open sessions.
    console_sessions: Arc<Sessions>,
    /// The one cap on concurrent key derivations, for every service, kept
    /// across reloads (a reload changes only its size).
    kdf_slots: Arc<KdfSlots>,
    /// What the acceptor bound (key, address), for the console's dashboard.
    bound: Bound,
    /// The TLS configuration the running services serve, for the ACME
    /// renewer to swap a new certificate into.
    tls: Arc<Mutex<Option<Arc<TlsServer>>>>,
    /// The disk reserve of the data directory, kept across reloads.
    reserve: Arc<DiskReserve>,
}

impl Shared {
    fn new(config: &Config) -> Shared {
        let l = &config.limits;
        let throttle = || Arc::new(LoginThrottle::new(throttle_settings(config)));
        let limits = ConnectionLimits::new(
            l.max_connections as usize,
            l.max_connections_per_ip as usize,
            l.overload_percent as usize,
        );
        limits.set_trusted(config.haproxy_trusted_networks.clone());
        Shared {
            control: Arc::new(Control::default()),
            limits,
            throttles: Throttles(vec![
                ("pop3", throttle()),
                ("smtp-proxy", throttle()),
                ("pop3-proxy", throttle()),
                ("console", throttle()),
            ]),
            console_sessions: Arc::default(),
            kdf_slots: Arc::new(KdfSlots::new(l.max_concurrent_kdf as usize)),
            bound: Bound::default(),
            tls: Arc::default(),
            reserve: Arc::new(DiskReserve::new(
                &config.data_dir,
                l.min_free_bytes,
                l.min_free_percent,
            )),
        }
    }

    /// Applies a reloaded configuration's limits.
    fn update(&self, config: &Config) {
        let l = &config.limits;
        self.limits.set(
            l.max_connections as usize,
            l.max_connections_per_ip as usize,
            l.overload_percent as usize,
        );
        self.limits
            .set_trusted(config.haproxy_trusted_networks.clone());
        self.reserve.set(l.min_free_bytes, l.min_free_percent);
        self.kdf_slots
            .set_max(config.limits.max_concurrent_kdf as usize);
        for (_, throttle) in &self.throttles.0 {
            throttle.set_settings(throttle_settings(config));
        }
    }
}

fn throttle_settings(config: &Config) -> ThrottleSettings {
    let l = &config.limits;
    ThrottleSettings {
        max_failures: l.max_failed_logins,
        lockout: Duration::from_secs(l.lockout_secs),
        delay: Duration::from_millis(l.failed_login_delay_ms),
        exempt: l.lockout_exempt_clients.clone(),
    }
}

/// The session settings every service shares, from `limits`.
fn session_env(config: &Config, tls: &Arc<TlsServer>, shared: &Shared) -> SessionEnv {
    let l = &config.limits;
    SessionEnv {
        tls: Arc::clone(tls),
        timeouts: Timeouts {
            command: Duration::from_secs(l.command_timeout_secs),
            data: Duration::from_secs(l.data_timeout_secs),
            min_data_rate: l.min_data_bytes_per_sec,
            handshake: Duration::from_secs(l.tls_handshake_timeout_secs),
            overload: Duration::from_secs(l.overload_timeout_secs),
        },
        shutdown: Arc::clone(&shared.control.shutdown),
        limits: Arc::clone(&shared.limits),
        proxy_trusted: Arc::new(config.haproxy_trusted_networks.clone()),
        pool: Pool::Journal,
        expected_clients: Arc::new(Vec::new()),
    }
}

fn error_policy(config: &Config) -> ErrorPolicy {
    ErrorPolicy {
        soft: config.limits.soft_error_limit,
        hard: config.limits.hard_error_limit,
        delay: Duration::from_millis(config.limits.error_delay_ms),
    }
}

/// What every service is built from.
struct Parts<'a> {
    config: &'a Config,
    store: &'a Store,
    env: SessionEnv,
    errors: ErrorPolicy,
    max_line_bytes: usize,
    reserve: &'a Arc<DiskReserve>,
}

impl Parts<'_> {
    fn journal(&self) -> SmtpService {
        let config = self.config;
        SmtpService {
            settings: SmtpSettings {
                hostname: config.hostname.clone(),
                max_message_bytes: config.smtp.max_message_bytes,
                max_recipients: config.smtp.max_recipients as usize,
                require_tls: config.smtp.require_tls,
                max_line_bytes: self.max_line_bytes,
                errors: self.errors,
            },
            store: self.store.clone(),
            mailbox_domain: config.mailbox_domain.clone(),
            reserve: Arc::clone(self.reserve),
            max_pending_bytes: config.limits.max_pending_bytes_per_mailbox,
            allowed_clients: config.smtp.allowed_clients.clone(),
            env: SessionEnv {
                expected_clients: Arc::new(config.smtp.allowed_clients.clone()),
                ..self.env.for_pool(Pool::Journal)
            },
        }
    }

    fn pop3(&self, throttle: &Arc<LoginThrottle>, kdf_slots: &Arc<KdfSlots>) -> Pop3Service {
        let config = self.config;
        Pop3Service {
            settings: Pop3Settings {
                max_line_bytes: self.max_line_bytes,
                errors: self.errors,
            },
            logins: Arc::new(LoginContext {
                store: self.store.clone(),
                mailbox_domain: config.mailbox_domain.clone(),
                throttle: Arc::clone(throttle),
                kdf_slots: Arc::clone(kdf_slots),
                kdf: config.kdf.params(),
            }),
            env: self.env.for_pool(Pool::Pop3),
        }
    }

    fn proxy_context(
        &self,
        throttle: &Arc<LoginThrottle>,
        source: Source,
    ) -> Result<Arc<ProxyContext>, String> {
        let proxy = &self.config.proxy;
        let dialer = Dialer {
            policy: TargetPolicy {
                allowed: proxy.allowed_targets.clone(),
                allow_private: proxy.allow_private_targets,
            },
            tls: UpstreamTls::new(proxy.extra_ca_file.as_deref()).map_err(|e| e.to_string())?,
            hostname: self.config.hostname.clone(),
            connect_timeout: Duration::from_secs(proxy.connect_timeout_secs),
            io_timeout: self.env.timeouts.command,
            implicit_tls_ports: proxy.implicit_tls_ports.clone(),
        };
        Ok(Arc::new(ProxyContext {
            store: self.store.clone(),
            dialer,
            throttle: Arc::clone(throttle),
            source,
            reserve: Arc::clone(self.reserve),
        }))
    }

    fn smtp_proxy(&self, throttle: &Arc<LoginThrottle>) -> Result<SmtpProxyService, String> {
        let config = self.config;
        Ok(SmtpProxyService {
            settings: ProxySettings {
                hostname: config.hostname.clone(),
                max_message_bytes: config.smtp_proxy.max_message_bytes,
                max_recipients: config.smtp_proxy.max_recipients as usize,
                max_line_bytes: self.max_line_bytes,
                errors: self.errors,
            },
            context: self.proxy_context(throttle, Source::SmtpProxy)?,
            env: self.env.for_pool(Pool::SmtpProxy),
        })
    }

    fn console(&self, throttle: &Arc<LoginThrottle>, shared: &Shared) -> ConsoleService {
        ConsoleService {
            config: Arc::new(self.config.clone()),
            store: self.store.clone(),
            env: self.env.for_pool(Pool::Console),
            throttle: Arc::clone(throttle),
            sessions: Arc::clone(&shared.console_sessions),
            bound: shared.bound.clone(),
            kdf_slots: Arc::clone(&shared.kdf_slots),
        }
    }

    fn pop3_proxy(&self, throttle: &Arc<LoginThrottle>) -> Result<Pop3ProxyService, String> {
        Ok(Pop3ProxyService {
            settings: Pop3ProxySettings {
                max_line_bytes: self.max_line_bytes,
                errors: self.errors,
                max_message_bytes: self.config.pop3_proxy.max_message_bytes,
            },
            context: self.proxy_context(throttle, Source::Pop3Proxy)?,
            env: self.env.for_pool(Pool::Pop3Proxy),
        })
    }
}

/// Builds every service from `config`: at start, and again on each reload
/// (the certificate is read afresh, and generated if its names changed).
fn build(config: &Config, store: &Store, shared: &Shared) -> Result<Services, String> {
    let (cert, key) = cert::files(config).map_err(|e| e.to_string())?;
    let tls = Arc::new(TlsServer::load(&cert, &key).map_err(|e| e.to_string())?);
    let parts = Parts {
        config,
        store,
        env: session_env(config, &tls, shared),
        errors: error_policy(config),
        max_line_bytes: config.limits.max_line_bytes as usize,
        reserve: &shared.reserve,
    };
    let throttles = &shared.throttles.0;
    let smtp = Arc::new(parts.journal());
    let pop3 = Arc::new(parts.pop3(&throttles[0].1, &shared.kdf_slots));
    let smtp_proxy = Arc::new(parts.smtp_proxy(&throttles[1].1)?);
    let pop3_proxy = Arc::new(parts.pop3_proxy(&throttles[2].1)?);
    let proxies_listen = [config.smtp_proxy.listeners(), config.pop3_proxy.listeners()]
        .iter()
        .any(|l| !l.listen.is_empty() || !l.listen_tls.is_empty());
    if config.proxy.allowed_targets.is_empty() && proxies_listen {
        warn!(
            "proxy.allowed_targets is empty: every proxy login will be refused until targets are allowed"
        );
    }

    let mut services = Services {
        services: Vec::new(),
        bindings: Vec::new(),
        tls: Arc::clone(&tls),
    };
    // What plain listeners say before closing when the connection limits are reached.
    let smtp_busy = format!(
        "421 4.7.0 {} Too many connections, try again later\r\n",
        config.hostname
    )
    .into_bytes();
    let pop3_busy = b"-ERR [SYS/TEMP] Too many connections, try again later\r\n".to_vec();
    services.add(
        "smtp",
        Pool::Journal,
        ["smtp", "smtps"],
        &config.smtp.listeners(),
        smtp_busy.clone(),
        Arc::new(move |a, implicit| smtp.run(a, implicit)),
    );
    services.add(
        "pop3",
        Pool::Pop3,
        ["pop3", "pop3s"],
        &config.pop3,
        pop3_busy.clone(),
        Arc::new(move |a, implicit| pop3.run(a, implicit)),
    );
    services.add(
        "smtp_proxy",
        Pool::SmtpProxy,
        ["smtp-proxy", "smtps-proxy"],
        &config.smtp_proxy.listeners(),
        smtp_busy,
        Arc::new(move |a, implicit| smtp_proxy.run(a, implicit)),
    );
    services.add(
        "pop3_proxy",
        Pool::Pop3Proxy,
        ["pop3-proxy", "pop3s-proxy"],
        &config.pop3_proxy.listeners(),
        pop3_busy,
        Arc::new(move |a, implicit| pop3_proxy.run(a, implicit)),
    );
    add_console(
        &mut services,
        Arc::new(parts.console(&throttles[3].1, shared)),
        config,
    );
    add_web_services(&mut services, &parts);
    add_metrics(&mut services, &parts, shared);
    if services.bindings.is_empty() {
        return Err("no listener is configured (every listen list is empty)".into());
    }
    Ok(services)
}

/// The web console's listeners.
fn add_console(services: &mut Services, console: Arc<ConsoleService>, config: &Config) {
    services.add_one(
        "console.listen",
        &config.console.listen,
        "console",
        Pool::Console,
        Arc::new(move |a| console.run(a)),
    );
}

/// The HTTP-01 listener and the HTTPS (MTA-STS, TLS-ALPN-01) listener.
fn add_web_services(services: &mut Services, parts: &Parts) {
    let config = parts.config;
    let challenges = Arc::new(Challenges::new(&config.data_dir));
    let http_listen = config.acme.as_ref().map(|a| a.http_listen.clone());
    let kinds = [
        (
            "acme.http_listen",
            "acme-http",
            http_listen.unwrap_or_default(),
            false,
        ),
        (
            "mta_sts.listen",
            "mta-sts",
            config.mta_sts.listen.clone(),
            true,
        ),
    ];
    for (key, name, addrs, https) in kinds {
        let web = Arc::new(WebService {
            env: parts.env.for_pool(Pool::Web),
            challenges: Arc::clone(&challenges),
            policy: if https { mta_sts::policy(config) } else { None },
            https,
        });
        services.add_one(key, &addrs, name, Pool::Web, Arc::new(move |a| web.run(a)));
    }
}

/// The Prometheus exposition on `metrics.listen` (the web listeners' share).
fn add_metrics(services: &mut Services, parts: &Parts, shared: &Shared) {
    let config = parts.config;
    let metrics = Arc::new(MetricsService {
        env: parts.env.for_pool(Pool::Web),
        config: Arc::new(config.clone()),
        store: parts.store.clone(),
        kdf: Arc::clone(&shared.kdf_slots),
        throttles: shared.throttles.0.clone(),
        bound: shared.bound.clone(),
    });
    services.add_one(
        "metrics.listen",
        &config.metrics.listen,
        "metrics",
        Pool::Web,
        Arc::new(move |a| metrics.run(a)),
    );
}

/// Starts the ACME renewer when `acme` is configured: it swaps each new
/// certificate into the running services' TLS configuration.
fn start_renewer(config: &Config, shared: &Shared) -> Result<(), String> {
    if config.acme.is_none() {
        return Ok(());
    }
    let tls = Arc::clone(&shared.tls);
    let on_new = Box::new(move |file: &Path| match TlsServer::load(file, file) {
        Ok(new) => {
            if let Some(running) = tls.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                running.replace_with(&new);
            }
        }
        Err(e) => warn!("ACME: cannot serve {}: {e}", file.display()),
    });
    let challenges = Arc::new(Challenges::new(&config.data_dir));
    acme::Renewer::new(
        config,
        challenges,
        Arc::clone(&shared.control.shutdown),
        on_new,
    )?
    .spawn()
    .map_err(|e| format!("cannot start the ACME renewer: {e}"))?;
    Ok(())
}

/// Runs the gateway from the configuration in `config_file` until a stop
/// signal; returns after the grace period. SIGHUP reloads the file.
pub fn serve(config: Config, config_file: &Path) -> Result<(), String> {
    // Changes with a restart, like the data directory.
    apply_store_settings(&config);
    let _serving = store::lock_for_serving(&config.data_dir, config.node.as_deref())
        .map_err(|e| e.to_string())?;
    let store = Store::open(&config.data_dir).map_err(|e| e.to_string())?;
    store.remove_leftovers().map_err(|e| e.to_string())?;
    store.check_writable().map_err(|e| e.to_string())?;
    open_custody(&config)?;
    info!(
        "writes under {} are made durable {}",
        config.data_dir.display(),
        store::flush::describe(&config.data_dir.join("mailboxes"))
    );
    let shared = Shared::new(&config);
    let services = build(&config, &store, &shared)?;
    *shared.tls.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(&services.tls));
    // Listeners change only with a restart: so do the pools that reserve a share.
    shared.limits.set_active_pools(&services.active_pools());
    for (pool, share) in shared.limits.shares() {
        if share.guaranteed > 0 {
            info!(
                "{}: {} connection(s) guaranteed, at most {}",
                pool.name(),
                share.guaranteed,
                share.cap
            );
        }
    }
    let _control_socket = match &config.control_socket {
        Some(path) => Some(control::serve(
            path,
            control::Controls {
                throttles: shared.throttles.clone(),
                kdf: Arc::clone(&shared.kdf_slots),
            },
        )?),
        None => None,
    };
    let acceptor = Acceptor::bind(
        &services.bindings,
        services.services,
        Arc::clone(&shared.limits),
    )
    .map_err(|e| e.to_string())?;
    shared.bound.set(acceptor.bound());
    info!(
        "Sealpost {} ready (data in {})",
        env!("CARGO_PKG_VERSION"),
        config.data_dir.display()
    );
    notify_systemd(&[NotifyState::Ready]);
    cert::warn_if_expiring(&config);
    start_renewer(&config, &shared)?;
    crate::alerts::spawn(
        config.clone(),
        store.clone(),
        Arc::clone(&shared.control.shutdown),
    )
    .map_err(|e| format!("cannot start the alerts: {e}"))?;
    let anchorer = start_anchorer(&config, &shared)?;
    let mut running = config;
    let signals = acceptor
        .run(&shared.control, || {
            notify_systemd(&[NotifyState::Reloading]);
            let services = reload(config_file, &mut running, &store, &shared);
            notify_systemd(&[NotifyState::Ready]);
            services
        })
        .map_err(|e| format!("acceptor failed: {e}"))?;
    notify_systemd(&[NotifyState::Stopping]);
    drain(
        signals,
        &shared.limits,
        Duration::from_secs(running.limits.shutdown_grace_secs),
    );
    if let Some(anchorer) = anchorer {
        anchorer.at_shutdown();
    }
    Ok(())
}

/// How this process writes into the data directory: the flush policy and
/// the custody log (this node's chain).
pub fn apply_store_settings(config: &Config) {
    crate::store::flush::set_policy(config.flush);
    crate::store::custody::configure(
        config.custody.log,
        config.node.as_deref(),
        config.custody.segment_bytes,
    );
}

/// The custody anchors' thread, when a TSA is configured; the anchorer
/// kept for the anchor at shutdown.
fn start_anchorer(
    config: &Config,
    shared: &Shared,
) -> Result<Option<crate::custody::Anchorer>, String> {
    let anchorer = crate::custody::Anchorer::new(config);
    if let Some(a) = &anchorer {
        a.clone()
            .spawn(Arc::clone(&shared.control.shutdown))
            .map_err(|e| format!("cannot start the custody anchors: {e}"))?;
    }
    Ok(anchorer)
}

/// This node's custody chain: a torn last entry cut back, a restore noted.
fn open_custody(config: &Config) -> Result<(), String> {
    store::custody::open_at_start(&config.data_dir).map_err(|e| format!("custody log: {e}"))?;
    if let Some(detail) =
        store::custody::note_restore(&config.data_dir).map_err(|e| format!("custody log: {e}"))?
    {
        warn!("custody: the data directory was {detail}: entries after it were rolled back");
    }
    Ok(())
}
