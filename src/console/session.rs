//! Console sessions: a random token in a cookie, a CSRF token per session,
//! an idle expiry, and an end when the administrator password changes.
//!
//! Kept here rather than taken from a crate: the session crates (tower-sessions,
//! actix-session) belong to async web frameworks, and what the console needs
//! is a map of some sixty entries under a mutex.
//!
//! Only a hash of each token is kept, so a look-up's timing says nothing
//! about the tokens held; CSRF tokens are compared in constant time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::crypto::{self, Password};
use crate::store::MailboxId;

/// Bytes of randomness in a session or CSRF token (shown as hex).
const TOKEN_BYTES: usize = 32;
/// Most sessions held at once; opening one more ends the idlest.
const MAX_SESSIONS: usize = 64;

struct Session {
    csrf: String,
    last_seen: Instant,
    /// Which administrator password it was opened under.
    password: [u8; 32],
    /// A generated password waiting to be shown once (Post/Redirect/Get:
    /// the POST that made it redirects, the page it leads to shows it and
    /// clears it; no URL ever carries it).
    once: Option<ShownOnce>,
}

/// A generated mailbox password, kept server-side until shown once.
pub struct ShownOnce {
    /// The mailbox it belongs to.
    pub mailbox: MailboxId,
    /// What happened ("The mailbox was created.").
    pub heading: String,
    /// The password; zeroized when dropped.
    pub password: Password,
}

/// The open sessions; shared by every console connection and kept across
/// configuration reloads.
#[derive(Default)]
pub struct Sessions {
    open: Mutex<HashMap<[u8; 32], Session>>,
}

/// A session that may go on.
pub struct Active {
    /// What every form of the session must send back.
    pub csrf: String,
    key: [u8; 32],
}

impl Active {
    /// Whether a submitted form carries this session's CSRF token.
    pub fn csrf_matches(&self, submitted: &str) -> bool {
        crypto::constant_time_eq(self.csrf.as_bytes(), submitted.as_bytes())
    }
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a session under the administrator password hash `password_hash`;
    /// returns its token, for the cookie.
    pub fn open(&self, password_hash: &str) -> String {
        let token = crypto::random_hex(TOKEN_BYTES);
        let mut open = self.lock();
        if open.len() >= MAX_SESSIONS
            && let Some(idlest) = open
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| *k)
        {
            open.remove(&idlest);
        }
        open.insert(
            crypto::sha256(token.as_bytes()),
            Session {
                csrf: crypto::random_hex(TOKEN_BYTES),
                last_seen: Instant::now(),
                password: crypto::sha256(password_hash.as_bytes()),
                once: None,
            },
        );
        token
    }

    /// The session of `token` if it is open, was used within `idle` and was
    /// opened under the current password; using it restarts its idle time.
    /// A session that fails any of these is ended.
    pub fn resume(&self, token: &str, password_hash: &str, idle: Duration) -> Option<Active> {
        let key = crypto::sha256(token.as_bytes());
        let mut open = self.lock();
        let session = open.get_mut(&key)?;
        let current = crypto::sha256(password_hash.as_bytes());
        if session.last_seen.elapsed() > idle || session.password != current {
            open.remove(&key);
            return None;
        }
        session.last_seen = Instant::now();
        Some(Active {
            csrf: session.csrf.clone(),
            key,
        })
    }

    /// Keeps a generated password for the session's next page of `once.mailbox`.
    pub fn keep_once(&self, active: &Active, once: ShownOnce) {
        if let Some(session) = self.lock().get_mut(&active.key) {
            session.once = Some(once);
        }
    }

    /// Takes the password kept for `mailbox`, if any: it is shown once.
    pub fn take_once(&self, active: &Active, mailbox: &MailboxId) -> Option<ShownOnce> {
        let mut open = self.lock();
        let session = open.get_mut(&active.key)?;
        if session.once.as_ref().is_some_and(|o| &o.mailbox == mailbox) {
            session.once.take()
        } else {
            None
        }
    }

    /// Ends the session of `token` (logout).
    pub fn close(&self, token: &str) {
        self.lock().remove(&crypto::sha256(token.as_bytes()));
    }

    /// A fresh random token that is not a session: for the login form's
    /// double-submitted CSRF cookie.
    pub fn login_token() -> String {
        crypto::random_hex(TOKEN_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_session_lives_until_logout_and_only_with_its_own_token() {
        let sessions = Sessions::default();
        let token = sessions.open("$argon2id$one");
        assert_eq!(token.len(), 64);
        let active = sessions.resume(&token, "$argon2id$one", HOUR).unwrap();
        assert!(active.csrf_matches(&active.csrf.clone()));
        assert!(!active.csrf_matches(""));
        assert!(!active.csrf_matches(&token));
        assert!(
            sessions
                .resume("0".repeat(64).as_str(), "$argon2id$one", HOUR)
                .is_none()
        );
        sessions.close(&token);
        assert!(sessions.resume(&token, "$argon2id$one", HOUR).is_none());
    }

    #[test]
    fn an_idle_session_and_one_from_an_old_password_end() {
        let sessions = Sessions::default();
        let token = sessions.open("$argon2id$one");
        std::thread::sleep(Duration::from_millis(30));
        assert!(
            sessions
                .resume(&token, "$argon2id$one", Duration::from_millis(10))
                .is_none()
        );
        // Ended for good, even with patience now.
        assert!(sessions.resume(&token, "$argon2id$one", HOUR).is_none());
        let token = sessions.open("$argon2id$one");
        assert!(sessions.resume(&token, "$argon2id$two", HOUR).is_none());
        assert!(sessions.resume(&token, "$argon2id$one", HOUR).is_none());
    }

    #[test]
    fn the_number_of_sessions_is_bounded() {
        let sessions = Sessions::default();
        let first = sessions.open("h");
        for _ in 0..MAX_SESSIONS {
            sessions.open("h");
        }
        assert_eq!(sessions.lock().len(), MAX_SESSIONS);
        assert!(sessions.resume(&first, "h", HOUR).is_none());
    }
}
