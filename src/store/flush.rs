//! Group commit by file system: concurrent writers write and rename their
//! files without flushing them, then wait for one `syncfs(2)` of the file
//! system that holds them. Nobody is told "durable" before a flush that
//! began after their file was in place has succeeded, and a burst of N
//! deliveries costs a handful of flushes instead of 2N (an `fdatasync` per
//! file and a directory fsync). On an SD card, where each flush costs
//! 5–30 ms and the device does one at a time, that is the throughput.
//!
//! Why one `syncfs` is enough on ext4, btrfs and f2fs: it writes back every
//! dirty page and inode of the file system and then calls its `sync_fs`
//! with wait set, which commits the ext4 journal, the btrfs transaction and
//! the f2fs checkpoint. A rename is a metadata change in that commit, so
//! the file's data and its name in `messages/` are durable together.
//!
//! Why a failed flush is trusted exactly (the rules of `syncfs(2)` since
//! Linux 5.8, with the file system's own `sync_fs` errors since 5.17): a
//! writeback error is reported once per open file description, and a page
//! that failed may be dropped, so a later `syncfs` can return 0 although
//! the data is gone. Hence
//! - one long-lived descriptor per file system (never reopened, so no error
//!   is missed between two descriptors), kept for the life of the process;
//! - every flush is numbered, and a writer remembers how many had
//!   completed when its write began: if any flush that completed after that
//!   failed, its write may be lost, and it fails (the sender gets 451 and
//!   sends again), whatever later flushes say. No retry is ever trusted.
//!
//! Where one flush cannot be trusted to reach the disk (FUSE, NFS, CIFS,
//! 9p, Ceph: `syncfs` does not reach the servers; only virtiofs passes it
//! through in mainline Linux, and it shows as FUSE), and where the
//! administrator asks for it (`store.flush: "per_file"`, for a data
//! directory on a disk shared with heavy unrelated writers, whose data a
//! `syncfs` would flush too), each file is flushed on its own: `fdatasync`
//! and the grouped directory fsync, as before.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};

/// How writes are made durable (`store.flush`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlushPolicy {
    /// One `syncfs` for every writer waiting, where the file system
    /// honours it; per file elsewhere.
    #[default]
    Grouped,
    /// Every file on its own (`fdatasync` and a directory fsync).
    PerFile,
}

/// The policy of this process, set once at start.
static POLICY: Mutex<FlushPolicy> = Mutex::new(FlushPolicy::Grouped);

