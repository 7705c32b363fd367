//! Name lookups under a deadline. `getaddrinfo(3)` cannot be cancelled and
//! takes as long as the resolver configuration says (glibc: 5 s per try,
//! twice, per name server), so a proxy login naming a host whose name
//! server never answers would hold its session past every deadline. Each
//! lookup runs on a thread of its own; the session waits until its deadline
//! and then abandons it with a temporary error. The abandoned thread ends
//! when the resolver gives up, and until then it counts against
//! [`MAX_LOOKUPS`]: beyond that many lookups at once, a new one fails at
//! once, so a flood of unresolvable names cannot pile up threads.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

/// Lookups that may run at once, abandoned ones included.
pub const MAX_LOOKUPS: usize = 16;

static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// Why a lookup gave no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    /// The deadline passed first.
    TimedOut,
    /// [`MAX_LOOKUPS`] lookups are running already.
    Busy,
    /// The lookup thread could not be started.
    NoThread(String),
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LookupError::TimedOut => f.write_str("the name lookup did not finish in time"),
            LookupError::Busy => write!(f, "{MAX_LOOKUPS} name lookups are running already"),
            LookupError::NoThread(e) => write!(f, "cannot start a name lookup: {e}"),
        }
    }
}

/// Runs `lookup` on a thread of its own and waits for it until `deadline`.
pub fn with_deadline<T: Send + 'static>(
    deadline: Instant,
    lookup: impl FnOnce() -> T + Send + 'static,
) -> Result<T, LookupError> {
    if RUNNING.fetch_add(1, Ordering::SeqCst) >= MAX_LOOKUPS {
        RUNNING.fetch_sub(1, Ordering::SeqCst);
        return Err(LookupError::Busy);
    }
    let (tx, rx) = mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("lookup".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            let answer = lookup();
            RUNNING.fetch_sub(1, Ordering::SeqCst);
            // The session may have given up on it: nobody to tell then.
            let _ = tx.send(answer);
        });
    if let Err(e) = spawned {
        RUNNING.fetch_sub(1, Ordering::SeqCst);
        return Err(LookupError::NoThread(e.to_string()));
    }
    let left = deadline.saturating_duration_since(Instant::now());
    rx.recv_timeout(left).map_err(|_| LookupError::TimedOut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_lookup_past_its_deadline_is_abandoned_and_a_quick_one_answers() {
        let started = Instant::now();
        let slow = with_deadline(Instant::now() + Duration::from_millis(50), || {
            std::thread::sleep(Duration::from_millis(400));
            1
        });
        assert_eq!(slow, Err(LookupError::TimedOut));
        assert!(started.elapsed() < Duration::from_millis(400));
        assert_eq!(
            with_deadline(Instant::now() + Duration::from_secs(5), || 2),
            Ok(2)
        );
    }
}
