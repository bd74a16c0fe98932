//! The metadata quorum with real `weir-broker` processes: three brokers on 127.0.0.1,
//! 127.0.0.2 and 127.0.0.3 form a quorum, survive the loss of the raft leader (a new leader,
//! writes through a survivor, the dead broker fenced and its partitions moved), and the
//! killed broker catches up when restarted on its data dir. A write without a quorum fails
//! with 503 within the propose deadline instead of hanging.
//!
//! Everything goes through the admin HTTP API (`/api/v1/cluster`, `/api/v1/topics`,
//! `/api/v1/partitions`) and `/metrics`. Each broker's stdout and stderr go to a file; when a
//! test fails, the tail of every file is printed. `WEIR_TEST_RUST_LOG` overrides the brokers'
//! `RUST_LOG` (default `info`); `WEIR_TEST_KEEP=1` keeps the temp dir (data and logs). Run
//! with `--nocapture` to see the measured times. See `e2e/local/README.md`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::HttpResponse;
use serde_json::{json, Value};
use weir_broker::cluster::types::METADATA_VERSION;

/// `--broker-session-timeout-ms` for these tests (the default, 9 s, would make them slow).
const SESSION_TIMEOUT_MS: u64 = 3000;
/// The broker's propose deadline (`PROPOSE_DEADLINE` in `cluster/node.rs`).
const PROPOSE_DEADLINE: Duration = Duration::from_secs(15);
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const QUORUM_TIMEOUT: Duration = Duration::from_secs(20);
/// A failover (new leader + a write through a survivor) must be faster than this.
const FAILOVER_LIMIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);
/// Read timeout of one HTTP request: well above the propose deadline, so that a write that
/// hangs is told apart from one that fails.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
const LOG_TAIL_LINES: usize = 60;

// ---------------------------------------------------------------------------------------
// HTTP/1.1 over std::net::TcpStream, `Connection: close`.
// ---------------------------------------------------------------------------------------

impl HttpResponse {
    fn json(&self) -> Result<Value, String> {
        serde_json::from_str(&self.body).map_err(|e| format!("body is not JSON ({e}): {:?}", self.body))
    }
}

fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> std::io::Result<HttpResponse> {
    let payload = body.map(Value::to_string);
    common::request(addr, method, path, payload.as_deref(), Some("application/json"), timeout)
}

/// GET `path` and parse the JSON body of a 200 answer.
fn get_json(addr: SocketAddr, path: &str) -> Result<Value, String> {
    let r = http(addr, "GET", path, None, Duration::from_secs(5)).map_err(|e| format!("GET {path} on {addr}: {e}"))?;
    if r.status != 200 {
        return Err(format!("GET {path} on {addr}: {} {}", r.status, r.body));
    }
    r.json().map_err(|e| format!("GET {path} on {addr}: {e}"))
}

fn post_json(addr: SocketAddr, path: &str, body: &Value) -> std::io::Result<HttpResponse> {
    http(addr, "POST", path, Some(body), HTTP_TIMEOUT)
}

/// The value of an unlabelled sample in Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

// ---------------------------------------------------------------------------------------
// The cluster harness.
// ---------------------------------------------------------------------------------------

const IPS: [&str; 4] = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"];

struct Broker {
    id: u64,
    kafka: SocketAddr,
    amqp: SocketAddr,
    http: SocketAddr,
    raft: SocketAddr,
    data_dir: PathBuf,
    log: PathBuf,
    starts: u32,
    /// Arguments added to this broker's command line.
    extra_args: Vec<String>,
    child: Option<Child>,
}

/// `n` brokers, voters 0..n, on their own loopback IPs. SIGKILLs every child on drop and,
/// when the test is failing, prints the tail of each broker's log.
struct Cluster {
    name: &'static str,
    dir: tempfile::TempDir,
    voters: String,
    brokers: Vec<Broker>,
}

/// Ports free on `ip` a moment ago. All listeners of one cluster are held until every port
/// is chosen, so that no two of them get the same port.
fn free_ports(ip: IpAddr, n: usize, held: &mut Vec<TcpListener>) -> Vec<SocketAddr> {
    (0..n)
        .map(|_| {
            let l = TcpListener::bind(SocketAddr::new(ip, 0))
                .unwrap_or_else(|e| panic!("cannot bind {ip}:0 ({e}); is all of 127/8 routed to loopback?"));
            let a = l.local_addr().unwrap();
            held.push(l);
            a
        })
        .collect()
}

