//! The JSON admin API (`/api/v1`) against the real `weir-broker` binary, a single node that
//! is the only voter of its own metadata quorum: topics created, listed, altered and deleted
//! over HTTP, their partition logs appearing and disappearing on disk, every error answered
//! as JSON with a stable code, and the topics surviving a restart on the same data dir.

mod common;

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::HttpResponse;
use serde_json::{json, Value};

/// Start-up, quorum election and registration; generous for a loaded CI machine.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);

/// Addresses of one broker; kept across a restart so it comes back where it was.
#[derive(Clone, Copy)]
struct Ports {
    http: SocketAddr,
    raft: SocketAddr,
    kafka: SocketAddr,
    amqp: SocketAddr,
}

impl Ports {
    fn free() -> Self {
        Self { http: free_addr(), raft: free_addr(), kafka: free_addr(), amqp: free_addr() }
    }
}

/// A loopback address with a port that was free a moment ago.
fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port").local_addr().unwrap()
}

/// The broker child process. Killed on drop, so a failing test leaves nothing behind; when
/// the test is failing its log is printed.
struct Broker {
    child: Child,
    ports: Ports,
    log_path: PathBuf,
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(80).collect();
            eprintln!("---- last lines of {} ----", self.log_path.display());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

impl Broker {
    /// Start the broker; its stdout and stderr go to `<log_dir>/broker-<n>.log`.
    fn start(data_dir: &Path, log_dir: &Path, ports: Ports, run: u32) -> Self {
        let log_path = log_dir.join(format!("broker-{run}.log"));
        let log = File::create(&log_path).expect("create broker log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_weir-broker"));
        cmd.arg("--node-id")
            .arg("0")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--http-listen")
            .arg(ports.http.to_string())
            .arg("--raft-listen")
            .arg(ports.raft.to_string())
            .arg("--kafka-listen")
            .arg(ports.kafka.to_string())
            .arg("--amqp-listen")
            .arg(ports.amqp.to_string())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // Keep the caller's environment from configuring the broker behind our back.
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(|k| k.starts_with("WEIR_")) {
                cmd.env_remove(key);
            }
        }
        cmd.env_remove("POD_NAME").env_remove("HOSTNAME");
        let child = cmd.spawn().expect("spawn weir-broker");
        Broker { child, ports, log_path }
    }

    fn call(&self, method: &str, path: &str, body: Option<&str>) -> HttpResponse {
        http(self.ports.http, method, path, body, Some("application/json"))
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    fn get(&self, path: &str) -> HttpResponse {
        self.call("GET", path, None)
    }

    fn send(&self, method: &str, path: &str, body: &Value) -> HttpResponse {
        self.call(method, path, Some(&body.to_string()))
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!("weir-broker exited with {status}");
        }
    }

    /// `/api/v1/cluster` answering with this broker registered and alive, and `/readyz` 200.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.assert_running();
            let last = match http(self.ports.http, "GET", "/api/v1/cluster", None, None) {
                Ok(r) if r.status == 200 => {
                    let v = r.json();
                    let registered =
                        v["brokers"].as_array().is_some_and(|b| b.iter().any(|b| b["id"] == 0 && b["alive"] == true));
                    // After a restart the image already lists this broker from the last run, so
                    // /readyz (which waits for this run's registration) decides.
                    let ready = http(self.ports.http, "GET", "/readyz", None, None).is_ok_and(|r| r.status == 200);
                    if registered && v["quorum"]["leader"] == 0 && ready {
                        return;
                    }
                    r.body
                }
                Ok(r) => format!("{} {}", r.status, r.body),
                Err(e) => e.to_string(),
            };
            assert!(Instant::now() < deadline, "broker not ready within {READY_TIMEOUT:?} (last: {last})");
            std::thread::sleep(POLL);
        }
    }

    /// SIGTERM, then exit 0.
    fn stop(mut self) {
        let status = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().expect("run kill");
        assert!(status.success(), "kill -TERM failed: {status}");
        let deadline = Instant::now() + EXIT_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "weir-broker still running {EXIT_TIMEOUT:?} after SIGTERM");
            std::thread::sleep(POLL);
        };
        assert_eq!(status.code(), Some(0), "weir-broker exit status after SIGTERM: {status}");
    }
}

