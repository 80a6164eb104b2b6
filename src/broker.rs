//! Starting and stopping the broker: prepare the data directory, reserve
//! the port, start the management API, run the shards, wait for the
//! shutdown flag.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::config::Config;
use crate::management::{self, Bridge};
use crate::runtime::{self, net};
use crate::shard::{LoadBoard, Shard, Shared, StoreSetup};

/// The message store's directory under the data directory.
const MESSAGES_DIR: &str = "messages";

/// Runs the broker until `shutdown` is set (by SIGINT/SIGTERM in the
/// binary, or `warrenctl stop`); returns a one-line reason when it cannot
/// start.
pub fn run(mut config: Config, shutdown: Arc<AtomicBool>) -> Result<(), String> {
    let shard_count = config.shard_count();
    let data_dir = prepare_data_dir(&config)?;
    // Port 0 becomes one ephemeral port that every shard then shares.
    let (_reserved, addr) = net::reserve_port(config.listen_addr())
        .map_err(|err| format!("cannot listen on {}: {err}", config.listen_addr()))?;
    config.port = addr.port();
    tracing::info!(
        "warren {} starting {shard_count} shards",
        env!("CARGO_PKG_VERSION")
    );
    let bridge = Bridge::new(shard_count);
    if let Some(management_addr) = config.management_addr() {
        let token = management::new_token()?;
        let bound = management::start(
            management_addr,
            bridge.clone(),
            token.clone(),
            shutdown.clone(),
            config.port,
        )?;
        management::write_token(&data_dir, bound.port(), &token)?;
        tracing::info!("management API listening on {bound}");
    }
    let ring_capacity = config.ring_capacity;
    let store = StoreSetup::recover(
        data_dir.join(MESSAGES_DIR),
        shard_count,
        config.segment_size,
        !config.unsafe_no_fsync,
    )?;
    if config.unsafe_no_fsync {
        tracing::warn!("--unsafe-no-fsync: persistent messages are confirmed before fdatasync");
    }
    let shared = Arc::new(Shared {
        store,
        config,
        shutdown,
        bridge,
        load: LoadBoard::new(shard_count),
    });
    let result = runtime::run_shards(shard_count, ring_capacity, move |shard_id, mesh| {
        Shard::run(shared.clone(), shard_id, mesh)
    });
    // A token left behind would send warrenctl to a broker that is gone.
    let _ = std::fs::remove_file(data_dir.join(management::TOKEN_FILE));
    result?;
    tracing::info!("stopped");
    Ok(())
}

/// Creates the data directory (owner-only) if it is missing.
fn prepare_data_dir(config: &Config) -> Result<PathBuf, String> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = config.data_dir()?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|err| format!("cannot use data directory {}: {err}", dir.display()))?;
    Ok(dir)
}