impl Cluster {
    /// Allocate addresses and data dirs for `n` brokers (n <= 3) and start all of them.
    fn start(name: &'static str, n: usize) -> Self {
        let mut c = Self::new(name, n);
        for i in 0..n {
            c.spawn(i);
        }
        c
    }

    fn new(name: &'static str, n: usize) -> Self {
        Self::with_voters(name, n, n.min(3))
    }

    /// `n` brokers of which the first `voters` are raft voters; the others join as learners.
    fn with_voters(name: &'static str, n: usize, voters: usize) -> Self {
        assert!(n <= IPS.len() && voters <= n);
        let dir = tempfile::Builder::new().prefix(&format!("weir-{name}-")).tempdir().unwrap();
        let mut held = Vec::new();
        let brokers: Vec<Broker> = (0..n)
            .map(|i| {
                let ip: IpAddr = IPS[i].parse().unwrap();
                let p = free_ports(ip, 4, &mut held);
                Broker {
                    id: i as u64,
                    kafka: p[0],
                    amqp: p[1],
                    http: p[2],
                    raft: p[3],
                    data_dir: dir.path().join(format!("broker-{i}")),
                    log: dir.path().join(format!("broker-{i}.log")),
                    starts: 0,
                    extra_args: Vec::new(),
                    child: None,
                }
            })
            .collect();
        drop(held);
        let voters = brokers.iter().take(voters).map(|b| format!("{}@{}", b.id, b.raft)).collect::<Vec<_>>().join(",");
        eprintln!("[{name}] cluster in {} with --voters {voters}", dir.path().display());
        Self { name, dir, voters, brokers }
    }

