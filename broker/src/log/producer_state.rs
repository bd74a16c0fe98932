//! Idempotent-producer state of one partition log: for each producer id, its epoch and the
//! sequence ranges of its last five batches, so a retried batch is recognised as a
//! duplicate and a gap in sequences is refused. Rebuilt from the batch headers when the log
//! is opened: from the newest snapshot (`producer_snapshot.rs`) and the batches after it, as
//! Kafka's ProducerStateManager does. A producer silent for `producer.id.expiration.ms` is
//! forgotten (KIP-854), so short-lived producers do not pile up in memory, and so is one whose
//! batches are all below the log start.

use std::collections::{HashMap, VecDeque};

use super::batch::BatchView;
use super::error::{LogError, Result};

/// How many batches per producer are remembered (Kafka's max.in.flight limit for idempotence).
pub const BATCHES_PER_PRODUCER: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchRecord {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Clone, Default)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchRecord>,
    /// The max timestamp of its last batch, from which its expiration counts (as Kafka's).
    last_timestamp: i64,
}

/// What checking a batch found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Append it.
    Accept,
    /// Already in the log at these offsets: answer as if appended, write nothing.
    Duplicate(BatchRecord),
}

/// One producer as DescribeProducers shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveProducer {
    pub producer_id: i64,
    pub epoch: i16,
    /// The last sequence of its last batch.
    pub last_sequence: i32,
    /// The max timestamp of its last batch.
    pub last_timestamp: i64,
}

#[derive(Debug, Default)]
pub struct ProducerState {
    producers: HashMap<i64, ProducerEntry>,
}

/// Format version of `encode_snapshot`.
const SNAPSHOT_VERSION: u16 = 1;

/// Big-endian fields off the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
}

fn last_seq(v: &BatchView<'_>) -> i32 {
    // Sequences wrap at i32::MAX (KIP-98).
    ((v.base_sequence() as i64 + v.last_offset_delta() as i64) % (i32::MAX as i64 + 1)) as i32
}

impl ProducerState {
    /// Idempotent batches carry a producer id and a sequence; others are not tracked.
    pub fn is_idempotent(v: &BatchView<'_>) -> bool {
        v.producer_id() >= 0 && v.base_sequence() >= 0
    }

    pub fn check(&self, v: &BatchView<'_>) -> Result<SequenceCheck> {
        let (pid, epoch, first) = (v.producer_id(), v.producer_epoch(), v.base_sequence());
        let last = last_seq(v);
        let Some(entry) = self.producers.get(&pid) else {
            // Kafka's rule: a producer the log knows nothing of (its batches deleted by
            // retention or DeleteRecords, or its state expired) goes on at any sequence.
            return Ok(SequenceCheck::Accept);
        };
        if epoch < entry.epoch {
            return Err(LogError::ProducerFenced { producer_id: pid, epoch, current: entry.epoch });
        }
        if epoch > entry.epoch {
            // A bumped epoch starts its sequences again.
            return if first == 0 {
                Ok(SequenceCheck::Accept)
            } else {
                Err(LogError::OutOfOrderSequence { producer_id: pid, expected: 0, got: first })
            };
        }
        if let Some(b) = entry.batches.iter().find(|b| b.first_seq == first && b.last_seq == last) {
            return Ok(SequenceCheck::Duplicate(*b));
        }
        let expected =
            entry.batches.back().map(|b| if b.last_seq == i32::MAX { 0 } else { b.last_seq + 1 }).unwrap_or(0);
        if first != expected {
            return Err(LogError::OutOfOrderSequence { producer_id: pid, expected, got: first });
        }
        Ok(SequenceCheck::Accept)
    }

    /// Record a batch written at its offsets (also used when rebuilding from the log).
    pub fn record(&mut self, v: &BatchView<'_>) {
        let entry = self.producers.entry(v.producer_id()).or_default();
        if v.producer_epoch() != entry.epoch {
            entry.epoch = v.producer_epoch();
            entry.batches.clear();
        }
        entry.last_timestamp = v.max_timestamp();
        entry.batches.push_back(BatchRecord {
            first_seq: v.base_sequence(),
            last_seq: last_seq(v),
            first_offset: v.base_offset(),
            last_offset: v.last_offset(),
        });
        while entry.batches.len() > BATCHES_PER_PRODUCER {
            entry.batches.pop_front();
        }
    }

