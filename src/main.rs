//! The `sealpost` binary: everything lives in the library's `cli` module.

fn main() {
    let serving = std::env::args().skip(1).any(|a| a == "serve");
    let default_level = if serving { "info" } else { "warn" };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
        .format_timestamp_secs()
        .init();
    let code = sealpost::cli::run(std::env::args().skip(1).collect());
    std::process::exit(code);
}