    /// Start broker `i` (again) on its data dir and addresses; its log is appended to.
    fn spawn(&mut self, i: usize) {
        let voters = self.voters.clone();
        let b = &mut self.brokers[i];
        assert!(b.child.is_none(), "broker {i} is already running");
        b.starts += 1;
        let mut log = OpenOptions::new().create(true).append(true).open(&b.log).unwrap();
        writeln!(log, "===== start #{} of broker {} =====", b.starts, b.id).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_weir-broker"));
        cmd.arg("--node-id")
            .arg(b.id.to_string())
            .arg("--data-dir")
            .arg(&b.data_dir)
            .arg("--kafka-listen")
            .arg(b.kafka.to_string())
            .arg("--amqp-listen")
            .arg(b.amqp.to_string())
            .arg("--http-listen")
            .arg(b.http.to_string())
            .arg("--raft-listen")
            .arg(b.raft.to_string())
            .arg("--voters")
            .arg(&voters)
            .arg("--broker-session-timeout-ms")
            .arg(SESSION_TIMEOUT_MS.to_string())
            .args(&b.extra_args);
        // Keep the caller's environment from configuring the broker behind our back.
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(|k| k.starts_with("WEIR_")) {
                cmd.env_remove(key);
            }
        }
        let rust_log = std::env::var("WEIR_TEST_RUST_LOG").unwrap_or_else(|_| "info".into());
        cmd.env_remove("POD_NAME").env_remove("HOSTNAME").env("RUST_LOG", rust_log).env("NO_COLOR", "1");
        cmd.stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
        b.child = Some(cmd.spawn().expect("spawn weir-broker"));
    }

    /// SIGKILL broker `i` and reap it.
    fn kill(&mut self, i: usize) {
        let mut child = self.brokers[i].child.take().unwrap_or_else(|| panic!("broker {i} is not running"));
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }

    fn running(&self) -> Vec<usize> {
        (0..self.brokers.len()).filter(|i| self.brokers[*i].child.is_some()).collect()
    }

    fn http(&self, i: usize) -> SocketAddr {
        self.brokers[i].http
    }

    /// Panic if a broker that should be running has exited.
    fn assert_running(&mut self) {
        for b in &mut self.brokers {
            if let Some(child) = &mut b.child {
                if let Some(status) = child.try_wait().expect("try_wait") {
                    b.child = None;
                    panic!("broker {} exited unexpectedly with {status}", b.id);
                }
            }
        }
    }

    /// Poll `f` until it returns Ok or `timeout` passes; panics with the last error then.
    fn wait_until<T>(&mut self, what: &str, timeout: Duration, mut f: impl FnMut(&Cluster) -> Result<T, String>) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            self.assert_running();
            match f(self) {
                Ok(v) => return v,
                Err(e) if Instant::now() >= deadline => {
                    panic!("[{}] {what}: not within {timeout:?}; last: {e}", self.name)
                }
                Err(_) => std::thread::sleep(POLL),
            }
        }
    }

    fn wait_ready(&mut self, i: usize) {
        let addr = self.http(i);
        self.wait_until(&format!("broker {i} /readyz 200"), READY_TIMEOUT, |_| {
            let r = http(addr, "GET", "/readyz", None, Duration::from_secs(2)).map_err(|e| e.to_string())?;
            if r.status == 200 {
                Ok(())
            } else {
                Err(format!("{} {}", r.status, r.body))
            }
        })
    }

    fn cluster_view(&self, i: usize) -> Result<Value, String> {
        get_json(self.http(i), "/api/v1/cluster")
    }

    /// Wait until every running broker reports the same leader (one of the running brokers)
    /// and sees every broker in `registered` registered and unfenced. Returns the leader.
    fn wait_for_quorum(&mut self, registered: &[u64], timeout: Duration) -> u64 {
        let registered = registered.to_vec();
        self.wait_until("quorum with one agreed leader and all brokers unfenced", timeout, |c| {
            let mut leader = None;
            for i in c.running() {
                let v = c.cluster_view(i)?;
                let l = v["quorum"]["leader"].as_u64().ok_or_else(|| format!("broker {i}: no leader: {v}"))?;
                if !c.running().contains(&(l as usize)) {
                    return Err(format!("broker {i} names leader {l}, which is not running"));
                }
                if *leader.get_or_insert(l) != l {
                    return Err(format!("leaders differ: {leader:?} vs {l} (broker {i})"));
                }
                let brokers = brokers_by_id(&v)?;
                for id in &registered {
                    match brokers.get(id) {
                        None => return Err(format!("broker {i} does not see broker {id} registered: {v}")),
                        Some(b) if b["fenced"] != json!(false) => {
                            return Err(format!("broker {i} sees broker {id} fenced: {b}"))
                        }
                        Some(_) => {}
                    }
                }
            }
            leader.ok_or_else(|| "no broker running".to_string())
        })
    }

    fn metrics(&self, i: usize) -> Result<String, String> {
        let r = http(self.http(i), "GET", "/metrics", None, Duration::from_secs(5)).map_err(|e| e.to_string())?;
        if r.status == 200 {
            Ok(r.body)
        } else {
            Err(format!("/metrics: {} {}", r.status, r.body))
        }
    }

    fn print_log_tails(&self) {
        for b in &self.brokers {
            let text = std::fs::read_to_string(&b.log).unwrap_or_else(|e| format!("(cannot read: {e})"));
            // openraft logs every failed replication attempt to a dead peer twice a second;
            // those lines would fill the tail, so they are counted instead of printed.
            let noisy = |l: &&str| l.contains("openraft::replication") || l.contains("replication_handler");
            let lines: Vec<&str> = text.lines().filter(|l| !noisy(l)).collect();
            let elided = text.lines().filter(noisy).count();
            let from = lines.len().saturating_sub(LOG_TAIL_LINES);
            eprintln!(
                "----- [{}] broker {} (http {}, raft {}): last {} of {} log lines, {} openraft replication \
                 lines left out ({}) -----",
                self.name,
                b.id,
                b.http,
                b.raft,
                lines.len() - from,
                lines.len(),
                elided,
                b.log.display()
            );
            for l in &lines[from..] {
                eprintln!("{l}");
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for b in &mut self.brokers {
            if let Some(mut child) = b.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            self.print_log_tails();
        }
        if std::env::var_os("WEIR_TEST_KEEP").is_some() {
            let path = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap()).keep();
            eprintln!("[{}] kept {}", self.name, path.display());
        }
    }
}

fn brokers_by_id(cluster_view: &Value) -> Result<BTreeMap<u64, Value>, String> {
    let list = cluster_view["brokers"].as_array().ok_or_else(|| format!("no brokers array: {cluster_view}"))?;
    list.iter()
        .map(|b| b["id"].as_u64().map(|id| (id, b.clone())).ok_or_else(|| format!("broker without id: {b}")))
        .collect()
}

/// `GET /api/v1/topics`, sorted by name.
fn topics(addr: SocketAddr) -> Result<Vec<Value>, String> {
    let v = get_json(addr, "/api/v1/topics")?;
    let mut list = v["topics"].as_array().cloned().ok_or_else(|| format!("no topics array: {v}"))?;
    list.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(list)
}

