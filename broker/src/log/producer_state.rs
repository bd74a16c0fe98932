//! Idempotent-producer state of one partition log: for each producer id, its epoch and the
//! sequence ranges of its last five batches, so a retried batch is recognised as a
//! duplicate and a gap in sequences is refused. Rebuilt from the batch headers when the log
//! is opened, as Kafka's ProducerStateManager is (without its snapshots). A producer silent
//! for `producer.id.expiration.ms` is forgotten (KIP-854), so short-lived producers do not
//! pile up in memory.

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
}
