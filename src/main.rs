//! The `warren` binary: parse the configuration, start logging, run the
//! shards until SIGINT or SIGTERM.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Parser;
use mimalloc::MiMalloc;

use warren::config::Config;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() {
    let config = Config::parse();
    init_logging(&config.log);
    let shutdown = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(err) = signal_hook::flag::register(signal, shutdown.clone()) {
            eprintln!("warren: cannot install a handler for signal {signal}: {err}");
            std::process::exit(1);
        }
    }
    if let Err(err) = warren::broker::run(config, shutdown) {
        tracing::error!("{err}");
        std::process::exit(1);
    }
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // init() also bridges the `log` crate, through which glommio reports
    // some failures (io_uring buffer registration): they must be seen.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
