//! The filesystem steps that make a write survive a crash: fsync the file,
//! rename it into place, fsync the directory. Plus advisory locks that the
//! kernel drops when the holder dies.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard, PoisonError};

/// Flushes a directory's entries (new, renamed or removed files) to disk.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Group commit: one directory fsync covers every rename that finished
/// before it started. Concurrent deliveries into one mailbox each take a
/// ticket after their rename; a caller returns only once an fsync that began
/// after its ticket has succeeded, so nobody is told "durable" early, but a
/// burst of N deliveries costs far fewer than N fsyncs.
#[derive(Default)]
struct DirSync {
    state: Mutex<SyncState>,
    done: Condvar,
}

#[derive(Default)]
struct SyncState {
    /// Tickets handed out so far.
    issued: u64,
    /// Every ticket up to this one is durable.
    synced: u64,
    /// An fsync is under way.
    running: bool,
}

static DIR_SYNCS: LazyLock<Mutex<HashMap<PathBuf, Arc<DirSync>>>> = LazyLock::new(Mutex::default);

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Like [`sync_dir`], for a directory that many threads rename into at once.
pub fn sync_dir_grouped(dir: &Path) -> io::Result<()> {
    let syncer = locked(&DIR_SYNCS)
        .entry(dir.to_path_buf())
        .or_default()
        .clone();
    let result = take_part_in_sync(&syncer, dir);
    let mut all = locked(&DIR_SYNCS);
    // Only the registry and this caller hold it: nobody is waiting.
    if Arc::strong_count(&syncer) == 2 {
        all.remove(dir);
    }
    result
}

fn take_part_in_sync(syncer: &DirSync, dir: &Path) -> io::Result<()> {
    let mut state = locked(&syncer.state);
    state.issued += 1;
    let ticket = state.issued;
    loop {
        if state.synced >= ticket {
            return Ok(());
        }
        if !state.running {
            state.running = true;
            let covers = state.issued;
            drop(state);
            let result = sync_dir(dir);
            let mut state = locked(&syncer.state);
            state.running = false;
            if result.is_ok() {
                state.synced = state.synced.max(covers);
            }
            // On failure the waiters wake, find their ticket not synced and
            // try an fsync of their own, which reports its own error.
            syncer.done.notify_all();
            return result;
        }
        state = syncer
            .done
            .wait(state)
            .unwrap_or_else(PoisonError::into_inner);
    }
}

/// Creates a directory readable only by its owner; an existing one is fine.
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(path) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        other => other,
    }
}

/// Creates `path` (which must not exist) readable only by its owner.
pub fn create_new_private_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Replaces `dir/name` with `bytes` so that a reader sees the old or the new
/// content, never a mixture, even across a crash.
pub fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.new"));
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut file = create_new_private_file(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, dir.join(name))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// A small state file (JSON: the ACME renewer's, the alerts', the TSA's)
/// read back; its default when it is absent or cannot be read.
pub fn read_json<T: serde::de::DeserializeOwned + Default>(path: &Path) -> T {
    fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Writes a small state file (JSON) whole and durably ([`replace_file`]),
/// its directory created private first; the error names the file.
pub fn write_json<T: serde::Serialize>(dir: &Path, name: &str, value: &T) -> Result<(), String> {
    let path = dir.join(name);
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| e.to_string())?;
    create_private_dir(dir)
        .and_then(|()| replace_file(dir, name, &bytes))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Opens (creating, 0600) a file that exists to be locked.
pub fn open_lock_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
}

/// Takes an exclusive advisory lock without waiting; `Ok(false)` if another
/// open file description holds it. On Linux the standard library takes it
/// with `flock(2)`, which the kernel releases when the holder dies.
pub fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(fs::TryLockError::WouldBlock) => Ok(false),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Removes the files in `dir` that no live writer holds locked: what a crashed
/// process left behind. Files being written by a live process are kept.
pub fn remove_unlocked_files(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        let Ok(file) = File::open(&path) else {
            continue;
        };
        if path.is_file() && try_lock_exclusive(&file)? {
            fs::remove_file(&path)?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouped_directory_syncs_answer_every_caller_and_forget_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        std::thread::scope(|scope| {
            for _ in 0..16 {
                scope.spawn(|| {
                    for _ in 0..20 {
                        sync_dir_grouped(&dir).unwrap();
                    }
                });
            }
        });
        assert!(!locked(&DIR_SYNCS).contains_key(&dir));
        let missing = dir.join("missing");
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| assert!(sync_dir_grouped(&missing).is_err()));
            }
        });
    }

    #[test]
    fn replace_file_leaves_only_the_new_content() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        replace_file(dir, "a.json", b"one").unwrap();
        replace_file(dir, "a.json", b"two").unwrap();
        assert_eq!(fs::read(dir.join("a.json")).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir).unwrap().count(), 1);
    }

    #[test]
    fn only_unlocked_leftovers_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let held = create_new_private_file(&dir.join("live")).unwrap();
        assert!(try_lock_exclusive(&held).unwrap());
        drop(create_new_private_file(&dir.join("dead")).unwrap());
        assert_eq!(remove_unlocked_files(dir).unwrap(), 1);
        assert!(dir.join("live").exists());
        assert!(!dir.join("dead").exists());
    }
}
