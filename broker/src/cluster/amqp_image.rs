//! The durable AMQP entities in the metadata image: virtual hosts, durable exchanges,
//! durable queues and the bindings between durable entities. Every broker's AMQP core is
//! kept in line with this part of the image, so they survive restarts of every broker.
//! Arguments are kept as JSON objects (the admin API's form); the AMQP side converts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::types::{MetadataError, NodeId};

/// The vhost every cluster has; it cannot be deleted.
pub const DEFAULT_VHOST: &str = "/";

/// Exchanges every vhost has without being declared.
pub const STANDARD_EXCHANGES: &[(&str, &str)] = &[
    ("", "direct"),
    ("amq.direct", "direct"),
    ("amq.fanout", "fanout"),
    ("amq.topic", "topic"),
    ("amq.headers", "headers"),
    ("amq.match", "headers"),
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmqpExchangeRecord {
    pub name: String,
    /// direct, fanout, topic or headers.
    pub kind: String,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmqpQueueRecord {
    pub name: String,
    pub auto_delete: bool,
    pub arguments: serde_json::Value,
    /// The broker that declared it.
    pub node: NodeId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmqpBindingRecord {
    pub source: String,
    /// "queue" or "exchange".
    pub destination_type: String,
    pub destination: String,
    pub routing_key: String,
    pub arguments: serde_json::Value,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmqpVhostRecord {
    pub exchanges: BTreeMap<String, AmqpExchangeRecord>,
    pub queues: BTreeMap<String, AmqpQueueRecord>,
    pub bindings: Vec<AmqpBindingRecord>,
}

impl AmqpVhostRecord {
    fn exchange_exists(&self, name: &str) -> bool {
        self.exchanges.contains_key(name) || STANDARD_EXCHANGES.iter().any(|(n, _)| *n == name)
    }

    /// Remove the bindings touching a deleted entity, and auto-delete exchanges left
    /// without bindings as sources.
    fn drop_bindings_of(&mut self, kind: &str, name: &str) {
        let before: Vec<String> = self.bindings.iter().map(|b| b.source.clone()).collect();
        self.bindings.retain(|b| {
            !((b.destination_type == kind && b.destination == name) || (kind == "exchange" && b.source == name))
        });
        self.drop_unused_auto_delete(before);
    }

    fn drop_unused_auto_delete(&mut self, sources_before: Vec<String>) {
        for s in sources_before {
            let unused = !self.bindings.iter().any(|b| b.source == s);
            if unused && self.exchanges.get(&s).is_some_and(|e| e.auto_delete) {
                self.exchanges.remove(&s);
                self.drop_bindings_of("exchange", &s);
            }
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmqpImage {
    /// Vhosts other than `/` exist only when declared; `/` always exists.
    pub vhosts: BTreeMap<String, AmqpVhostRecord>,
    /// Records of `/` (kept apart so that `/` needs no declaration).
    #[serde(default)]
    pub default_vhost: AmqpVhostRecord,
}

/// A change to the durable AMQP entities.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum AmqpCommand {
    DeclareVhost {
        name: String,
    },
    DeleteVhost {
        name: String,
    },
    /// Idempotent: an equivalent existing exchange is fine, a different one is refused.
    DeclareExchange {
        vhost: String,
        exchange: AmqpExchangeRecord,
    },
    DeleteExchange {
        vhost: String,
        name: String,
    },
    DeclareQueue {
        vhost: String,
        queue: AmqpQueueRecord,
    },
    DeleteQueue {
        vhost: String,
        name: String,
    },
    Bind {
        vhost: String,
        binding: AmqpBindingRecord,
    },
    Unbind {
        vhost: String,
        binding: AmqpBindingRecord,
    },
}

impl AmqpImage {
    pub fn vhost(&self, name: &str) -> Option<&AmqpVhostRecord> {
        if name == DEFAULT_VHOST {
            Some(&self.default_vhost)
        } else {
            self.vhosts.get(name)
        }
    }

    fn vhost_mut(&mut self, name: &str) -> Result<&mut AmqpVhostRecord, MetadataError> {
        if name == DEFAULT_VHOST {
            Ok(&mut self.default_vhost)
        } else {
            self.vhosts.get_mut(name).ok_or_else(|| MetadataError::UnknownVhost(name.to_string()))
        }
    }

    /// Every vhost name, `/` first.
    pub fn vhost_names(&self) -> Vec<String> {
        std::iter::once(DEFAULT_VHOST.to_string()).chain(self.vhosts.keys().cloned()).collect()
    }

    pub fn apply(&mut self, cmd: &AmqpCommand) -> Result<(), MetadataError> {
        match cmd {
            AmqpCommand::DeclareVhost { name } => {
                if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
                    return Err(MetadataError::InvalidName(format!("invalid vhost name '{name}'")));
                }
                if name != DEFAULT_VHOST {
                    self.vhosts.entry(name.clone()).or_default();
                }
                Ok(())
            }
            AmqpCommand::DeleteVhost { name } => {
                if name == DEFAULT_VHOST {
                    return Err(MetadataError::AccessRefused("the default vhost '/' cannot be deleted".into()));
                }
                self.vhosts.remove(name).map(|_| ()).ok_or_else(|| MetadataError::UnknownVhost(name.clone()))
            }
            AmqpCommand::DeclareExchange { vhost, exchange } => {
                let v = self.vhost_mut(vhost)?;
                if let Some((_, kind)) = STANDARD_EXCHANGES.iter().find(|(n, _)| *n == exchange.name) {
                    // Re-declaring a standard exchange with its own properties is fine.
                    let same = *kind == exchange.kind && !exchange.auto_delete && !exchange.internal;
                    return if same {
                        Ok(())
                    } else {
                        Err(MetadataError::AccessRefused(format!("'{}' is a standard exchange", exchange.name)))
                    };
                }
                match v.exchanges.get(&exchange.name) {
                    Some(e) if e == exchange => Ok(()),
                    Some(e) => Err(MetadataError::InequivalentArguments(format!(
                        "exchange '{}' in vhost '{vhost}' exists with other properties ({} vs {})",
                        e.name, e.kind, exchange.kind
                    ))),
                    None => {
                        v.exchanges.insert(exchange.name.clone(), exchange.clone());
                        Ok(())
                    }
                }
            }
            AmqpCommand::DeleteExchange { vhost, name } => {
                let v = self.vhost_mut(vhost)?;
                if v.exchanges.remove(name).is_none() {
                    return Err(MetadataError::UnknownExchange(format!("{name}' in vhost '{vhost}")));
                }
                v.drop_bindings_of("exchange", name);
                Ok(())
            }
            AmqpCommand::DeclareQueue { vhost, queue } => {
                let v = self.vhost_mut(vhost)?;
                match v.queues.get(&queue.name) {
                    Some(q) if q.auto_delete == queue.auto_delete && q.arguments == queue.arguments => Ok(()),
                    Some(_) => Err(MetadataError::InequivalentArguments(format!(
                        "queue '{}' in vhost '{vhost}' exists with other properties",
                        queue.name
                    ))),
                    None => {
                        v.queues.insert(queue.name.clone(), queue.clone());
                        Ok(())
                    }
                }
            }
            AmqpCommand::DeleteQueue { vhost, name } => {
                let v = self.vhost_mut(vhost)?;
                if v.queues.remove(name).is_none() {
                    return Err(MetadataError::UnknownQueue(format!("{name}' in vhost '{vhost}")));
                }
                v.drop_bindings_of("queue", name);
                Ok(())
            }
            AmqpCommand::Bind { vhost, binding } => {
                let v = self.vhost_mut(vhost)?;
                if binding.source.is_empty() {
                    return Err(MetadataError::AccessRefused("the default exchange cannot be bound".into()));
                }
                if !v.exchange_exists(&binding.source) {
                    return Err(MetadataError::UnknownExchange(format!("{}' in vhost '{vhost}", binding.source)));
                }
                match binding.destination_type.as_str() {
                    "queue" if !v.queues.contains_key(&binding.destination) => {
                        return Err(MetadataError::UnknownQueue(format!("{}' in vhost '{vhost}", binding.destination)))
                    }
                    "exchange" if !v.exchange_exists(&binding.destination) || binding.destination.is_empty() => {
                        return Err(MetadataError::UnknownExchange(format!(
                            "{}' in vhost '{vhost}",
                            binding.destination
                        )))
                    }
                    "queue" | "exchange" => {}
                    other => return Err(MetadataError::InvalidName(format!("unknown destination type '{other}'"))),
                }
                if !v.bindings.contains(binding) {
                    v.bindings.push(binding.clone());
                }
                Ok(())
            }
            AmqpCommand::Unbind { vhost, binding } => {
                let v = self.vhost_mut(vhost)?;
                let Some(i) = v.bindings.iter().position(|b| b == binding) else {
                    return Err(MetadataError::UnknownBinding(format!("{binding:?}")));
                };
                v.bindings.remove(i);
                v.drop_unused_auto_delete(vec![binding.source.clone()]);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(name: &str, kind: &str) -> AmqpExchangeRecord {
        AmqpExchangeRecord {
            name: name.into(),
            kind: kind.into(),
            auto_delete: false,
            internal: false,
            arguments: serde_json::json!({}),
        }
    }
    fn q(name: &str) -> AmqpQueueRecord {
        AmqpQueueRecord { name: name.into(), auto_delete: false, arguments: serde_json::json!({}), node: 0 }
    }
    fn b(source: &str, dest: &str) -> AmqpBindingRecord {
        AmqpBindingRecord {
            source: source.into(),
            destination_type: "queue".into(),
            destination: dest.into(),
            routing_key: "k".into(),
            arguments: serde_json::json!({}),
        }
    }

    #[test]
    fn declares_are_idempotent_and_deletes_cascade() {
        let mut img = AmqpImage::default();
        let v = "/".to_string();
        img.apply(&AmqpCommand::DeclareExchange { vhost: v.clone(), exchange: ex("e", "topic") }).unwrap();
        img.apply(&AmqpCommand::DeclareExchange { vhost: v.clone(), exchange: ex("e", "topic") }).unwrap();
        assert!(matches!(
            img.apply(&AmqpCommand::DeclareExchange { vhost: v.clone(), exchange: ex("e", "direct") }),
            Err(MetadataError::InequivalentArguments(_))
        ));
        img.apply(&AmqpCommand::DeclareQueue { vhost: v.clone(), queue: q("q") }).unwrap();
        img.apply(&AmqpCommand::Bind { vhost: v.clone(), binding: b("e", "q") }).unwrap();
        img.apply(&AmqpCommand::Bind { vhost: v.clone(), binding: b("amq.topic", "q") }).unwrap();
        assert!(matches!(
            img.apply(&AmqpCommand::Bind { vhost: v.clone(), binding: b("nope", "q") }),
            Err(MetadataError::UnknownExchange(_))
        ));
        assert_eq!(img.default_vhost.bindings.len(), 2);
        img.apply(&AmqpCommand::DeleteQueue { vhost: v.clone(), name: "q".into() }).unwrap();
        assert!(img.default_vhost.bindings.is_empty());
        assert!(matches!(
            img.apply(&AmqpCommand::DeleteVhost { name: "/".into() }),
            Err(MetadataError::AccessRefused(_))
        ));
        assert!(matches!(
            img.apply(&AmqpCommand::DeclareQueue { vhost: "other".into(), queue: q("q") }),
            Err(MetadataError::UnknownVhost(_))
        ));
        img.apply(&AmqpCommand::DeclareVhost { name: "other".into() }).unwrap();
        img.apply(&AmqpCommand::DeclareQueue { vhost: "other".into(), queue: q("q") }).unwrap();
        assert_eq!(img.vhost_names(), vec!["/".to_string(), "other".to_string()]);
    }

    #[test]
    fn auto_delete_exchanges_go_with_their_last_binding() {
        let mut img = AmqpImage::default();
        let v = "/".to_string();
        let mut e = ex("ad", "fanout");
        e.auto_delete = true;
        img.apply(&AmqpCommand::DeclareExchange { vhost: v.clone(), exchange: e }).unwrap();
        img.apply(&AmqpCommand::DeclareQueue { vhost: v.clone(), queue: q("q") }).unwrap();
        img.apply(&AmqpCommand::Bind { vhost: v.clone(), binding: b("ad", "q") }).unwrap();
        img.apply(&AmqpCommand::Unbind { vhost: v.clone(), binding: b("ad", "q") }).unwrap();
        assert!(!img.default_vhost.exchanges.contains_key("ad"));
    }
}
