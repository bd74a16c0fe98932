//! The raft transport: length-prefixed JSON frames over TCP on `--raft-listen`. Every request
//! carries its raft group id; one connection per peer broker carries all groups (requests on
//! it take turns). A node never dials itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};

use super::types::{CommandResult, GroupId, MetadataCommand, NodeId, TypeConfig};

/// Largest frame accepted; a snapshot of the metadata image is far below it.
const MAX_FRAME: usize = 64 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A metadata write forwarded to the quorum leader.
    Propose(MetadataCommand),
    /// A broker outside `--voters` asks the leader to add it as a learner.
    AddLearner {
        node_id: NodeId,
        raft_addr: String,
    },
    /// Broker liveness, sent to the quorum leader.
    Heartbeat {
        broker_id: NodeId,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    pub group: GroupId,
    pub request: Request,
}

/// Why a forwarded write did not happen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ForwardError {
    #[error("not the quorum leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("{0}")]
    Failed(String),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    /// The command's result and the index of its log entry (for read-your-writes).
    Propose(Result<(CommandResult, u64), ForwardError>),
    AddLearner(Result<(), ForwardError>),
    Heartbeat(Result<(), ForwardError>),
    /// The request could not be routed (unknown group).
    Refused(String),
}

/// Serves incoming requests; implemented by the cluster node.
pub trait RequestHandler: Send + Sync + 'static {
    fn handle(self: Arc<Self>, env: Envelope) -> impl std::future::Future<Output = Response> + Send;
}

async fn write_frame<W: AsyncWriteExt + Unpin>(w: &mut W, value: &impl Serialize) -> std::io::Result<()> {
    let body = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    w.write_u32(body.len() as u32).await?;
    w.write_all(&body).await?;
    w.flush().await
}

async fn read_frame<R: AsyncReadExt + Unpin, T: for<'de> Deserialize<'de>>(r: &mut R) -> std::io::Result<T> {
    let len = r.read_u32().await? as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("frame of {len} bytes")));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    serde_json::from_slice(&body).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Accept raft connections until the task is dropped.
pub async fn serve<H: RequestHandler>(listener: TcpListener, handler: Arc<H>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "raft accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        tokio::spawn(async move {
            let (r, w) = stream.into_split();
            let (mut r, mut w) = (BufReader::new(r), BufWriter::new(w));
            loop {
                let env: Envelope = match read_frame(&mut r).await {
                    Ok(env) => env,
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return,
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "bad raft frame; closing the connection");
                        return;
                    }
                };
                let resp = handler.clone().handle(env).await;
                if let Err(e) = write_frame(&mut w, &resp).await {
                    tracing::debug!(%peer, error = %e, "raft response not sent");
                    return;
                }
            }
        });
    }
}

type Conn = (BufReader<tokio::net::tcp::OwnedReadHalf>, BufWriter<tokio::net::tcp::OwnedWriteHalf>);

/// Client side: one lazily opened connection per peer address, shared by all groups.
#[derive(Default)]
pub struct Transport {
    conns: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Conn>>>>>,
}

impl Transport {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Send one request and wait for its response, within `timeout` including the wait for
    /// the connection's turn.
    ///
    /// Cancellation-safe: openraft wraps each RPC in its own timeout of the same length and
    /// drops this future when it fires first. The connection is therefore taken out of its
    /// slot for the exchange and put back only after a whole response was read; a call dropped
    /// halfway closes it, where leaving it in place would hand the next caller a stream with a
    /// half-written request or an unread response (every later call reading the answer to an
    /// earlier one, or the peer waiting forever for the rest of a frame).
    pub async fn call(&self, addr: &str, env: &Envelope, timeout: Duration) -> std::io::Result<Response> {
        let slot = self.conns.lock().expect("conn map lock").entry(addr.to_string()).or_default().clone();
        let attempt = async {
            let mut guard = slot.lock().await;
            let mut conn = match guard.take() {
                Some(conn) => conn,
                None => {
                    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
                        .await
                        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
                    stream.set_nodelay(true)?;
                    let (r, w) = stream.into_split();
                    (BufReader::new(r), BufWriter::new(w))
                }
            };
            let (r, w) = &mut conn;
            write_frame(w, env).await?;
            let resp = read_frame::<_, Response>(r).await?;
            *guard = Some(conn);
            Ok(resp)
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "raft request timed out")),
        }
    }
}

/// openraft's network factory for one group.
pub struct NetworkFactory {
    pub transport: Arc<Transport>,
    pub group: GroupId,
}

pub struct PeerClient {
    transport: Arc<Transport>,
    group: GroupId,
    target: NodeId,
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        PeerClient { transport: self.transport.clone(), group: self.group, target, addr: node.addr.clone() }
    }
}

impl PeerClient {
    async fn send<E: std::error::Error>(
        &self,
        request: Request,
        option: &RPCOption,
    ) -> Result<Response, RPCError<NodeId, BasicNode, E>> {
        let env = Envelope { group: self.group, request };
        self.transport.call(&self.addr, &env, option.hard_ttl()).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::TimedOut => {
                RPCError::Unreachable(Unreachable::new(&e))
            }
            _ => RPCError::Network(NetworkError::new(&e)),
        })
    }

    fn unexpected<E: std::error::Error>(&self, resp: Response) -> RPCError<NodeId, BasicNode, E> {
        let msg = format!("unexpected raft response {resp:?}");
        RPCError::Network(NetworkError::new(&std::io::Error::other(msg)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.send(Request::AppendEntries(rpc), &option).await? {
            Response::AppendEntries(r) => r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e))),
            other => Err(self.unexpected(other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        match self.send(Request::InstallSnapshot(rpc), &option).await? {
            Response::InstallSnapshot(r) => r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e))),
            other => Err(self.unexpected(other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.send(Request::Vote(rpc), &option).await? {
            Response::Vote(r) => r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e))),
            other => Err(self.unexpected(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::types::METADATA_GROUP;

    /// Answers a Heartbeat with its broker id; broker 1's answer comes late, as from a peer
    /// that was stopped (SIGSTOP) while the request was in flight.
    struct SlowForBrokerOne;

    impl RequestHandler for SlowForBrokerOne {
        async fn handle(self: Arc<Self>, env: Envelope) -> Response {
            let Request::Heartbeat { broker_id } = env.request else { return Response::Refused("?".into()) };
            if broker_id == 1 {
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
            Response::Refused(broker_id.to_string())
        }
    }

    fn heartbeat(broker_id: NodeId) -> Envelope {
        Envelope { group: METADATA_GROUP, request: Request::Heartbeat { broker_id } }
    }

    #[tokio::test]
    async fn a_call_dropped_halfway_does_not_leave_its_answer_to_the_next_call() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(serve(listener, Arc::new(SlowForBrokerOne)));
        let transport = Transport::new();

        // Dropped by a caller's own, shorter timeout, as openraft drops an RPC it timed out.
        let dropped = tokio::time::timeout(
            Duration::from_millis(100),
            transport.call(&addr, &heartbeat(1), Duration::from_secs(5)),
        )
        .await;
        assert!(dropped.is_err(), "the first call should still have been waiting: {dropped:?}");

        for id in [2, 3] {
            let resp = transport.call(&addr, &heartbeat(id), Duration::from_secs(5)).await.unwrap();
            assert!(matches!(&resp, Response::Refused(s) if *s == id.to_string()), "call {id} got {resp:?}");
        }
    }
}
