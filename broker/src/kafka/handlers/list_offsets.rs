//! ListOffsets (key 2), versions 1–7: earliest (-2), latest (-1), by timestamp (the first
//! record whose timestamp is at or after it, found through the time index and then inside
//! the batch) and max timestamp (-3, v7+: the first record carrying the log's largest
//! timestamp). v8+ add the tiered-storage specs (-4, -5); Weir has no tiered storage and
//! does not advertise them. Clients are answered below the high watermark, as Kafka does;
//! a broker replica (replica id >= 0) by the whole log.

use bytes::Bytes;
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::records::RecordBatchDecoder;
use kafka_protocol::ResponseError;

use super::led_partition;
use crate::kafka::context::KafkaContext;
use crate::kafka::errors::log_error_code;
use crate::log::{Log, LogError, TopicPartition};
use crate::partition::replication::{PartitionReplica, Role};

pub const LATEST: i64 = -1;
pub const EARLIEST: i64 = -2;
pub const MAX_TIMESTAMP: i64 = -3;

pub async fn handle(ctx: &KafkaContext, req: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let image = ctx.cluster.image();
    // Consumers and admin clients send -1; a broker replica its id.
    let client = req.replica_id.0 < 0;
    let mut topics = Vec::with_capacity(req.topics.len());
    for topic in &req.topics {
        let name = topic.name.0.as_str();
        let mut partitions = Vec::new();
        for p in &topic.partitions {
            let mut out = ListOffsetsPartitionResponse::default();
            out.partition_index = p.partition_index;
            out.timestamp = -1;
            out.offset = -1;
            out.leader_epoch = -1;
            out.error_code = match led_partition(ctx, &image, name, p.partition_index) {
                Err(code) => code,
                Ok((part, log)) => {
                    if version >= 4 {
                        out.leader_epoch = part.leader_epoch;
                    }
                    let found = tokio::task::block_in_place(|| {
                        let fetchable = client.then(|| {
                            let tp = TopicPartition::new(name, p.partition_index);
                            client_view(&ctx.replication.ensure_leader(&tp, part, &log))
                        });
                        let log = log.lock().expect("log lock");
                        match fetchable {
                            Some(view) => view.answer(p.timestamp, |ts| lookup(&log, ts)),
                            None => lookup(&log, p.timestamp).map_err(|e| log_error_code(&e)),
                        }
                    });
                    match found {
                        Ok((ts, off)) => {
                            out.timestamp = ts;
                            out.offset = off;
                            0
                        }
                        Err(code) => code,
                    }
                }
            };
            partitions.push(out);
        }
        let mut t = ListOffsetsTopicResponse::default();
        t.name = topic.name.clone();
        t.partitions = partitions;
        topics.push(t);
    }
    let mut resp = ListOffsetsResponse::default();
    resp.topics = topics;
    resp
}

/// What a client may be told of a partition, as its leader sees it: Kafka answers clients
/// below the high watermark (READ_UNCOMMITTED; READ_COMMITTED is the same without
/// transactions), never an offset a consumer cannot read yet or a failover could take back.
struct ClientView {
    high_watermark: i64,
    /// A leader elected with records its high watermark has not reached yet: until it does,
    /// the latest offset is not known, and Kafka answers OFFSET_NOT_AVAILABLE (retriable)
    /// rather than an offset lower than one an earlier leader may have given.
    hw_behind_epoch_start: bool,
}

fn client_view(replica: &PartitionReplica) -> ClientView {
    let high_watermark = replica.high_watermark();
    let epoch_start = match replica.role() {
        Role::Leader { state, .. } => state.epoch_start_offset,
        _ => -1,
    };
    ClientView { high_watermark, hw_behind_epoch_start: epoch_start > high_watermark }
}

impl ClientView {
    /// Kafka's rule (`Partition.fetchOffsetForTimestamp`): latest is the high watermark;
    /// earliest as the log has it; a lookup by timestamp finds only records below the high
    /// watermark.
    fn answer(
        &self,
        timestamp: i64,
        lookup: impl FnOnce(i64) -> Result<(i64, i64), LogError>,
    ) -> Result<(i64, i64), i16> {
        let not_available = ResponseError::OffsetNotAvailable.code();
        match timestamp {
            LATEST if self.hw_behind_epoch_start => Err(not_available),
            LATEST => Ok((-1, self.high_watermark)),
            EARLIEST => lookup(timestamp).map_err(|e| log_error_code(&e)),
            _ => match lookup(timestamp).map_err(|e| log_error_code(&e))? {
                (ts, offset) if offset >= 0 && offset < self.high_watermark => Ok((ts, offset)),
                _ if self.hw_behind_epoch_start => Err(not_available),
                _ => Ok((-1, -1)),
            },
        }
    }
}

