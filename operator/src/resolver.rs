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
}

impl UrlTemplateResolver {
    pub fn new(template: impl Into<String>) -> Self {
        UrlTemplateResolver { template: template.into(), clients: Mutex::new(HashMap::new()) }
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
        clients.entry(url.clone()).or_insert_with(|| Arc::new(HttpAdmin::new(url))).clone()
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
