//! Failed-login accounting for one service: a delay on every failure, and a
//! lockout of the client address and of the mailbox after too many.
//!
//! A login first *reserves* its attempt ([`LoginThrottle::begin`]); the
//! reservation counts as a possible failure until its outcome is known. So
//! the check and the reservation are one atomic step: thirty wrong passwords
//! sent in parallel from one address are checked `max_failures` at a time,
//! never thirty at once (the key derivation that checks them is queued, and
//! the old check-then-count let every queued attempt through).
//!
//! An attempt that would go past the limit while others are still in flight
//! waits for them (bounded), instead of being refused outright: if they
//! succeed, the count is cleared and it proceeds, so an archiver logging in
//! to many mailboxes at once from one address is never locked out by its own
//! good logins.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use crate::net::cidr::{Cidr, canonical};
use crate::store::MailboxId;

/// At most this many addresses and mailboxes are tracked, so a flood cannot
/// exhaust memory. When the table is full, entries that are not locked out
/// make room (see [`make_room`]); a lockout is never dropped to make room.
const MAX_TRACKED: usize = 10_000;

/// How long an attempt waits for the attempts in flight ahead of it.
const MAX_QUEUE_WAIT: Duration = Duration::from_secs(60);

/// The rules of one service's throttle.
#[derive(Debug, Clone)]
pub struct ThrottleSettings {
    /// Failures (and attempts in flight) before a lockout.
    pub max_failures: u64,
    /// How long a lockout lasts; older failures are forgotten.
    pub lockout: Duration,
    /// Every failure is answered after this delay.
    pub delay: Duration,
    /// Addresses never locked out as addresses (the mailbox lockout still applies).
    pub exempt: Vec<Cidr>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u64,
    last_failure: Option<Instant>,
    in_flight: u64,
}

impl Entry {
    const NEW: Entry = Entry {
        failures: 0,
        last_failure: None,
        in_flight: 0,
    };

    /// Failures that still count (within the lockout window).
    fn live_failures(&self, window: Duration) -> u64 {
        match self.last_failure {
            Some(t) if t.elapsed() < window => self.failures,
            _ => 0,
        }
    }

    fn is_idle(&self, window: Duration) -> bool {
        self.in_flight == 0 && self.live_failures(window) == 0
    }
}

/// Who a lockout is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    /// A client address.
    Address(IpAddr),
    /// A mailbox, whatever address the attempts come from.
    Mailbox(MailboxId),
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Address(ip) => write!(f, "address {ip}"),
            Subject::Mailbox(id) => write!(f, "mailbox {id}"),
        }
    }
}

/// Why a login is not even attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lockout {
    /// Too many failures from this address.
    Address,
    /// Too many failures against this mailbox.
    Mailbox,
}

/// A current lockout, for `sealpost lockouts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockoutEntry {
    /// Address or mailbox.
    pub subject: Subject,
    /// Failures counted.
    pub failures: u64,
    /// Time until it ends by itself.
    pub remaining: Duration,
}

/// Counts failed logins per client address and per mailbox for one service.
pub struct LoginThrottle {
    /// Replaced as a whole when the configuration is reloaded; the counts stay.
    settings: RwLock<Arc<ThrottleSettings>>,
    state: Mutex<HashMap<Subject, Entry>>,
    changed: Condvar,
    /// Logins that succeeded and failed since the start (the metrics).
    outcomes: [std::sync::atomic::AtomicU64; 2],
}

/// A reserved login attempt. Report its outcome with [`Attempt::failed`],
/// [`Attempt::unavailable`] or [`Attempt::succeeded`]; dropped without one
/// (the store could not be read, say) it counts as nothing.
#[must_use = "an attempt counts as in flight until its outcome is reported"]
pub struct Attempt {
    throttle: Arc<LoginThrottle>,
    subjects: Vec<Subject>,
    open: bool,
}

impl LoginThrottle {
    /// A throttle with these rules.
    pub fn new(settings: ThrottleSettings) -> LoginThrottle {
        LoginThrottle {
            settings: RwLock::new(Arc::new(settings)),
            state: Mutex::new(HashMap::new()),
            changed: Condvar::new(),
            outcomes: Default::default(),
        }
    }

