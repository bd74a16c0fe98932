//! Queue arguments (`x-…`) understood by classic queues, parsed and checked at declare time.

use amq_protocol::types::{AMQPValue, FieldTable};

use crate::routing::headers::{value_i64, value_str};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    #[default]
    DropHead,
    RejectPublish,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueueArgs {
    pub message_ttl: Option<u64>,
    pub expires: Option<u64>,
    pub max_length: Option<u64>,
    pub max_length_bytes: Option<u64>,
    pub overflow: Overflow,
    pub dead_letter_exchange: Option<String>,
    pub dead_letter_routing_key: Option<String>,
    pub single_active_consumer: bool,
}

/// The queue argument keys whose values must match on a re-declare (RabbitMQ's list).
pub const EQUIVALENCE_KEYS: &[&str] = &[
    "x-queue-type",
    "x-message-ttl",
    "x-expires",
    "x-max-length",
    "x-max-length-bytes",
    "x-overflow",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-single-active-consumer",
];

impl QueueArgs {
    /// Parse and check `args`. The error text is the 406 PRECONDITION_FAILED reason.
    pub fn parse(args: &FieldTable, queue: &str, vhost: &str) -> Result<Self, String> {
        let bad = |k: &str, why: &str| format!("invalid arg '{k}' for queue '{queue}' in vhost '{vhost}': {why}");
        let t = args.inner();
        let int = |k: &str, min: i64| -> Result<Option<u64>, String> {
            match t.get(k) {
                None => Ok(None),
                Some(v) => match value_i64(v) {
                    Some(i) if i >= min => Ok(Some(i as u64)),
                    Some(i) => Err(bad(k, &format!("{{value_negative,{i}}}"))),
                    None => Err(bad(k, "{unacceptable_type, not an integer}")),
                },
            }
        };
        let string = |k: &str| -> Result<Option<String>, String> {
            match t.get(k) {
                None => Ok(None),
                Some(v) => value_str(v).map(Some).ok_or_else(|| bad(k, "{unacceptable_type, not a string}")),
            }
        };
        if let Some(kind) = string("x-queue-type")? {
            match kind.as_str() {
                "classic" => {}
                "quorum" | "stream" => {
                    return Err(format!(
                        "queue type '{kind}' is not supported by this broker yet (only 'classic'); queue '{queue}' in vhost '{vhost}' was not declared"
                    ))
                }
                other => return Err(bad("x-queue-type", &format!("unknown queue type '{other}'"))),
            }
        }
        let overflow = match string("x-overflow")?.as_deref() {
            None | Some("drop-head") => Overflow::DropHead,
            Some("reject-publish") => Overflow::RejectPublish,
            Some(other) => return Err(bad("x-overflow", &format!("unsupported value '{other}'"))),
        };
        let single_active_consumer = match t.get("x-single-active-consumer") {
            None => false,
            Some(AMQPValue::Boolean(b)) => *b,
            Some(_) => return Err(bad("x-single-active-consumer", "{unacceptable_type, not a boolean}")),
        };
        Ok(Self {
            message_ttl: int("x-message-ttl", 0)?,
            expires: int("x-expires", 1)?,
            max_length: int("x-max-length", 0)?,
            max_length_bytes: int("x-max-length-bytes", 0)?,
            overflow,
            dead_letter_exchange: string("x-dead-letter-exchange")?,
            dead_letter_routing_key: string("x-dead-letter-routing-key")?,
            single_active_consumer,
        })
    }
}

/// The first equivalence argument whose value differs between two declarations.
pub fn first_difference(current: &FieldTable, received: &FieldTable) -> Option<&'static str> {
    EQUIVALENCE_KEYS.iter().copied().find(|k| {
        let (a, b) = (current.inner().get(*k), received.inner().get(*k));
        match (a, b) {
            (None, None) => false,
            (Some(a), Some(b)) => match (value_i64(a), value_i64(b)) {
                (Some(x), Some(y)) => x != y,
                _ => match (value_str(a), value_str(b)) {
                    (Some(x), Some(y)) => x != y,
                    _ => a != b,
                },
            },
            // x-queue-type classic is the default.
            (None, Some(v)) | (Some(v), None) => !(*k == "x-queue-type" && value_str(v).as_deref() == Some("classic")),
        }
    })
}