/// Assertions of this suite on the shared response type.
impl HttpResponse {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// Asserts a JSON error answer with `status` and `code` and a non-empty message.
    fn expect_error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status, status, "expected {status} {code}, got: {}", self.body);
        assert_eq!(self.header("content-type"), Some("application/json"), "error is not JSON: {}", self.body);
        let v = self.json();
        assert_eq!(v["code"], code, "{}", self.body);
        let message = v["message"].as_str().unwrap_or_default().to_string();
        assert!(!message.is_empty(), "empty message: {}", self.body);
        message
    }

    fn expect_json(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "expected {status}, got: {}", self.body);
        assert_eq!(self.header("content-type"), Some("application/json"), "{}", self.body);
        self.json()
    }
}

/// One request; writes wait for the quorum (up to 15 s when it is unavailable).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    content_type: Option<&str>,
) -> std::io::Result<HttpResponse> {
    common::request(addr, method, path, body, content_type, Duration::from_secs(30))
}

/// Poll `check` until it returns true; panics with `what` after the timeout.
fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(POLL);
    }
}

/// The first write after start-up: retried while the quorum or the registration is not
/// there yet (503), then expected to succeed.
fn create_first(broker: &mut Broker, body: &Value) -> Value {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        broker.assert_running();
        let r = broker.send("POST", "/api/v1/topics", body);
        if r.status != 503 || Instant::now() >= deadline {
            return r.expect_json(201);
        }
        std::thread::sleep(POLL);
    }
}

fn partition_dir(data_dir: &Path, topic: &str, partition: u32) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

fn sorted_topics(v: &Value) -> Vec<Value> {
    let mut topics = v["topics"].as_array().expect("topics array").clone();
    topics.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    topics
}

