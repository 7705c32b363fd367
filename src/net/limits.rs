//! Connection counting: over all listeners, per service, and per client
//! address.
//!
//! One pool of `limits.max_connections` slots serves every listener, split
//! so that no service can starve another (a flood of trickling TLS
//! connections to the console once held every slot while journal SMTP
//! answered `421`). Each service with a listener gets a guaranteed share
//! that no other service can take, and may use a shared remainder up to
//! its own cap:
//!
//! | service | guaranteed | cap |
//! |---|---|---|
//! | journal SMTP | 25 % of `max_connections` | all |
//! | POP3 | 10 % | all |
//! | SMTP proxy | 10 % | all |
//! | POP3 proxy | 10 % | all |
//! | console | 2 | 1/16 of `max_connections`, at least 2, at most 16 |
//!
//! (The small listeners of later features, ACME, MTA-STS and metrics, fit
//! the console's row.) A new connection is accepted while its service holds
//! fewer than its guaranteed share, or while the shared remainder (what is
//! left after every share) has room and the service is under its cap. A
//! service without a listener reserves nothing.
//!
//! `overload_percent` applies to the whole pool and to each service: idle
//! clients of a service get the short overload deadlines when the whole
//! gateway holds `overload_percent` of `max_connections`, or when that
//! service holds `overload_percent` of its cap.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::cidr::{Cidr, canonical};

/// A service's part of the connection slots (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pool {
    /// Journal SMTP (`smtp.listen`, `smtp.listen_tls`).
    Journal,
    /// The archiver's POP3.
    Pop3,
    /// The recording SMTP proxy.
    SmtpProxy,
    /// The recording POP3 proxy.
    Pop3Proxy,
    /// The web console.
    Console,
    /// The HTTP-01 and HTTPS (MTA-STS, TLS-ALPN-01) listeners.
    Web,
}

impl Pool {
    /// Every pool, in the order of the counts.
    pub const ALL: [Pool; 6] = [
        Pool::Journal,
        Pool::Pop3,
        Pool::SmtpProxy,
        Pool::Pop3Proxy,
        Pool::Console,
        Pool::Web,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// The configuration section, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Pool::Journal => "smtp",
            Pool::Pop3 => "pop3",
            Pool::SmtpProxy => "smtp_proxy",
            Pool::Pop3Proxy => "pop3_proxy",
            Pool::Console => "console",
            Pool::Web => "acme/mta_sts",
        }
    }

    /// (guaranteed, cap) of `max_total` slots for this pool.
    fn share(self, max_total: usize) -> (usize, usize) {
        let percent = |p: usize| max_total * p / 100;
        match self {
            Pool::Journal => (percent(25), max_total),
            Pool::Pop3 | Pool::SmtpProxy | Pool::Pop3Proxy => (percent(10), max_total),
            // A certificate authority's validation and a sender's policy
            // fetch are rare and short: a small share, like the console's.
            Pool::Console | Pool::Web => {
                let cap = (max_total / 16).clamp(2, 16).min(max_total);
                (2.min(cap), cap)
            }
        }
    }
}

/// The guaranteed share and the cap of one pool, in slots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Share {
    /// Slots no other service can take.
    pub guaranteed: usize,
    /// The most this service may hold.
    pub cap: usize,
}

#[derive(Default)]
struct Counts {
    /// The limits live under the same lock as the counts: a reload changes them.
    /// Load balancers (`haproxy_trusted_networks`) are not counted per
    /// address: their clients are, once the PROXY header has named them.
    trusted: Vec<Cidr>,
    max_total: usize,
    max_per_ip: usize,
    overload_percent: usize,
    overload_at: usize,
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
    /// Which pools have a listener (only those reserve a share).
    active_pools: [bool; Pool::ALL.len()],
    shares: [Share; Pool::ALL.len()],
    per_pool: [usize; Pool::ALL.len()],
}

impl Counts {
    /// Works the shares out again from the limits and the active pools.
    fn share_out(&mut self) {
        let mut shares = [Share::default(); Pool::ALL.len()];
        for pool in Pool::ALL {
            let (guaranteed, cap) = pool.share(self.max_total);
            shares[pool.index()] = Share {
                guaranteed: if self.active_pools[pool.index()] {
                    guaranteed
                } else {
                    0
                },
                cap,
            };
        }
        self.shares = shares;
    }