/// Sets how this process makes writes durable.
pub fn set_policy(policy: FlushPolicy) {
    *locked(&POLICY) = policy;
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// File systems whose `syncfs` does not reach the storage (statfs(2)
/// `f_type`): FUSE (GlusterFS, virtiofs), NFS, CIFS and SMB2, 9p, Ceph.
const REMOTE: [i64; 6] = [
    0x6573_5546, // FUSE_SUPER_MAGIC
    0x6969,      // NFS_SUPER_MAGIC
    0xFF53_4D42, // CIFS_MAGIC_NUMBER
    0xFE53_4D42, // SMB2_MAGIC_NUMBER
    0x0102_1997, // V9FS_MAGIC
    0x00C3_6400, // CEPH_SUPER_MAGIC
];

/// One file system's flusher: its descriptor and the numbered flushes.
struct Flusher {
    fd: File,
    state: Mutex<State>,
    done: Condvar,
}

#[derive(Default)]
struct State {
    /// Flushes started so far (the running one included).
    started: u64,
    /// Flushes completed so far.
    completed: u64,
    /// The number of the last flush that failed (0: none).
    last_failed: u64,
    /// Its error, for the log.
    error: Option<String>,
    running: bool,
}

/// How a writer's file is made durable, found from the directory it
/// writes in.
pub enum Durability {
    /// Flush the file and its directory on their own.
    PerFile,
    /// Wait for a grouped flush of the file system; remembers how many
    /// flushes had completed when the write began.
    Grouped(Ticket),
}

/// A writer's place among the grouped flushes of one file system.
pub struct Ticket {
    flusher: Arc<Flusher>,
    began_after: u64,
}

/// By device: the file system's flusher, or `None` where it is flushed per file.
static FLUSHERS: LazyLock<Mutex<HashMap<u64, Option<Arc<Flusher>>>>> =
    LazyLock::new(Mutex::default);

/// Call before writing into `dir`: says how the write will be made
/// durable, and for a grouped flush starts the writer's ticket.
pub fn begin(dir: &Path) -> io::Result<Durability> {
    if *locked(&POLICY) == FlushPolicy::PerFile {
        return Ok(Durability::PerFile);
    }
    let device = std::fs::metadata(dir)?.dev();
    let mut all = locked(&FLUSHERS);
    let flusher = match all.get(&device) {
        Some(Some(f)) => Arc::clone(f),
        Some(None) => return Ok(Durability::PerFile),
        None => {
            let fd = File::open(dir)?;
            let kind = rustix::fs::fstatfs(&fd)?.f_type as i64;
            if REMOTE.contains(&kind) {
                all.insert(device, None);
                return Ok(Durability::PerFile);
            }
            let flusher = Arc::new(Flusher {
                fd,
                state: Mutex::default(),
                done: Condvar::new(),
            });
            all.insert(device, Some(Arc::clone(&flusher)));
            flusher
        }
    };
    drop(all);
    let began_after = locked(&flusher.state).completed;
    Ok(Durability::Grouped(Ticket {
        flusher,
        began_after,
    }))
}

/// Whether the file system holding `dir` is flushed per file (a network
/// or FUSE file system, or `flush: "per_file"`).
pub fn flushed_per_file(dir: &Path) -> io::Result<bool> {
    Ok(matches!(begin(dir)?, Durability::PerFile))
}

/// How writes under `dir` are made durable, in words for the log.
pub fn describe(dir: &Path) -> String {
    let policy = *locked(&POLICY);
    match (policy, flushed_per_file(dir)) {
        (FlushPolicy::PerFile, _) => "file by file (flush: \"per_file\")".into(),
        (_, Ok(false)) => "by one flush of the file system for all deliveries waiting".into(),
        (_, Ok(true)) => {
            "file by file (a network or FUSE file system, whose flush does not reach the storage)"
                .into()
        }
        (_, Err(e)) => format!("file by file ({e})"),
    }
}

/// A writer whose file is in place: the flush it needs is known.
pub struct InPlace {
    ticket: Ticket,
    /// The first flush that starts after the file was in place.
    needed: u64,
}

impl Ticket {
    /// Call once the file is written and in place: from now on, the next
    /// flush to start covers it (a flush running now began before).
    pub fn in_place(self) -> InPlace {
        let needed = locked(&self.flusher.state).started + 1;
        InPlace {
            ticket: self,
            needed,
        }
    }

    /// [`Ticket::in_place`], then [`InPlace::wait`].
    pub fn wait(self) -> io::Result<()> {
        self.in_place().wait()
    }
}

impl InPlace {
    /// Returns when a flush that began after the file was in place has
    /// succeeded, or fails if any flush that completed since the write
    /// began failed. The first waiter flushes at once; those who come
    /// during its flush share the next one. Several files put in place
    /// before the first of them waits share one flush.
    pub fn wait(self) -> io::Result<()> {
        let Ticket {
            flusher,
            began_after,
        } = self.ticket;
        let needed = self.needed;
        let mut state = locked(&flusher.state);
        loop {
            if state.completed >= needed {
                return match state.last_failed > began_after {
                    false => Ok(()),
                    true => Err(io::Error::other(format!(
                        "a flush of the file system failed after this write began: {}",
                        state.error.as_deref().unwrap_or("unknown error")
                    ))),
                };
            }
            if !state.running {
                state.running = true;
                state.started += 1;
                let number = state.started;
                drop(state);
                let result = rustix::fs::syncfs(&flusher.fd);
                state = locked(&flusher.state);
                state.running = false;
                state.completed = number;
                if let Err(e) = result {
                    state.last_failed = number;
                    state.error = Some(io::Error::from(e).to_string());
                }
                flusher.done.notify_all();
                continue;
            }
            state = flusher
                .done
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_share_flushes_and_each_waits_for_one_that_began_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let Durability::Grouped(first) = begin(dir.path()).unwrap() else {
            eprintln!("SKIPPED: the test directory is on a file system flushed per file");
            return;
        };
        first.wait().unwrap();
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let path = dir.path().to_path_buf();
                std::thread::spawn(move || match begin(&path).unwrap() {
                    Durability::Grouped(t) => t.wait(),
                    Durability::PerFile => Ok(()),
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
    }

    #[test]
    fn a_failed_flush_fails_every_write_that_began_before_it_returned() {
        let flusher = Arc::new(Flusher {
            fd: File::open(".").unwrap(),
            state: Mutex::new(State {
                started: 3,
                completed: 3,
                last_failed: 3,
                error: Some("EIO".into()),
                running: false,
            }),
            done: Condvar::new(),
        });
        // Began before flush 3 returned (2 had completed): lost for good,
        // although the flush it now waits for succeeds.
        let before = Ticket {
            flusher: Arc::clone(&flusher),
            began_after: 2,
        };
        assert!(before.wait().is_err());
        // Began after it returned: the next good flush covers it.
        let after = Ticket {
            flusher: Arc::clone(&flusher),
            began_after: 3,
        };
        after.wait().unwrap();
        assert_eq!(
            locked(&flusher.state).completed,
            5,
            "each waited for a flush of its own"
        );
    }
}
