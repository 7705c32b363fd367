//! Listening sockets handed over by whoever started the gateway: systemd's
//! socket activation (a `.socket` unit; sd_listen_fds(3): `LISTEN_PID`
//! names this process, `LISTEN_FDS` counts the descriptors from 3 on), or
//! a test that bound its ports first so that no other process can take
//! them. A listener of the configuration whose address is exactly that of
//! a passed socket uses it instead of binding; a passed socket no listener
//! names is closed, with a warning.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use log::warn;
use socket2::{Socket, Type};

/// Set once the passed descriptors were taken: they are owned once.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// The passed sockets not claimed yet, by the address each is bound to.
pub struct Inherited(Vec<(SocketAddr, TcpListener)>);

impl Inherited {
    /// The listening TCP sockets passed to this process; empty when none
    /// were, or when they were taken before.
    pub fn take() -> Inherited {
        if TAKEN.swap(true, Ordering::SeqCst) {
            return Inherited(Vec::new());
        }
        let fds = match sd_notify::listen_fds() {
            Ok(fds) => fds,
            Err(e) => {
                warn!("ignoring the sockets passed by the service manager: {e}");
                return Inherited(Vec::new());
            }
        };
        let mut sockets = Vec::new();
        for fd in fds {
            // SAFETY: sd_listen_fds(3) hands these descriptors to this
            // process, which owns them from exec on; nothing else in it
            // takes them (`TAKEN` lets this run once), so each becomes
            // owned exactly once.
            #[allow(unsafe_code)]
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            let socket = Socket::from(owned);
            let addr = socket.local_addr().ok().and_then(|a| a.as_socket());
            match (addr, socket.r#type()) {
                (Some(addr), Ok(Type::STREAM)) => sockets.push((addr, socket.into())),
                _ => warn!(
                    "descriptor {fd} passed by the service manager is not a TCP socket; closed"
                ),
            }
        }
        Inherited(sockets)
    }

    /// The passed socket bound to exactly `addr`, if there is one.
    pub fn claim(&mut self, addr: SocketAddr) -> Option<TcpListener> {
        let i = self.0.iter().position(|(a, _)| *a == addr)?;
        Some(self.0.swap_remove(i).1)
    }

    /// The addresses of the passed sockets nobody claimed (they close now).
    pub fn unclaimed(self) -> Vec<SocketAddr> {
        self.0.into_iter().map(|(a, _)| a).collect()
    }
}
