//! Where log lines go and how they look: `RUST_LOG` as every Rust user
//! expects (default `info` for `serve`, `warn` for the other commands),
//! each line tagged with the session it belongs to.
//!
//! Under systemd, standard error is a stream into the journal, and
//! `JOURNAL_STREAM` names its device and inode (systemd.exec(5)). When it
//! matches standard error (a command's redirected output does not), each
//! line starts with its syslog priority, `<3>` to `<7>` (sd-daemon(3)), and
//! carries no timestamp of its own (the journal adds one). `journalctl -p
//! warning` then shows exactly the warnings and errors. Otherwise the human
//! format of env_logger stays.

use std::io::Write;
use std::os::fd::AsFd;

use log::Level;

/// Whether `JOURNAL_STREAM` (`<device>:<inode>`, as systemd sets it) is the
/// file `fd` is open on.
pub fn is_journal_stream(value: Option<&str>, fd: impl AsFd) -> bool {
    let Some((dev, ino)) = value.and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    rustix::fs::fstat(fd).is_ok_and(|st| st.st_dev == dev && st.st_ino == ino)
}

/// The sd-daemon(3) prefix for a level.
pub fn priority(level: Level) -> &'static str {
    match level {
        Level::Error => "<3>",
        Level::Warn => "<4>",
        Level::Info => "<6>",
        Level::Debug | Level::Trace => "<7>",
    }
}

/// Installs the logger. `serving`: the default level is `info`, not `warn`.
pub fn init(serving: bool) {
    let default_level = if serving { "info" } else { "warn" };
    let journal = is_journal_stream(
        std::env::var("JOURNAL_STREAM").ok().as_deref(),
        std::io::stderr(),
    );
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level));
    if journal {
        builder.format(|buf, record| {
            write!(buf, "{}{}: ", priority(record.level()), record.target())?;
            if let Some(tag) = crate::net::log_context::current() {
                write!(buf, "{tag} ")?;
            }
            writeln!(buf, "{}", record.args())
        });
    } else {
        // env_logger's default layout, plus the session a line belongs to
        // (`session=… client=address:port`) on every line a session logs.
        builder.format(|buf, record| {
            let style = buf.default_level_style(record.level());
            write!(
                buf,
                "[{} {style}{:<5}{style:#} {}] ",
                buf.timestamp_seconds(),
                record.level(),
                record.target()
            )?;
            if let Some(tag) = crate::net::log_context::current() {
                write!(buf, "{tag} ")?;
            }
            writeln!(buf, "{}", record.args())
        });
    }
    builder.init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn only_the_stream_that_journal_stream_names_counts() {
        let file = tempfile::tempfile().unwrap();
        let meta = file.metadata().unwrap();
        let right = format!("{}:{}", meta.dev(), meta.ino());
        assert!(is_journal_stream(Some(&right), &file));
        let wrong = format!("{}:{}", meta.dev(), meta.ino() + 1);
        assert!(!is_journal_stream(Some(&wrong), &file));
        assert!(!is_journal_stream(Some("garbage"), &file));
        assert!(!is_journal_stream(None, &file));
        assert_eq!(priority(Level::Warn), "<4>");
    }
}
