//! Feeds [`crate::rebalance::plan`] from Kubernetes and the broker: the broker StatefulSet's
//! `spec.replicas`, its pods' readiness (watched), and the partitions from the admin API. Runs on
//! every pod change and every 30 s; logs a plan when it changes and exports its size.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::runtime::watcher;

use crate::admin::HttpAdmin;
use crate::metrics::Metrics;
use crate::rebalance::{plan, Brokers, Partition, Step};

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

async fn current_plan(
    sts: &Api<StatefulSet>,
    pods: &Api<Pod>,
    name: &str,
    admin: &HttpAdmin,
) -> Result<Vec<Step>, String> {
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
    let partitions: Vec<Partition> = admin
        .list_partitions()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|p| Partition {
            topic: p.topic,
            partition: p.partition,
            replicas: p.replicas,
            leader: p.leader,
            isr: p.isr,
        })
        .collect();
    let min_isr: BTreeMap<String, i32> = admin
        .list_topics()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter_map(|t| t.configs.get("min.insync.replicas").and_then(|v| v.parse().ok()).map(|m| (t.name, m)))
        .collect();
    Ok(plan(&Brokers { desired, ready }, &partitions, &min_isr))
}

/// Runs until the process ends.
pub async fn watch_brokers(
    client: kube::Client,
    namespace: String,
    statefulset: String,
    admin: HttpAdmin,
    metrics: Arc<Metrics>,
) {
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &namespace);
    let pods: Api<Pod> = Api::namespaced(client, &namespace);
    let mut changes = watcher(pods.clone(), watcher::Config::default()).boxed();
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    let mut last: Option<Vec<Step>> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            ev = changes.next() => if ev.is_none() { return },
        }
        match current_plan(&sts, &pods, &statefulset, &admin).await {
            Ok(steps) => {
                metrics.rebalance_pending_steps.set(steps.len() as i64);
                if last.as_ref() != Some(&steps) {
                    if steps.is_empty() {
                        tracing::info!(statefulset = %statefulset, "rebalance: nothing to do");
                    }
                    for step in &steps {
                        tracing::info!(statefulset = %statefulset, ?step, "rebalance step planned (not executed: the admin API has no reassign/elect/drain endpoints yet)");
                    }
                    last = Some(steps);
                }
            }
            Err(e) => tracing::debug!(statefulset = %statefulset, error = %e, "rebalance: cannot plan"),
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
