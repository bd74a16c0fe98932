//! The Kafka protocol front end: size-prefixed frames on `--kafka-listen`, decoded with
//! the `kafka-protocol` crate, one handler per API key under `handlers/`. Only the APIs and
//! versions listed in `handlers::SUPPORTED` are advertised (docs/compatibility.md).

pub mod auto_create;
pub mod codec;
pub mod context;
pub mod errors;
pub mod fetch_session;
pub mod file_records;
pub mod group;
pub mod handlers;
pub mod low_water;
pub mod metrics;
pub mod producer_ids;
pub mod server;
pub mod topic_metrics;

pub use context::KafkaContext;
