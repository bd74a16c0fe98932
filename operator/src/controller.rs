//! The Kubernetes side shared by the four controllers: finalizer, status conditions, Events,
//! requeue policy and metrics around each kind's broker-side `sync` / `remove`.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use weir_crds::{Binding, ClusterRef, DeletionPolicy, Exchange, Queue, Topic, CONDITION_READY, CONDITION_SYNCED};

use crate::admin::{AdminError, BrokerAdmin};
use crate::conditions::condition;
use crate::metrics::Metrics;
use crate::resolver::AdminResolver;
use crate::sync::{Readiness, Removal, SyncOutcome};

/// Finalizer every Weir resource carries until its broker object is deleted (or retained).
pub const FINALIZER: &str = "weir.dev/broker-object";
/// Field manager / Event reporter name.
pub const MANAGER: &str = "weir-operator";

/// A resource kind the operator reconciles against the broker admin API.
#[async_trait]
pub trait Managed:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    const KIND: &'static str;
    fn cluster_ref(&self) -> &ClusterRef;
    fn deletion_policy(&self) -> DeletionPolicy;
    /// The current `.status` as JSON (to compare before writing).
    fn current_status(&self) -> Option<Value>;
    /// Bring the broker object to the spec.
    async fn sync(&self, admin: &dyn BrokerAdmin) -> Result<SyncOutcome, AdminError>;
    /// Delete the broker object (deletion policy `delete`).
    async fn remove(&self, admin: &dyn BrokerAdmin) -> Result<Removal, AdminError>;
}

/// Timing of requeues.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Periodic resync of a Ready resource; repairs drift (an object deleted behind our back).
    pub resync: Duration,
    /// Retry after a transient failure (broker unreachable or starting, no quorum).
    pub retry_transient: Duration,
    /// Retry after a refusal or a not-ready state that needs someone to act.
    pub retry_refused: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            resync: Duration::from_secs(300),
            retry_transient: Duration::from_secs(10),
            retry_refused: Duration::from_secs(60),
        }
    }
}

/// What every reconcile needs.
pub struct Context {
    pub client: Client,
    pub admins: Arc<dyn AdminResolver>,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub timing: Timing,
}

impl Context {
    pub fn new(client: Client, admins: Arc<dyn AdminResolver>, metrics: Arc<Metrics>, timing: Timing) -> Self {
        let reporter = Reporter { controller: MANAGER.into(), instance: std::env::var("POD_NAME").ok() };
        let recorder = Recorder::new(client.clone(), reporter);
        Context { client, admins, recorder, metrics, timing }
    }
}

/// Errors that fail a reconcile (and are retried by the controller's error policy). Broker
/// refusals of the spec are not errors here: they become conditions.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("broker object not deleted: {0}")]
    Removal(AdminError),
    #[error("deletion waits: {0}")]
    DeletionBlocked(String),
    #[error("resource has no namespace")]
    NoNamespace,
}

impl Error {
    fn metric_reason(&self) -> String {
        match self {
            Error::Kube(_) => "KubernetesApi".into(),
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e) | kube::runtime::finalizer::Error::CleanupFailed(e) => {
                    e.metric_reason()
                }
                _ => "Finalizer".into(),
            },
            Error::Removal(e) => e.reason(),
            Error::DeletionBlocked(_) => "DeletionBlocked".into(),
            Error::NoNamespace => "NoNamespace".into(),
        }
    }
}

/// Reconcile one resource of kind `K`.
pub async fn reconcile<K: Managed>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let ns = obj.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            Finalizer::Apply(o) => apply(o, &api, &ctx).await,
            Finalizer::Cleanup(o) => cleanup(o, &api, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    let reason = result.as_ref().err().map(|e| e.metric_reason());
    ctx.metrics.observe(K::KIND, started.elapsed(), reason.as_deref());
    result
}

/// Requeue after a failed reconcile.
pub fn error_policy<K: Managed>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(kind = K::KIND, name = %obj.name_any(), namespace = ?obj.namespace(), %error, "reconcile failed");
    Action::requeue(ctx.timing.retry_transient)
}

async fn publish<K: Managed>(ctx: &Context, obj: &K, type_: EventType, reason: &str, note: String, action: &str) {
    let ev = Event { type_, reason: reason.to_string(), note: Some(note), action: action.to_string(), secondary: None };
    if let Err(e) = ctx.recorder.publish(&ev, &obj.object_ref(&())).await {
        // An Event that cannot be written must not fail the reconcile.
        tracing::warn!(kind = K::KIND, name = %obj.name_any(), error = %e, "cannot publish event");
    }
}

fn previous_conditions(status: Option<&Value>) -> Vec<Condition> {
    status.and_then(|s| s.get("conditions")).and_then(|c| serde_json::from_value(c.clone()).ok()).unwrap_or_default()
}

/// Writes `.status` (observedGeneration, conditions and `fields`) unless it is already that.
async fn write_status<K: Managed>(
    api: &Api<K>,
    obj: &K,
    ready: (&str, &str, &str),
    synced: (&str, &str, &str),
    fields: serde_json::Map<String, Value>,
) -> Result<(), Error> {
    let current = obj.current_status();
    let previous = previous_conditions(current.as_ref());
    let generation = obj.meta().generation;
    let conditions = vec![
        condition(&previous, CONDITION_READY, ready.0, ready.1, ready.2, generation),
        condition(&previous, CONDITION_SYNCED, synced.0, synced.1, synced.2, generation),
    ];
    let mut status = fields;
    status.insert("observedGeneration".into(), json!(generation));
    status.insert("conditions".into(), serde_json::to_value(&conditions).expect("conditions serialize"));
    let status = Value::Object(status);
    if let Some(current) = &current {
        // Compare only the keys we write; a no-op write would still cost an API round trip.
        let unchanged = status.as_object().unwrap().iter().all(|(k, v)| current.get(k) == Some(v));
        if unchanged {
            return Ok(());
        }
    }
    api.patch_status(&obj.name_any(), &PatchParams::default(), &Patch::Merge(json!({ "status": status }))).await?;
    Ok(())
}

