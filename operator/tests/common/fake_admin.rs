//! A broker admin stand-in for the reconciler unit tests: keeps objects in maps, answers like
//! the documented admin API (docs/admin-api.md), and can be told to fail. The HTTP client and
//! the real broker are covered by the operator_local suite.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use weir_operator::admin::*;

#[derive(Default)]
pub struct FakeAdmin {
    pub state: Mutex<State>,
}

#[derive(Default)]
pub struct State {
    pub topics: BTreeMap<String, TopicInfo>,
    pub vhosts: Vec<String>,
    pub exchanges: BTreeMap<(String, String), ExchangeInfo>,
    pub queues: BTreeMap<(String, String), QueueInfo>,
    pub bindings: Vec<(String, BindingInfo)>,
    /// Every call, as "METHOD what".
    pub calls: Vec<String>,
    /// When set, every call fails with this error.
    pub fail_with: Option<AdminError>,
    /// Messages in each queue (for if_empty).
    pub queue_messages: BTreeMap<(String, String), u64>,
    next_id: u32,
}

fn api_err(status: u16, code: &str, message: &str) -> AdminError {
    AdminError::Api { status, code: code.into(), message: message.into() }
}

impl FakeAdmin {
    pub fn new() -> Self {
        let f = FakeAdmin::default();
        f.state.lock().unwrap().vhosts.push("/".into());
        f
    }

    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }

    fn enter(&self, call: String) -> Result<std::sync::MutexGuard<'_, State>, AdminError> {
        let mut s = self.state.lock().unwrap();
        s.calls.push(call);
        match &s.fail_with {
            Some(e) => Err(e.clone()),
            None => Ok(s),
        }
    }
}

#[async_trait]
impl BrokerAdmin for FakeAdmin {
    async fn get_topic(&self, name: &str) -> Result<Option<TopicInfo>, AdminError> {
        let s = self.enter(format!("GET topic {name}"))?;
        Ok(s.topics.get(name).cloned())
    }

    async fn create_topic(&self, t: &NewTopic) -> Result<TopicInfo, AdminError> {
        let mut s = self.enter(format!("POST topic {}", t.name))?;
        if s.topics.contains_key(&t.name) {
            return Err(api_err(409, "topic_exists", "exists"));
        }
        if let Some(k) = t.configs.keys().find(|k| k.starts_with("bogus")) {
            return Err(api_err(400, "invalid_config", &format!("unknown config {k}")));
        }
        s.next_id += 1;
        let rf = t.replication_factor.unwrap_or(1);
        let info = TopicInfo {
            name: t.name.clone(),
            topic_id: format!("{:032x}", s.next_id),
            partitions: t.partitions,
            replication_factor: rf,
            configs: t.configs.clone(),
            assignment: vec![vec![0; rf as usize]; t.partitions as usize],
        };
        s.topics.insert(t.name.clone(), info.clone());
        Ok(info)
    }

    async fn patch_topic(&self, name: &str, p: &TopicPatch) -> Result<TopicInfo, AdminError> {
        let mut s = self.enter(format!("PATCH topic {name}"))?;
        let t = s.topics.get_mut(name).ok_or_else(|| api_err(404, "unknown_topic", "no topic"))?;
        if let Some(n) = p.partitions {
            if n <= t.partitions {
                return Err(api_err(400, "invalid_partitions", "can only grow"));
            }
            t.partitions = n;
        }
        for (k, v) in &p.configs {
            t.configs.insert(k.clone(), v.clone());
        }
        for k in &p.delete_configs {
            t.configs.remove(k);
        }
        Ok(t.clone())
    }

    async fn delete_topic(&self, name: &str) -> Result<bool, AdminError> {
        let mut s = self.enter(format!("DELETE topic {name}"))?;
        Ok(s.topics.remove(name).is_some())
    }

    async fn put_vhost(&self, vhost: &str) -> Result<(), AdminError> {
        let mut s = self.enter(format!("PUT vhost {vhost}"))?;
        if !s.vhosts.iter().any(|v| v == vhost) {
            s.vhosts.push(vhost.into());
        }
        Ok(())
    }

    async fn get_exchange(&self, vhost: &str, name: &str) -> Result<Option<ExchangeInfo>, AdminError> {
        let s = self.enter(format!("GET exchange {vhost} {name}"))?;
        Ok(s.exchanges.get(&(vhost.into(), name.into())).cloned())
    }

