//! Command line of the `weir-broker` binary. Every flag can also be given through the
//! environment as `WEIR_<FLAG>` (for example `WEIR_NODE_ID`, `WEIR_DATA_DIR`); a flag on the
//! command line wins over the environment.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

#[derive(Debug, Clone, Parser)]
#[command(name = "weir-broker", version, about = "Weir broker: Kafka protocol and AMQP 0-9-1 over one log")]
pub struct BrokerArgs {
    /// Id of this node in the cluster. When absent it is taken from the ordinal suffix of
    /// the StatefulSet pod name (POD_NAME, then HOSTNAME, e.g. `weir-2` gives 2), else 0.
    #[arg(long, env = "WEIR_NODE_ID", value_name = "N")]
    pub node_id: Option<u32>,

    /// Directory holding the partition logs and checkpoints (created if missing).
    #[arg(long, env = "WEIR_DATA_DIR", value_name = "DIR", default_value = "./weir-data")]
    pub data_dir: PathBuf,

    /// Address the Kafka protocol listener binds.
    #[arg(long, env = "WEIR_KAFKA_LISTEN", value_name = "ADDR", default_value = "0.0.0.0:9092")]
    pub kafka_listen: SocketAddr,

    /// Address clients are told to reach the Kafka listener at (default: the listen address).
    #[arg(long, env = "WEIR_KAFKA_ADVERTISED", value_name = "HOST:PORT", value_parser = parse_host_port)]
    pub kafka_advertised: Option<HostPort>,

    /// Address the AMQP 0-9-1 listener binds.
    #[arg(long, env = "WEIR_AMQP_LISTEN", value_name = "ADDR", default_value = "0.0.0.0:5672")]
    pub amqp_listen: SocketAddr,

    /// AMQP users besides `guest`/`guest`, as `USER:PASSWORD` separated by commas.
    #[arg(long, env = "WEIR_AMQP_USERS", value_name = "USER:PASSWORD,...", value_delimiter = ',')]
    pub amqp_users: Vec<String>,

    /// Allow the `guest` user only from loopback addresses, as RabbitMQ does by default.
    #[arg(long, env = "WEIR_AMQP_GUEST_LOOPBACK_ONLY", default_value_t = true, action = clap::ArgAction::Set)]
    pub amqp_guest_loopback_only: bool,

    /// Heartbeat interval the AMQP server proposes in connection.tune, in seconds (0: none).
    #[arg(long, env = "WEIR_AMQP_HEARTBEAT", value_name = "SECONDS", default_value_t = 60)]
    pub amqp_heartbeat: u16,

    /// Block AMQP publishers while less disk than this is free on the data directory
    /// (RabbitMQ's `disk_free_limit`, default 50 MB).
    #[arg(long, env = "WEIR_AMQP_DISK_FREE_LIMIT", value_name = "BYTES", default_value_t = 50_000_000)]
    pub amqp_disk_free_limit: u64,

    /// Block AMQP publishers while queues hold more message bytes than this (0: 40% of the
    /// machine's memory, RabbitMQ's default high watermark).
    #[arg(long, env = "WEIR_AMQP_MEMORY_LIMIT", value_name = "BYTES", default_value_t = 0)]
    pub amqp_memory_limit: u64,

    /// Address of the HTTP admin server (/healthz, /readyz, /metrics).
    #[arg(long, env = "WEIR_HTTP_LISTEN", value_name = "ADDR", default_value = "0.0.0.0:9644")]
    pub http_listen: SocketAddr,

    /// Address the raft (controller quorum) listener binds.
    #[arg(long, env = "WEIR_RAFT_LISTEN", value_name = "ADDR", default_value = "0.0.0.0:9093")]
    pub raft_listen: SocketAddr,

    /// Controller quorum voters, `ID@HOST:PORT` separated by commas (default: this node alone,
    /// at its raft listen address).
    #[arg(long, env = "WEIR_VOTERS", value_name = "ID@HOST:PORT,...", value_parser = parse_voters)]
    pub voters: Option<Voters>,