async fn apply<K: Managed>(obj: Arc<K>, api: &Api<K>, ctx: &Context) -> Result<Action, Error> {
    let ns = obj.namespace().ok_or(Error::NoNamespace)?;
    let admin = ctx.admins.admin(&ns, obj.cluster_ref());
    match obj.sync(admin.as_ref()).await {
        Ok(outcome) => {
            for change in &outcome.changes {
                tracing::info!(kind = K::KIND, name = %obj.name_any(), namespace = %ns, reason = change.reason, note = %change.note, "changed broker object");
                publish(ctx, obj.as_ref(), EventType::Normal, change.reason, change.note.clone(), "Reconcile").await;
            }
            let synced = ("True", "Synced", "the spec is applied to the broker");
            let requeue = match &outcome.readiness {
                Readiness::Ready { reason, message } => {
                    write_status(api, obj.as_ref(), ("True", reason, message), synced, outcome.status_fields).await?;
                    ctx.timing.resync
                }
                Readiness::NotReady { reason, message } => {
                    if obj
                        .current_status()
                        .map(|s| previous_conditions(Some(&s)))
                        .unwrap_or_default()
                        .iter()
                        .all(|c| c.reason != *reason)
                    {
                        publish(ctx, obj.as_ref(), EventType::Warning, reason, message.clone(), "Reconcile").await;
                    }
                    write_status(api, obj.as_ref(), ("False", reason, message), synced, outcome.status_fields).await?;
                    ctx.timing.retry_refused.min(ctx.timing.resync)
                }
                Readiness::Progressing { reason, message } => {
                    write_status(api, obj.as_ref(), ("False", reason, message), synced, outcome.status_fields).await?;
                    ctx.timing.retry_transient.min(ctx.timing.resync)
                }
            };
            Ok(Action::requeue(requeue))
        }
        Err(e) => {
            tracing::warn!(kind = K::KIND, name = %obj.name_any(), namespace = %ns, error = %e, "broker admin API error");
            let reason = e.reason();
            let message = e.to_string();
            publish(ctx, obj.as_ref(), EventType::Warning, &reason, message.clone(), "Reconcile").await;
            // A transient failure says nothing about the broker object: Ready becomes Unknown.
            let (ready_status, retry) = if e.is_transient() {
                ("Unknown", ctx.timing.retry_transient)
            } else {
                ("False", ctx.timing.retry_refused)
            };
            write_status(
                api,
                obj.as_ref(),
                (ready_status, &reason, &message),
                ("False", &reason, &message),
                serde_json::Map::new(),
            )
            .await?;
            ctx.metrics.errors.with_label_values(&[K::KIND, &reason]).inc();
            Ok(Action::requeue(retry))
        }
    }
}

async fn cleanup<K: Managed>(obj: Arc<K>, api: &Api<K>, ctx: &Context) -> Result<Action, Error> {
    if obj.deletion_policy() == DeletionPolicy::Retain {
        publish(
            ctx,
            obj.as_ref(),
            EventType::Normal,
            "Retained",
            "deletionPolicy is retain: the broker object is kept".into(),
            "Delete",
        )
        .await;
        return Ok(Action::await_change());
    }
    let ns = obj.namespace().ok_or(Error::NoNamespace)?;
    let admin = ctx.admins.admin(&ns, obj.cluster_ref());
    match obj.remove(admin.as_ref()).await {
        Ok(Removal::Deleted(change)) => {
            tracing::info!(kind = K::KIND, name = %obj.name_any(), namespace = %ns, note = %change.note, "deleted broker object");
            publish(ctx, obj.as_ref(), EventType::Normal, change.reason, change.note, "Delete").await;
            Ok(Action::await_change())
        }
        Ok(Removal::AlreadyGone) => Ok(Action::await_change()),
        Ok(Removal::Blocked { reason, message }) => {
            publish(ctx, obj.as_ref(), EventType::Warning, reason, message.clone(), "Delete").await;
            write_status(
                api,
                obj.as_ref(),
                ("False", reason, &message),
                ("False", reason, &message),
                serde_json::Map::new(),
            )
            .await?;
            Err(Error::DeletionBlocked(message))
        }
        Err(e) => {
            publish(ctx, obj.as_ref(), EventType::Warning, &e.reason(), e.to_string(), "Delete").await;
            Err(Error::Removal(e))
        }
    }
}

/// Runs one controller per kind until the stream ends (shutdown signal).
pub async fn run_controllers(ctx: Arc<Context>, namespace: Option<String>) {
    fn api<K: Managed>(client: &Client, ns: &Option<String>) -> Api<K> {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    async fn run<K: Managed>(api: Api<K>, ctx: Arc<Context>) {
        Controller::new(api, watcher::Config::default().any_semantic())
            .shutdown_on_signal()
            .run(reconcile::<K>, error_policy::<K>, ctx)
            .for_each(|res| async move {
                if let Err(e) = res {
                    tracing::debug!(kind = K::KIND, error = %e, "reconcile error");
                }
            })
            .await;
    }
    let client = ctx.client.clone();
    tokio::join!(
        run(api::<Topic>(&client, &namespace), ctx.clone()),
        run(api::<Queue>(&client, &namespace), ctx.clone()),
        run(api::<Exchange>(&client, &namespace), ctx.clone()),
        run(api::<Binding>(&client, &namespace), ctx.clone()),
    );
}
