//! The session a log line belongs to. Each session runs on a thread of its
//! own, so the acceptor tags the thread when it starts the session and the
//! log format (in `main.rs`) writes the tag on every line the thread logs:
//! `session=<id> client=<address>:<port>`. An administrator can then follow
//! one connection with `journalctl -u sealpost | grep session=<id>`.

use std::cell::Cell;
use std::fmt;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The tag of one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTag {
    /// Unique within a run, and starting at a random value so that ids of
    /// two runs (a restart) rarely meet in one log.
    pub id: u64,
    /// The client.
    pub client: SocketAddr,
}

impl fmt::Display for SessionTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "session={:08x} client={}", self.id, self.client)
    }
}

thread_local! {
    static CURRENT: Cell<Option<SessionTag>> = const { Cell::new(None) };
}

fn next_id() -> u64 {
    static NEXT: OnceLock<AtomicU64> = OnceLock::new();
    let next = NEXT.get_or_init(|| {
        let mut seed = [0u8; 4];
        crate::crypto::random_bytes(&mut seed);
        AtomicU64::new(u64::from(u32::from_le_bytes(seed)))
    });
    next.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff
}

/// Tags the calling thread with a new session for `client`; returns the tag.
pub fn enter(client: SocketAddr) -> SessionTag {
    let tag = SessionTag {
        id: next_id(),
        client,
    };
    CURRENT.with(|c| c.set(Some(tag)));
    tag
}

/// The client of the calling thread's session is `client` from now on
/// (the one a load balancer's PROXY header named).
pub fn set_client(client: SocketAddr) {
    CURRENT.with(|c| {
        if let Some(tag) = c.get() {
            c.set(Some(SessionTag { client, ..tag }));
        }
    });
}

/// The calling thread's session, if it runs one.
pub fn current() -> Option<SessionTag> {
    CURRENT.with(Cell::get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_carries_its_own_session_and_ids_differ() {
        let client: SocketAddr = "192.0.2.7:40001".parse().unwrap();
        assert_eq!(current(), None);
        let first = enter(client);
        assert_eq!(current(), Some(first));
        let other = std::thread::spawn(move || {
            assert_eq!(current(), None);
            enter(client)
        })
        .join()
        .unwrap();
        assert_ne!(first.id, other.id);
        assert_eq!(current(), Some(first));
        let shown = first.to_string();
        assert!(shown.starts_with("session="), "{shown}");
        assert!(shown.ends_with(" client=192.0.2.7:40001"), "{shown}");
    }
}
