//! The `sealpost` binary: everything lives in the library's `cli` module.

use std::io::Write;

fn main() {
    let serving = std::env::args().skip(1).any(|a| a == "serve");
    let default_level = if serving { "info" } else { "warn" };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
        // env_logger's default layout, plus the session a line belongs to
        // (`session=… client=address:port`) on every line a session logs.
        .format(|buf, record| {
            let style = buf.default_level_style(record.level());
            write!(
                buf,
                "[{} {style}{:<5}{style:#} {}] ",
                buf.timestamp_seconds(),
                record.level(),
                record.target()
            )?;
            if let Some(tag) = sealpost::net::log_context::current() {
                write!(buf, "{tag} ")?;
            }
            writeln!(buf, "{}", record.args())
        })
        .init();
    let code = sealpost::cli::run(std::env::args().skip(1).collect());
    std::process::exit(code);
}