/// `GET /api/v1/partitions`, keyed by (topic, partition).
fn partitions(addr: SocketAddr) -> Result<BTreeMap<(String, u64), Value>, String> {
    let v = get_json(addr, "/api/v1/partitions")?;
    let list = v["partitions"].as_array().ok_or_else(|| format!("no partitions array: {v}"))?;
    list.iter()
        .map(|p| match (p["topic"].as_str(), p["partition"].as_u64()) {
            (Some(t), Some(n)) => Ok(((t.to_string(), n), p.clone())),
            _ => Err(format!("partition without topic/partition: {p}")),
        })
        .collect()
}

fn ids(v: &Value) -> Vec<u64> {
    v.as_array().map(|a| a.iter().filter_map(Value::as_u64).collect()).unwrap_or_default()
}

fn topic_body(name: &str, partitions: u32, rf: u16, configs: Value) -> Value {
    json!({ "name": name, "partitions": partitions, "replication_factor": rf, "configs": configs })
}

/// POST a topic and insist on 201.
fn create_topic(addr: SocketAddr, body: &Value) {
    let started = Instant::now();
    let r =
        post_json(addr, "/api/v1/topics", body).unwrap_or_else(|e| panic!("POST /api/v1/topics {body} to {addr}: {e}"));
    assert_eq!(r.status, 201, "POST /api/v1/topics {body} to {addr} answered {} {}", r.status, r.body);
    eprintln!("created topic {} through {addr} in {:?}", body["name"], started.elapsed());
}

// ---------------------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------------------

