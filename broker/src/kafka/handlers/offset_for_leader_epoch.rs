//! OffsetForLeaderEpoch (key 23), versions 2–4: for each partition, the end offset of the
//! requested leader epoch on the leader's log (from its leader-epoch cache). Followers ask it
//! after a leader change to find where their log diverges; consumers (KIP-320) ask it to
//! detect truncation below their position. Served by the partition leader only, with the
//! caller's current leader epoch checked (FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH).

use kafka_protocol::messages::offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use kafka_protocol::ResponseError;

use super::led_partition;
use crate::kafka::context::KafkaContext;
use crate::log::leader_epoch::{UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET};

/// The caller's view of the leader epoch against ours: older → FENCED_LEADER_EPOCH, newer →
/// UNKNOWN_LEADER_EPOCH (our metadata lags), -1 → not checked.
pub(crate) fn check_current_leader_epoch(current: i32, ours: i32) -> Result<(), i16> {
    if current < 0 || current == ours {
        Ok(())
    } else if current < ours {
        Err(ResponseError::FencedLeaderEpoch.code())
    } else {
        Err(ResponseError::UnknownLeaderEpoch.code())
    }
}

pub async fn handle(ctx: &KafkaContext, req: OffsetForLeaderEpochRequest) -> OffsetForLeaderEpochResponse {
    let image = ctx.cluster.image();
    let mut topics = Vec::with_capacity(req.topics.len());
    for topic in &req.topics {
        let name = topic.topic.0.as_str();
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in &topic.partitions {
            let mut out = EpochEndOffset::default();
            out.partition = p.partition;
            out.leader_epoch = UNDEFINED_EPOCH;
            out.end_offset = UNDEFINED_EPOCH_OFFSET;
            let answer = led_partition(ctx, &image, name, p.partition).and_then(|(part, log)| {
                check_current_leader_epoch(p.current_leader_epoch, part.leader_epoch)?;
                Ok(tokio::task::block_in_place(|| log.lock().expect("log lock").end_offset_for_epoch(p.leader_epoch)))
            });
            match answer {
                Ok((epoch, end)) => {
                    out.leader_epoch = epoch;
                    out.end_offset = end;
                }
                Err(code) => out.error_code = code,
            }
            partitions.push(out);
        }
        let mut t = OffsetForLeaderTopicResult::default();
        t.topic = topic.topic.clone();
        t.partitions = partitions;
        topics.push(t);
    }
    let mut resp = OffsetForLeaderEpochResponse::default();
    resp.topics = topics;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_leader_epoch_is_checked_both_ways() {
        assert_eq!(check_current_leader_epoch(-1, 4), Ok(()));
        assert_eq!(check_current_leader_epoch(4, 4), Ok(()));
        assert_eq!(check_current_leader_epoch(3, 4), Err(ResponseError::FencedLeaderEpoch.code()));
        assert_eq!(check_current_leader_epoch(5, 4), Err(ResponseError::UnknownLeaderEpoch.code()));
    }
}
