//! AMQP routing: exchanges of the four types, their bindings, and the matchers that turn a
//! routing key (and headers) into destinations. Topic bindings are matched through a trie
//! ([`topic::TopicTrie`]), direct ones through a hash map, so the cost of routing grows with
//! the routing key, not with the number of bindings.

pub mod exchange;
pub mod headers;
pub mod topic;

pub use exchange::{Binding, Destination, Exchange, ExchangeKind};
