//! Queues. Classic queues hold their messages in order with per-message TTL, length limits
//! and dead-lettering settings ([`classic`]); consumers and deliveries are driven by the AMQP
//! broker core (`amqp::broker`), which owns the channels the messages go to.

pub mod args;
pub mod classic;
pub mod message;
pub mod store;

pub use args::{Overflow, QueueArgs};
pub use classic::{Queue, QueuedMessage};
pub use message::Message;