    /// `broker.rack`: the failure domain this broker runs in (a Kubernetes zone, say). With
    /// racks set, new topics, new partitions and drains spread each partition's replicas over
    /// as many racks as they can, and clients see the rack in Metadata. Empty: no rack.
    #[arg(long, env = "WEIR_RACK", value_name = "RACK", value_parser = parse_rack)]
    pub rack: Option<String>,

    /// `replica.selector.class`: `leader` (consumers read from the leader) or `rack` (a
    /// consumer that sets `client.rack` reads from an in-sync replica in its rack, KIP-392).
    #[arg(long, env = "WEIR_REPLICA_SELECTOR", value_enum, default_value_t = crate::kafka::context::ReplicaSelector::Leader)]
    pub replica_selector: crate::kafka::context::ReplicaSelector,

    /// `max.incremental.fetch.session.cache.slots`: how many incremental fetch sessions
    /// (KIP-227) this broker keeps for consumers and followers. 0: none; every fetch is full.
    #[arg(long, env = "WEIR_MAX_INCREMENTAL_FETCH_SESSION_CACHE_SLOTS", default_value_t = crate::kafka::fetch_session::DEFAULT_MAX_SESSIONS)]
    pub max_incremental_fetch_session_cache_slots: usize,

    /// `broker.session.timeout.ms`: a broker silent this long is fenced by the quorum leader.
    #[arg(long, env = "WEIR_BROKER_SESSION_TIMEOUT_MS", default_value_t = 9000)]
    pub broker_session_timeout_ms: u64,

    /// `controlled.shutdown.enable`: on SIGTERM (and, unlike Kafka, when the data directory
    /// fails), have the quorum fence this broker first, which
    /// moves its partitions' leadership to other in-sync replicas and takes it out of their
    /// ISRs, so clients and acks=all producers move on at once rather than after the session
    /// timeout.
    #[arg(long, env = "WEIR_CONTROLLED_SHUTDOWN_ENABLE", default_value_t = true, action = clap::ArgAction::Set)]
    pub controlled_shutdown_enable: bool,

    /// How long a broker marked draining waits on SIGTERM for the moves off it to finish
    /// before its controlled shutdown (0: not at all). Keep it and the controlled-shutdown
    /// timeout under the pod's termination grace period.
    #[arg(long, env = "WEIR_SHUTDOWN_DRAIN_WAIT_MS", default_value_t = 30_000)]
    pub shutdown_drain_wait_ms: u64,

    /// How long a controlled shutdown waits for the quorum to commit the fence before the
    /// broker stops without it.
    #[arg(long, env = "WEIR_CONTROLLED_SHUTDOWN_TIMEOUT_MS", default_value_t = 10_000)]
    pub controlled_shutdown_timeout_ms: u64,

