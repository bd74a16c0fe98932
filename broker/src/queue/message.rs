//! A published message as queues hold it: shared between every queue it was routed to.

use amq_protocol::protocol::basic::AMQPProperties;
use bytes::Bytes;

#[derive(Debug, Clone)]
pub struct Message {
    pub exchange: String,
    pub routing_key: String,
    pub properties: AMQPProperties,
    pub body: Bytes,
}

impl Message {
    /// delivery-mode 2.
    pub fn persistent(&self) -> bool {
        *self.properties.delivery_mode() == Some(2)
    }

    /// The per-message TTL from the `expiration` property, in ms. `Err` when the property
    /// is not a non-negative integer (RabbitMQ refuses such a publish with 406).
    pub fn expiration_ms(&self) -> Result<Option<u64>, String> {
        match self.properties.expiration() {
            None => Ok(None),
            Some(s) => s.as_str().parse::<u64>().map(Some).map_err(|_| format!("invalid expiration '{}'", s.as_str())),
        }
    }

    /// Body size, the unit of `x-max-length-bytes`.
    pub fn size(&self) -> u64 {
        self.body.len() as u64
    }
}