    /// Logins that (succeeded, failed) since the gateway started.
    pub fn outcomes(&self) -> (u64, u64) {
        let load = |i: usize| self.outcomes[i].load(std::sync::atomic::Ordering::Relaxed);
        (load(0), load(1))
    }

    fn count(&self, failed: bool) {
        self.outcomes[usize::from(failed)].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The rules in force.
    pub fn settings(&self) -> Arc<ThrottleSettings> {
        Arc::clone(&self.settings.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// New rules (a reloaded configuration); counted failures are kept.
    pub fn set_settings(&self, settings: ThrottleSettings) {
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(settings);
        self.changed.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Subject, Entry>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn subjects(&self, ip: IpAddr, mailbox: Option<&MailboxId>) -> Vec<Subject> {
        let ip = canonical(ip);
        let mut subjects = Vec::with_capacity(2);
        if !self.settings().exempt.iter().any(|c| c.contains(ip)) {
            subjects.push(Subject::Address(ip));
        }
        subjects.extend(mailbox.cloned().map(Subject::Mailbox));
        subjects
    }

    /// Reserves a login attempt from `ip` for `mailbox`, or says why none may
    /// be made now. Waits (bounded) while attempts in flight could still
    /// push the count to the limit.
    pub fn begin(
        self: &Arc<Self>,
        ip: IpAddr,
        mailbox: Option<&MailboxId>,
    ) -> Result<Attempt, Lockout> {
        let subjects = self.subjects(ip, mailbox);
        let max = self.settings().max_failures;
        let window = self.settings().lockout;
        let give_up = Instant::now() + MAX_QUEUE_WAIT;
        let mut state = self.lock();
        loop {
            let mut must_wait = false;
            for subject in &subjects {
                let entry = state.get(subject).copied().unwrap_or(Entry::NEW);
                let failures = entry.live_failures(window);
                if failures >= max {
                    return Err(match subject {
                        Subject::Address(_) => Lockout::Address,
                        Subject::Mailbox(_) => Lockout::Mailbox,
                    });
                }
                must_wait |= failures + entry.in_flight >= max;
            }
            if !must_wait {
                break;
            }
            let left = give_up.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // Still undecided after a minute: answer as a lockout would.
                return Err(match subjects.first() {
                    Some(Subject::Address(_)) => Lockout::Address,
                    _ => Lockout::Mailbox,
                });
            }
            state = match self.changed.wait_timeout(state, left) {
                Ok((guard, _)) => guard,
                Err(p) => p.into_inner().0,
            };
        }
        let needed = subjects.iter().filter(|s| !state.contains_key(s)).count();
        if !make_room(&mut state, window, max, needed) {
            // Every tracked entry is a lockout or an attempt in flight: a
            // flood from many addresses. A new address waits until one
            // ends; an exempt one (the archiver) is never refused, and
            // grows the table past its bound by its mailbox entry alone.
            if subjects.iter().any(|s| matches!(s, Subject::Address(_))) {
                return Err(Lockout::Address);
            }
        }
        for subject in &subjects {
            state.entry(subject.clone()).or_insert(Entry::NEW).in_flight += 1;
        }
        Ok(Attempt {
            throttle: Arc::clone(self),
            subjects,
            open: true,
        })
    }

    /// The failure delay.
    pub fn delay(&self) -> Duration {
        self.settings().delay
    }

    /// Current lockouts, longest remaining first.
    pub fn lockouts(&self) -> Vec<LockoutEntry> {
        let settings = self.settings();
        let window = settings.lockout;
        let mut out: Vec<LockoutEntry> = self
            .lock()
            .iter()
            .filter(|(_, e)| e.live_failures(window) >= settings.max_failures)
            .map(|(subject, e)| LockoutEntry {
                subject: subject.clone(),
                failures: e.failures,
                remaining: e
                    .last_failure
                    .map(|t| window.saturating_sub(t.elapsed()))
                    .unwrap_or_default(),
            })
            .collect();
        out.sort_by(|a, b| {
            b.remaining
                .cmp(&a.remaining)
                .then(a.subject.cmp(&b.subject))
        });
        out
    }

    /// Forgets the failures of `subject` (every subject when `None`);
    /// returns how many lockouts that ended.
    pub fn clear(&self, subject: Option<&Subject>) -> usize {
        let window = self.settings().lockout;
        let max = self.settings().max_failures;
        let mut state = self.lock();
        let mut ended = 0;
        for (s, entry) in state.iter_mut() {
            if subject.is_none_or(|wanted| wanted == s) {
                if entry.live_failures(window) >= max {
                    ended += 1;
                }
                entry.failures = 0;
                entry.last_failure = None;
            }
        }
        state.retain(|_, e| !e.is_idle(window));
        drop(state);
        self.changed.notify_all();
        ended
    }

    fn settle(&self, subjects: &[Subject], outcome: impl Fn(&Subject, &mut Entry)) {
        let mut state = self.lock();
        for subject in subjects {
            if let Some(entry) = state.get_mut(subject) {
                entry.in_flight = entry.in_flight.saturating_sub(1);
                outcome(subject, entry);
                if entry.is_idle(self.settings().lockout) {
                    state.remove(subject);
                }
            }
        }
        drop(state);
        self.changed.notify_all();
    }
}

/// Makes room for `needed` new entries and says whether there is room.
/// Idle entries go first; then entries that are neither locked out nor in
/// flight, those with the fewest failures first and, among equals, the
/// oldest. An active lockout is never evicted: a flood of new addresses
/// must not unlock an address that is locked out.
fn make_room(
    state: &mut HashMap<Subject, Entry>,
    window: Duration,
    max: u64,
    needed: usize,
) -> bool {
    if state.len() + needed <= MAX_TRACKED {
        return true;
    }
    state.retain(|_, e| !e.is_idle(window));
    while state.len() + needed > MAX_TRACKED {
        let victim = state
            .iter()
            .filter(|(_, e)| e.in_flight == 0 && e.live_failures(window) < max)
            .min_by_key(|(_, e)| (e.live_failures(window), e.last_failure))
            .map(|(k, _)| k.clone());
        match victim {
            Some(k) => {
                state.remove(&k);
            }
            None => return false,
        }
    }
    true
}

fn add_failure(entry: &mut Entry, window: Duration) {
    entry.failures = entry.live_failures(window) + 1;
    entry.last_failure = Some(Instant::now());
}

impl Attempt {
    /// A wrong password (or an unknown mailbox, a refused upstream login):
    /// counts against the address and the mailbox. Returns the delay the
    /// answer must wait.
    pub fn failed(mut self) -> Duration {
        self.open = false;
        self.throttle.count(true);
        let window = self.throttle.settings().lockout;
        self.throttle
            .settle(&self.subjects, |_, e| add_failure(e, window));
        self.throttle.settings().delay
    }

    /// A temporary failure the client caused by where it pointed us (an
    /// unreachable upstream): counts against the address only, so the proxy
    /// cannot be used as a fast port scanner. Returns the delay.
    pub fn unavailable(mut self) -> Duration {
        self.open = false;
        let window = self.throttle.settings().lockout;
        self.throttle.settle(&self.subjects, |s, e| {
            if matches!(s, Subject::Address(_)) {
                add_failure(e, window);
            }
        });
        self.throttle.settings().delay
    }

    /// A good login: forgets the failures of the address and the mailbox.
    pub fn succeeded(mut self) {
        self.open = false;
        self.throttle.count(false);
        self.throttle.settle(&self.subjects, |_, e| {
            e.failures = 0;
            e.last_failure = None;
        });
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if self.open {
            self.throttle.settle(&self.subjects, |_, _| {});
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn id() -> MailboxId {
        "mbx-0123456789abcdef0123456789abcdef".parse().unwrap()
    }

    fn throttle(max: u64, lockout: Duration) -> Arc<LoginThrottle> {
        Arc::new(LoginThrottle::new(ThrottleSettings {
            max_failures: max,
            lockout,
            delay: Duration::ZERO,
            exempt: Vec::new(),
        }))
    }

    fn fail(t: &Arc<LoginThrottle>, from: &str, mailbox: Option<&MailboxId>) {
        let _ = t.begin(ip(from), mailbox).unwrap().failed();
    }

    #[test]
    fn an_address_is_locked_out_after_max_failures_and_freed_by_time() {
        let t = throttle(3, Duration::from_millis(300));
        fail(&t, "192.0.2.1", None);
        fail(&t, "192.0.2.1", None);
        assert!(t.begin(ip("192.0.2.1"), None).is_ok());
        fail(&t, "::ffff:192.0.2.1", None);
        assert_eq!(t.begin(ip("192.0.2.1"), None).err(), Some(Lockout::Address));
        assert!(t.begin(ip("192.0.2.2"), None).is_ok());
        let deadline = Instant::now() + Duration::from_secs(5);
        while t.begin(ip("192.0.2.1"), None).is_err() {
            assert!(Instant::now() < deadline, "the lockout never ended");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_mailbox_is_locked_out_whatever_address_the_failures_come_from() {
        let t = throttle(2, Duration::from_secs(60));
        fail(&t, "192.0.2.1", Some(&id()));
        fail(&t, "192.0.2.2", Some(&id()));
        assert_eq!(
            t.begin(ip("192.0.2.3"), Some(&id())).err(),
            Some(Lockout::Mailbox)
        );
        assert!(t.begin(ip("192.0.2.3"), None).is_ok());
    }

    #[test]
    fn a_good_login_clears_the_count() {
        let t = throttle(2, Duration::from_secs(60));
        fail(&t, "192.0.2.1", Some(&id()));
        t.begin(ip("192.0.2.1"), Some(&id())).unwrap().succeeded();
        fail(&t, "192.0.2.1", Some(&id()));
        assert!(t.begin(ip("192.0.2.1"), Some(&id())).is_ok());
    }

    #[test]
    fn failures_report_the_configured_delay() {
        let t = Arc::new(LoginThrottle::new(ThrottleSettings {
            max_failures: 10,
            lockout: Duration::from_secs(60),
            delay: Duration::from_millis(100),
            exempt: Vec::new(),
        }));
        let delay = t.begin(ip("192.0.2.1"), None).unwrap().failed();
        assert_eq!(delay, Duration::from_millis(100));
    }

    #[test]
    fn parallel_attempts_are_checked_no_more_than_max_at_a_time() {
        // Thirty wrong passwords at once from one address: only `max` are
        // ever let through to the (slow) password check.
        let t = throttle(5, Duration::from_secs(60));
        let checked = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..30)
            .map(|_| {
                let (t, checked) = (Arc::clone(&t), Arc::clone(&checked));
                std::thread::spawn(move || {
                    if let Ok(attempt) = t.begin(ip("192.0.2.9"), None) {
                        checked.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(20));
                        let _ = attempt.failed();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(checked.load(Ordering::SeqCst), 5);
        assert_eq!(t.begin(ip("192.0.2.9"), None).err(), Some(Lockout::Address));
    }

    #[test]
    fn parallel_good_logins_from_one_address_all_get_through() {
        let t = throttle(2, Duration::from_secs(60));
        let handles: Vec<_> = (0..12)
            .map(|_| {
                let t = Arc::clone(&t);
                std::thread::spawn(move || {
                    let attempt = t
                        .begin(ip("192.0.2.5"), None)
                        .map_err(|e| format!("{e:?}"))?;
                    std::thread::sleep(Duration::from_millis(10));
                    attempt.succeeded();
                    Ok::<(), String>(())
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), Ok(()));
        }
    }

    #[test]
    fn an_exempt_address_is_never_locked_out_but_the_mailbox_still_is() {
        let t = Arc::new(LoginThrottle::new(ThrottleSettings {
            max_failures: 2,
            lockout: Duration::from_secs(60),
            delay: Duration::ZERO,
            exempt: vec!["192.0.2.0/24".parse().unwrap()],
        }));
        for _ in 0..5 {
            fail(&t, "192.0.2.7", None);
        }
        assert!(t.begin(ip("192.0.2.7"), None).is_ok());
        fail(&t, "192.0.2.7", Some(&id()));
        fail(&t, "192.0.2.7", Some(&id()));
        assert_eq!(
            t.begin(ip("192.0.2.7"), Some(&id())).err(),
            Some(Lockout::Mailbox)
        );
    }

    #[test]
    fn an_unavailable_upstream_counts_against_the_address_only() {
        let t = throttle(2, Duration::from_secs(60));
        for _ in 0..2 {
            let _ = t.begin(ip("192.0.2.1"), Some(&id())).unwrap().unavailable();
        }
        assert_eq!(
            t.begin(ip("192.0.2.1"), Some(&id())).err(),
            Some(Lockout::Address)
        );
        assert!(t.begin(ip("192.0.2.2"), Some(&id())).is_ok());
    }

    #[test]
    fn an_attempt_without_outcome_counts_as_nothing() {
        let t = throttle(1, Duration::from_secs(60));
        drop(t.begin(ip("192.0.2.1"), Some(&id())).unwrap());
        assert!(t.begin(ip("192.0.2.1"), Some(&id())).is_ok());
        assert!(t.lockouts().is_empty());
    }

    #[test]
    fn lockouts_are_listed_and_can_be_cleared_one_or_all() {
        let t = throttle(1, Duration::from_secs(60));
        fail(&t, "192.0.2.1", Some(&id()));
        fail(&t, "192.0.2.2", None);
        let listed: Vec<Subject> = t.lockouts().into_iter().map(|l| l.subject).collect();
        assert_eq!(listed.len(), 3, "{listed:?}");
        assert!(listed.contains(&Subject::Mailbox(id())));
        assert_eq!(t.clear(Some(&Subject::Address(ip("192.0.2.2")))), 1);
        assert!(t.begin(ip("192.0.2.2"), None).is_ok());
        assert_eq!(t.begin(ip("192.0.2.1"), None).err(), Some(Lockout::Address));
        assert_eq!(t.clear(None), 2);
        assert!(t.begin(ip("192.0.2.1"), Some(&id())).is_ok());
    }

    #[test]
    fn a_flood_from_many_addresses_never_unlocks_a_locked_out_address() {
        let t = throttle(3, Duration::from_secs(60));
        for _ in 0..3 {
            fail(&t, "198.51.100.7", None);
        }
        for i in 0..(MAX_TRACKED as u32 + 500) {
            let from = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            if let Ok(attempt) = t.begin(from, None) {
                let _ = attempt.failed();
            }
        }
        assert!(t.lock().len() <= MAX_TRACKED);
        assert_eq!(
            t.begin(ip("198.51.100.7"), None).err(),
            Some(Lockout::Address)
        );
    }

    #[test]
    fn a_table_full_of_lockouts_refuses_new_addresses_but_never_an_exempt_one() {
        let t = Arc::new(LoginThrottle::new(ThrottleSettings {
            max_failures: 1,
            lockout: Duration::from_secs(60),
            delay: Duration::ZERO,
            exempt: vec!["192.0.2.0/24".parse().unwrap()],
        }));
        for i in 0..MAX_TRACKED as u32 {
            let from = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = t.begin(from, None).unwrap().failed();
        }
        assert_eq!(t.lockouts().len(), MAX_TRACKED);
        assert_eq!(
            t.begin(ip("203.0.113.1"), None).err(),
            Some(Lockout::Address)
        );
        // The archiver, exempt by address, still logs in, with its mailbox.
        t.begin(ip("192.0.2.10"), Some(&id())).unwrap().succeeded();
        t.begin(ip("192.0.2.10"), None).unwrap().succeeded();
        // Every lockout is still there.
        assert_eq!(t.lockouts().len(), MAX_TRACKED);
    }

    #[test]
    fn the_tracker_stays_bounded_under_a_flood() {
        let t = throttle(3, Duration::from_secs(60));
        for i in 0..(MAX_TRACKED as u32 + 50) {
            let from = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = t.begin(from, None).unwrap().failed();
        }
        assert!(t.lock().len() <= MAX_TRACKED);
    }
}
