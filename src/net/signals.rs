//! SIGTERM/SIGINT stop the gateway, SIGHUP reloads the configuration. The
//! signals are blocked in every thread and taken by one thread with
//! `sigwait`, so no code runs in signal-handler context. (Kept by hand:
//! `signal-hook` would need a handler and a self-pipe for the same thing.)

// unsafe_code is denied crate-wide; allowed here: sigwait and the signal
// mask have no safe wrapper in the standard library or rustix.
#![allow(unsafe_code)]

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use log::{info, warn};
use mio::Waker;

use super::acceptor::Control;

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset only write into the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        set
    }
}

/// Blocks the signals in the calling thread; threads started afterwards
/// inherit the mask. Call before starting any other thread.
pub fn block() -> io::Result<()> {
    let set = signal_set();
    // SAFETY: pthread_sigmask reads the set and changes this thread's mask.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Starts the thread that turns signals into `control` flags and wakes the acceptor.
/// A second SIGTERM/SIGINT during the shutdown grace period exits at once.
pub fn spawn_handler(control: Arc<Control>, waker: Arc<Waker>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("signals".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let set = signal_set();
            loop {
                let mut sig: libc::c_int = 0;
                // SAFETY: sigwait reads the set and writes the signal number.
                if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                    continue;
                }
                match sig {
                    libc::SIGHUP => {
                        control.reload.store(true, Ordering::SeqCst);
                    }
                    _ if control.shutdown.load(Ordering::SeqCst) => {
                        warn!("second stop signal: exiting without waiting for sessions");
                        std::process::exit(1);
                    }
                    _ => {
                        info!(
                            "stop signal: no new connections; open sessions get the grace period"
                        );
                        control.shutdown.store(true, Ordering::SeqCst);
                    }
                }
                let _ = waker.wake();
            }
        })
        .map(|_| ())
}