    /// Slots of the shared remainder in use: what each pool holds beyond
    /// its guaranteed share.
    fn shared_used(&self) -> usize {
        Pool::ALL
            .iter()
            .map(|p| self.per_pool[p.index()].saturating_sub(self.shares[p.index()].guaranteed))
            .sum()
    }

    fn shared_size(&self) -> usize {
        let reserved: usize = self.shares.iter().map(|s| s.guaranteed).sum();
        self.max_total.saturating_sub(reserved)
    }
}

/// Which limit a new connection hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    /// `limits.max_connections`: the service's guaranteed share is in use
    /// and the shared remainder is full.
    Total,
    /// The service's cap (see the module documentation).
    ServiceCap,
    /// `limits.max_connections_per_ip`
    PerIp,
}

/// Counts open connections and refuses new ones beyond the limits.
pub struct ConnectionLimits {
    counts: Mutex<Counts>,
    closed: Condvar,
}

/// Held by a session; its drop frees the slot.
pub struct ConnectionGuard {
    limits: Arc<ConnectionLimits>,
    /// The address counted per address, if any (none for a load balancer's
    /// connection until its PROXY header names the client).
    ip: Option<IpAddr>,
    pool: Pool,
}

impl ConnectionLimits {
    /// Limits of `max_total` connections, `max_per_ip` from one address;
    /// overloaded from `overload_percent` of `max_total` on.
    pub fn new(
        max_total: usize,
        max_per_ip: usize,
        overload_percent: usize,
    ) -> Arc<ConnectionLimits> {
        let limits = Arc::new(ConnectionLimits {
            counts: Mutex::new(Counts::default()),
            closed: Condvar::new(),
        });
        limits.set(max_total, max_per_ip, overload_percent);
        limits
    }

    /// New limits (a reloaded configuration). Connections already open stay;
    /// only new ones are counted against the new limits.
    pub fn set(&self, max_total: usize, max_per_ip: usize, overload_percent: usize) {
        let mut counts = self.lock();
        counts.max_total = max_total;
        counts.max_per_ip = max_per_ip;
        counts.overload_percent = overload_percent;
        counts.overload_at = (max_total * overload_percent).div_ceil(100).max(1);
        counts.share_out();
    }

    /// The pools that have a listener: only they reserve a share.
    pub fn set_active_pools(&self, pools: &[Pool]) {
        let mut counts = self.lock();
        counts.active_pools = [false; Pool::ALL.len()];
        for pool in pools {
            counts.active_pools[pool.index()] = true;
        }
        counts.share_out();
    }

    /// The connections every pool holds now (the metrics).
    pub fn in_use(&self) -> Vec<(Pool, usize)> {
        let counts = self.lock();
        Pool::ALL
            .iter()
            .map(|p| (*p, counts.per_pool[p.index()]))
            .collect()
    }

    /// The share of every pool, for the documentation's table and logs.
    pub fn shares(&self) -> Vec<(Pool, Share)> {
        let counts = self.lock();
        Pool::ALL
            .iter()
            .map(|p| (*p, counts.shares[p.index()]))
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The load balancers whose connections are not counted per address.
    pub fn set_trusted(&self, trusted: Vec<Cidr>) {
        self.lock().trusted = trusted;
    }

    /// Takes a slot of `pool` for a connection from `ip`.
    pub fn try_acquire(
        self: &Arc<Self>,
        ip: IpAddr,
        pool: Pool,
    ) -> Result<ConnectionGuard, LimitHit> {
        let ip = canonical(ip);
        let mut counts = self.lock();
        let share = counts.shares[pool.index()];
        let held = counts.per_pool[pool.index()];
        if counts.total >= counts.max_total {
            return Err(LimitHit::Total);
        }
        if held >= share.cap {
            return Err(LimitHit::ServiceCap);
        }
        if held >= share.guaranteed && counts.shared_used() >= counts.shared_size() {
            return Err(LimitHit::Total);
        }
        let per_ip = !counts.trusted.iter().any(|c| c.contains(ip));
        if per_ip {
            Self::count_per_ip(&mut counts, ip)?;
        }
        counts.total += 1;
        counts.per_pool[pool.index()] += 1;
        Ok(ConnectionGuard {
            limits: Arc::clone(self),
            ip: per_ip.then_some(ip),
            pool,
        })
    }

    fn count_per_ip(counts: &mut Counts, ip: IpAddr) -> Result<(), LimitHit> {
        let max_per_ip = counts.max_per_ip;
        let from_ip = counts.per_ip.entry(ip).or_insert(0);
        if *from_ip >= max_per_ip {
            return Err(LimitHit::PerIp);
        }
        *from_ip += 1;
        Ok(())
    }

    /// Open connections.
    pub fn active(&self) -> usize {
        self.lock().total
    }

    /// Whether so many connections are open that idle clients of `pool` get
    /// short deadlines (Postfix's stress mode): `overload_percent` of the
    /// whole pool, or of this service's cap.
    pub fn overloaded(&self, pool: Pool) -> bool {
        let counts = self.lock();
        let cap = counts.shares[pool.index()].cap;
        let pool_at = (cap * counts.overload_percent).div_ceil(100).max(1);
        counts.total >= counts.overload_at || counts.per_pool[pool.index()] >= pool_at
    }

    /// Waits until no connection is open or `timeout` passed; true if none is open.
    pub fn wait_until_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut counts = self.lock();
        while counts.total > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            counts = match self.closed.wait_timeout(counts, left) {
                Ok((guard, _)) => guard,
                Err(p) => p.into_inner().0,
            };
        }
        true
    }
}

