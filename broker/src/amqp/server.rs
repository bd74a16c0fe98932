//! The AMQP listener: accepts connections and runs the periodic queue maintenance (message
//! TTL expiry, `x-expires`).

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::warn;

use super::broker::AmqpCore;
use super::connection::serve_connection;

/// How often message TTLs and queue expiry are checked.
const TICK: Duration = Duration::from_millis(50);

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
