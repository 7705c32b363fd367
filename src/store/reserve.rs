//! The disk reserve, as Postfix's `queue_minfree`: below
//! `limits.min_free_bytes` (or `limits.min_free_percent` of the file
//! system, whichever is more) free on the data directory's file system, no
//! new mail is taken in. Senders get a temporary error (`452 4.3.1`,
//! RFC 3463 §3.4 "mail system full") and retry, rather than a `451` on a
//! disk that filled in the middle of a message; the archiver goes on
//! collecting and deleting, which frees space; above the reserve again,
//! intake resumes by itself.
//!
//! The free space is read with `statvfs` (the blocks available to an
//! unprivileged user, which the service user is) at every check: one system
//! call per MAIL or RCPT costs less than caching it would explain, and a
//! sender is never let in on a reading from before the disk filled.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use log::{info, warn};

/// The space of the data directory's file system, and the reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Bytes available to the service user.
    pub free: u64,
    /// The file system's size in bytes.
    pub total: u64,
    /// The reserve in bytes.
    pub reserve: u64,
}

impl Space {
    /// Whether intake stops.
    pub fn below(&self) -> bool {
        self.free < self.reserve
    }
}

/// The reserve of one data directory, shared by every service.
#[derive(Debug)]
pub struct DiskReserve {
    dir: PathBuf,
    min_free_bytes: AtomicU64,
    min_free_percent: AtomicU64,
    /// Below at the last reading (for the log's WARN and INFO lines).
    was_below: AtomicBool,
}

/// Reads the space of `dir`'s file system with the reserve it implies.
pub fn measure(dir: &Path, min_free_bytes: u64, min_free_percent: u64) -> std::io::Result<Space> {
    let vfs = rustix::fs::statvfs(dir)?;
    let unit = vfs.f_frsize.max(1);
    let total = vfs.f_blocks.saturating_mul(unit);
    let by_percent = total / 100 * min_free_percent.min(100);
    Ok(Space {
        free: vfs.f_bavail.saturating_mul(unit),
        total,
        reserve: min_free_bytes.max(by_percent),
    })
}

impl DiskReserve {
    /// The reserve for `dir` (the data directory).
    pub fn new(dir: &Path, min_free_bytes: u64, min_free_percent: u64) -> DiskReserve {
        DiskReserve {
            dir: dir.to_path_buf(),
            min_free_bytes: AtomicU64::new(min_free_bytes),
            min_free_percent: AtomicU64::new(min_free_percent),
            was_below: AtomicBool::new(false),
        }
    }

    /// New settings (a reload); used from the next reading on.
    pub fn set(&self, min_free_bytes: u64, min_free_percent: u64) {
        self.min_free_bytes.store(min_free_bytes, Ordering::Relaxed);
        self.min_free_percent
            .store(min_free_percent, Ordering::Relaxed);
    }

    /// The space now. `None` when it cannot be read: then nothing is
    /// refused for the reserve, and a write that fails still fails on its
    /// own.
    pub fn space(&self) -> Option<Space> {
        let space = measure(
            &self.dir,
            self.min_free_bytes.load(Ordering::Relaxed),
            self.min_free_percent.load(Ordering::Relaxed),
        )
        .map_err(|e| log::debug!("disk reserve: {}: {e}", self.dir.display()))
        .ok()?;
        let below = space.below();
        if self.was_below.swap(below, Ordering::Relaxed) != below {
            if below {
                warn!(
                    "disk: {} free on the file system of {}, below the reserve of {}: new mail is refused with a temporary error until the archiver collects or space is freed",
                    human(space.free),
                    self.dir.display(),
                    human(space.reserve)
                );
            } else {
                info!(
                    "disk: {} free, above the reserve of {} again: mail is taken in",
                    human(space.free),
                    human(space.reserve)
                );
            }
        }
        Some(space)
    }

    /// The space when it is below the reserve (intake stops).
    pub fn below(&self) -> Option<Space> {
        self.space().filter(Space::below)
    }
}

/// Bytes as an administrator reads them (MiB with one decimal).
pub fn human(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_the_larger_of_bytes_and_percent() {
        let dir = tempfile::tempdir().unwrap();
        let space = measure(dir.path(), 1, 0).unwrap();
        assert!(space.total > 0 && space.free <= space.total);
        assert_eq!(space.reserve, 1);
        assert!(!space.below());
        let by_percent = measure(dir.path(), 1, 100).unwrap();
        assert_eq!(by_percent.reserve, by_percent.total / 100 * 100);
        assert!(by_percent.below() || by_percent.free == by_percent.total);
        let reserve = DiskReserve::new(dir.path(), u64::MAX, 0);
        assert!(reserve.below().is_some(), "nothing is ever enough");
        reserve.set(0, 0);
        assert!(reserve.below().is_none(), "a reload takes effect at once");
    }

    #[test]
    fn an_unreadable_directory_refuses_nothing() {
        let reserve = DiskReserve::new(Path::new("/nonexistent/sealpost"), u64::MAX, 0);
        assert_eq!(reserve.space(), None);
        assert!(reserve.below().is_none());
    }
}