#[test]
fn topics_are_created_altered_deleted_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let ports = Ports::free();
    let mut broker = Broker::start(&data_dir, dir.path(), ports, 1);
    broker.wait_ready();

    let cluster = broker.get("/api/v1/cluster").expect_json(200);
    assert_eq!(cluster["node_id"], 0);
    assert_eq!(cluster["quorum"], json!({"leader": 0, "voters": [0]}));
    let me = &cluster["brokers"][0];
    assert_eq!(me["id"], 0);
    assert_eq!(me["http_addr"], ports.http.to_string());
    assert_eq!(me["kafka_addr"], ports.kafka.to_string());
    assert_eq!((me["fenced"].clone(), me["alive"].clone()), (json!(false), json!(true)));

    // Create: configs as strings (and a number, stored as a string), defaults for the rest.
    let events = create_first(
        &mut broker,
        &json!({"name": "events", "partitions": 3, "replication_factor": 1,
                "configs": {"retention.ms": "86400000", "segment.bytes": 1048576}}),
    );
    assert_eq!(events["name"], "events");
    assert_eq!(events["partitions"], 3);
    assert_eq!(events["replication_factor"], 1);
    assert_eq!(events["configs"], json!({"retention.ms": "86400000", "segment.bytes": "1048576"}));
    assert_eq!(events["assignment"], json!([[0], [0], [0]]));
    let events_id = events["topic_id"].as_str().expect("topic_id").to_string();
    assert_eq!(events_id.len(), 32, "{events_id}");

    let r = broker.send(
        "POST",
        "/api/v1/topics",
        &json!({"name": "compacted.state_v1", "configs": {"cleanup.policy": "compact"}, "assignment": [[0]]}),
    );
    assert_eq!(r.header("location"), Some("/api/v1/topics/compacted.state_v1"));
    let compacted = r.expect_json(201);
    assert_eq!(compacted["partitions"], 1);
    assert_eq!(compacted["configs"], json!({"cleanup.policy": "compact"}));

    let plain = broker.send("POST", "/api/v1/topics", &json!({"name": "plain"})).expect_json(201);
    assert_eq!((plain["partitions"].clone(), plain["replication_factor"].clone()), (json!(1), json!(1)));
    assert_eq!(plain["configs"], json!({}));

    // Read your writes: list and get on the same broker see them at once.
    let list = broker.get("/api/v1/topics").expect_json(200);
    let names: Vec<&str> = list["topics"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["compacted.state_v1", "events", "plain"]);
    assert_eq!(broker.get("/api/v1/topics/events").expect_json(200), events);

    // The partition logs appear on disk.
    for (topic, n) in [("events", 3), ("compacted.state_v1", 1), ("plain", 1)] {
        for p in 0..n {
            let d = partition_dir(&data_dir, topic, p);
            eventually(&format!("{} to exist", d.display()), Duration::from_secs(10), || d.is_dir());
        }
    }

    // Partitions show leaders and the local logs' offsets.
    eventually("local offsets of every partition", Duration::from_secs(10), || {
        let v = broker.get("/api/v1/partitions").expect_json(200);
        v["partitions"].as_array().unwrap().iter().all(|p| p["log_end_offset"].is_i64())
    });
    let v = broker.get("/api/v1/partitions").expect_json(200);
    let parts = v["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 5, "{v}");
    for p in parts {
        assert_eq!(p["leader"], 0, "{p}");
        assert_eq!((p["replicas"].clone(), p["isr"].clone()), (json!([0]), json!([0])), "{p}");
        assert_eq!((p["leader_epoch"].clone(), p["partition_epoch"].clone()), (json!(0), json!(0)), "{p}");
        for k in ["log_start_offset", "log_end_offset", "high_watermark"] {
            assert_eq!(p[k], 0, "{k} in {p}");
        }
    }
    let v = broker.get("/api/v1/partitions?topic=events").expect_json(200);
    let events_parts: Vec<(String, u64)> = v["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["topic"].as_str().unwrap().to_string(), p["partition"].as_u64().unwrap()))
        .collect();
    assert_eq!(events_parts, [("events".to_string(), 0), ("events".to_string(), 1), ("events".to_string(), 2)]);
    broker.get("/api/v1/partitions?topic=nope").expect_error(404, "unknown_topic");
    broker.get("/api/v1/partitions?bogus=1").expect_error(400, "bad_request");

    // PATCH: grow partitions, set and delete configs.
    let patched = broker
        .send(
            "PATCH",
            "/api/v1/topics/events",
            &json!({"partitions": 5, "configs": {"retention.ms": "3600000", "cleanup.policy": "compact,delete"},
                    "delete_configs": ["segment.bytes"]}),
        )
        .expect_json(200);
    assert_eq!(patched["partitions"], 5);
    assert_eq!(patched["assignment"], json!([[0], [0], [0], [0], [0]]));
    assert_eq!(patched["configs"], json!({"retention.ms": "3600000", "cleanup.policy": "compact,delete"}));
    assert_eq!(patched["topic_id"], events_id.as_str());
    assert_eq!(broker.get("/api/v1/topics/events").expect_json(200), patched);
    for p in 3..5 {
        let d = partition_dir(&data_dir, "events", p);
        eventually(&format!("{} to exist", d.display()), Duration::from_secs(10), || d.is_dir());
    }
    // Partitions only grow: fewer or equal is a clear 400, and nothing changes.
    for n in [2, 5] {
        let msg = broker
            .send("PATCH", "/api/v1/topics/events", &json!({"partitions": n}))
            .expect_error(400, "invalid_partitions");
        assert!(msg.contains("can only be increased") && msg.contains("has 5 partitions"), "{msg}");
    }
    // A bad config in the same request fails before anything is written.
    broker
        .send("PATCH", "/api/v1/topics/events", &json!({"partitions": 9, "configs": {"retention.ms": "soon"}}))
        .expect_error(400, "invalid_config");
    assert_eq!(broker.get("/api/v1/topics/events").expect_json(200), patched);
    // An empty PATCH changes nothing.
    assert_eq!(broker.send("PATCH", "/api/v1/topics/events", &json!({})).expect_json(200), patched);

    // DELETE: 204, then 404, and the logs leave the disk.
    let r = broker.call("DELETE", "/api/v1/topics/plain", None);
    assert_eq!(r.status, 204, "{}", r.body);
    assert!(r.body.is_empty(), "{}", r.body);
    broker.get("/api/v1/topics/plain").expect_error(404, "unknown_topic");
    broker.call("DELETE", "/api/v1/topics/plain", None).expect_error(404, "unknown_topic");
    let d = partition_dir(&data_dir, "plain", 0);
    eventually(&format!("{} to be deleted", d.display()), Duration::from_secs(10), || !d.exists());

    // Restart on the same data dir: everything is still there, unchanged.
    let before = sorted_topics(&broker.get("/api/v1/topics").expect_json(200));
    assert_eq!(before.len(), 2);
    broker.stop();
    let mut broker = Broker::start(&data_dir, dir.path(), ports, 2);
    broker.wait_ready();
    let after = sorted_topics(&broker.get("/api/v1/topics").expect_json(200));
    assert_eq!(after, before);
    broker.get("/api/v1/topics/plain").expect_error(404, "unknown_topic");
    for p in 0..5 {
        assert!(partition_dir(&data_dir, "events", p).is_dir(), "events-{p} gone after restart");
    }
    assert!(partition_dir(&data_dir, "compacted.state_v1", 0).is_dir());
    assert!(!partition_dir(&data_dir, "plain", 0).exists(), "deleted topic's log came back");
    eventually("local offsets after restart", Duration::from_secs(10), || {
        let v = broker.get("/api/v1/partitions").expect_json(200);
        let parts = v["partitions"].as_array().unwrap();
        parts.len() == 6 && parts.iter().all(|p| p["log_end_offset"] == 0 && p["leader"] == 0)
    });
    // Writes still work after the restart.
    broker.send("POST", "/api/v1/topics", &json!({"name": "after-restart"})).expect_json(201);
    broker.stop();
}

#[test]
fn every_error_is_json_with_a_stable_code() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut broker = Broker::start(&data_dir, dir.path(), Ports::free(), 1);
    broker.wait_ready();
    create_first(&mut broker, &json!({"name": "taken", "partitions": 2}));

    // Malformed JSON, wrong types, unknown fields, missing fields.
    for body in
        ["{\"name\": ", "[]", "", "{\"name\": \"x\", \"partitions\": \"3\"}", "{\"name\": \"x\", \"partitions\": -1}"]
    {
        let msg = broker.call("POST", "/api/v1/topics", Some(body)).expect_error(400, "bad_request");
        assert!(msg.starts_with("invalid JSON body"), "{body}: {msg}");
    }
    let msg =
        broker.send("POST", "/api/v1/topics", &json!({"name": "x", "partition": 3})).expect_error(400, "bad_request");
    assert!(msg.contains("unknown field `partition`"), "{msg}");
    let msg = broker.send("POST", "/api/v1/topics", &json!({"partitions": 3})).expect_error(400, "bad_request");
    assert!(msg.contains("missing field `name`"), "{msg}");
    let msg = broker
        .send("PATCH", "/api/v1/topics/taken", &json!({"replication_factor": 2}))
        .expect_error(400, "bad_request");
    assert!(msg.contains("unknown field"), "{msg}");
    broker
        .send("POST", "/api/v1/topics", &json!({"name": "x", "configs": {"retention.ms": null}}))
        .expect_error(400, "bad_request");
    // The body must be declared JSON (curl -d alone sends a form content type).
    for ct in [Some("application/x-www-form-urlencoded"), Some("text/plain"), None] {
        let r = http(broker.ports.http, "POST", "/api/v1/topics", Some(r#"{"name":"wrong-type"}"#), ct).unwrap();
        r.expect_error(415, "unsupported_media_type");
    }
    let ct = Some("application/json; charset=utf-8");
    http(broker.ports.http, "POST", "/api/v1/topics", Some(r#"{"name":"charset"}"#), ct).unwrap().expect_json(201);
    // A body over the 2 MiB limit.
    let big = format!("{{\"name\": \"big\", \"configs\": {{\"x\": \"{}\"}}}}", "y".repeat(2 << 20));
    broker.call("POST", "/api/v1/topics", Some(&big)).expect_error(413, "payload_too_large");

    // Invalid topic names, in the body and in the path.
    for name in ["", "has space", "..", "ü", &"x".repeat(250)] {
        broker.send("POST", "/api/v1/topics", &json!({ "name": name })).expect_error(400, "invalid_topic_name");
    }
    broker.get("/api/v1/topics/has%20space").expect_error(400, "invalid_topic_name");
    broker.call("DELETE", "/api/v1/topics/a%2Fb", None).expect_error(400, "invalid_topic_name");
    // Kafka refuses names that collide once '.' and '_' are folded.
    broker.send("POST", "/api/v1/topics", &json!({"name": "a.b"})).expect_json(201);
    broker.send("POST", "/api/v1/topics", &json!({"name": "a_b"})).expect_error(400, "invalid_topic_name");

    // Missing and duplicate topics.
    broker.get("/api/v1/topics/missing").expect_error(404, "unknown_topic");
    broker.send("PATCH", "/api/v1/topics/missing", &json!({"partitions": 3})).expect_error(404, "unknown_topic");
    broker.call("DELETE", "/api/v1/topics/missing", None).expect_error(404, "unknown_topic");
    let msg = broker.send("POST", "/api/v1/topics", &json!({"name": "taken"})).expect_error(409, "topic_exists");
    assert!(msg.contains("taken"), "{msg}");

    // Replication and partitions that one broker cannot honour.
    let msg = broker
        .send("POST", "/api/v1/topics", &json!({"name": "rf3", "replication_factor": 3}))
        .expect_error(400, "invalid_replication_factor");
    assert!(msg.contains('3'), "{msg}");
    broker
        .send("POST", "/api/v1/topics", &json!({"name": "rf0", "replication_factor": 0}))
        .expect_error(400, "invalid_replication_factor");
    broker
        .send("POST", "/api/v1/topics", &json!({"name": "p0", "partitions": 0}))
        .expect_error(400, "invalid_partitions");
    broker
        .send("POST", "/api/v1/topics", &json!({"name": "huge", "partitions": 1_000_000}))
        .expect_error(400, "invalid_partitions");
    broker
        .send("POST", "/api/v1/topics", &json!({"name": "ub", "assignment": [[7]]}))
        .expect_error(400, "unknown_broker");
    broker
        .send("POST", "/api/v1/topics", &json!({"name": "dup", "assignment": [[0, 0]]}))
        .expect_error(400, "invalid_replica_assignment");
    broker
        .send("POST", "/api/v1/topics", &json!({"name": "mismatch", "partitions": 2, "assignment": [[0]]}))
        .expect_error(400, "invalid_replica_assignment");
    broker
        .send("POST", "/api/v1/topics", &json!({"name": "empty", "assignment": []}))
        .expect_error(400, "invalid_partitions");
    broker.send("PATCH", "/api/v1/topics/taken", &json!({"partitions": 1})).expect_error(400, "invalid_partitions");

    // Configs: unknown keys, bad values, set and deleted at once.
    broker
        .send("POST", "/api/v1/topics", &json!({"name": "cfg", "configs": {"no.such.key": "1"}}))
        .expect_error(400, "invalid_config");
    broker
        .send("POST", "/api/v1/topics", &json!({"name": "cfg", "configs": {"cleanup.policy": "sometimes"}}))
        .expect_error(400, "invalid_config");
    broker
        .send("PATCH", "/api/v1/topics/taken", &json!({"delete_configs": ["no.such.key"]}))
        .expect_error(400, "invalid_config");
    broker
        .send(
            "PATCH",
            "/api/v1/topics/taken",
            &json!({"configs": {"retention.ms": "1"}, "delete_configs": ["retention.ms"]}),
        )
        .expect_error(400, "invalid_config");

    // None of the refused creations left a topic behind.
    let list = broker.get("/api/v1/topics").expect_json(200);
    let names: Vec<&str> = list["topics"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a.b", "charset", "taken"]);

    // Unknown endpoints and methods.
    broker.get("/api/v1/nope").expect_error(404, "not_found");
    let r = broker.call("PUT", "/api/v1/topics/taken", Some("{}"));
    r.expect_error(405, "method_not_allowed");
    assert!(r.header("allow").is_some_and(|a| a.contains("PATCH")), "{:?}", r.headers);

    // The probes are unchanged.
    let r = broker.get("/healthz");
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    assert_eq!(broker.get("/readyz").status, 200);
    broker.stop();
}
