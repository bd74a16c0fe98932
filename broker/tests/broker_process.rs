//! Starts the real `weir-broker` binary: probes, metrics, clean shutdown on SIGTERM with the
//! clean-shutdown marker, the marker consumed at the next start, and bad flags rejected.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::HttpResponse;
use weir_broker::log::checkpoint::CLEAN_SHUTDOWN_FILE;

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(25);

/// The broker child process; killed on drop so that a failing test leaves nothing behind.
struct Broker {
    child: Child,
    http: SocketAddr,
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn broker_command(data_dir: &Path, http: SocketAddr) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weir-broker"));
    cmd.arg("--node-id")
        .arg("0")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--http-listen")
        .arg(http.to_string())
        .arg("--kafka-listen")
        .arg("127.0.0.1:0")
        .arg("--amqp-listen")
        .arg("127.0.0.1:0")
        .arg("--raft-listen")
        .arg("127.0.0.1:0")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    // Keep the caller's environment from configuring the broker behind our back.
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("WEIR_")) {
            cmd.env_remove(key);
        }
    }
    cmd.env_remove("POD_NAME").env_remove("HOSTNAME");
    cmd
}

/// A loopback address with a port that was free a moment ago.
fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().unwrap()
}

fn start(data_dir: &Path) -> Broker {
    let http = free_addr();
    let child = broker_command(data_dir, http).spawn().expect("spawn weir-broker");
    Broker { child, http }
}

/// A GET with `Connection: close`.
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<HttpResponse> {
    common::request(addr, "GET", path, None, None, Duration::from_secs(5))
}

/// Poll `/readyz` until it answers 200; panics if the broker exits or the timeout passes.
fn wait_ready(broker: &mut Broker) {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut last = String::from("no answer yet");
    loop {
        if let Some(status) = broker.child.try_wait().expect("try_wait") {
            panic!("weir-broker exited with {status} before becoming ready (last /readyz: {last})");
        }
        match http_get(broker.http, "/readyz") {
            Ok(r) if r.status == 200 => return,
            Ok(r) => {
                assert_eq!(r.status, 503, "/readyz answered neither 200 nor 503: {}", r.body);
                last = format!("{} {}", r.status, r.body);
            }
            Err(e) => last = e.to_string(),
        }
        assert!(Instant::now() < deadline, "/readyz not 200 within {READY_TIMEOUT:?} (last: {last})");
        std::thread::sleep(POLL);
    }
}

fn wait_exit(broker: &mut Broker, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = broker.child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

fn sigterm(broker: &Broker) {
    let status = Command::new("kill").arg("-TERM").arg(broker.child.id().to_string()).status().expect("run kill");
    assert!(status.success(), "kill -TERM failed: {status}");
}

/// SIGTERM, then exit 0 within the timeout.
fn stop_cleanly(broker: &mut Broker) {
    sigterm(broker);
    let status = wait_exit(broker, EXIT_TIMEOUT)
        .unwrap_or_else(|| panic!("weir-broker still running {EXIT_TIMEOUT:?} after SIGTERM"));
    assert_eq!(status.code(), Some(0), "weir-broker exit status after SIGTERM: {status}");
}

#[test]
fn serves_probes_and_metrics_and_shuts_down_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let marker = data_dir.join(CLEAN_SHUTDOWN_FILE);

    let mut broker = start(&data_dir);
    wait_ready(&mut broker);
    assert!(data_dir.is_dir(), "data dir not created");

    let health = http_get(broker.http, "/healthz").unwrap();
    assert_eq!(health.status, 200);
    assert_eq!(health.body, "ok");

    let metrics = http_get(broker.http, "/metrics").unwrap();
    assert_eq!(metrics.status, 200);
    assert_eq!(metrics.header("content-type"), Some("text/plain; version=0.0.4"));
    for name in ["weir_log_appended_bytes_total", "weir_log_recovery_seconds", "weir_build_info"] {
        assert!(
            metrics.body.lines().any(|l| l.starts_with(name)),
            "/metrics has no sample of {name}:\n{}",
            metrics.body
        );
    }

    assert!(!marker.exists(), "clean-shutdown marker present while running");
    stop_cleanly(&mut broker);
    assert!(marker.exists(), "no {CLEAN_SHUTDOWN_FILE} after a clean shutdown");
    assert!(TcpStream::connect(broker.http).is_err(), "admin port still accepting after exit");

    // Second start on the same data dir: the marker is consumed by the time it is ready.
    let mut broker = start(&data_dir);
    wait_ready(&mut broker);
    assert!(!marker.exists(), "{CLEAN_SHUTDOWN_FILE} still present after restart");
    assert_eq!(http_get(broker.http, "/healthz").unwrap().status, 200);
    stop_cleanly(&mut broker);
    assert!(marker.exists(), "no {CLEAN_SHUTDOWN_FILE} after the second clean shutdown");
}

#[test]
fn sigint_also_shuts_down_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = start(dir.path());
    wait_ready(&mut broker);
    let status = Command::new("kill").arg("-INT").arg(broker.child.id().to_string()).status().unwrap();
    assert!(status.success());
    let status = wait_exit(&mut broker, EXIT_TIMEOUT).expect("still running after SIGINT");
    assert_eq!(status.code(), Some(0), "exit status after SIGINT: {status}");
    assert!(dir.path().join(CLEAN_SHUTDOWN_FILE).exists());
}

fn run_expecting_failure(cmd: &mut Command) -> (ExitStatus, String) {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn weir-broker");
    let deadline = Instant::now() + EXIT_TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("weir-broker kept running with a bad argument; stderr:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(POLL);
    }
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status, text)
}

#[test]
fn bad_voters_value_is_rejected_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["1@host-without-port", "not-a-voter", "1@a:9093,1@b:9093"] {
        let mut cmd = broker_command(dir.path(), free_addr());
        cmd.arg("--voters").arg(bad);
        let (status, output) = run_expecting_failure(&mut cmd);
        assert!(!status.success(), "exit status {status} for --voters {bad}");
        assert!(output.contains("--voters"), "message for --voters {bad} does not name the flag:\n{output}");
    }
    // Also through the environment.
    let mut cmd = broker_command(dir.path(), free_addr());
    cmd.env("WEIR_VOTERS", "x@y:1");
    let (status, output) = run_expecting_failure(&mut cmd);
    assert!(!status.success(), "exit status {status} for WEIR_VOTERS=x@y:1");
    assert!(output.contains("--voters"), "message does not name the flag:\n{output}");
}

#[test]
fn unusable_http_listen_address_fails_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    // Occupy a port so that binding it fails.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut cmd = broker_command(dir.path(), taken.local_addr().unwrap());
    let (status, output) = run_expecting_failure(&mut cmd);
    assert!(!status.success(), "exit status {status} with the HTTP port taken");
    assert!(output.contains("--http-listen"), "error does not name --http-listen:\n{output}");
}
