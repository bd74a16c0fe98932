//! Queue reconciler, broker side: declare the queue (idempotent PUT), report a queue that exists
//! with other properties, delete it with the resource (honouring `deleteIfEmpty`/`deleteIfUnused`).

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde_json::{json, Value};
use weir_crds::{ClusterRef, DeletionPolicy, Queue, QueueSpec, QueueType};

use crate::admin::{AdminError, BrokerAdmin, Declared, DeleteGuards, QueueDeclare};
use crate::controller::Managed;
use crate::sync::{Change, Removal, SyncOutcome};

/// The `PUT` body for `spec`: the type travels as the `x-queue-type` argument (left out for
/// classic, the default, so that a queue declared by a client without it is equivalent).
pub fn queue_declare(spec: &QueueSpec) -> QueueDeclare {
    let mut arguments: BTreeMap<String, Value> = spec.arguments.clone();
    if spec.queue_type != QueueType::Classic {
        arguments.insert("x-queue-type".to_string(), json!(spec.queue_type.as_str()));
    }
    QueueDeclare { durable: spec.durable, auto_delete: spec.auto_delete, arguments }
}

/// Declares `name` in `spec.vhost`, creating the vhost first if it is missing.
pub async fn sync_queue(admin: &dyn BrokerAdmin, name: &str, spec: &QueueSpec) -> Result<SyncOutcome, AdminError> {
    let decl = queue_declare(spec);
    let mut changes = Vec::new();
    let declared = match admin.put_queue(&spec.vhost, name, &decl).await {
        Err(e) if e.code() == Some("unknown_vhost") => {
            admin.put_vhost(&spec.vhost).await?;
            changes.push(Change::new("VhostCreated", format!("created virtual host {}", spec.vhost)));
            admin.put_queue(&spec.vhost, name, &decl).await
        }
        other => other,
    };
    match declared {
        Ok(Declared::Created) => {
            changes.push(Change::new("Created", format!("declared {} queue {name} in vhost {}", spec.queue_type.as_str(), spec.vhost)));
            Ok(SyncOutcome::ready(changes))
        }
        Ok(Declared::Existed) => Ok(SyncOutcome::ready(changes)),
        Err(AdminError::Api { code, message, .. }) if code == "inequivalent_arguments" => Ok(SyncOutcome::not_ready(
            "InequivalentArguments",
            format!("queue {name} exists on the broker with other properties ({message}); AMQP cannot change a queue in place: delete the Queue resource (and the queue's messages) and create it again"),
            changes,
        )),
        Err(e) => Err(e),
    }
}

/// Deletes the queue with the guards the spec asks for.
pub async fn remove_queue(
    admin: &dyn BrokerAdmin,
    vhost: &str,
    name: &str,
    guards: DeleteGuards,
) -> Result<Removal, AdminError> {
    match admin.delete_queue(vhost, name, guards).await {
        Ok(true) => Ok(Removal::Deleted(Change::new("Deleted", format!("deleted queue {name} in vhost {vhost}")))),
        Ok(false) => Ok(Removal::AlreadyGone),
        Err(AdminError::Api { code, message, .. }) if code == "not_empty" || code == "in_use" => Ok(Removal::Blocked {
            reason: if code == "not_empty" { "QueueNotEmpty" } else { "QueueInUse" },
            message: format!("deletion waits ({message}); deleteIfEmpty/deleteIfUnused guard it"),
        }),
        Err(e) => Err(e),
    }
}

#[async_trait]
impl Managed for Queue {
    const KIND: &'static str = "Queue";

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
        sync_queue(admin, &self.queue_name(), &self.spec).await
    }

    async fn remove(&self, admin: &dyn BrokerAdmin) -> Result<Removal, AdminError> {
        let guards = DeleteGuards { if_empty: self.spec.delete_if_empty, if_unused: self.spec.delete_if_unused };
        remove_queue(admin, &self.spec.vhost, &self.queue_name(), guards).await
    }
}
