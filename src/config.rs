//! Broker configuration: the command line, with an environment variable for
//! every flag, and the limits the rest of the broker checks once.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::Parser;

use crate::memory::Watermark;

/// warren: an AMQP 0-9-1 message broker, wire-compatible with RabbitMQ.
#[derive(Clone, Debug, Parser)]
#[command(name = "warren", version, about)]
pub struct Config {
    /// Address to listen on for AMQP.
    #[arg(long, env = "WARREN_BIND", default_value = "0.0.0.0")]
    pub bind: IpAddr,

    /// AMQP port (0 picks a free one and logs it).
    #[arg(long, env = "WARREN_PORT", default_value_t = 5672)]
    pub port: u16,

    /// Number of shards (one thread each). Default: one per CPU this process
    /// may use.
    #[arg(long, env = "WARREN_SHARDS")]
    pub shards: Option<usize>,

    /// Largest frame offered in connection.tune, in bytes (RabbitMQ: 131072).
    #[arg(long, env = "WARREN_FRAME_MAX", default_value_t = 131_072, value_parser = clap::value_parser!(u32).range(4096..))]
    pub frame_max: u32,

    /// Most channels per connection offered in connection.tune.
    #[arg(long, env = "WARREN_CHANNEL_MAX", default_value_t = 2047)]
    pub channel_max: u16,

    /// Heartbeat interval offered in connection.tune, in seconds (0: none).
    #[arg(long, env = "WARREN_HEARTBEAT", default_value_t = 60)]
    pub heartbeat_s: u16,

    /// Largest message body accepted, in bytes (RabbitMQ: 128 MiB).
    #[arg(long, env = "WARREN_MAX_MESSAGE_SIZE", default_value_t = 128 << 20)]
    pub(crate) message_size_max: u64,

    /// Capacity of each shard-to-shard ring, in messages.
    #[arg(long, env = "WARREN_RING_CAPACITY", default_value_t = 4096)]
    pub(crate) ring_capacity: usize,

    /// Deliveries a consumer may have in flight to its connection's socket
    /// before the queue waits for the connection to write them (flow control,
    /// independent of prefetch).
    #[arg(long, env = "WARREN_CONSUMER_CREDIT", default_value_t = 2000)]
    pub(crate) consumer_credit: u32,

    /// HTTP management API port (RabbitMQ's 15672; 0 disables it).
    #[arg(long, env = "WARREN_MANAGEMENT_PORT", default_value_t = 15672)]
    pub management_port: u16,

    /// Address the management API listens on (default: the AMQP --bind).
    #[arg(long, env = "WARREN_MANAGEMENT_BIND")]
    pub(crate) management_bind: Option<IpAddr>,

    /// Directory for the broker's files (the warrenctl token now; the
    /// durable store later). Default: $XDG_DATA_HOME/warren, else
    /// $HOME/.local/share/warren.
    #[arg(long, env = "WARREN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Publishes one connection may have routed to a shard that the shard
    /// has not processed yet. Past it the connection stops reading its
    /// socket until the shard catches up, so TCP slows the publisher.
    #[arg(long, env = "WARREN_PUBLISH_CREDIT", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) publish_credit: u32,

    /// Memory use past which publishing connections are blocked: a fraction
    /// of the machine's memory (0.4, RabbitMQ's default) or a size (512MiB,
    /// 2GB, or bytes).
    #[arg(long, env = "WARREN_MEMORY_HIGH_WATERMARK", default_value = "0.4")]
    pub(crate) memory_high_watermark: Watermark,

    /// Memory of ready messages that queues keep in memory (bodies and
    /// 256 bytes each), over all shards; past it the newest go to disk and
    /// are read back ahead of delivery. A fraction of the machine's memory
    /// (0.2) or a size (256MiB). Default: half of --memory-high-watermark,
    /// where RabbitMQ starts paging.
    #[arg(long, env = "WARREN_QUEUE_MEMORY_BUDGET")]
    pub(crate) queue_memory_budget: Option<Watermark>,

    /// Free disk space under the data directory below which publishers are
    /// blocked (connection.blocked), as RabbitMQ's disk alarm does: a size
    /// (50MB, 1GiB, bytes) or a fraction of the machine's memory (1.0).
    #[arg(long, env = "WARREN_DISK_FREE_LIMIT", default_value = "50MB")]
    pub disk_free_limit: Watermark,

    /// Confirm persistent messages once written, without waiting for
    /// fdatasync: RabbitMQ classic-queue speed, but a power loss or an OS
    /// crash can lose confirmed messages (a killed broker cannot).
    #[arg(long, env = "WARREN_UNSAFE_NO_FSYNC")]
    pub(crate) unsafe_no_fsync: bool,

    /// Size of each message log segment file (preallocated), in bytes.
    #[arg(long, env = "WARREN_SEGMENT_SIZE", default_value_t = 16 << 20, value_parser = clap::value_parser!(u64).range(4096..))]
    pub(crate) segment_size: u64,

    /// Log filter (tracing EnvFilter syntax, e.g. "info" or "warren=debug").
    #[arg(long, env = "WARREN_LOG", default_value = "info")]
    pub log: String,
}

impl Config {
    pub(crate) fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.port)
    }

    /// The management API's address, if it is enabled.
    pub(crate) fn management_addr(&self) -> Option<SocketAddr> {
        let bind = self.management_bind.unwrap_or(self.bind);
        (self.management_port != 0).then(|| SocketAddr::new(bind, self.management_port))
    }

    /// The data directory: the flag, else the XDG default.
    pub fn data_dir(&self) -> Result<PathBuf, String> {
        if let Some(dir) = &self.data_dir {
            return Ok(dir.clone());
        }
        default_data_dir().ok_or_else(|| {
            "no data directory: set --data-dir, WARREN_DATA_DIR, XDG_DATA_HOME or HOME".to_owned()
        })
    }

    /// The shard count to run: the flag, else one per usable CPU.
    pub(crate) fn shard_count(&self) -> usize {
        self.shards
            .unwrap_or_else(|| crate::runtime::allowed_cpus().len())
            .max(1)
    }
}

/// `${XDG_DATA_HOME:-$HOME/.local/share}/warren`, which warrenctl also
/// reads.
pub(crate) fn default_data_dir() -> Option<PathBuf> {
    let non_empty = |name| std::env::var_os(name).filter(|value| !value.is_empty());
    let base = match non_empty("XDG_DATA_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(non_empty("HOME")?).join(".local/share"),
    };
    Some(base.join("warren"))
}