impl ConnectionGuard {
    /// Counts the connection against `client`, the address a load
    /// balancer's PROXY header named, instead of its own.
    pub fn count_as(&mut self, client: IpAddr) -> Result<(), LimitHit> {
        let client = canonical(client);
        let mut counts = self.limits.lock();
        ConnectionLimits::count_per_ip(&mut counts, client)?;
        if let Some(old) = self.ip.replace(client) {
            Self::uncount(&mut counts, old);
        }
        Ok(())
    }

    fn uncount(counts: &mut Counts, ip: IpAddr) {
        if let Some(n) = counts.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&ip);
            }
        }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let mut counts = self.limits.lock();
        counts.total = counts.total.saturating_sub(1);
        let pool = self.pool.index();
        counts.per_pool[pool] = counts.per_pool[pool].saturating_sub(1);
        if let Some(ip) = self.ip {
            Self::uncount(&mut counts, ip);
        }
        self.limits.closed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    impl ConnectionLimits {
        fn try_acquire_journal(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionGuard, LimitHit> {
            self.try_acquire(ip, Pool::Journal)
        }
    }

    #[test]
    fn a_flooded_service_cannot_take_another_services_guaranteed_share() {
        let limits = ConnectionLimits::new(64, 64, 80);
        limits.set_active_pools(&Pool::ALL);
        let shares: std::collections::HashMap<Pool, Share> = limits.shares().into_iter().collect();
        assert_eq!(
            shares[&Pool::Journal],
            Share {
                guaranteed: 16,
                cap: 64
            }
        );
        assert_eq!(
            shares[&Pool::Console],
            Share {
                guaranteed: 2,
                cap: 4
            }
        );
        // The console is capped low: 4 of 64.
        let console: Vec<_> = (0..4)
            .map(|i| {
                limits
                    .try_acquire(ip(&format!("198.51.100.{i}")), Pool::Console)
                    .unwrap()
            })
            .collect();
        assert_eq!(
            limits.try_acquire(ip("198.51.100.9"), Pool::Console).err(),
            Some(LimitHit::ServiceCap)
        );
        // The SMTP proxy floods: it gets its share and the shared remainder.
        let mut proxy = Vec::new();
        while let Ok(g) =
            limits.try_acquire(ip(&format!("192.0.2.{}", proxy.len())), Pool::SmtpProxy)
        {
            proxy.push(g);
        }
        // 64 - (16 + 6 + 6 + 6 + 2 + 2) = 26 shared, + its own 6; the
        // console's two beyond its share came from the shared remainder.
        assert_eq!(proxy.len(), 6 + 26 - 2);
        // Journal SMTP and POP3 still get their guaranteed shares.
        let journal: Vec<_> = (0..16)
            .map(|i| {
                limits
                    .try_acquire(ip(&format!("203.0.113.{i}")), Pool::Journal)
                    .unwrap()
            })
            .collect();
        assert_eq!(
            limits.try_acquire(ip("203.0.113.99"), Pool::Journal).err(),
            Some(LimitHit::Total)
        );
        let pop3: Vec<_> = (0..6)
            .map(|i| {
                limits
                    .try_acquire(ip(&format!("203.0.114.{i}")), Pool::Pop3)
                    .unwrap()
            })
            .collect();
        assert!(limits.active() <= 64);
        // The journal sessions see overload (the whole pool is past 80 %).
        assert!(limits.overloaded(Pool::Journal));
        drop((console, proxy, journal, pop3));
        assert_eq!(limits.active(), 0);
        assert!(!limits.overloaded(Pool::Journal));
    }

    #[test]
    fn a_service_without_a_listener_reserves_nothing() {
        let limits = ConnectionLimits::new(10, 10, 100);
        limits.set_active_pools(&[Pool::Journal]);
        let all: Vec<_> = (0..10)
            .map(|i| {
                limits
                    .try_acquire(ip(&format!("192.0.2.{i}")), Pool::Journal)
                    .unwrap()
            })
            .collect();
        assert_eq!(all.len(), 10);
    }

    #[test]
    fn per_ip_and_total_limits_are_enforced_and_released() {
        let limits = ConnectionLimits::new(3, 2, 100);
        let a1 = limits.try_acquire_journal(ip("192.0.2.1")).unwrap();
        let _a2 = limits.try_acquire_journal(ip("::ffff:192.0.2.1")).unwrap();
        assert_eq!(
            limits.try_acquire_journal(ip("192.0.2.1")).err(),
            Some(LimitHit::PerIp)
        );
        let _b = limits.try_acquire_journal(ip("192.0.2.2")).unwrap();
        assert_eq!(
            limits.try_acquire_journal(ip("192.0.2.3")).err(),
            Some(LimitHit::Total)
        );
        drop(a1);
        let again = limits.try_acquire_journal(ip("192.0.2.1"));
        assert!(again.is_ok());
        assert_eq!(limits.active(), 3);
        drop(again);
        assert_eq!(limits.active(), 2);
    }

    /// A load balancer's connections count per client, once named.
    #[test]
    fn a_trusted_balancer_is_counted_per_client_not_per_itself() {
        let limits = ConnectionLimits::new(10, 2, 100);
        limits.set_trusted(vec!["10.0.0.1/32".parse().unwrap()]);
        let mut guards: Vec<_> = (0..4)
            .map(|_| limits.try_acquire_journal(ip("10.0.0.1")).unwrap())
            .collect();
        assert_eq!(limits.active(), 4, "more than max_per_ip from the balancer");
        guards[0].count_as(ip("192.0.2.5")).unwrap();
        guards[1].count_as(ip("192.0.2.5")).unwrap();
        assert_eq!(guards[2].count_as(ip("192.0.2.5")), Err(LimitHit::PerIp));
        let direct = limits.try_acquire_journal(ip("192.0.2.5"));
        assert_eq!(
            direct.err(),
            Some(LimitHit::PerIp),
            "the client's own count"
        );
        guards.remove(0);
        assert!(
            limits.try_acquire_journal(ip("192.0.2.5")).is_ok(),
            "released on drop"
        );
        drop(guards);
        assert_eq!(limits.active(), 0);
    }

    #[test]
    fn overload_starts_at_the_configured_share_of_the_slots() {
        let limits = ConnectionLimits::new(10, 10, 80);
        let guards: Vec<_> = (0..7)
            .map(|i| {
                limits
                    .try_acquire_journal(ip(&format!("192.0.2.{i}")))
                    .unwrap()
            })
            .collect();
        assert!(!limits.overloaded(Pool::Journal));
        let eighth = limits.try_acquire_journal(ip("192.0.2.99")).unwrap();
        assert!(limits.overloaded(Pool::Journal));
        drop(eighth);
        assert!(!limits.overloaded(Pool::Journal));
        drop(guards);
    }

    #[test]
    fn waiting_for_idle_returns_when_the_last_connection_closes() {
        let limits = ConnectionLimits::new(10, 10, 100);
        let guard = limits.try_acquire_journal(ip("192.0.2.1")).unwrap();
        assert!(!limits.wait_until_idle(Duration::from_millis(10)));
        let handle = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(guard);
        });
        assert!(limits.wait_until_idle(Duration::from_secs(5)));
        handle.join().unwrap();
    }
}