    /// The metadata version this broker registers with (at most the newest it knows, the
    /// default). Lower holds every broker to what that version's brokers can read, as Kafka's
    /// pinned `metadata.version`: set it to the old version while a rolling upgrade runs, then
    /// remove it in a second rolling restart. Without it, new kinds of metadata changes wait
    /// anyway until every live broker runs the new binary.
    #[arg(long, env = "WEIR_METADATA_VERSION", default_value_t = crate::cluster::types::METADATA_VERSION,
          value_parser = clap::value_parser!(u32).range(0..=crate::cluster::types::METADATA_VERSION as i64))]
    pub metadata_version: u32,

    /// `replica.lag.time.max.ms`: a follower not caught up with its leader this long leaves
    /// the ISR (it rejoins once caught up).
    #[arg(long, env = "WEIR_REPLICA_LAG_TIME_MAX_MS", default_value_t = 30000)]
    pub replica_lag_time_max_ms: u64,

    /// `replica.fetch.wait.max.ms`: how long the leader holds a follower's fetch while it has
    /// nothing new for it.
    #[arg(long, env = "WEIR_REPLICA_FETCH_WAIT_MAX_MS", default_value_t = 500, value_parser = clap::value_parser!(i32).range(0..))]
    pub replica_fetch_wait_max_ms: i32,

    /// `replica.fetch.max.bytes`: how much a follower asks for per partition in one fetch
    /// (a larger first batch still comes whole).
    #[arg(long, env = "WEIR_REPLICA_FETCH_MAX_BYTES", default_value_t = 1024 * 1024)]
    pub replica_fetch_max_bytes: i32,

    /// `replica.fetch.response.max.bytes`: how much a follower asks for in one fetch, over
    /// all partitions of its leader.
    #[arg(long, env = "WEIR_REPLICA_FETCH_RESPONSE_MAX_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub replica_fetch_response_max_bytes: i32,

    /// Largest single write into a segment file; longer appends are written in pieces of
    /// this size (0: one write per append). Smaller writes keep the kernel's page-cache folios
    /// smaller, which costs less CPU where large page allocations are expensive, as on VMs
    /// that return free memory to their host (docs/benchmarks.md). Not a Kafka setting.
    #[arg(long, env = "WEIR_LOG_WRITE_PIECE_BYTES", default_value_t = crate::log::segment::DEFAULT_WRITE_PIECE_BYTES)]
    pub log_write_piece_bytes: usize,

    /// `num.recovery.threads.per.data.dir`: threads that open the partition logs at start
    /// (crash recovery checks the unflushed segments) and close them at shutdown.
    #[arg(long, env = "WEIR_NUM_RECOVERY_THREADS_PER_DATA_DIR", default_value_t = crate::log::manager::DEFAULT_RECOVERY_THREADS as u16, value_parser = clap::value_parser!(u16).range(1..))]
    pub num_recovery_threads_per_data_dir: u16,

    /// `producer.id.expiration.ms` (KIP-854): a partition forgets an idempotent producer whose
    /// last batch there is this old (checked every 10 min, or at this interval if shorter); it
    /// may go on at any sequence afterwards, as with Kafka.
    #[arg(long, env = "WEIR_PRODUCER_ID_EXPIRATION_MS", default_value_t = crate::log::manager::DEFAULT_PRODUCER_ID_EXPIRATION_MS)]
    pub producer_id_expiration_ms: i64,

    /// `offsets.retention.minutes`: a consumer group's committed offsets are deleted once the
    /// group has been empty this long; offsets committed outside any group membership, this
    /// long after their commit.
    #[arg(long, env = "WEIR_OFFSETS_RETENTION_MINUTES", default_value_t = 7 * 24 * 60)]
    pub offsets_retention_minutes: u64,

    /// The same in milliseconds, overriding the minutes when given (Kafka has no such key;
    /// meant for tests).
    #[arg(long, env = "WEIR_OFFSETS_RETENTION_MS")]
    pub offsets_retention_ms: Option<u64>,

    /// `offsets.retention.check.interval.ms`: how often expired offsets are looked for.
    #[arg(long, env = "WEIR_OFFSETS_RETENTION_CHECK_INTERVAL_MS", default_value_t = 600_000)]
    pub offsets_retention_check_interval_ms: u64,

    /// How often the consumer group lag on /metrics is worked out (ms).
    #[arg(long, env = "WEIR_CONSUMER_LAG_INTERVAL_MS", default_value_t = 10_000)]
    pub consumer_lag_interval_ms: u64,
}

impl BrokerArgs {
    /// The node id: `--node-id`, else the pod ordinal from `POD_NAME` / `HOSTNAME`, else 0.
    pub fn resolved_node_id(&self) -> u32 {
        let pod_name = std::env::var("POD_NAME").ok();
        let hostname = std::env::var("HOSTNAME").ok();
        resolve_node_id(self.node_id, pod_name.as_deref(), hostname.as_deref())
    }

    /// The voters: `--voters`, else `node_id` alone at the raft listen address (an unspecified
    /// IP such as 0.0.0.0 is replaced by localhost, since nobody can connect to it).
    pub fn resolved_voters(&self, node_id: u32) -> Vec<Voter> {
        match &self.voters {
            Some(v) => v.0.clone(),
            None => {
                let host = if self.raft_listen.ip().is_unspecified() {
                    "localhost".to_string()
                } else {
                    host_for_ip(self.raft_listen.ip())
                };
                vec![Voter { id: node_id, addr: HostPort { host, port: self.raft_listen.port() } }]
            }
        }
    }
}

