//! Runs rebalance rounds ([`crate::rebalance_exec::round`]) from Kubernetes' view of the
//! brokers: the broker StatefulSet's `spec.replicas` and its pods' readiness (watched). Logs a
//! plan when it changes, each executed step, and exports the plan's size.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::runtime::watcher;

use crate::admin::HttpAdmin;
use crate::metrics::Metrics;
use crate::rebalance::Step;
use crate::rebalance_exec::{round, Mode, Throttle};

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The ordinal of a StatefulSet pod `<statefulset>-<n>`.
fn ordinal(statefulset: &str, pod: &str) -> Option<i32> {
    pod.strip_prefix(statefulset)?.strip_prefix('-')?.parse().ok()
}

/// `spec.replicas` of the StatefulSet and the ordinals of its Ready pods.
async fn broker_pods(sts: &Api<StatefulSet>, pods: &Api<Pod>, name: &str) -> Result<(i32, BTreeSet<i32>), String> {
    let set = sts.get(name).await.map_err(|e| format!("StatefulSet {name}: {e}"))?;
    let desired = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let selector = set
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.as_ref())
        .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","))
        .unwrap_or_default();
    let ready: BTreeSet<i32> = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| format!("pods of {name}: {e}"))?
        .items
        .iter()
        .filter(|p| pod_ready(p))
        .filter_map(|p| ordinal(name, p.metadata.name.as_deref().unwrap_or("")))
        .collect();
    Ok((desired, ready))
}

/// Runs until the process ends: a round on every pod change and every 30 s (every 5 s while
/// data is moving or right after a step, so that a drain is followed closely).
pub async fn watch_brokers(
    client: kube::Client,
    namespace: String,
    statefulset: String,
    admin: HttpAdmin,
    metrics: Arc<Metrics>,
    mode: Mode,
    throttle: Throttle,
) {
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &namespace);
    let pods: Api<Pod> = Api::namespaced(client, &namespace);
    let mut changes = watcher(pods.clone(), watcher::Config::default()).boxed();
    let mut last: Option<Vec<Step>> = None;
    let mut last_moving = 0;
    // A blocked drain is asked again every round; its refusal is logged when it changes.
    let mut last_refusals: Vec<String> = Vec::new();
    let mut wait = Duration::ZERO;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            ev = changes.next() => if ev.is_none() { return },
        }
        wait = Duration::from_secs(30);
        let (desired, ready) = match broker_pods(&sts, &pods, &statefulset).await {
            Ok(found) => found,
            Err(e) => {
                tracing::debug!(statefulset = %statefulset, error = %e, "rebalance: cannot read the broker pods");
                continue;
            }
        };
        match round(&admin, desired, ready, mode, throttle).await {
            Ok(r) => {
                metrics.rebalance_pending_steps.set((r.steps.len() - r.executed.len()) as i64);
                if last.as_ref() != Some(&r.steps) {
                    if r.steps.is_empty() {
                        tracing::info!(statefulset = %statefulset, "rebalance: nothing to do");
                    }
                    for step in &r.steps {
                        tracing::info!(statefulset = %statefulset, ?step, ?mode, "rebalance step planned");
                    }
                    last = Some(r.steps.clone());
                }
                for step in &r.executed {
                    metrics.rebalance_steps_executed.with_label_values(&[step.kind()]).inc();
                    tracing::info!(statefulset = %statefulset, ?step, "rebalance step executed");
                }
                if r.refusals != last_refusals {
                    for refusal in &r.refusals {
                        tracing::warn!(statefulset = %statefulset, %refusal, "rebalance step not taken");
                    }
                    last_refusals = r.refusals.clone();
                }
                if r.moving != last_moving {
                    tracing::info!(statefulset = %statefulset, partitions = r.moving, "rebalance: partitions still being reassigned");
                    last_moving = r.moving;
                }
                if r.moving > 0 || !r.executed.is_empty() {
                    wait = Duration::from_secs(5);
                }
            }
            Err(e) => tracing::warn!(statefulset = %statefulset, error = %e, "rebalance round failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ordinal;

    #[test]
    fn ordinals_of_the_statefulset_pods_only() {
        assert_eq!(ordinal("weir", "weir-2"), Some(2));
        assert_eq!(ordinal("weir", "weir-operator-5d9c"), None);
        assert_eq!(ordinal("weir", "weirx-1"), None);
    }
}
