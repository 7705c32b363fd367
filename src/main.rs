//! The `sealpost` binary: everything lives in the library's `cli` module.

fn main() {
    let serving = std::env::args().skip(1).any(|a| a == "serve");
    sealpost::logging::init(serving);
    let code = sealpost::cli::run(std::env::args().skip(1).collect());
    std::process::exit(code);
}
