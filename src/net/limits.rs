//! Connection counting: over all listeners and per client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::cidr::{Cidr, canonical};

#[derive(Default)]
struct Counts {
    /// The limits live under the same lock as the counts: a reload changes them.
    /// Load balancers (`haproxy_trusted_networks`) are not counted per
    /// address: their clients are, once the PROXY header has named them.
    trusted: Vec<Cidr>,
    max_total: usize,
    max_per_ip: usize,
    overload_at: usize,
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Which limit a new connection hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    /// `limits.max_connections`
    Total,
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
        counts.overload_at = (max_total * overload_percent).div_ceil(100).max(1);
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The load balancers whose connections are not counted per address.
    pub fn set_trusted(&self, trusted: Vec<Cidr>) {
        self.lock().trusted = trusted;
    }

    /// Takes a slot for a connection from `ip`.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionGuard, LimitHit> {
        let ip = canonical(ip);
        let mut counts = self.lock();
        if counts.total >= counts.max_total {
            return Err(LimitHit::Total);
        }
        let per_ip = !counts.trusted.iter().any(|c| c.contains(ip));
        if per_ip {
            Self::count_per_ip(&mut counts, ip)?;
        }
        counts.total += 1;
        Ok(ConnectionGuard {
            limits: Arc::clone(self),
            ip: per_ip.then_some(ip),
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

    /// Whether so many connections are open that idle clients get short
    /// deadlines (Postfix's stress mode).
    pub fn overloaded(&self) -> bool {
        let counts = self.lock();
        counts.total >= counts.overload_at
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

    #[test]
    fn per_ip_and_total_limits_are_enforced_and_released() {
        let limits = ConnectionLimits::new(3, 2, 100);
        let a1 = limits.try_acquire(ip("192.0.2.1")).unwrap();
        let _a2 = limits.try_acquire(ip("::ffff:192.0.2.1")).unwrap();
        assert_eq!(
            limits.try_acquire(ip("192.0.2.1")).err(),
            Some(LimitHit::PerIp)
        );
        let _b = limits.try_acquire(ip("192.0.2.2")).unwrap();
        assert_eq!(
            limits.try_acquire(ip("192.0.2.3")).err(),
            Some(LimitHit::Total)
        );
        drop(a1);
        let again = limits.try_acquire(ip("192.0.2.1"));
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
            .map(|_| limits.try_acquire(ip("10.0.0.1")).unwrap())
            .collect();
        assert_eq!(limits.active(), 4, "more than max_per_ip from the balancer");
        guards[0].count_as(ip("192.0.2.5")).unwrap();
        guards[1].count_as(ip("192.0.2.5")).unwrap();
        assert_eq!(guards[2].count_as(ip("192.0.2.5")), Err(LimitHit::PerIp));
        let direct = limits.try_acquire(ip("192.0.2.5"));
        assert_eq!(
            direct.err(),
            Some(LimitHit::PerIp),
            "the client's own count"
        );
        guards.remove(0);
        assert!(
            limits.try_acquire(ip("192.0.2.5")).is_ok(),
            "released on drop"
        );
        drop(guards);
        assert_eq!(limits.active(), 0);
    }

    #[test]
    fn overload_starts_at_the_configured_share_of_the_slots() {
        let limits = ConnectionLimits::new(10, 10, 80);
        let guards: Vec<_> = (0..7)
            .map(|i| limits.try_acquire(ip(&format!("192.0.2.{i}"))).unwrap())
            .collect();
        assert!(!limits.overloaded());
        let eighth = limits.try_acquire(ip("192.0.2.99")).unwrap();
        assert!(limits.overloaded());
        drop(eighth);
        assert!(!limits.overloaded());
        drop(guards);
    }

    #[test]
    fn waiting_for_idle_returns_when_the_last_connection_closes() {
        let limits = ConnectionLimits::new(10, 10, 100);
        let guard = limits.try_acquire(ip("192.0.2.1")).unwrap();
        assert!(!limits.wait_until_idle(Duration::from_millis(10)));
        let handle = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(guard);
        });
        assert!(limits.wait_until_idle(Duration::from_secs(5)));
        handle.join().unwrap();
    }
}
