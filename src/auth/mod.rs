//! Passwords and logins: the strength rule, generation, the check every
//! credential passes before it is used, failure delays and lockouts
//! ([`throttle`]) and the cap on concurrent key derivations.

pub mod throttle;

use std::sync::{Condvar, Mutex, MutexGuard};

pub use throttle::{Attempt, Lockout, LockoutEntry, LoginThrottle, Subject, ThrottleSettings};

use crate::crypto::{self, Password};

/// Shortest password a user may choose.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// Symbols of generated passwords: lowercase letters and digits without the
/// look-alikes 0/o, 1/l; 32 symbols, so each carries 5 bits.
const ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";
/// 7 groups of 4 symbols: 28 * 5 = 140 bits.
const GROUPS: usize = 7;
const GROUP_LEN: usize = 4;

/// Bits of randomness in a generated password.
pub const GENERATED_BITS: usize = GROUPS * GROUP_LEN * 5;

/// A fresh random password such as `k7dm-2xqa-…` (140 bits).
pub fn generate_password() -> Password {
    let mut text = String::with_capacity(GROUPS * (GROUP_LEN + 1));
    for group in 0..GROUPS {
        if group > 0 {
            text.push('-');
        }
        for _ in 0..GROUP_LEN {
            text.push(ALPHABET[crypto::random_below(ALPHABET.len() as u32) as usize] as char);
        }
    }
    Password::new(text)
}

/// Checks a password chosen by a user: at least 12 characters and zxcvbn
/// score 4. `context` holds words the password must not lean on (mailbox
/// name, id). The error says why, in a sentence.
pub fn check_password_strength(password: &Password, context: &[&str]) -> Result<(), String> {
    let text = password.expose();
    if text.chars().count() < MIN_PASSWORD_CHARS {
        return Err(format!(
            "the password is too short: use at least {MIN_PASSWORD_CHARS} characters"
        ));
    }
    if has_control_characters(text) {
        return Err("the password must not contain control characters".into());
    }
    let entropy = zxcvbn::zxcvbn(text, context);
    if entropy.score() == zxcvbn::Score::Four {
        return Ok(());
    }
    let mut reason = String::from("the password is too easy to guess");
    if let Some(feedback) = entropy.feedback() {
        if let Some(warning) = feedback.warning() {
            reason.push_str(&format!(": {warning}"));
        }
        for suggestion in feedback.suggestions() {
            reason.push_str(&format!(" {suggestion}"));
        }
    }
    Err(reason)
}

/// Whether `text` holds a control character (CR, LF, NUL, DEL, C1 controls,
/// …). No credential or login name containing one is ever used: it could
/// end a protocol line early and smuggle a command to an upstream server.
pub fn has_control_characters(text: &str) -> bool {
    text.chars().any(char::is_control)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Lets at most `max` key derivations run at once; the others wait in line.
/// Each derivation takes `kdf.memlimit_bytes`, so this bounds login memory.
/// The gateway has one, shared by every service (POP3 logins, the console)
/// and kept across reloads like the connection counts: a reload changes its
/// `max`, never the derivations it counts.
pub struct KdfSlots {
    state: Mutex<SlotState>,
    freed: Condvar,
}

#[derive(Debug, Default)]
struct SlotState {
    max: usize,
    busy: usize,
    peak: usize,
}

/// What [`KdfSlots`] reports: `limits.max_concurrent_kdf`, the derivations
/// running now, and the most that ever ran at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KdfUse {
    /// The cap in force.
    pub max: usize,
    /// Running now.
    pub in_flight: usize,
    /// The most that ran at once since the gateway started.
    pub peak: usize,
}

impl KdfSlots {
    /// Room for `max` concurrent derivations.
    pub fn new(max: usize) -> KdfSlots {
        KdfSlots {
            state: Mutex::new(SlotState {
                max: max.max(1),
                ..SlotState::default()
            }),
            freed: Condvar::new(),
        }
    }

    /// A new cap (a reloaded configuration); derivations running go on.
    pub fn set_max(&self, max: usize) {
        lock(&self.state).max = max.max(1);
        self.freed.notify_all();
    }

    /// The cap, the derivations running and the most that ever ran at once.
    pub fn usage(&self) -> KdfUse {
        let state = lock(&self.state);
        KdfUse {
            max: state.max,
            in_flight: state.busy,
            peak: state.peak,
        }
    }

    /// Runs `derive` once a slot is free.
    pub fn run<T>(&self, derive: impl FnOnce() -> T) -> T {
        let mut state = lock(&self.state);
        while state.busy >= state.max {
            state = self.freed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state.busy += 1;
        state.peak = state.peak.max(state.busy);
        drop(state);
        struct Release<'a>(&'a KdfSlots);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                lock(&self.0.state).busy -= 1;
                self.0.freed.notify_one();
            }
        }
        let _release = Release(self);
        derive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pw(s: &str) -> Password {
        Password::new(s.to_string())
    }

    #[test]
    fn generated_passwords_carry_at_least_128_bits() {
        const { assert!(GENERATED_BITS >= 128) };
        let a = generate_password();
        let b = generate_password();
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.expose().len(), 34);
        assert!(
            a.expose()
                .bytes()
                .all(|c| c == b'-' || ALPHABET.contains(&c))
        );
    }

    #[test]
    fn generated_passwords_pass_the_strength_rule() {
        for _ in 0..5 {
            assert_eq!(check_password_strength(&generate_password(), &[]), Ok(()));
        }
    }

    #[test]
    fn short_passwords_are_refused_with_the_reason() {
        let err = check_password_strength(&pw("Xk9#mQ2!"), &[]).unwrap_err();
        assert!(err.contains("at least 12 characters"), "{err}");
    }

    #[test]
    fn long_but_guessable_passwords_are_refused() {
        let err = check_password_strength(&pw("password1234"), &[]).unwrap_err();
        assert!(err.contains("too easy to guess"), "{err}");
        let err = check_password_strength(&pw("qwertyuiopasdfgh"), &[]).unwrap_err();
        assert!(err.contains("too easy to guess"), "{err}");
        let err = check_password_strength(&pw("AcmeJournal2026"), &["AcmeJournal"]).unwrap_err();
        assert!(err.contains("too easy to guess"), "{err}");
    }

    #[test]
    fn no_more_than_max_derivations_run_at_once() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::time::{Duration, Instant};
        let slots = Arc::new(KdfSlots::new(2));
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (slots, running, peak) = (slots.clone(), running.clone(), peak.clone());
                std::thread::spawn(move || {
                    slots.run(|| {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        // Stay inside until a second derivation has joined (or
                        // a while has passed), so the peak does not depend on
                        // how the threads happen to be scheduled.
                        let deadline = Instant::now() + Duration::from_secs(2);
                        while peak.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
                            std::thread::yield_now();
                        }
                        running.fetch_sub(1, Ordering::SeqCst);
                    })
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2);
        assert_eq!(
            slots.usage(),
            KdfUse {
                max: 2,
                in_flight: 0,
                peak: 2
            }
        );
        // A reload lowers the cap; the count goes on.
        slots.set_max(1);
        assert_eq!(slots.usage().max, 1);
        assert_eq!(slots.usage().peak, 2);
    }

    #[test]
    fn a_strong_chosen_password_is_accepted() {
        assert_eq!(
            check_password_strength(&pw("correct-Horse-battery-staple-94!"), &[]),
            Ok(())
        );
    }
}
