//! An exchange: its type, flags and arguments, its bindings, and routing through them.

use std::collections::HashMap;

use amq_protocol::types::FieldTable;

use super::headers;
use super::topic::TopicTrie;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    Direct,
    Fanout,
    Topic,
    Headers,
}

impl ExchangeKind {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "direct" => Self::Direct,
            "fanout" => Self::Fanout,
            "topic" => Self::Topic,
            "headers" | "match" => Self::Headers,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Fanout => "fanout",
            Self::Topic => "topic",
            Self::Headers => "headers",
        }
    }
}

/// Where a binding delivers: a queue or (exchange-to-exchange binding) another exchange.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Destination {
    Queue(String),
    Exchange(String),
}

impl Destination {
    pub fn name(&self) -> &str {
        match self {
            Self::Queue(n) | Self::Exchange(n) => n,
        }
    }
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Queue(_) => "queue",
            Self::Exchange(_) => "exchange",
        }
    }
}

/// One binding of an exchange (the source). Identity is the whole tuple, as in RabbitMQ.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    pub destination: Destination,
    pub routing_key: String,
    pub arguments: FieldTable,
}

#[derive(Debug, Clone)]
pub struct Exchange {
    pub name: String,
    pub kind: ExchangeKind,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
    bindings: Vec<Binding>,
    /// Direct exchanges: routing key → destinations.
    direct: HashMap<String, Vec<Destination>>,
    /// Topic exchanges: the binding-key trie.
    topic: TopicTrie,
}

impl Exchange {
    pub fn new(
        name: impl Into<String>,
        kind: ExchangeKind,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
    ) -> Self {
        Self {
            name: name.into(),
            kind,
            durable,
            auto_delete,
            internal,
            arguments,
            bindings: Vec::new(),
            direct: HashMap::new(),
            topic: TopicTrie::default(),
        }
    }

    pub fn bindings(&self) -> &[Binding] {
        &self.bindings
    }

    /// The `alternate-exchange` argument: where unroutable messages go.
    pub fn alternate_exchange(&self) -> Option<String> {
        self.arguments.inner().get("alternate-exchange").and_then(headers::value_str)
    }

    /// Add a binding; false if the identical binding exists already.
    pub fn bind(&mut self, b: Binding) -> bool {
        if self.bindings.contains(&b) {
            return false;
        }
        match self.kind {
            ExchangeKind::Direct => self.direct.entry(b.routing_key.clone()).or_default().push(b.destination.clone()),
            ExchangeKind::Topic => self.topic.insert(&b.routing_key, b.destination.clone()),
            ExchangeKind::Fanout | ExchangeKind::Headers => {}
        }
        self.bindings.push(b);
        true
    }

    /// Remove a binding; false if there was none.
    pub fn unbind(&mut self, b: &Binding) -> bool {
        let Some(i) = self.bindings.iter().position(|x| x == b) else { return false };
        let b = self.bindings.remove(i);
        match self.kind {
            ExchangeKind::Direct => {
                if let Some(v) = self.direct.get_mut(&b.routing_key) {
                    if let Some(j) = v.iter().position(|d| *d == b.destination) {
                        v.swap_remove(j);
                    }
                    if v.is_empty() {
                        self.direct.remove(&b.routing_key);
                    }
                }
            }
            ExchangeKind::Topic => {
                self.topic.remove(&b.routing_key, &b.destination);
            }
            ExchangeKind::Fanout | ExchangeKind::Headers => {}
        }
        true
    }

    /// Remove every binding to `destination`; returns how many.
    pub fn unbind_destination(&mut self, destination: &Destination) -> usize {
        let doomed: Vec<Binding> = self.bindings.iter().filter(|b| b.destination == *destination).cloned().collect();
        for b in &doomed {
            self.unbind(b);
        }
        doomed.len()
    }

    /// Append the destinations of a message with `routing_key` and `headers` (not
    /// deduplicated, not following exchange-to-exchange bindings: the caller does both).
    pub fn route(&self, routing_key: &str, headers: Option<&FieldTable>, out: &mut Vec<Destination>) {
        match self.kind {
            ExchangeKind::Direct => {
                if let Some(v) = self.direct.get(routing_key) {
                    out.extend(v.iter().cloned());
                }
            }
            ExchangeKind::Fanout => out.extend(self.bindings.iter().map(|b| b.destination.clone())),
            ExchangeKind::Topic => self.topic.matches(routing_key, out),
            ExchangeKind::Headers => out.extend(
                self.bindings.iter().filter(|b| headers::matches(&b.arguments, headers)).map(|b| b.destination.clone()),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(e: &mut Exchange, q: &str, key: &str) {
        e.bind(Binding {
            destination: Destination::Queue(q.into()),
            routing_key: key.into(),
            arguments: Default::default(),
        });
    }

    #[test]
    fn direct_routes_by_exact_key_and_unbinds() {
        let mut e = Exchange::new("d", ExchangeKind::Direct, false, false, false, Default::default());
        bind(&mut e, "q1", "k");
        bind(&mut e, "q2", "k");
        bind(&mut e, "q1", "other");
        let mut out = Vec::new();
        e.route("k", None, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(e.unbind_destination(&Destination::Queue("q1".into())), 2);
        out.clear();
        e.route("k", None, &mut out);
        assert_eq!(out, vec![Destination::Queue("q2".into())]);
        out.clear();
        e.route("other", None, &mut out);
        assert!(out.is_empty());
    }
}
