//! Starting and stopping the broker: reserve the port, run the shards, wait
//! for the shutdown flag.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::config::Config;
use crate::runtime::{self, net};
use crate::shard::{LoadBoard, Shard, Shared};

/// Runs the broker until `shutdown` is set (by SIGINT/SIGTERM in the
/// binary); returns a one-line reason when it cannot start.
pub fn run(mut config: Config, shutdown: Arc<AtomicBool>) -> Result<(), String> {
    let shard_count = config.shard_count();
    // Port 0 becomes one ephemeral port that every shard then shares.
    let (_reserved, addr) = net::reserve_port(config.listen_addr())
        .map_err(|err| format!("cannot listen on {}: {err}", config.listen_addr()))?;
    config.port = addr.port();
    tracing::info!(
        "warren {} starting {shard_count} shards",
        env!("CARGO_PKG_VERSION")
    );
    let ring_capacity = config.ring_capacity;
    let shared = Arc::new(Shared {
        config,
        shutdown,
        load: LoadBoard::new(shard_count),
    });
    runtime::run_shards(shard_count, ring_capacity, move |shard_id, mesh| {
        Shard::run(shared.clone(), shard_id, mesh)
    })?;
    tracing::info!("stopped");
    Ok(())
}
