//! loadgen: warren's bundled load generator, a client of any AMQP 0-9-1
//! broker built only on warren's protocol codec.
//!
//! Layers, each in its module: `uri` and `cli` read the user's input;
//! `amqp` is a blocking client connection (handshake, control-plane calls);
//! `topology` declares exchange, queues and bindings and knows the routes;
//! `producer` and `consumer` are the data plane, thread per connection;
//! `stamp`, `meter` and `tracker` measure (latency, rates, loss, duplicates,
//! order); `run` drives a run's phases; `report`, `hgrm`, `plot` and
//! `compare` present the results; `app` ties options to exit statuses.

pub mod amqp;
pub mod app;
pub mod cli;
pub mod compare;
pub mod consumer;
pub mod hgrm;
pub mod meter;
pub mod plot;
pub mod producer;
pub mod report;
pub mod run;
pub mod shared;
pub mod stamp;
pub mod topology;
pub mod tracker;
pub mod uri;
