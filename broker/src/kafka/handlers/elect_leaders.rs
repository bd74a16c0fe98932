//! ElectLeaders (key 43), versions 0–2: what `kafka-leader-election` and AdminClient
//! `elect_leaders` send. Preferred elections go through `cluster::election`, as the admin
//! API's. Weir never elects a leader outside the ISR, so an unclean election (type 1) only
//! answers: ELECTION_NOT_NEEDED where the partition has a leader, ELIGIBLE_LEADERS_NOT_AVAILABLE
//! where it has none.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::cluster::election::{self, Outcome};
use crate::cluster::image::NO_LEADER;
use crate::kafka::context::KafkaContext;
use crate::kafka::errors::propose_error_code;

const PREFERRED: i8 = 0;
const UNCLEAN: i8 = 1;

type Results = BTreeMap<String, Vec<(i32, i16, Option<String>)>>;

pub async fn handle(ctx: &KafkaContext, req: ElectLeadersRequest, version: i16) -> ElectLeadersResponse {
    // Version 0 has no election type: preferred.
    let election_type = if version == 0 { PREFERRED } else { req.election_type };
    let mut results: Results = BTreeMap::new();
    let image = ctx.cluster.image();
    // The partitions asked for that exist; the others are answered at once. None: all.
    let wanted: Option<BTreeSet<(String, u32)>> = req.topic_partitions.as_ref().map(|tps| {
        let mut wanted = BTreeSet::new();
        for tp in tps {
            let name = tp.topic.0.as_str();
            for &p in &tp.partitions {
                if p >= 0 && image.partition(name, p as u32).is_some() {
                    wanted.insert((name.to_string(), p as u32));
                } else {
                    let msg = format!("topic '{name}' has no partition {p}");
                    results.entry(name.to_string()).or_default().push((
                        p,
                        ResponseError::UnknownTopicOrPartition.code(),
                        Some(msg),
                    ));
                }
            }
        }
        wanted
    });
    let chosen =
        |topic: &str, partition: u32| wanted.as_ref().is_none_or(|w| w.contains(&(topic.to_string(), partition)));

    match election_type {
        PREFERRED => {
            drop(image);
            for e in election::elect_preferred(&ctx.cluster, chosen).await {
                let (code, message) = match e.outcome {
                    Outcome::Elected => (0, None),
                    Outcome::AlreadyLeader => (ResponseError::ElectionNotNeeded.code(), None),
                    Outcome::Fenced | Outcome::Draining | Outcome::NotInIsr => {
                        let why = match e.outcome {
                            Outcome::Fenced => "is down",
                            Outcome::Draining => "is being drained",
                            _ => "is not in the ISR",
                        };
                        (
                            ResponseError::PreferredLeaderNotAvailable.code(),
                            Some(format!("preferred replica {} {why}", e.preferred)),
                        )
                    }
                    Outcome::Refused(err) => (propose_error_code(&err), Some(err.to_string())),
                };
                results.entry(e.topic).or_default().push((e.partition as i32, code, message));
            }
        }
        UNCLEAN => {
            for t in image.topics.values() {
                for (i, p) in t.partitions.iter().enumerate() {
                    if !chosen(&t.name, i as u32) {
                        continue;
                    }
                    let answer = if p.leader != NO_LEADER {
                        (ResponseError::ElectionNotNeeded.code(), None)
                    } else {
                        (
                            ResponseError::EligibleLeadersNotAvailable.code(),
                            Some("no live ISR member; Weir does not elect leaders outside the ISR".to_string()),
                        )
                    };
                    results.entry(t.name.clone()).or_default().push((i as i32, answer.0, answer.1));
                }
            }
        }
        other => {
            let mut resp = ElectLeadersResponse::default();
            resp.error_code = ResponseError::InvalidRequest.code();
            tracing::debug!(election_type = other, "ElectLeaders with an unknown election type");
            return resp;
        }
    }

    let mut resp = ElectLeadersResponse::default();
    resp.replica_election_results = results
        .into_iter()
        .map(|(topic, parts)| {
            let mut r = ReplicaElectionResult::default();
            r.topic = TopicName(str_bytes(&topic));
            r.partition_result = parts
                .into_iter()
                .map(|(partition, code, message)| {
                    let mut pr = PartitionResult::default();
                    pr.partition_id = partition;
                    pr.error_code = code;
                    pr.error_message = message.as_deref().map(str_bytes);
                    pr
                })
                .collect();
            r
        })
        .collect();
    resp
}