fn host_for_ip(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// Node id to use: an explicit one wins; else the ordinal suffix of the pod name, then of the
/// host name (a StatefulSet pod `weir-2` has ordinal 2); else 0.
pub fn resolve_node_id(explicit: Option<u32>, pod_name: Option<&str>, hostname: Option<&str>) -> u32 {
    explicit.or_else(|| pod_name.and_then(ordinal_suffix)).or_else(|| hostname.and_then(ordinal_suffix)).unwrap_or(0)
}

/// The ordinal of a StatefulSet pod name: the decimal number after the last `-`, e.g.
/// `weir-2` → 2, `my-weir-broker-10` → 10. None if there is no such non-empty numeric suffix
/// after a non-empty prefix, or it does not fit a u32.
pub fn ordinal_suffix(name: &str) -> Option<u32> {
    let name = name.trim();
    // A fully qualified host name `weir-2.weir.ns.svc`: the pod name is the first label.
    let name = name.split('.').next().unwrap_or(name);
    let (prefix, suffix) = name.rsplit_once('-')?;
    if prefix.is_empty() || suffix.is_empty() || !suffix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    suffix.parse().ok()
}

/// A rack name: printable, no whitespace (it goes into Kafka responses as is). Empty means
/// none: the chart's `WEIR_RACK` is empty on a pod without the rack label.
fn parse_rack(s: &str) -> Result<String, String> {
    if s.len() > 255 || !s.chars().all(|c| c.is_ascii_graphic()) {
        return Err(format!("`{s}`: a rack is at most 255 printable ASCII characters without spaces"));
    }
    Ok(s.to_string())
}

/// A `host:port` pair; the host is a DNS name, an IPv4 address or a bracketed IPv6 address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// As written, IPv6 addresses keep their brackets.
    pub host: String,
    pub port: u16,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// One controller quorum voter, `ID@HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voter {
    pub id: u32,
    pub addr: HostPort,
}

impl fmt::Display for Voter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.addr)
    }
}

/// The parsed value of `--voters` (a newtype, so that clap takes the whole list as one value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voters(pub Vec<Voter>);

impl fmt::Display for Voters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{v}")?;
        }
        Ok(())
    }
}

/// Parse `HOST:PORT`: a non-empty host (DNS name, IPv4, or `[IPv6]`) and a port 1..=65535.
pub fn parse_host_port(s: &str) -> Result<HostPort, String> {
    let s = s.trim();
    let (host, port) = s.rsplit_once(':').ok_or_else(|| format!("`{s}` is not HOST:PORT (no port)"))?;
    if host.is_empty() {
        return Err(format!("`{s}` is not HOST:PORT (empty host)"));
    }
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or_else(|| format!("`{s}`: unclosed `[` in host"))?;
        inner.parse::<std::net::Ipv6Addr>().map_err(|_| format!("`{s}`: `{inner}` is not an IPv6 address"))?;
    } else if host.contains(':') {
        return Err(format!("`{s}`: an IPv6 host must be written in brackets, as [::1]:9093"));
    } else if !host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_') {
        return Err(format!("`{s}`: `{host}` is not a valid host name"));
    }
    let port: u16 = port.parse().map_err(|_| format!("`{s}`: port `{port}` is not a number in 1..=65535"))?;
    if port == 0 {
        return Err(format!("`{s}`: port must not be 0"));
    }
    Ok(HostPort { host: host.to_string(), port })
}

/// Parse one `ID@HOST:PORT`.
pub fn parse_voter(s: &str) -> Result<Voter, String> {
    let s = s.trim();
    let (id, addr) = s.split_once('@').ok_or_else(|| format!("voter `{s}` is not ID@HOST:PORT (no `@`)"))?;
    let id: u32 = id.parse().map_err(|_| format!("voter `{s}`: id `{id}` is not a non-negative integer"))?;
    let addr = parse_host_port(addr).map_err(|e| format!("voter `{s}`: {e}"))?;
    Ok(Voter { id, addr })
}

