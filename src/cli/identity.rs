//! Who the CLI works as. Installed, the gateway runs as the `sealpost`
//! user and owns the data directory; an administrator runs the CLI as root.
//! A mailbox root created would be unreadable to the gateway (every delivery
//! to it: `451`), so root works as the data directory's owner instead, the
//! way `sudo -u postfix postmap` is used with Postfix. `serve` run as root on
//! such a directory is refused: the service manager starts it as the owner.

// unsafe_code is denied crate-wide; allowed here: setgroups, setgid and
// setuid for the whole process have no safe wrapper in the standard library
// or rustix.
#![allow(unsafe_code)]

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use super::CliError;

/// The user the process switched to (0: it did not switch).
static SWITCHED_TO: AtomicU32 = AtomicU32::new(0);

/// The data directory's owner when it is not the effective user, which is root.
fn foreign_owner(data_dir: &Path) -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let meta = std::fs::metadata(data_dir).ok()?;
    (meta.uid() != 0).then_some((meta.uid(), meta.gid()))
}

fn check(rc: libc::c_int, what: &str) -> Result<(), CliError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(CliError::failed(format!(
            "cannot work as the data directory's owner ({what}): {}",
            io::Error::last_os_error()
        )))
    }
}

/// Run as root on a data directory another user owns: become that user (its
/// group, no supplementary groups) for the rest of the command.
pub fn become_data_owner(data_dir: &Path) -> Result<(), CliError> {
    let Some((uid, gid)) = foreign_owner(data_dir) else {
        return Ok(());
    };
    // Groups first: after setuid the process may no longer change them.
    // SAFETY: plain system calls on this process's credentials; a null list
    // with length 0 clears the supplementary groups.
    unsafe {
        check(libc::setgroups(0, std::ptr::null()), "setgroups")?;
        check(libc::setgid(gid), "setgid")?;
        check(libc::setuid(uid), "setuid")?;
    }
    SWITCHED_TO.store(uid, Ordering::SeqCst);
    Ok(())
}

/// `serve` as root on a data directory another user owns is refused: files
/// it created would be root's, and the service runs as the owner anyway.
pub fn refuse_root_serve(data_dir: &Path) -> Result<(), CliError> {
    match foreign_owner(data_dir) {
        None => Ok(()),
        Some((uid, _)) => Err(CliError::failed(format!(
            "{}: this data directory belongs to {}; start the gateway as that user \
             (systemctl start sealpost), not as root",
            data_dir.display(),
            user_name(uid)
        ))),
    }
}

/// A hint for an error met after switching: the file may be root's only.
/// Empty when the process did not switch.
pub fn hint() -> String {
    match SWITCHED_TO.load(Ordering::SeqCst) {
        0 => String::new(),
        uid => format!(
            " (run as root, sealpost works as the data directory's owner, {}; \
             give it files and directories that user can use)",
            user_name(uid)
        ),
    }
}

/// The name of user `uid` from the password database, else the number.
fn user_name(uid: u32) -> String {
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: getpwuid_r writes only into `pwd` and `buf`, whose sizes we pass;
    // `found` points at `pwd` or is null.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found);
        if rc == 0
            && !found.is_null()
            && !pwd.pw_name.is_null()
            && let Ok(name) = std::ffi::CStr::from_ptr(pwd.pw_name).to_str()
        {
            return name.to_owned();
        }
    }
    format!("uid {uid}")
}
