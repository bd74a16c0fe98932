//! The AMQP listener: accepts connections and runs the periodic queue maintenance (message
//! TTL expiry, `x-expires`).

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::{debug, warn};

use crate::cluster::amqp_image::AmqpCommand;
use crate::cluster::{ClusterNode, MetadataCommand};

use super::broker::AmqpCore;
use super::connection::serve_connection;

/// How often message TTLs and queue expiry are checked.
const TICK: Duration = Duration::from_millis(50);

/// Keep the core in line with the durable entities of the metadata image (now and after
/// every change), and commit the deletions the core decides itself (auto-delete queues,
/// `x-expires`).
pub fn follow_cluster(core: Arc<AmqpCore>, cluster: Arc<ClusterNode>) {
    core.set_cluster(cluster.clone());
    core.sync_durable(&cluster.image().amqp);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<AmqpCommand>();
    core.set_durable_sink(tx);
    let proposer = cluster.clone();
    tokio::spawn(async move {
        while let Some(cmd) = rx.recv().await {
            if let Err(e) = proposer.propose(MetadataCommand::Amqp(cmd.clone())).await {
                debug!(?cmd, error = %e, "committing a durable AMQP deletion failed");
            }
        }
    });
    let mut changes = cluster.subscribe();
    tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            core.sync_durable(&cluster.image().amqp);
        }
    });
}

pub async fn serve(listener: TcpListener, core: Arc<AmqpCore>) {
    let ticker = core.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(TICK);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            ticker.tick();
        }
    });
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tokio::spawn(serve_connection(core.clone(), stream, peer));
            }
            Err(e) => {
                warn!(error = %e, "accepting an AMQP connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