/// Parse `ID@HOST:PORT,...`: at least one voter, no id twice.
pub fn parse_voters(s: &str) -> Result<Voters, String> {
    if s.trim().is_empty() {
        return Err("expected at least one ID@HOST:PORT".to_string());
    }
    let mut voters: Vec<Voter> = Vec::new();
    for part in s.split(',') {
        let v = parse_voter(part)?;
        if voters.iter().any(|o| o.id == v.id) {
            return Err(format!("voter id {} appears more than once", v.id));
        }
        voters.push(v);
    }
    Ok(Voters(voters))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(host: &str, port: u16) -> HostPort {
        HostPort { host: host.to_string(), port }
    }

    #[test]
    fn racks_are_printable_words_and_empty_is_none() {
        assert_eq!(parse_rack("eu-west-1a"), Ok("eu-west-1a".to_string()));
        assert_eq!(parse_rack(""), Ok(String::new()), "a pod without the rack label");
        for bad in ["two words", "tab\t", "zone\u{e9}", &"x".repeat(256)] {
            assert!(parse_rack(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ordinal_from_statefulset_pod_names() {
        assert_eq!(ordinal_suffix("weir-2"), Some(2));
        assert_eq!(ordinal_suffix("weir-0"), Some(0));
        assert_eq!(ordinal_suffix("my-weir-broker-10"), Some(10));
        assert_eq!(ordinal_suffix("weir-3.weir-headless.default.svc.cluster.local"), Some(3));
        assert_eq!(ordinal_suffix(" weir-4\n"), Some(4));
    }

    #[test]
    fn no_ordinal_when_suffix_is_not_a_number() {
        assert_eq!(ordinal_suffix("weir"), None);
        assert_eq!(ordinal_suffix("weir-"), None);
        assert_eq!(ordinal_suffix("-2"), None);
        assert_eq!(ordinal_suffix("weir-abc"), None);
        assert_eq!(ordinal_suffix("weir-2a"), None);
        assert_eq!(ordinal_suffix("weir-+2"), None);
        assert_eq!(ordinal_suffix("weir-99999999999"), None);
        assert_eq!(ordinal_suffix(""), None);
    }

    #[test]
    fn explicit_node_id_wins() {
        assert_eq!(resolve_node_id(Some(7), Some("weir-2"), Some("weir-3")), 7);
        assert_eq!(resolve_node_id(Some(0), Some("weir-2"), None), 0);
    }

    #[test]
    fn node_id_from_pod_name_then_hostname_then_zero() {
        assert_eq!(resolve_node_id(None, Some("weir-2"), Some("node-9")), 2);
        assert_eq!(resolve_node_id(None, Some("weir"), Some("weir-5")), 5);
        assert_eq!(resolve_node_id(None, None, Some("weir-5")), 5);
        assert_eq!(resolve_node_id(None, None, Some("laptop")), 0);
        assert_eq!(resolve_node_id(None, None, None), 0);
    }

    #[test]
    fn parses_voter_lists() {
        let v = parse_voters("0@weir-0.weir:9093,1@weir-1.weir:9093,2@10.0.0.3:19093").unwrap();
        assert_eq!(
            v.0,
            vec![
                Voter { id: 0, addr: hp("weir-0.weir", 9093) },
                Voter { id: 1, addr: hp("weir-1.weir", 9093) },
                Voter { id: 2, addr: hp("10.0.0.3", 19093) },
            ]
        );
        assert_eq!(v.to_string(), "0@weir-0.weir:9093,1@weir-1.weir:9093,2@10.0.0.3:19093");
        let v = parse_voters(" 5@[::1]:9093 ").unwrap();
        assert_eq!(v.0, vec![Voter { id: 5, addr: hp("[::1]", 9093) }]);
    }

    #[test]
    fn rejects_bad_voter_syntax() {
        for bad in [
            "",
            "   ",
            "weir-0:9093",
            "x@weir-0:9093",
            "-1@weir-0:9093",
            "0@weir-0",
            "0@:9093",
            "0@weir-0:",
            "0@weir-0:0",
            "0@weir-0:65536",
            "0@weir-0:port",
            "0@::1:9093",
            "0@[::1:9093",
            "0@[zz]:9093",
            "0@we ir:9093",
            "0@weir-0:9093,",
            "0@weir-0:9093,,1@weir-1:9093",
            "0@weir-0:9093,0@weir-1:9093",
        ] {
            assert!(parse_voters(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn duplicate_voter_id_is_named() {
        let err = parse_voters("1@a:1,2@b:2,1@c:3").unwrap_err();
        assert!(err.contains("voter id 1"), "{err}");
    }

    #[test]
    fn defaults() {
        let a = BrokerArgs::try_parse_from(["weir-broker"]).unwrap();
        assert_eq!(a.data_dir, PathBuf::from("./weir-data"));
        assert_eq!(a.kafka_listen, "0.0.0.0:9092".parse().unwrap());
        assert_eq!(a.amqp_listen, "0.0.0.0:5672".parse().unwrap());
        assert_eq!(a.http_listen, "0.0.0.0:9644".parse().unwrap());
        assert_eq!(a.raft_listen, "0.0.0.0:9093".parse().unwrap());
        assert_eq!(a.kafka_advertised, None);
        assert_eq!(a.voters, None);
        assert_eq!(a.resolved_voters(3), vec![Voter { id: 3, addr: hp("localhost", 9093) }]);
    }

    #[test]
    fn default_voter_uses_a_specific_raft_listen_address() {
        let a = BrokerArgs::try_parse_from(["weir-broker", "--raft-listen", "10.1.2.3:7000"]).unwrap();
        assert_eq!(a.resolved_voters(1), vec![Voter { id: 1, addr: hp("10.1.2.3", 7000) }]);
        let a = BrokerArgs::try_parse_from(["weir-broker", "--raft-listen", "[::1]:7000"]).unwrap();
        assert_eq!(a.resolved_voters(1), vec![Voter { id: 1, addr: hp("[::1]", 7000) }]);
    }

    #[test]
    fn flags_parse() {
        let a = BrokerArgs::try_parse_from([
            "weir-broker",
            "--node-id",
            "4",
            "--data-dir",
            "/var/lib/weir",
            "--kafka-advertised",
            "weir-4.weir.ns.svc:9092",
            "--http-listen",
            "127.0.0.1:0",
            "--voters",
            "4@weir-4:9093,5@weir-5:9093",
        ])
        .unwrap();
        assert_eq!(a.node_id, Some(4));
        assert_eq!(a.data_dir, PathBuf::from("/var/lib/weir"));
        assert_eq!(a.kafka_advertised, Some(hp("weir-4.weir.ns.svc", 9092)));
        assert_eq!(a.http_listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(a.voters.unwrap().0.len(), 2);
    }

    #[test]
    fn bad_values_name_the_flag() {
        let err = BrokerArgs::try_parse_from(["weir-broker", "--voters", "1@host"]).unwrap_err().to_string();
        assert!(err.contains("--voters"), "{err}");
        let err = BrokerArgs::try_parse_from(["weir-broker", "--http-listen", "nope"]).unwrap_err().to_string();
        assert!(err.contains("--http-listen"), "{err}");
        let err = BrokerArgs::try_parse_from(["weir-broker", "--node-id=-1"]).unwrap_err().to_string();
        assert!(err.contains("--node-id"), "{err}");
        let err = BrokerArgs::try_parse_from(["weir-broker", "--kafka-advertised", "host"]).unwrap_err().to_string();
        assert!(err.contains("--kafka-advertised"), "{err}");
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        BrokerArgs::command().debug_assert();
        // Every flag is readable from WEIR_<FLAG>.
        for arg in BrokerArgs::command().get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if long == "help" || long == "version" {
                continue;
            }
            let want = format!("WEIR_{}", long.to_ascii_uppercase().replace('-', "_"));
            assert_eq!(arg.get_env().and_then(|e| e.to_str()), Some(want.as_str()), "--{long}");
        }
    }
}