    /// Forget the producers whose last batch is `expiration_ms` or more older than `now_ms`
    /// (Kafka's `removeExpiredProducers`); returns how many.
    pub fn remove_expired(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, e| now_ms - e.last_timestamp < expiration_ms);
        before - self.producers.len()
    }

    /// Every producer held, by producer id.
    pub fn active(&self) -> Vec<ActiveProducer> {
        let mut out: Vec<ActiveProducer> = self
            .producers
            .iter()
            .map(|(&producer_id, e)| ActiveProducer {
                producer_id,
                epoch: e.epoch,
                last_sequence: e.batches.back().map_or(-1, |b| b.last_seq),
                last_timestamp: e.last_timestamp,
            })
            .collect();
        out.sort_unstable_by_key(|p| p.producer_id);
        out
    }

    pub fn clear(&mut self) {
        self.producers.clear();
    }

    /// Forget the producers whose last batch ends below `log_start_offset` (retention or
    /// DeleteRecords removed it), as Kafka's `truncateHead`; returns how many.
    pub fn remove_below(&mut self, log_start_offset: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, e| e.batches.back().is_some_and(|b| b.last_offset >= log_start_offset));
        before - self.producers.len()
    }

    /// The state as bytes for a snapshot file: version (u16), CRC-32C (u32) of what follows,
    /// producer count (u32), then per producer its id (i64), epoch (i16), last timestamp (i64),
    /// batch count (u8) and per batch first and last sequence (i32) and offset (i64); all
    /// big-endian. Producers in id order, so equal states give equal files.
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let mut ids: Vec<i64> = self.producers.keys().copied().collect();
        ids.sort_unstable();
        let mut out = Vec::with_capacity(10 + ids.len() * (19 + BATCHES_PER_PRODUCER * 24));
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&(ids.len() as u32).to_be_bytes());
        for id in ids {
            let e = &self.producers[&id];
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&e.epoch.to_be_bytes());
            out.extend_from_slice(&e.last_timestamp.to_be_bytes());
            out.push(e.batches.len() as u8);
            for b in &e.batches {
                out.extend_from_slice(&b.first_seq.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.first_offset.to_be_bytes());
                out.extend_from_slice(&b.last_offset.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&out[6..]);
        out[2..6].copy_from_slice(&crc.to_be_bytes());
        out
    }

    /// Read `encode_snapshot`'s bytes; `None` for anything else (another version, a bad CRC,
    /// a cut or padded file).
    pub fn decode_snapshot(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader(bytes);
        if u16::from_be_bytes(r.take()?) != SNAPSHOT_VERSION {
            return None;
        }
        let crc = u32::from_be_bytes(r.take()?);
        if crc32c::crc32c(r.0) != crc {
            return None;
        }
        let count = u32::from_be_bytes(r.take()?);
        let mut producers = HashMap::with_capacity(count.min(1 << 20) as usize);
        for _ in 0..count {
            let id = i64::from_be_bytes(r.take()?);
            let epoch = i16::from_be_bytes(r.take()?);
            let last_timestamp = i64::from_be_bytes(r.take()?);
            let [n] = r.take::<1>()?;
            if n as usize > BATCHES_PER_PRODUCER {
                return None;
            }
            let mut batches = VecDeque::with_capacity(n as usize);
            for _ in 0..n {
                batches.push_back(BatchRecord {
                    first_seq: i32::from_be_bytes(r.take()?),
                    last_seq: i32::from_be_bytes(r.take()?),
                    first_offset: i64::from_be_bytes(r.take()?),
                    last_offset: i64::from_be_bytes(r.take()?),
                });
            }
            producers.insert(id, ProducerEntry { epoch, batches, last_timestamp });
        }
        r.0.is_empty().then_some(Self { producers })
    }

    pub fn producer_count(&self) -> usize {
        self.producers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::{build_batch, BatchMut, BASE_SEQUENCE, PRODUCER_EPOCH, PRODUCER_ID};

    fn batch(pid: i64, epoch: i16, seq: i32, records: usize, offset: i64) -> Vec<u8> {
        let recs: Vec<_> = (0..records).map(|_| (None, Some(&b"v"[..]))).collect();
        let mut b = build_batch(&recs, 0);
        b[PRODUCER_ID..PRODUCER_ID + 8].copy_from_slice(&pid.to_be_bytes());
        b[PRODUCER_EPOCH..PRODUCER_EPOCH + 2].copy_from_slice(&epoch.to_be_bytes());
        b[BASE_SEQUENCE..BASE_SEQUENCE + 4].copy_from_slice(&seq.to_be_bytes());
        let mut m = BatchMut::new(&mut b);
        m.set_base_offset(offset);
        m.update_crc();
        b
    }

    #[test]
    fn sequences_must_follow_and_retries_are_duplicates() {
        let mut s = ProducerState::default();
        let b0 = batch(7, 0, 0, 3, 0);
        let v0 = BatchView::parse(&b0).unwrap();
        assert_eq!(s.check(&v0).unwrap(), SequenceCheck::Accept);
        s.record(&v0);
        // The same batch again is a duplicate answered with its original offsets.
        assert!(
            matches!(s.check(&v0).unwrap(), SequenceCheck::Duplicate(b) if b.first_offset == 0 && b.last_offset == 2)
        );
        // A gap is refused.
        let gap = batch(7, 0, 5, 1, 3);
        assert!(matches!(
            s.check(&BatchView::parse(&gap).unwrap()),
            Err(LogError::OutOfOrderSequence { expected: 3, .. })
        ));
        let next = batch(7, 0, 3, 2, 3);
        assert_eq!(s.check(&BatchView::parse(&next).unwrap()).unwrap(), SequenceCheck::Accept);
        // An older epoch is fenced; a new epoch starts at 0.
        let old = batch(7, -1, 3, 1, 5);
        assert!(matches!(s.check(&BatchView::parse(&old).unwrap()), Err(LogError::ProducerFenced { .. })));
        let bumped = batch(7, 1, 0, 1, 5);
        assert_eq!(s.check(&BatchView::parse(&bumped).unwrap()).unwrap(), SequenceCheck::Accept);
        // An unknown producer may start anywhere: its earlier batches may be gone.
        let stranger = batch(9, 0, 4, 1, 6);
        assert_eq!(s.check(&BatchView::parse(&stranger).unwrap()).unwrap(), SequenceCheck::Accept);
    }

    #[test]
    fn producers_silent_for_the_expiration_are_forgotten_and_may_go_on() {
        let mut s = ProducerState::default();
        // `build_batch` stamps every record with timestamp 0.
        for pid in [1, 2] {
            s.record(&BatchView::parse(&batch(pid, 0, 0, 2, 0)).unwrap());
        }
        // Their last batches' max timestamp is 1 (two records, timestamps 0 and 1).
        assert_eq!(s.remove_expired(1000, 1000), 0);
        assert_eq!(s.producer_count(), 2);
        let p1 = ActiveProducer { producer_id: 1, epoch: 0, last_sequence: 1, last_timestamp: 1 };
        assert_eq!(s.active(), vec![p1, ActiveProducer { producer_id: 2, ..p1 }]);
        assert_eq!(s.remove_expired(1001, 1000), 2);
        assert_eq!(s.producer_count(), 0);
        // Forgotten, producer 1 goes on where it was.
        let next = batch(1, 0, 2, 1, 2);
        assert_eq!(s.check(&BatchView::parse(&next).unwrap()).unwrap(), SequenceCheck::Accept);
    }

    #[test]
    fn snapshots_round_trip_and_damaged_ones_are_refused() {
        let mut s = ProducerState::default();
        for (i, pid) in [3i64, 1, 2].into_iter().enumerate() {
            for k in 0..7 {
                s.record(&BatchView::parse(&batch(pid, 1, k * 2, 2, (i as i64) * 100 + k as i64 * 2)).unwrap());
            }
        }
        let bytes = s.encode_snapshot();
        let back = ProducerState::decode_snapshot(&bytes).expect("decodes");
        assert_eq!(back.encode_snapshot(), bytes);
        assert_eq!(back.active(), s.active());
        // Every remembered batch came back: a retry of the oldest one is still a duplicate.
        let oldest_kept = batch(1, 1, 4, 2, 4);
        assert!(matches!(back.check(&BatchView::parse(&oldest_kept).unwrap()).unwrap(), SequenceCheck::Duplicate(_)));
        // An empty state is a valid snapshot too.
        assert_eq!(
            ProducerState::decode_snapshot(&ProducerState::default().encode_snapshot()).unwrap().producer_count(),
            0
        );
        // One flipped bit, a cut, or extra bytes: refused.
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(ProducerState::decode_snapshot(&bad).is_none(), "flipped byte {i} accepted");
        }
        assert!(ProducerState::decode_snapshot(&bytes[..bytes.len() - 1]).is_none());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(ProducerState::decode_snapshot(&longer).is_none());
    }

    #[test]
    fn producers_wholly_below_the_log_start_are_forgotten() {
        let mut s = ProducerState::default();
        s.record(&BatchView::parse(&batch(1, 0, 0, 2, 0)).unwrap()); // offsets 0-1
        s.record(&BatchView::parse(&batch(2, 0, 0, 2, 2)).unwrap()); // offsets 2-3
        assert_eq!(s.remove_below(3), 1);
        assert_eq!(s.active().iter().map(|p| p.producer_id).collect::<Vec<_>>(), vec![2]);
        assert_eq!(s.remove_below(3), 0);
    }
}
