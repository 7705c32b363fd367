//! A network namespace of a test's own in which only loopback exists: for
//! third-party programs that may try to phone home (a browser). Nothing in
//! it can reach beyond loopback, so no packet can leave the machine; and a
//! program's `connect()` and `sendto()` calls can be traced (strace), so a
//! test can also fail when the program merely *tried* to reach elsewhere.

// System calls the standard library does not offer (signals, pipes,
// namespaces, resource limits), each block with its SAFETY comment.
#![allow(unsafe_code)]
#![allow(dead_code)]

use std::fs::{self, File};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{getrandom, run, stderr};

/// A namespace `sealpost-lo-<random>` with `lo` up and nothing else,
/// deleted on drop.
pub struct LoopbackOnly {
    /// Its name, for `ip netns exec`.
    pub name: String,
    handle: Option<File>,
}

fn ip(args: &[&str]) {
    let out = run(Command::new("ip").args(args));
    assert!(out.status.success(), "ip {args:?}: {}", stderr(&out));
}

impl LoopbackOnly {
    /// Creates the namespace (needs root and iproute2).
    pub fn new() -> LoopbackOnly {
        let mut bytes = [0u8; 4];
        getrandom(&mut bytes);
        let name = format!("sealpost-lo-{:08x}", u32::from_le_bytes(bytes));
        ip(&["netns", "add", &name]);
        // Deleted on drop from here on, even if a step below fails.
        let mut netns = LoopbackOnly { name, handle: None };
        ip(&["-n", &netns.name, "link", "set", "lo", "up"]);
        netns.handle =
            Some(File::open(format!("/run/netns/{}", netns.name)).expect("the namespace's handle"));
        netns
    }

    /// `program`, to be run inside the namespace (`ip netns exec`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// Moves the calling thread into the namespace: the sockets it opens
    /// from now on are the namespace's (a network namespace is per thread).
    pub fn enter_this_thread(&self) {
        let fd = self
            .handle
            .as_ref()
            .expect("the namespace is open")
            .as_raw_fd();
        // SAFETY: setns(2) on a descriptor this struct keeps open.
        assert_eq!(unsafe { libc::setns(fd, libc::CLONE_NEWNET) }, 0);
    }

    /// Makes `command` start inside the namespace (setns before exec).
    pub fn enter(&self, command: &mut Command) {
        let fd: RawFd = self
            .handle
            .as_ref()
            .expect("the namespace is open")
            .as_raw_fd();
        // SAFETY: setns(2) on a descriptor this struct keeps open; only
        // async-signal-safe calls run between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
}

impl Drop for LoopbackOnly {
    fn drop(&mut self) {
        let _ = run(Command::new("ip").args(["netns", "del", &self.name]));
    }
}

/// A script in `dir` that runs `program` under strace, following every
/// process it starts and recording each `connect`, `sendto` and `sendmsg`
/// to `<dir>/<name>.trace`; returns (script, trace file).
pub fn traced(dir: &Path, name: &str, program: &Path, strace: &Path) -> (PathBuf, PathBuf) {
    let script = dir.join(format!("{name}-traced"));
    let trace = dir.join(format!("{name}.trace"));
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec '{}' -f -qq -yy --seccomp-bpf -e trace=connect,sendto,sendmsg,sendmmsg -o '{}' '{}' \"$@\"\n",
            strace.display(),
            trace.display(),
            program.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    (script, trace)
}

/// Chromium's host resolver learns whether IPv6 is usable by connecting a
/// UDP socket to this address and reading the source address the kernel
/// chose; a UDP `connect()` sends no packet, and no stock flag turns the
/// probe off. That one call is allowed; any other is not.
const IPV6_ROUTE_PROBE: &str = "2001:4860:4860::8888";

/// The traced calls that addressed anything but loopback: an IPv4 or IPv6
/// destination other than 127.0.0.0/8, ::1 and ::ffff:127.x (Unix and
/// netlink sockets are not network destinations), TCP or UDP, whether or
/// not it could have succeeded (in the namespace it cannot).
pub fn beyond_loopback(trace: &Path) -> Vec<String> {
    let text = fs::read_to_string(trace).unwrap_or_default();
    text.lines()
        .filter(|line| {
            let v4 = line
                .split("inet_addr(\"")
                .skip(1)
                .map(|rest| rest.split('"').next().unwrap_or(""));
            let v6 = line
                .split("inet_pton(AF_INET6, \"")
                .skip(1)
                .map(|rest| rest.split('"').next().unwrap_or(""));
            let probe = line.contains(" connect(")
                && line.contains("<UDPv6:")
                && line.contains(&format!("\"{IPV6_ROUTE_PROBE}\""));
            !probe
                && v4.chain(v6).any(|addr| {
                    !(addr.starts_with("127.") || addr == "::1" || addr.starts_with("::ffff:127."))
                })
        })
        .map(str::to_owned)
        .collect()
}
