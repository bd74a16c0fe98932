//! Real `weir-broker` processes for the operator's local tests: one on 127.0.0.1, or a cluster
//! of several on consecutive 127.0.0.x addresses (each with its own ports and data directory,
//! all metadata voters). Killed on drop; a broker's log is printed when the test fails.
//!
//! Ports are found by binding port 0 and letting go, so another process may take one before
//! the broker binds it. Tests that run at the same time therefore use disjoint addresses: the
//! broker crate's cluster tests 127.0.0.1–4, `rebalance_local` 127.0.0.5–7, the replication
//! factor test in `operator_local` 127.0.0.8–10.
//!
//! The broker binary is `$WEIR_BROKER_BIN`, else `weir-broker` next to this test's target
//! directory (built by `cargo build --workspace`, which scripts/test runs first).

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use weir_operator::admin::HttpAdmin;

fn broker_bin() -> PathBuf {
    if let Ok(p) = std::env::var("WEIR_BROKER_BIN") {
        return PathBuf::from(p);
    }
    // target/debug/deps/TEST-HASH -> target/debug/weir-broker
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join("weir-broker");
    assert!(
        path.exists(),
        "{} not found: build it first (cargo build -p weir-broker) or set WEIR_BROKER_BIN",
        path.display()
    );
    path
}

/// A port that was free a moment ago, and not handed out before by this process: the kernel
/// may give the same port to two binds in a row once the first listener is dropped, and a
/// broker given it for two listeners (its raft and AMQP ones, as once seen) fails to start.
pub fn free_addr(host: &str) -> SocketAddr {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let addr = TcpListener::bind((host, 0)).unwrap().local_addr().unwrap();
        if HANDED_OUT.lock().unwrap().insert(addr.port()) {
            return addr;
        }
    }
}

pub struct Broker {
    pub node_id: i32,
    child: Child,
    http: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Broker {
    /// One broker, node 0, on 127.0.0.1.
    pub async fn start() -> Broker {
        let (http, raft) = (free_addr("127.0.0.1"), free_addr("127.0.0.1"));
        let mut broker = Broker::spawn(0, "127.0.0.1", http, raft, None, &[]);
        broker.wait_ready().await;
        broker
    }

    /// `n` brokers, node `i` on 127.0.0.`first + i`, all voters of the metadata quorum.
    pub async fn cluster(first: i32, n: i32) -> Vec<Broker> {
        Broker::cluster_with_args(first, n, |_| Vec::new()).await
    }

    /// The same, with `extra(i)` added to node `i`'s command line.
    pub async fn cluster_with_args(first: i32, n: i32, extra: impl Fn(i32) -> Vec<String>) -> Vec<Broker> {
        let hosts: Vec<String> = (0..n).map(|i| format!("127.0.0.{}", first + i)).collect();
        let addrs: Vec<(SocketAddr, SocketAddr)> = hosts.iter().map(|h| (free_addr(h), free_addr(h))).collect();
        let voters = addrs.iter().enumerate().map(|(i, (_, raft))| format!("{i}@{raft}")).collect::<Vec<_>>().join(",");
        let mut brokers: Vec<Broker> = (0..n)
            .map(|i| {
                let (http, raft) = addrs[i as usize];
                Broker::spawn(i, &hosts[i as usize], http, raft, Some(&voters), &extra(i))
            })
            .collect();
        for b in &mut brokers {
            b.wait_ready().await;
        }
        brokers
    }

    fn spawn(
        node_id: i32,
        host: &str,
        http: SocketAddr,
        raft: SocketAddr,
        voters: Option<&str>,
        extra: &[String],
    ) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("broker.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(broker_bin());
        cmd.args(["--node-id", &node_id.to_string(), "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--http-listen", &http.to_string()])
            .args(["--raft-listen", &raft.to_string()])
            .args(["--kafka-listen", &free_addr(host).to_string()])
            .args(["--amqp-listen", &free_addr(host).to_string()]);
        if let Some(v) = voters {
            cmd.args(["--voters", v]);
        }
        cmd.args(extra);
        let child = cmd
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("start weir-broker");
        Broker { node_id, child, http, log, _dir: dir }
    }

    async fn wait_ready(&mut self) {
        let admin = self.admin();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("weir-broker {} exited with {status}", self.node_id);
            }
            if admin.readyz().await.unwrap_or(false) {
                return;
            }
            assert!(Instant::now() < deadline, "broker {} not ready within 60 s", self.node_id);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn admin(&self) -> HttpAdmin {
        HttpAdmin::new(format!("http://{}", self.http))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("---- broker {} log (last 60 lines) ----", self.node_id);
            for line in log.lines().rev().take(60).collect::<Vec<_>>().into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}
