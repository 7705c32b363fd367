//! Fault: the gateway runs out of file descriptors. Connections that arrive
//! meanwhile wait in the listen backlog, and are served as soon as
//! descriptors are free again, without needing another client to connect
//! (mio's readiness is edge-triggered, so the acceptor retries on a timer).

// System calls the standard library does not offer (signals, pipes,
// namespaces, resource limits), each block with its SAFETY comment.
#![allow(unsafe_code)]

mod support;

use std::io::Read;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::time::Duration;

use serde_json::json;
use support::gateway::Gateway;
use support::{Sandbox, wait_until};

/// The client ports the gateway logged as connected.
fn accepted_ports(gw: &Gateway) -> Vec<u16> {
    gw.log()
        .lines()
        .filter(|l| l.contains(": connected"))
        .filter_map(|l| {
            let client = l
                .split_whitespace()
                .find_map(|w| w.strip_prefix("client="))?;
            Some(client.parse::<std::net::SocketAddr>().ok()?.port())
        })
        .collect()
}

#[test]
fn connections_waiting_while_descriptors_ran_out_are_served_when_they_return() {
    let sb = Sandbox::for_gateway("fd-limit", json!({ "limits": { "max_connections": 1000 } }));
    let gw = Gateway::start_with(&sb, |command| {
        // A connection that has sent nothing yet is logged at DEBUG.
        command.env("RUST_LOG", "info,sealpost=debug");
        // SAFETY: setrlimit in the child between fork and exec; it touches
        // nothing but the child's own limits.
        unsafe {
            command.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: 40,
                    rlim_max: 40,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    });
    let addr = gw.addr("smtp.listen[0]");
    let baseline_threads = gw.threads();
    let clients: Vec<TcpStream> = (0..40).map(|_| TcpStream::connect(addr).unwrap()).collect();
    gw.wait_for_log("accept failed", Duration::from_secs(10));
    // Every accepted connection has a session thread, which logs it first.
    wait_until("every accepted connection is logged", || {
        accepted_ports(&gw).len() as u64 == gw.threads() - baseline_threads
    });
    let accepted = accepted_ports(&gw);
    assert!(
        !accepted.is_empty() && accepted.len() < clients.len(),
        "{accepted:?}"
    );
    let (served, waiting): (Vec<TcpStream>, Vec<TcpStream>) = clients
        .into_iter()
        .partition(|c| accepted.contains(&c.local_addr().unwrap().port()));
    // Free the descriptors; no new client connects from here on.
    drop(served);
    for mut c in waiting {
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut greeting = [0u8; 4];
        c.read_exact(&mut greeting)
            .expect("a waiting connection was never served");
        assert_eq!(&greeting, b"220 ");
    }
}
