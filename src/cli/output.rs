//! Standard output for the commands that print: a closed pipe
//! (`sealpost status --json | head`) is a normal end, not a panic.
//!
//! `println!` panics when standard output is gone (Rust ignores SIGPIPE,
//! so the write fails with EPIPE). Here a broken pipe is remembered and
//! every later write is skipped silently, so the command still finishes
//! and exits with the code it would have returned anyway (`status` still
//! exits 4 when something needs attention).

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

static CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes to standard output; after a broken pipe, writes nothing more.
/// Any other write error is reported once on standard error.
pub fn write(args: fmt::Arguments<'_>) {
    emit(|out| out.write_fmt(args));
}

/// Writes raw bytes to standard output, as [`write`] does.
pub fn write_bytes(bytes: &[u8]) {
    emit(|out| out.write_all(bytes));
}

fn emit(put: impl FnOnce(&mut io::StdoutLock<'static>) -> io::Result<()>) {
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut stdout = io::stdout().lock();
    if let Err(e) = put(&mut stdout).and_then(|()| stdout.flush()) {
        CLOSED.store(true, Ordering::Relaxed);
        if e.kind() != io::ErrorKind::BrokenPipe {
            eprintln!("sealpost: cannot write to standard output: {e}");
        }
    }
}
