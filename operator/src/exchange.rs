//! Exchange reconciler, broker side: declare the exchange (idempotent PUT), report one that
//! exists with other properties, delete it with the resource.

use async_trait::async_trait;
use weir_crds::{ClusterRef, DeletionPolicy, Exchange, ExchangeSpec};

use crate::admin::{AdminError, BrokerAdmin, Declared, ExchangeInfo};
use crate::controller::Managed;
use crate::sync::{Change, Removal, SyncOutcome};

pub fn exchange_declare(spec: &ExchangeSpec) -> ExchangeInfo {
    ExchangeInfo {
        exchange_type: spec.exchange_type.as_str().to_string(),
        durable: spec.durable,
        auto_delete: spec.auto_delete,
        internal: spec.internal,
        arguments: spec.arguments.clone(),
    }
}

/// Declares `name` in `spec.vhost`, creating the vhost first if it is missing.
pub async fn sync_exchange(
    admin: &dyn BrokerAdmin,
    name: &str,
    spec: &ExchangeSpec,
) -> Result<SyncOutcome, AdminError> {
    let decl = exchange_declare(spec);
    let mut changes = Vec::new();
    let declared = match admin.put_exchange(&spec.vhost, name, &decl).await {
        Err(e) if e.code() == Some("unknown_vhost") => {
            admin.put_vhost(&spec.vhost).await?;
            changes.push(Change::new("VhostCreated", format!("created virtual host {}", spec.vhost)));
            admin.put_exchange(&spec.vhost, name, &decl).await
        }
        other => other,
    };
    match declared {
        Ok(Declared::Created) => {
            changes.push(Change::new("Created", format!("declared {} exchange {name} in vhost {}", decl.exchange_type, spec.vhost)));
            Ok(SyncOutcome::ready(changes))
        }
        Ok(Declared::Existed) => Ok(SyncOutcome::ready(changes)),
        Err(AdminError::Api { code, message, .. }) if code == "inequivalent_arguments" => Ok(SyncOutcome::not_ready(
            "InequivalentArguments",
            format!("exchange {name} exists on the broker with other properties ({message}); AMQP cannot change an exchange in place: delete the Exchange resource and create it again"),
            changes,
        )),
        Err(e) => Err(e),
    }
}

pub async fn remove_exchange(admin: &dyn BrokerAdmin, vhost: &str, name: &str) -> Result<Removal, AdminError> {
    Ok(if admin.delete_exchange(vhost, name).await? {
        Removal::Deleted(Change::new("Deleted", format!("deleted exchange {name} in vhost {vhost} and its bindings")))
    } else {
        Removal::AlreadyGone
    })
}

#[async_trait]
impl Managed for Exchange {
    const KIND: &'static str = "Exchange";

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
        sync_exchange(admin, &self.exchange_name(), &self.spec).await
    }

    async fn remove(&self, admin: &dyn BrokerAdmin) -> Result<Removal, AdminError> {
        remove_exchange(admin, &self.spec.vhost, &self.exchange_name()).await
    }
}