/// The acceptance test.
#[test]
fn leader_failover_fencing_and_catch_up() {
    let mut c = Cluster::start("failover", 3);
    let t0 = Instant::now();
    for i in 0..3 {
        c.wait_ready(i);
    }
    let leader = c.wait_for_quorum(&[0, 1, 2], QUORUM_TIMEOUT);
    eprintln!("[failover] quorum formed, leader {leader}, {:?} after start", t0.elapsed());
    let voters = &c.cluster_view(0).unwrap()["quorum"]["voters"];
    let mut voter_ids = ids(voters);
    voter_ids.sort_unstable();
    assert_eq!(voter_ids, vec![0, 1, 2], "voters: {voters}");
    let m = c.metrics(leader as usize).unwrap();
    assert_eq!(metric(&m, "weir_raft_is_leader"), Some(1.0), "leader {leader}'s /metrics disagree");

    // Topics through every broker in turn: followers forward to the leader.
    let created = [
        topic_body("orders", 6, 3, json!({"retention.ms": "86400000", "cleanup.policy": "delete"})),
        topic_body("payments.v1", 3, 3, json!({"min.insync.replicas": "2", "max.message.bytes": "2097152"})),
        topic_body("audit-log", 1, 3, json!({"cleanup.policy": "compact", "segment.bytes": "1048576"})),
    ];
    for (n, body) in created.iter().enumerate() {
        create_topic(c.http((leader as usize + 1 + n) % 3), body);
    }
    c.wait_until("every broker lists the 3 topics", Duration::from_secs(10), |c| {
        for i in 0..3 {
            let names: Vec<_> = topics(c.http(i))?.iter().map(|t| t["name"].clone()).collect();
            if names.len() != 3 {
                return Err(format!("broker {i}: {names:?}"));
            }
        }
        Ok(())
    });
    let before = partitions(c.http(0)).unwrap();
    let led_by_leader: BTreeMap<_, _> = before
        .iter()
        .filter(|(_, p)| p["leader"].as_u64() == Some(leader))
        .map(|(k, p)| (k.clone(), p.clone()))
        .collect();
    assert!(!led_by_leader.is_empty(), "broker {leader} leads no partition, nothing to move: {before:?}");

    // SIGKILL the raft leader; a client writes through a survivor right away.
    let survivors: Vec<usize> = (0..3).filter(|i| *i as u64 != leader).collect();
    let via = c.http(survivors[0]);
    let during = topic_body("after-failover", 3, 2, json!({"retention.bytes": "1073741824"}));
    let killed_at = Instant::now();
    c.kill(leader as usize);
    eprintln!("[failover] SIGKILLed leader {leader}");
    let writer = {
        let body = during.clone();
        std::thread::spawn(move || {
            // A client retries while the quorum is unavailable (503); anything else is final.
            let mut attempts = Vec::new();
            loop {
                let r = post_json(via, "/api/v1/topics", &body);
                let retry = matches!(&r, Ok(r) if r.status == 503) && killed_at.elapsed() < FAILOVER_LIMIT;
                attempts.push((
                    killed_at.elapsed(),
                    r.as_ref().map(|r| (r.status, r.body.clone())).map_err(|e| e.to_string()),
                ));
                if !retry {
                    return attempts;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let new_leader = c.wait_until("survivors agree on a new leader", FAILOVER_LIMIT, |c| {
        let mut seen = BTreeSet::new();
        for i in &survivors {
            seen.insert(c.cluster_view(*i)?["quorum"]["leader"].as_u64());
        }
        match seen.into_iter().collect::<Vec<_>>()[..] {
            [Some(l)] if l != leader => Ok(l),
            ref other => Err(format!("leaders seen by survivors {survivors:?}: {other:?}")),
        }
    });
    let elected_after = killed_at.elapsed();
    let attempts = writer.join().expect("writer thread");
    let (write_after, last) = attempts.last().cloned().unwrap();
    let status = last.as_ref().map(|(s, _)| *s).unwrap_or_else(|e| panic!("write during failover: {e}; {attempts:?}"));
    eprintln!(
        "[failover] new leader {new_leader} agreed by the survivors {elected_after:?} after the kill; \
         the write through broker {} answered {status} {write_after:?} after the kill ({} attempt(s))",
        survivors[0],
        attempts.len()
    );
    assert_eq!(status, 201, "write during failover: {attempts:?}");
    assert!(write_after < FAILOVER_LIMIT, "write took {write_after:?} after the kill");
    let m = c.metrics(new_leader as usize).unwrap();
    assert_eq!(metric(&m, "weir_raft_is_leader"), Some(1.0), "new leader {new_leader}'s /metrics disagree");

    // The dead broker is fenced after the session timeout and its partitions move.
    c.wait_until(&format!("survivors see broker {leader} fenced"), Duration::from_secs(20), |c| {
        for i in &survivors {
            let v = c.cluster_view(*i)?;
            let b = brokers_by_id(&v)?.remove(&leader).ok_or_else(|| format!("broker {i}: {leader} missing"))?;
            if b["fenced"] != json!(true) {
                return Err(format!("broker {i} sees {b}"));
            }
        }
        Ok(())
    });
    let fenced_after = killed_at.elapsed();
    eprintln!(
        "[failover] broker {leader} fenced {fenced_after:?} after the kill (session timeout {SESSION_TIMEOUT_MS} ms)"
    );
    let m = c.metrics(new_leader as usize).unwrap();
    assert_eq!(metric(&m, "weir_cluster_fenced_brokers"), Some(1.0), "fenced brokers metric on {new_leader}");
    for i in &survivors {
        let after = partitions(c.http(*i)).unwrap();
        for (key, p) in &after {
            let replicas = ids(&p["replicas"]);
            if !replicas.contains(&leader) {
                continue;
            }
            let isr = ids(&p["isr"]);
            let l = p["leader"].as_i64().unwrap_or(-1);
            assert!(l >= 0 && l as u64 != leader, "broker {i}: {key:?} still led by fenced {leader} or offline: {p}");
            assert!(isr.contains(&(l as u64)), "broker {i}: {key:?} leader {l} not in ISR: {p}");
            assert!(!isr.contains(&leader), "broker {i}: fenced {leader} still in the ISR of {key:?}: {p}");
            if let Some(old) = led_by_leader.get(key) {
                assert!(
                    p["leader_epoch"].as_i64() > old["leader_epoch"].as_i64(),
                    "broker {i}: leader epoch of {key:?} did not grow: {old} -> {p}"
                );
            }
        }
    }
    eprintln!("[failover] the {} partitions broker {leader} led have new leaders in their ISR", led_by_leader.len());

    // Restart the killed broker on the same data dir and ports: it catches up and is unfenced.
    let restarted_at = Instant::now();
    c.spawn(leader as usize);
    c.wait_ready(leader as usize);
    let expected: BTreeSet<&str> = created.iter().chain([&during]).map(|t| t["name"].as_str().unwrap()).collect();
    let final_topics = c.wait_until("all three brokers list identical topics", Duration::from_secs(30), |c| {
        let lists: Vec<Vec<Value>> = (0..3).map(|i| topics(c.http(i))).collect::<Result<_, _>>()?;
        let names: BTreeSet<&str> = lists[0].iter().filter_map(|t| t["name"].as_str()).collect();
        if names != expected {
            return Err(format!("broker 0 lists {names:?}"));
        }
        if lists.iter().any(|l| *l != lists[0]) {
            return Err(format!("lists differ: {lists:#?}"));
        }
        Ok(lists[0].clone())
    });
    let caught_up_after = restarted_at.elapsed();
    c.wait_for_quorum(&[0, 1, 2], Duration::from_secs(20));
    let unfenced_after = restarted_at.elapsed();
    eprintln!(
        "[failover] restarted broker {leader}: identical topics everywhere {caught_up_after:?}, \
         unfenced {unfenced_after:?} after the restart"
    );
    for want in created.iter().chain([&during]) {
        let got = final_topics.iter().find(|t| t["name"] == want["name"]).unwrap();
        assert_eq!(got["partitions"], want["partitions"], "partition count: {got}");
        assert_eq!(got["replication_factor"], want["replication_factor"], "replication factor: {got}");
        for (k, v) in want["configs"].as_object().unwrap() {
            assert_eq!(&got["configs"][k], v, "config {k}: {got}");
        }
        assert!(got["topic_id"].as_str().is_some_and(|s| !s.is_empty()), "topic id: {got}");
        let assignment = got["assignment"].as_array().unwrap_or_else(|| panic!("no assignment: {got}"));
        assert_eq!(assignment.len() as u64, want["partitions"].as_u64().unwrap(), "assignment: {got}");
    }
    // Stable afterwards: nobody is fenced again, and the leader stays put, for longer than
    // a session timeout (the restarted broker's first heartbeat must count before the
    // controller judges it).
    let watch = Duration::from_millis(SESSION_TIMEOUT_MS + 1000);
    let until = Instant::now() + watch;
    let mut flaps = Vec::new();
    while Instant::now() < until {
        c.assert_running();
        for i in 0..3 {
            let Ok(v) = c.cluster_view(i) else { continue };
            let fenced: Vec<u64> = brokers_by_id(&v)
                .unwrap_or_default()
                .into_iter()
                .filter(|(_, b)| b["fenced"] != json!(false))
                .map(|(id, _)| id)
                .collect();
            let l = v["quorum"]["leader"].as_u64();
            if !fenced.is_empty() || l != Some(new_leader) {
                flaps.push(format!(
                    "{:?} after the restart, broker {i}: leader {l:?}, fenced {fenced:?}",
                    restarted_at.elapsed()
                ));
            }
        }
        std::thread::sleep(POLL);
    }
    assert!(
        flaps.is_empty(),
        "the cluster did not stay stable for {watch:?} after broker {leader} rejoined ({} observations), first: {:#?}",
        flaps.len(),
        &flaps[..flaps.len().min(5)]
    );
    // The raft logs converge too.
    c.wait_until("equal weir_raft_applied_index everywhere", Duration::from_secs(10), |c| {
        let applied: Vec<Option<f64>> =
            (0..3).map(|i| c.metrics(i).map(|m| metric(&m, "weir_raft_applied_index"))).collect::<Result<_, _>>()?;
        let leaders: f64 = (0..3)
            .map(|i| c.metrics(i).map(|m| metric(&m, "weir_raft_is_leader").unwrap_or(0.0)))
            .sum::<Result<f64, _>>()?;
        if applied[0].is_some() && applied.iter().all(|a| *a == applied[0]) && leaders == 1.0 {
            Ok(())
        } else {
            Err(format!("applied {applied:?}, leaders {leaders}"))
        }
    });
    eprintln!("[failover] done in {:?}", t0.elapsed());
}

/// One voter of three cannot commit: a write fails with 503 within the propose deadline
/// (here through the old leader, which is the broker most tempted to wait forever), and
/// succeeds once a second voter is back.
#[test]
fn write_without_quorum_fails_fast_and_succeeds_when_a_voter_returns() {
    let mut c = Cluster::start("no-quorum", 3);
    let t0 = Instant::now();
    for i in 0..3 {
        c.wait_ready(i);
    }
    let leader = c.wait_for_quorum(&[0, 1, 2], QUORUM_TIMEOUT) as usize;
    eprintln!("[no-quorum] quorum formed, leader {leader}, {:?} after start", t0.elapsed());
    create_topic(c.http(leader), &topic_body("before-outage", 2, 3, json!({})));

    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    for f in &followers {
        c.kill(*f);
    }
    eprintln!("[no-quorum] SIGKILLed followers {followers:?}; only broker {leader} is up");
    let started = Instant::now();
    let r = post_json(c.http(leader), "/api/v1/topics", &topic_body("during-outage", 1, 1, json!({})));
    let took = started.elapsed();
    eprintln!("[no-quorum] write through broker {leader} without a quorum answered {r:?} after {took:?}");
    let r = r.unwrap_or_else(|e| panic!("write without a quorum: no answer within {HTTP_TIMEOUT:?} ({e}); it hangs"));
    assert_eq!(r.status, 503, "write without a quorum: {} {}", r.status, r.body);
    assert_eq!(r.json().unwrap()["code"], "unavailable", "503 body: {}", r.body);
    assert!(took < PROPOSE_DEADLINE + Duration::from_secs(3), "the 503 took {took:?}");

    // A second voter returns: the write goes through again.
    let back = followers[0];
    let restarted_at = Instant::now();
    c.spawn(back);
    c.wait_ready(back);
    let via = c.http(leader);
    c.wait_until("a write succeeds with two voters up", Duration::from_secs(30), |_| {
        let r = post_json(via, "/api/v1/topics", &topic_body("after-recovery", 1, 1, json!({})))
            .map_err(|e| e.to_string())?;
        match r.status {
            201 => Ok(()),
            // A retry of an attempt that was committed after its 503.
            409 => Ok(()),
            s => Err(format!("{s} {}", r.body)),
        }
    });
    eprintln!("[no-quorum] broker {back} restarted; a write succeeded {:?} after the restart", restarted_at.elapsed());
    let names = c.wait_until("both brokers list the same topics", Duration::from_secs(20), |c| {
        let a = topics(c.http(leader))?;
        let b = topics(c.http(back))?;
        if a != b {
            return Err(format!("{a:?} vs {b:?}"));
        }
        let names: BTreeSet<String> = a.iter().filter_map(|t| t["name"].as_str().map(String::from)).collect();
        if names.contains("after-recovery") && names.contains("before-outage") {
            Ok(names)
        } else {
            Err(format!("{names:?}"))
        }
    });
    eprintln!(
        "[no-quorum] topics now {names:?} (\"during-outage\" {} committed after its 503)",
        if names.contains("during-outage") { "WAS" } else { "was not" }
    );
    eprintln!("[no-quorum] done in {:?}", t0.elapsed());
}

/// The same with a follower as the lone voter: it forwards to a leader that is gone, then
/// campaigns without a majority; the write still ends in 503 within the deadline.
#[test]
fn write_through_a_lone_follower_fails_fast_and_succeeds_when_a_voter_returns() {
    let mut c = Cluster::start("lone-follower", 3);
    for i in 0..3 {
        c.wait_ready(i);
    }
    let leader = c.wait_for_quorum(&[0, 1, 2], QUORUM_TIMEOUT) as usize;
    let lone = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    c.kill(leader);
    c.kill(other);
    eprintln!("[lone-follower] SIGKILLed leader {leader} and follower {other}; only follower {lone} is up");
    let started = Instant::now();
    let r = post_json(c.http(lone), "/api/v1/topics", &topic_body("during-outage", 1, 1, json!({})));
    let took = started.elapsed();
    eprintln!("[lone-follower] write through broker {lone} answered {r:?} after {took:?}");
    let r = r.unwrap_or_else(|e| panic!("write without a quorum: no answer within {HTTP_TIMEOUT:?} ({e}); it hangs"));
    assert_eq!(r.status, 503, "write without a quorum: {} {}", r.status, r.body);
    assert_eq!(r.json().unwrap()["code"], "unavailable", "503 body: {}", r.body);
    assert!(took < PROPOSE_DEADLINE + Duration::from_secs(3), "the 503 took {took:?}");

    let restarted_at = Instant::now();
    c.spawn(other);
    c.wait_ready(other);
    let via = c.http(lone);
    c.wait_until("a write succeeds with two voters up", Duration::from_secs(30), |_| {
        let r = post_json(via, "/api/v1/topics", &topic_body("after-recovery", 1, 1, json!({})))
            .map_err(|e| e.to_string())?;
        match r.status {
            201 | 409 => Ok(()),
            s => Err(format!("{s} {}", r.body)),
        }
    });
    eprintln!(
        "[lone-follower] broker {other} restarted; a write through {lone} succeeded {:?} after the restart",
        restarted_at.elapsed()
    );
}

/// A broker outside `--voters` joins as a learner: it registers, receives the metadata log,
/// forwards its writes to the leader, and is not counted among the voters.
#[test]
fn a_broker_outside_the_voters_joins_as_a_learner() {
    let mut c = Cluster::with_voters("learner", 4, 3);
    for i in 0..4 {
        c.spawn(i);
    }
    c.wait_for_quorum(&[0, 1, 2, 3], Duration::from_secs(30));
    let view = c.cluster_view(3).expect("cluster view from the learner");
    assert_eq!(ids(&view["quorum"]["voters"]), vec![0, 1, 2], "the learner must not vote: {view}");
    // A write through the learner is forwarded to the leader and visible everywhere.
    create_topic(c.http(3), &topic_body("via-learner", 4, 2, json!({"retention.ms": "3600000"})));
    let reference = topics(c.http(0)).expect("topics from broker 0");
    c.wait_until("the same topics on every broker", Duration::from_secs(10), |c| {
        for i in 1..4 {
            let t = topics(c.http(i))?;
            if t != reference {
                return Err(format!("broker {i} has {t:?}, broker 0 has {reference:?}"));
            }
        }
        Ok(())
    });
    assert!(reference.iter().any(|t| t["name"] == "via-learner"));
}

/// Metadata versions across a rolling upgrade: a broker registered with an older version
/// (`--metadata-version 0`, as a broker still on the old binary would be) holds the cluster
/// to what that version reads. A change that needs version 1 (a named throttle hold) is
/// refused with 409, naming the broker, while version-0 changes go on; once the broker
/// restarts at the current version, the same change goes through and reaches every broker.
#[test]
fn a_broker_on_an_older_metadata_version_holds_newer_changes_back() {
    let mut c = Cluster::new("metadata-version", 3);
    c.brokers[2].extra_args = vec!["--metadata-version".into(), "0".into()];
    for i in 0..3 {
        c.spawn(i);
    }
    for i in 0..3 {
        c.wait_ready(i);
    }
    c.wait_for_quorum(&[0, 1, 2], QUORUM_TIMEOUT);
    let view = c.cluster_view(0).unwrap();
    assert_eq!(view["metadata_version"], 0, "{view}");
    let brokers = brokers_by_id(&view).unwrap();
    assert_eq!(
        (brokers[&0]["metadata_version"].as_u64(), brokers[&2]["metadata_version"].as_u64()),
        (Some(METADATA_VERSION as u64), Some(0))
    );

    let hold = json!({"bytes_per_sec": 1000});
    let path = "/api/v1/replication/throttle/holds/ops";
    let r = http(c.http(0), "PUT", path, Some(&hold), HTTP_TIMEOUT).unwrap();
    assert_eq!(r.status, 409, "{}", r.body);
    let body = r.json().unwrap();
    assert_eq!(body["code"], "metadata_version_too_low", "{body}");
    assert!(body["message"].as_str().unwrap().contains("[2]"), "names the broker: {body}");
    let r = http(c.http(1), "PUT", "/api/v1/replication/throttle", Some(&json!({"bytes_per_sec": 5})), HTTP_TIMEOUT)
        .unwrap();
    assert_eq!(r.status, 200, "a version-0 change goes on: {}", r.body);
    // A draining mark with an owner is version 1 too; without one it is not.
    let r = http(c.http(0), "POST", "/api/v1/brokers/1/drain?owner=ops", Some(&json!({})), HTTP_TIMEOUT).unwrap();
    assert_eq!(r.status, 409, "{}", r.body);
    let r = http(c.http(0), "POST", "/api/v1/brokers/1/drain", Some(&json!({})), HTTP_TIMEOUT).unwrap();
    assert_eq!(r.status, 202, "{}", r.body);
    let r = http(c.http(0), "DELETE", "/api/v1/brokers/1/drain", None, HTTP_TIMEOUT).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);

    // Broker 2 "upgraded": restarted without the pin.
    c.kill(2);
    c.brokers[2].extra_args.clear();
    c.spawn(2);
    c.wait_ready(2);
    c.wait_until("the cluster at the current metadata version", QUORUM_TIMEOUT, |c| {
        let v = c.cluster_view(0)?;
        if v["metadata_version"] == METADATA_VERSION {
            Ok(())
        } else {
            Err(v.to_string())
        }
    });
    let r = http(c.http(0), "PUT", path, Some(&hold), HTTP_TIMEOUT).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json().unwrap()["effective_bytes_per_sec"], 5);
    c.wait_until("broker 2 applied the hold", QUORUM_TIMEOUT, |c| {
        let t = get_json(c.http(2), "/api/v1/replication/throttle")?;
        if t["holds"]["ops"] == 1000 {
            Ok(())
        } else {
            Err(t.to_string())
        }
    });
}