/// (timestamp, offset) for a ListOffsets query; (-1, -1) when no record is that recent.
pub fn lookup(log: &Log, timestamp: i64) -> Result<(i64, i64), LogError> {
    match timestamp {
        LATEST => Ok((-1, log.log_end_offset())),
        EARLIEST => Ok((-1, log.log_start_offset())),
        // The first batch whose max timestamp reaches the log's maximum holds the first record
        // carrying it; the by-timestamp path below finds that record.
        MAX_TIMESTAMP => match log.max_timestamp() {
            ts if ts >= 0 => lookup(log, ts),
            _ => Ok((-1, -1)),
        },
        ts if ts >= 0 => {
            let Some(batch) = log.find_batch_by_timestamp(ts)? else { return Ok((-1, -1)) };
            let Some(slice) =
                log.read(batch.base_offset.max(log.log_start_offset()), batch.size as usize, i64::MAX, true)?
            else {
                return Ok((-1, -1));
            };
            let mut bytes = Bytes::from(slice.to_vec().map_err(|e| LogError::io("segment", e))?);
            let set = RecordBatchDecoder::decode(&mut bytes)
                .map_err(|e| LogError::CorruptRecord(format!("batch at {}: {e}", batch.base_offset)))?;
            let hit = set
                .records
                .iter()
                .find(|r| r.offset >= log.log_start_offset() && r.timestamp >= ts)
                .map(|r| (r.timestamp, r.offset));
            // The batch's max timestamp is >= ts, so a record matches unless compaction
            // removed it; then the next batch is the answer.
            Ok(hit.unwrap_or((batch.max_timestamp, batch.last_offset + 1)))
        }
        _ => Err(LogError::InvalidConfig {
            key: "timestamp".into(),
            value: timestamp.to_string(),
            reason: "only -1 (latest), -2 (earliest), -3 (max timestamp) and timestamps >= 0 are served".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOT_AVAILABLE: i16 = 78;

    /// A log whose records 0..10 have timestamps 1000 + offset.
    fn lookup_in_ten(timestamp: i64) -> Result<(i64, i64), LogError> {
        Ok(match timestamp {
            EARLIEST => (-1, 0),
            LATEST => (-1, 10),
            MAX_TIMESTAMP => (1009, 9),
            ts if ts <= 1009 => (ts.max(1000), ts.max(1000) - 1000),
            _ => (-1, -1),
        })
    }

    #[test]
    fn a_client_is_answered_below_the_high_watermark() {
        let view = ClientView { high_watermark: 6, hw_behind_epoch_start: false };
        assert_eq!(view.answer(LATEST, lookup_in_ten), Ok((-1, 6)));
        assert_eq!(view.answer(EARLIEST, lookup_in_ten), Ok((-1, 0)));
        assert_eq!(view.answer(1005, lookup_in_ten), Ok((1005, 5)));
        // Records at or past the high watermark are not found yet.
        assert_eq!(view.answer(1006, lookup_in_ten), Ok((-1, -1)));
        assert_eq!(view.answer(MAX_TIMESTAMP, lookup_in_ten), Ok((-1, -1)));
        let caught_up = ClientView { high_watermark: 10, hw_behind_epoch_start: false };
        assert_eq!(caught_up.answer(MAX_TIMESTAMP, lookup_in_ten), Ok((1009, 9)));
    }

    #[test]
    fn a_new_leader_behind_its_epoch_start_does_not_name_the_latest_offset() {
        let view = ClientView { high_watermark: 6, hw_behind_epoch_start: true };
        assert_eq!(view.answer(LATEST, lookup_in_ten), Err(NOT_AVAILABLE));
        assert_eq!(view.answer(1007, lookup_in_ten), Err(NOT_AVAILABLE));
        // What is below the high watermark is known, and so is the log start.
        assert_eq!(view.answer(1002, lookup_in_ten), Ok((1002, 2)));
        assert_eq!(view.answer(EARLIEST, lookup_in_ten), Ok((-1, 0)));
    }
}
