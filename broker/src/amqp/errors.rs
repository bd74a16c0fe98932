//! AMQP exceptions: a channel exception closes one channel, a connection exception the whole
//! connection. Each carries the spec's reply code and the class and method ids of the
//! method that caused it, which the client sees in channel.close / connection.close.

use amq_protocol::protocol::AMQPClass;

/// Reply codes of the 0-9-1 spec (RabbitMQ flavour).
pub mod code {
    pub const CONTENT_TOO_LARGE: u16 = 311;
    pub const NO_ROUTE: u16 = 312;
    pub const CONNECTION_FORCED: u16 = 320;
    pub const ACCESS_REFUSED: u16 = 403;
    pub const NOT_FOUND: u16 = 404;
    pub const RESOURCE_LOCKED: u16 = 405;
    pub const PRECONDITION_FAILED: u16 = 406;
    pub const FRAME_ERROR: u16 = 501;
    pub const SYNTAX_ERROR: u16 = 502;
    pub const COMMAND_INVALID: u16 = 503;
    pub const CHANNEL_ERROR: u16 = 504;
    pub const UNEXPECTED_FRAME: u16 = 505;
    pub const RESOURCE_ERROR: u16 = 506;
    pub const NOT_ALLOWED: u16 = 530;
    pub const NOT_IMPLEMENTED: u16 = 540;
    pub const INTERNAL_ERROR: u16 = 541;
}

/// The spec's name of a reply code, which RabbitMQ puts in front of the reply text.
pub fn code_name(code: u16) -> &'static str {
    match code {
        code::CONTENT_TOO_LARGE => "CONTENT_TOO_LARGE",
        code::NO_ROUTE => "NO_ROUTE",
        code::CONNECTION_FORCED => "CONNECTION_FORCED",
        code::ACCESS_REFUSED => "ACCESS_REFUSED",
        code::NOT_FOUND => "NOT_FOUND",
        code::RESOURCE_LOCKED => "RESOURCE_LOCKED",
        code::PRECONDITION_FAILED => "PRECONDITION_FAILED",
        code::FRAME_ERROR => "FRAME_ERROR",
        code::SYNTAX_ERROR => "SYNTAX_ERROR",
        code::COMMAND_INVALID => "COMMAND_INVALID",
        code::CHANNEL_ERROR => "CHANNEL_ERROR",
        code::UNEXPECTED_FRAME => "UNEXPECTED_FRAME",
        code::RESOURCE_ERROR => "RESOURCE_ERROR",
        code::NOT_ALLOWED => "NOT_ALLOWED",
        code::NOT_IMPLEMENTED => "NOT_IMPLEMENTED",
        code::INTERNAL_ERROR => "INTERNAL_ERROR",
        _ => "ERROR",
    }
}

/// An AMQP exception. `class_id`/`method_id` are 0 when no method caused it (a bad frame).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} - {text} (class {class_id}, method {method_id})", code_name(*code))]
pub struct AmqpException {
    pub code: u16,
    pub text: String,
    pub class_id: u16,
    pub method_id: u16,
    /// Whether it closes the connection (hard error) rather than one channel.
    pub connection: bool,
}

impl AmqpException {
    /// A channel exception (soft error) caused by `method`.
    pub fn channel(code: u16, text: impl Into<String>, method: Option<&AMQPClass>) -> Self {
        let (class_id, method_id) = ids(method);
        Self { code, text: text.into(), class_id, method_id, connection: false }
    }

    /// A connection exception (hard error) caused by `method`.
    pub fn connection(code: u16, text: impl Into<String>, method: Option<&AMQPClass>) -> Self {
        let (class_id, method_id) = ids(method);
        Self { code, text: text.into(), class_id, method_id, connection: true }
    }

    /// The reply text as RabbitMQ writes it: `NOT_FOUND - no queue 'q' in vhost '/'`.
    pub fn reply_text(&self) -> String {
        let full = format!("{} - {}", code_name(self.code), self.text);
        // reply-text is a shortstr.
        truncate_utf8(full, 255)
    }

    /// Attach the method that caused it when the error was raised without one.
    pub fn with_method(mut self, method: &AMQPClass) -> Self {
        if self.class_id == 0 {
            (self.class_id, self.method_id) = ids(Some(method));
        }
        self
    }
}

fn ids(method: Option<&AMQPClass>) -> (u16, u16) {
    method.map_or((0, 0), |m| (m.get_amqp_class_id(), m.get_amqp_method_id()))
}

pub fn truncate_utf8(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// Shorthands for the exceptions the broker raises most, without a method (attached by the
/// dispatcher through [`AmqpException::with_method`]).
pub fn not_found(text: impl Into<String>) -> AmqpException {
    AmqpException::channel(code::NOT_FOUND, text, None)
}
pub fn access_refused(text: impl Into<String>) -> AmqpException {
    AmqpException::channel(code::ACCESS_REFUSED, text, None)
}
pub fn resource_locked(text: impl Into<String>) -> AmqpException {
    AmqpException::channel(code::RESOURCE_LOCKED, text, None)
}
pub fn precondition_failed(text: impl Into<String>) -> AmqpException {
    AmqpException::channel(code::PRECONDITION_FAILED, text, None)
}
pub fn command_invalid(text: impl Into<String>) -> AmqpException {
    AmqpException::connection(code::COMMAND_INVALID, text, None)
}
pub fn not_allowed(text: impl Into<String>) -> AmqpException {
    AmqpException::connection(code::NOT_ALLOWED, text, None)
}
pub fn not_implemented(text: impl Into<String>) -> AmqpException {
    AmqpException::connection(code::NOT_IMPLEMENTED, text, None)
}

pub type AmqpResult<T> = Result<T, AmqpException>;
