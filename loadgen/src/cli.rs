//! Command-line options, in the spirit of RabbitMQ PerfTest: the same short
//! letters where they fit (`-x` producers, `-y` consumers, `-h` URI, ...),
//! long names in RabbitMQ's vocabulary. `-h` is the URI as in PerfTest, so
//! help is `--help` only.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

use crate::uri::AmqpUri;

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    version,
    about = "Load generator and latency meter for AMQP 0-9-1 brokers (warren, RabbitMQ)",
    disable_help_flag = true,
    args_conflicts_with_subcommands = true,
    after_help = EXIT_CODES
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
    #[arg(long, action = ArgAction::Help, help = "Print help")]
    pub help: Option<bool>,
}

const EXIT_CODES: &str = "Exit status: 0 success; 1 connection, login or channel error; \
2 bad usage or URI; 3 messages lost, duplicated or reordered.";

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Measure loadgen's own ceiling against a broker: publish-only into an
    /// exchange without bindings, then consume-only from a pre-filled queue.
    #[command(disable_help_flag = true)]
    Ceiling {
        #[command(flatten)]
        run: Box<RunArgs>,
        /// Messages to pre-fill the queue with for the consume-only phase.
        #[arg(long, default_value_t = 500_000)]
        prefill: u64,
        #[arg(long, action = ArgAction::Help, help = "Print help")]
        help: Option<bool>,
    },
    /// Compare .hgrm percentile distributions side by side and plot them.
    Compare(CompareArgs),
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Broker URI: amqp://user:password@host:port/vhost (vhost "/" is %2f).
    #[arg(short = 'h', long, default_value = AmqpUri::DEFAULT)]
    pub uri: String,
    /// Producers, each on its own channel. 0 with a named queue (-u) and
    /// consumers: consume only, until the messages the queue held when
    /// the run started are received (a backlog another run left; give -z 0
    /// for no time limit).
    #[arg(short = 'x', long, default_value_t = 1)]
    pub producers: usize,
    /// Consumers, each on its own channel; consumer i reads queue i mod --queues.
    #[arg(short = 'y', long, default_value_t = 1)]
    pub consumers: usize,
    /// Message body size in octets (at least 16: the timestamp stamp).
    #[arg(short = 's', long, default_value_t = 16)]
    pub size: usize,
    /// Publish rate limit per producer, messages/s (0: as fast as possible).
    /// Latency is then measured from each message's scheduled send time.
    #[arg(short = 'r', long, default_value_t = 0.0)]
    pub rate: f64,
    /// Publisher confirms, with at most this many unconfirmed per producer (0: off).
    #[arg(short = 'c', long, default_value_t = 0)]
    pub confirm: u32,
    /// Persistent messages (delivery mode 2), and durable queues.
    #[arg(short = 'f', long)]
    pub persistent: bool,
    /// Queue type: classic, or quorum (x-queue-type; a quorum queue is
    /// always durable).
    #[arg(long, default_value = "classic", value_parser = ["classic", "quorum"])]
    pub queue_type: String,
    /// Consume with no-ack (automatic acknowledgement).
    #[arg(short = 'a', long)]
    pub auto_ack: bool,
    /// With manual acks, ack with multiple=true every N messages (0 or 1: each).
    #[arg(short = 'A', long, default_value_t = 0)]
    pub multi_ack_every: u32,
    /// Consumer prefetch (basic.qos prefetch_count; 0: unlimited).
    #[arg(short = 'q', long, default_value_t = 0)]
    pub prefetch: u16,
    /// Queue name; with --queues N, queues are NAME-1..NAME-N. Default:
    /// generated names, deleted at the end.
    #[arg(short = 'u', long)]
    pub queue: Option<String>,
    /// Number of queues (0: publish into the exchange with nothing bound).
    #[arg(long, default_value_t = 1)]
    pub queues: usize,
    /// Exchange name ("" is the default exchange). Default: loadgen.TYPE.
    #[arg(short = 'e', long)]
    pub exchange: Option<String>,
    /// Exchange type: direct, fanout or topic.
    #[arg(
        short = 't',
        long = "type",
        alias = "exchange-type",
        default_value = "direct"
    )]
    pub exchange_type: String,
    /// Routing key for every publish and binding. Default: each queue is
    /// bound with its own name, and producer i publishes to queue i mod --queues.
    #[arg(short = 'k', long)]
    pub routing_key: Option<String>,
    /// Extra bindings with random keys that match nothing, spread over the queues.
    #[arg(long, default_value_t = 0)]
    pub bindings: usize,
    /// Publishing time in seconds (0: until --count is reached).
    #[arg(short = 'z', long, default_value_t = 10.0)]
    pub duration: f64,
    /// Messages per producer (0: unlimited, until --duration).
    #[arg(short = 'C', long, default_value_t = 0)]
    pub count: u64,
    /// Seconds to wait, after publishing stops, for consumers to receive the rest.
    #[arg(long, default_value_t = 10.0)]
    pub drain: f64,
    /// Channels per connection, for producers and consumers alike.
    #[arg(long, default_value_t = 1)]
    pub channels_per_connection: usize,
    /// Consumers connect at once but start consuming this many seconds after
    /// publishing starts: a publish flood that meets no consumer at first.
    #[arg(long, default_value_t = 0.0, value_name = "SECONDS")]
    pub consumer_delay: f64,
    /// Local ports for the worker connections, comma-separated: consumer
    /// connections first, then producer connections (a placement test picks
    /// ports whose connections the broker's kernel hands to a known shard).
    #[arg(long, value_delimiter = ',', value_name = "PORTS")]
    pub local_ports: Vec<u16>,
    /// Open N more connections that stay idle for the run (memory tests).
    #[arg(long, default_value_t = 0)]
    pub idle_connections: usize,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Write the end-to-end latency percentile distribution (.hgrm, milliseconds).
    #[arg(long, value_name = "FILE")]
    pub hgrm: Option<PathBuf>,
    /// Write the publisher-confirm latency percentile distribution (.hgrm).
    #[arg(long, value_name = "FILE")]
    pub confirm_hgrm: Option<PathBuf>,
    /// Write an HdrHistogram interval log, one histogram per second, tagged
    /// "e2e" and "confirm" (microseconds).
    #[arg(long, value_name = "FILE")]
    pub hlog: Option<PathBuf>,
    /// No progress line every second.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Two or more .hgrm files; ratios are relative to the first.
    #[arg(required = true, num_args = 2..)]
    pub files: Vec<PathBuf>,
    /// A label per file, in order (default: the file names).
    #[arg(long)]
    pub label: Vec<String>,
    /// Write an SVG plot of latency by percentile.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
}
