//! From a resource's `clusterRef` to the admin API of that broker cluster.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use weir_crds::ClusterRef;

use crate::admin::{BrokerAdmin, HttpAdmin};

/// Finds the admin client of the cluster a resource refers to.
pub trait AdminResolver: Send + Sync {
    fn admin(&self, resource_namespace: &str, cluster: &ClusterRef) -> Arc<dyn BrokerAdmin>;
}

/// Default template: the chart's client Service, in-cluster DNS, admin port 9644.
pub const DEFAULT_ADMIN_URL_TEMPLATE: &str = "http://{name}.{namespace}.svc:9644";

/// Builds the admin URL from a template with `{name}` and `{namespace}` (the cluster's namespace,
/// defaulting to the resource's). One HTTP client per URL, kept for reuse.
pub struct UrlTemplateResolver {
    template: String,
    clients: Mutex<HashMap<String, Arc<HttpAdmin>>>,
    move_throttle: u64,
}

impl UrlTemplateResolver {
    pub fn new(template: impl Into<String>) -> Self {
        UrlTemplateResolver { template: template.into(), clients: Mutex::new(HashMap::new()), move_throttle: 0 }
    }

    /// The rate the admins it hands out hold the reassignment throttle at while the moves
    /// the controllers start run (`HttpAdmin::with_move_throttle`).
    pub fn with_move_throttle(mut self, bytes_per_sec: u64) -> Self {
        self.move_throttle = bytes_per_sec;
        self
    }

    pub fn url(&self, resource_namespace: &str, cluster: &ClusterRef) -> String {
        let ns = cluster.namespace.as_deref().unwrap_or(resource_namespace);
        self.template.replace("{name}", &cluster.name).replace("{namespace}", ns)
    }
}

impl AdminResolver for UrlTemplateResolver {
    fn admin(&self, resource_namespace: &str, cluster: &ClusterRef) -> Arc<dyn BrokerAdmin> {
        let url = self.url(resource_namespace, cluster);
        let mut clients = self.clients.lock().unwrap();
        let throttle = self.move_throttle;
        clients.entry(url.clone()).or_insert_with(|| Arc::new(HttpAdmin::new(url).with_move_throttle(throttle))).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_takes_the_cluster_namespace_or_the_resources() {
        let r = UrlTemplateResolver::new(DEFAULT_ADMIN_URL_TEMPLATE);
        let same_ns = ClusterRef { name: "weir".into(), namespace: None };
        assert_eq!(r.url("apps", &same_ns), "http://weir.apps.svc:9644");
        let other = ClusterRef { name: "weir".into(), namespace: Some("brokers".into()) };
        assert_eq!(r.url("apps", &other), "http://weir.brokers.svc:9644");
    }
}
