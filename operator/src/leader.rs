//! Leader election between operator replicas through a `coordination.k8s.io/v1` Lease, using
//! the `kube-leader-election` crate (kube-runtime 4 has no Lease elector of its own). Only the
//! leader runs the controllers; a replica that loses the Lease exits so that it restarts as a
//! follower instead of reconciling next to the new leader.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube_leader_election::{LeaseLock, LeaseLockParams, LeaseLockResult};

use crate::metrics::Metrics;

pub struct Election {
    lock: Arc<LeaseLock>,
    ttl: Duration,
}

impl Election {
    pub fn new(client: kube::Client, namespace: &str, lease_name: &str, identity: &str, ttl: Duration) -> Self {
        let params = LeaseLockParams { lease_name: lease_name.into(), holder_id: identity.into(), lease_ttl: ttl };
        Election { lock: Arc::new(LeaseLock::new(client, namespace, params)), ttl }
    }

    /// Waits until this replica holds the Lease, then keeps renewing it in the background
    /// (every third of the TTL). Exits the process when the Lease is lost.
    pub async fn acquire(&self, metrics: Arc<Metrics>) {
        let every = self.ttl / 3;
        loop {
            match self.lock.try_acquire_or_renew().await {
                Ok(LeaseLockResult::Acquired(_)) => break,
                Ok(LeaseLockResult::NotAcquired(_)) => tracing::info!("another replica leads; waiting"),
                Err(e) => tracing::warn!(error = %e, "cannot acquire the leader Lease"),
            }
            tokio::time::sleep(every).await;
        }
        tracing::info!("acquired the leader Lease; starting controllers");
        metrics.leader.set(1);
        let lock = self.lock.clone();
        let ttl = self.ttl;
        tokio::spawn(async move {
            let mut renewed = Instant::now();
            loop {
                tokio::time::sleep(every).await;
                match lock.try_acquire_or_renew().await {
                    Ok(LeaseLockResult::Acquired(_)) => renewed = Instant::now(),
                    Ok(LeaseLockResult::NotAcquired(_)) => {
                        tracing::error!("lost the leader Lease to another replica; exiting");
                        std::process::exit(1);
                    }
                    Err(e) if renewed.elapsed() >= ttl => {
                        tracing::error!(error = %e, "could not renew the leader Lease within its TTL; exiting");
                        std::process::exit(1);
                    }
                    Err(e) => tracing::warn!(error = %e, "could not renew the leader Lease; retrying"),
                }
            }
        });
    }

    /// Gives the Lease up (on clean shutdown) so that another replica takes over at once.
    pub async fn step_down(&self) {
        if let Err(e) = self.lock.step_down().await {
            tracing::warn!(error = %e, "could not release the leader Lease");
        }
    }
}
