//! Starting and stopping the broker: lock the data directory, read the
//! durable definitions back, reserve the port, start the management API,
//! run the shards (each replays the definitions before it accepts a
//! connection), wait for the shutdown flag.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use crate::config::Config;
use crate::connection;
use crate::data_dir::DataDir;
use crate::definitions::log::DefinitionsLog;
use crate::management;
use crate::runtime::{self, net};
use crate::shard::bridge::Bridge;
use crate::shard::{LoadBoard, Shard, Shared, StoreSetup, STORE_BLOCKING_THREADS};

/// The message store's directory under the data directory.
const MESSAGES_DIR: &str = "messages";

/// Runs the broker until `shutdown` is set (by SIGINT/SIGTERM in the
/// binary, or `warrenctl stop`); returns a one-line reason when it cannot
/// start.
pub fn run(mut config: Config, shutdown: Arc<AtomicBool>) -> Result<(), String> {
    crate::memory::steady_allocator();
    let shard_count = config.shard_count();
    let data_dir = DataDir::lock(config.data_dir()?)?;
    tracing::info!("data directory {}", data_dir.path().display());
    let definitions = DefinitionsLog::open(data_dir.path())?;
    let replay = definitions.definitions().ops(shard_count);
    let store = StoreSetup::recover(
        data_dir.path().join(MESSAGES_DIR),
        shard_count,
        config.segment_size,
        !config.unsafe_no_fsync,
    )?;
    if config.unsafe_no_fsync {
        tracing::warn!("--unsafe-no-fsync: persistent messages are confirmed before fdatasync");
    }
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
        management::write_token(data_dir.path(), bound.port(), &token)?;
        tracing::info!("management API listening on {bound}");
    }
    let ring_capacity = config.ring_capacity;
    let shared = Arc::new(Shared {
        store,
        config,
        shutdown,
        bridge,
        load: LoadBoard::new(shard_count),
        replay,
        definitions: Mutex::new(Some(definitions)),
    });
    let result = runtime::run_shards(
        shard_count,
        ring_capacity,
        STORE_BLOCKING_THREADS,
        move |shard_id, mesh| {
            let shared = shared.clone();
            async move {
                let shard = Shard::start(shared, shard_id, mesh);
                connection::listen(&shard);
                shard.serve_until_shutdown().await;
            }
        },
    );
    // A token left behind would send warrenctl to a broker that is gone.
    let _ = std::fs::remove_file(data_dir.path().join(management::TOKEN_FILE));
    result?;
    tracing::info!("stopped");
    Ok(())
}
