//! Topics created because a client named them: an unknown topic in a Metadata request (with
//! `auto.create.topics.enable`) and `__consumer_offsets` at the first FindCoordinator.
//!
//! As Kafka's AutoTopicCreationManager, the creation goes to the metadata quorum in the
//! background and the request does not wait for it to commit: it waits at most
//! [`COMMIT_WAIT`], enough for a quorum that has a majority, so a client's first request
//! usually finds the topic made, and otherwise answers with a retriable error
//! (LEADER_NOT_AVAILABLE, COORDINATOR_NOT_AVAILABLE). Waiting for the commit instead held the
//! request's connection, whose requests are served in order, for up to the proposal's deadline
//! (15 s) while the quorum had no majority, and with it every request the client sent behind it
//! (a ListOffsets to the partition's leader, a Fetch).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::cluster::{ClusterNode, MetadataError, ProposeError};

/// How long a request waits for a creation it started (or found under way) to commit.
pub const COMMIT_WAIT: Duration = Duration::from_secs(1);

/// What a creation came to, shared by every request that waits for it.
pub type Outcome = Result<(), Arc<ProposeError>>;

/// The shape of a topic to create.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    pub partitions: u32,
    pub replication_factor: u16,
    pub configs: BTreeMap<String, String>,
}

pub struct AutoTopicCreator {
    cluster: Arc<ClusterNode>,
    /// One creation per topic name at a time; later requests wait on the same one.
    in_flight: Mutex<HashMap<String, watch::Receiver<Option<Outcome>>>>,
}

impl AutoTopicCreator {
    pub fn new(cluster: Arc<ClusterNode>) -> Arc<Self> {
        Arc::new(Self { cluster, in_flight: Mutex::new(HashMap::new()) })
    }

    /// Starts creating `name` unless a creation of it is under way; the receiver sees the
    /// outcome. An existing topic counts as created.
    pub fn start(self: &Arc<Self>, name: &str, spec: TopicSpec) -> watch::Receiver<Option<Outcome>> {
        let mut in_flight = self.in_flight.lock().expect("auto-create lock");
        if let Some(rx) = in_flight.get(name) {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(None);
        in_flight.insert(name.to_string(), rx.clone());
        let this = self.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            let created =
                this.cluster.create_topic(&name, spec.partitions, spec.replication_factor, spec.configs, None).await;
            let outcome = match created {
                Ok(()) => {
                    tracing::info!(topic = %name, "auto-created topic");
                    Ok(())
                }
                Err(ProposeError::Metadata(MetadataError::TopicExists(_))) => Ok(()),
                Err(e) => {
                    tracing::warn!(topic = %name, error = %e, "auto-creating a topic failed");
                    Err(Arc::new(e))
                }
            };
            let _ = tx.send(Some(outcome));
            this.in_flight.lock().expect("auto-create lock").remove(&name);
        });
        rx
    }
}

/// The outcome of a creation, or None while it is still under way at `deadline`.
pub async fn outcome_by(rx: &mut watch::Receiver<Option<Outcome>>, deadline: Instant) -> Option<Outcome> {
    match tokio::time::timeout_at(deadline, rx.wait_for(Option::is_some)).await {
        Ok(Ok(outcome)) => outcome.clone(),
        // Timed out, or the task ended without an outcome (the runtime shutting down).
        _ => None,
    }
}