    async fn put_exchange(&self, vhost: &str, name: &str, d: &ExchangeInfo) -> Result<Declared, AdminError> {
        let mut s = self.enter(format!("PUT exchange {vhost} {name}"))?;
        if !s.vhosts.iter().any(|v| v == vhost) {
            return Err(api_err(404, "unknown_vhost", "no vhost"));
        }
        match s.exchanges.get(&(vhost.into(), name.into())) {
            Some(e) if e == d => Ok(Declared::Existed),
            Some(e) => Err(api_err(409, "inequivalent_arguments", &format!("type is {}", e.exchange_type))),
            None => {
                s.exchanges.insert((vhost.into(), name.into()), d.clone());
                Ok(Declared::Created)
            }
        }
    }

    async fn delete_exchange(&self, vhost: &str, name: &str) -> Result<bool, AdminError> {
        let mut s = self.enter(format!("DELETE exchange {vhost} {name}"))?;
        Ok(s.exchanges.remove(&(vhost.into(), name.into())).is_some())
    }

    async fn get_queue(&self, vhost: &str, name: &str) -> Result<Option<QueueInfo>, AdminError> {
        let s = self.enter(format!("GET queue {vhost} {name}"))?;
        Ok(s.queues.get(&(vhost.into(), name.into())).cloned())
    }

    async fn put_queue(&self, vhost: &str, name: &str, d: &QueueDeclare) -> Result<Declared, AdminError> {
        let mut s = self.enter(format!("PUT queue {vhost} {name}"))?;
        if !s.vhosts.iter().any(|v| v == vhost) {
            return Err(api_err(404, "unknown_vhost", "no vhost"));
        }
        let info = QueueInfo {
            queue_type: Some("classic".into()),
            durable: d.durable,
            auto_delete: d.auto_delete,
            arguments: d.arguments.clone(),
            messages: Some(0),
            consumers: Some(0),
        };
        match s.queues.get(&(vhost.into(), name.into())) {
            Some(q)
                if q.arguments == info.arguments && q.durable == info.durable && q.auto_delete == info.auto_delete =>
            {
                Ok(Declared::Existed)
            }
            Some(_) => Err(api_err(409, "inequivalent_arguments", "arguments differ")),
            None => {
                s.queues.insert((vhost.into(), name.into()), info);
                Ok(Declared::Created)
            }
        }
    }

    async fn delete_queue(&self, vhost: &str, name: &str, g: DeleteGuards) -> Result<bool, AdminError> {
        let mut s =
            self.enter(format!("DELETE queue {vhost} {name} if_empty={} if_unused={}", g.if_empty, g.if_unused))?;
        let key = (vhost.to_string(), name.to_string());
        if g.if_empty && s.queue_messages.get(&key).copied().unwrap_or(0) > 0 {
            return Err(api_err(409, "not_empty", "queue has messages"));
        }
        Ok(s.queues.remove(&key).is_some())
    }

    async fn list_bindings(&self, vhost: &str, source: &str) -> Result<Vec<BindingInfo>, AdminError> {
        let s = self.enter(format!("GET bindings {vhost} {source}"))?;
        Ok(s.bindings.iter().filter(|(v, b)| v == vhost && b.source == source).map(|(_, b)| b.clone()).collect())
    }

    async fn create_binding(&self, vhost: &str, b: &BindingInfo) -> Result<Declared, AdminError> {
        let mut s = self.enter(format!("POST binding {vhost} {} {}", b.source, b.destination))?;
        if !s.exchanges.contains_key(&(vhost.into(), b.source.clone())) {
            return Err(api_err(404, "unknown_exchange", &format!("no exchange '{}'", b.source)));
        }
        if s.bindings.iter().any(|(v, x)| v == vhost && x == b) {
            return Ok(Declared::Existed);
        }
        s.bindings.push((vhost.into(), b.clone()));
        Ok(Declared::Created)
    }

    async fn delete_binding(&self, vhost: &str, b: &BindingInfo) -> Result<bool, AdminError> {
        let mut s = self.enter(format!("DELETE binding {vhost} {} {}", b.source, b.destination))?;
        let before = s.bindings.len();
        s.bindings.retain(|(v, x)| !(v == vhost && x == b));
        Ok(s.bindings.len() != before)
    }
}
