//! ListOffsets (key 2), versions 1–7: earliest (-2), latest (-1), by timestamp (the first
//! record whose timestamp is at or after it, found through the time index and then inside
//! the batch) and max timestamp (-3, v7+: the first record carrying the log's largest
//! timestamp). v8+ add the tiered-storage specs (-4, -5); Weir has no tiered storage and
//! does not advertise them.

use bytes::Bytes;
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::records::RecordBatchDecoder;

use super::led_partition;
use crate::kafka::context::KafkaContext;
use crate::kafka::errors::log_error_code;
use crate::log::{Log, LogError};

pub const LATEST: i64 = -1;
pub const EARLIEST: i64 = -2;
pub const MAX_TIMESTAMP: i64 = -3;

pub async fn handle(ctx: &KafkaContext, req: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let image = ctx.cluster.image();
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
                    let found = tokio::task::block_in_place(|| lookup(&log.lock().expect("log lock"), p.timestamp));
                    match found {
                        Ok((ts, off)) => {
                            out.timestamp = ts;
                            out.offset = off;
                            0
                        }
                        Err(e) => log_error_code(&e),
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
