//! SIGTERM/SIGINT stop the gateway, SIGHUP reloads the configuration.
//! signal-hook-mio registers the three in the acceptor's own `Poll`: the
//! handler (signal-hook's, installed with `SA_RESTART`) only writes to a
//! pipe, and the acceptor thread reads what arrived between two polls. No
//! signal thread, no blocked mask for child processes to inherit, no
//! `unsafe` of ours.
//!
//! This replaces a `sigwait` thread kept by hand: it needed the signals
//! blocked in every thread, three `unsafe` blocks, and a `Waker` to reach
//! the acceptor, which signal-hook-mio makes unnecessary.

use std::io;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use log::{info, warn};
use mio::{Interest, Registry, Token};
use signal_hook_mio::v1_0::Signals;

use super::acceptor::Control;
use super::limits::ConnectionLimits;

/// The stop and reload signals, registered in a `Poll`.
pub struct StopAndReload(Signals);

impl StopAndReload {
    /// Installs the handlers and registers the signals under `token`.
    pub fn register(registry: &Registry, token: Token) -> io::Result<StopAndReload> {
        let mut signals = Signals::new([libc::SIGTERM, libc::SIGINT, libc::SIGHUP])?;
        registry.register(&mut signals, token, Interest::READABLE)?;
        Ok(StopAndReload(signals))
    }

    /// Turns the signals that arrived into `control`'s flags. A second
    /// SIGTERM/SIGINT once the stop has begun exits at once.
    pub fn take(&mut self, control: &Control) {
        for signal in self.0.pending() {
            match signal {
                libc::SIGHUP => control.reload.store(true, Ordering::SeqCst),
                _ if control.shutdown.load(Ordering::SeqCst) => second_stop(),
                _ => {
                    info!("stop signal: no new connections; open sessions get the grace period");
                    control.shutdown.store(true, Ordering::SeqCst);
                }
            }
        }
    }

    /// Waits up to `grace` for the open sessions to end, as the drain
    /// after a stop does; a stop signal meanwhile exits at once.
    pub fn drain(mut self, limits: &ConnectionLimits, grace: Duration) -> bool {
        let deadline = Instant::now() + grace;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if limits.wait_until_idle(left.min(Duration::from_millis(100))) {
                return true;
            }
            if self.0.pending().any(|s| s != libc::SIGHUP) {
                second_stop();
            }
            if left.is_zero() {
                return false;
            }
        }
    }
}

fn second_stop() -> ! {
    warn!("second stop signal: exiting without waiting for sessions");
    std::process::exit(1);
}
