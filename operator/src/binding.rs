//! Binding reconciler, broker side: create the binding (idempotent POST), wait for a missing
//! source or destination, remove it with the resource.

use async_trait::async_trait;
use weir_crds::{Binding, BindingSpec, ClusterRef, DeletionPolicy};

use crate::admin::{AdminError, BindingInfo, BrokerAdmin, Declared};
use crate::controller::Managed;
use crate::sync::{Change, Removal, SyncOutcome};

pub fn binding_info(spec: &BindingSpec) -> BindingInfo {
    BindingInfo {
        source: spec.source.clone(),
        destination_type: spec.destination_type.as_str().to_string(),
        destination: spec.destination.clone(),
        routing_key: spec.routing_key.clone(),
        arguments: spec.arguments.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.0.clone()))).collect(),
    }
}

fn describe(b: &BindingInfo) -> String {
    format!("{} -> {} {} (key {:?})", b.source, b.destination_type, b.destination, b.routing_key)
}

pub async fn sync_binding(admin: &dyn BrokerAdmin, spec: &BindingSpec) -> Result<SyncOutcome, AdminError> {
    let binding = binding_info(spec);
    match admin.create_binding(&spec.vhost, &binding).await {
        Ok(Declared::Created) => Ok(SyncOutcome::ready(vec![Change::new(
            "Created",
            format!("bound {} in vhost {}", describe(&binding), spec.vhost),
        )])),
        Ok(Declared::Existed) => Ok(SyncOutcome::ready(Vec::new())),
        // The source or destination is not declared (yet): typically its resource is applied in
        // the same batch. Not an error of the binding; the controller retries soon.
        Err(AdminError::Api { status: 404, code, message }) if code != "not_found" => Ok(SyncOutcome::not_ready(
            "WaitingForEndpoints",
            format!("cannot bind {} yet: {message}", describe(&binding)),
            Vec::new(),
        )),
        Err(e) => Err(e),
    }
}

pub async fn remove_binding(admin: &dyn BrokerAdmin, spec: &BindingSpec) -> Result<Removal, AdminError> {
    let binding = binding_info(spec);
    match admin.delete_binding(&spec.vhost, &binding).await {
        Ok(true) => Ok(Removal::Deleted(Change::new("Deleted", format!("unbound {}", describe(&binding))))),
        Ok(false) => Ok(Removal::AlreadyGone),
        // Source or destination already gone: so is the binding.
        Err(AdminError::Api { status: 404, code, .. }) if code != "not_found" => Ok(Removal::AlreadyGone),
        Err(e) => Err(e),
    }
}

#[async_trait]
impl Managed for Binding {
    const KIND: &'static str = "Binding";

    fn cluster_ref(&self) -> &ClusterRef {
        &self.spec.cluster_ref
    }

    fn deletion_policy(&self) -> DeletionPolicy {
        self.spec.deletion_policy
    }

    fn current_status(&self) -> Option<serde_json::Value> {
        self.status.as_ref().map(|s| serde_json::to_value(s).expect("status serializes"))
    }

    async fn sync(&self, admin: &dyn BrokerAdmin) -> Result<SyncOutcome, AdminError> {
        sync_binding(admin, &self.spec).await
    }

    async fn remove(&self, admin: &dyn BrokerAdmin) -> Result<Removal, AdminError> {
        remove_binding(admin, &self.spec).await
    }
}
