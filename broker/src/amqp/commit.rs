//! Group commit of persistent messages: the bookkeeping of confirms waiting for an fsync,
//! and the flusher thread that does the fsyncs outside the core's lock.
//!
//! A persistent message routed to a durable queue is appended to the queue's store (page
//! cache) under the core lock, and the segment file it went to is noted here. Its confirm
//! waits for the next fsync round to *start* after the append. The flusher takes the noted
//! files, fsyncs them without the lock (publishes and deliveries go on meanwhile, and pile up
//! for the next round), then sends every confirm the round covers, merged per channel into
//! one `basic.ack multiple=true` where it can. At a low rate a confirm costs one fsync; at a
//! high rate one fsync covers everything published while the previous one ran.

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::broker::ConnId;

/// One publisher confirm not sent yet.
#[derive(Debug, Clone, Copy)]
struct Pending {
    conn: ConnId,
    channel: u16,
    seq: u64,
    ack: bool,
    /// The fsync round that must complete first.
    needs: u64,
    /// Whether the message itself was written (a failed fsync turns its ack into a nack);
    /// otherwise it only waits behind earlier confirms of its channel.
    written: bool,
}

/// A confirm to send: `basic.ack` or `basic.nack` up to `seq`, `multiple` when it covers
/// earlier ones of the channel too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Confirm {
    pub conn: ConnId,
    pub channel: u16,
    pub seq: u64,
    pub multiple: bool,
    pub ack: bool,
}

#[derive(Debug, Default)]
pub struct GroupCommit {
    /// Segment files written since the last round started.
    files: Vec<Arc<File>>,
    /// Rounds started; a write now is covered by round `started + 1`.
    started: u64,
    pending: Vec<Pending>,
    /// Per channel with pending confirms: how many, and the round the last one needs
    /// (a channel's confirms leave in order, so a later one waits for it).
    channels: HashMap<(ConnId, u16), (usize, u64)>,
}

impl GroupCommit {
    /// A persistent message was appended to `file` (not fsynced).
    pub fn written(&mut self, file: Arc<File>) {
        if !self.files.iter().any(|f| Arc::ptr_eq(f, &file)) {
            self.files.push(file);
        }
    }

    /// The round that covers the writes made so far.
    pub fn next_round(&self) -> u64 {
        self.started + 1
    }

    /// Decide on the confirm of publish `seq`: `Some` to send now, or None when it waits
    /// (because its message must be fsynced first, `written`, or an earlier confirm of its
    /// channel waits).
    pub fn confirm(&mut self, conn: ConnId, channel: u16, seq: u64, ack: bool, written: bool) -> Option<Confirm> {
        let behind = self.channels.get(&(conn, channel)).map(|(_, needs)| *needs);
        let needs = match (written, behind) {
            (true, _) => self.next_round(),
            (false, Some(n)) => n,
            (false, None) => return Some(Confirm { conn, channel, seq, multiple: false, ack }),
        };
        self.pending.push(Pending { conn, channel, seq, ack, needs, written });
        let e = self.channels.entry((conn, channel)).or_insert((0, 0));
        e.0 += 1;
        e.1 = e.1.max(needs);
        None
    }

    /// Whether the flusher has anything to do.
    pub fn has_work(&self) -> bool {
        !self.files.is_empty() || !self.pending.is_empty()
    }

    /// Start a round: its number and the files it must fsync.
    pub fn start_round(&mut self) -> (u64, Vec<Arc<File>>) {
        self.started += 1;
        (self.started, std::mem::take(&mut self.files))
    }

    /// Round `round` is done (`ok`: every fsync succeeded): the confirms it releases, in
    /// order per channel, consecutive ones of the same kind merged.
    pub fn finish_round(&mut self, round: u64, ok: bool) -> Vec<Confirm> {
        let mut out: Vec<Confirm> = Vec::new();
        // Index in `out` of each channel's last confirm, to merge runs.
        let mut last: HashMap<(ConnId, u16), usize> = HashMap::new();
        let channels = &mut self.channels;
        self.pending.retain(|p| {
            if p.needs > round {
                return true;
            }
            let ack = p.ack && (ok || !p.written);
            let key = (p.conn, p.channel);
            match last.get(&key).map(|&i| &mut out[i]) {
                Some(prev) if prev.ack == ack => {
                    prev.seq = p.seq;
                    prev.multiple = true;
                }
                _ => {
                    last.insert(key, out.len());
                    out.push(Confirm { conn: p.conn, channel: p.channel, seq: p.seq, multiple: false, ack });
                }
            }
            if let Some(e) = channels.get_mut(&key) {
                e.0 -= 1;
                if e.0 == 0 {
                    channels.remove(&key);
                }
            }
            false
        });
        out
    }

    /// The channel closed: its confirms are not sent (its publisher saw the close).
    pub fn forget_channel(&mut self, conn: ConnId, channel: u16) {
        if self.channels.remove(&(conn, channel)).is_some() {
            self.pending.retain(|p| (p.conn, p.channel) != (conn, channel));
        }
    }
}

/// Wakes the flusher thread; requests while it works make it go round again.
#[derive(Debug, Default)]
pub struct FlushSignal {
    requested: AtomicBool,
    lock: Mutex<()>,
    cv: Condvar,
}

impl FlushSignal {
    /// Ask for a round (cheap when one is already asked for).
    pub fn request(&self) {
        if !self.requested.swap(true, Ordering::AcqRel) {
            let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            self.cv.notify_one();
        }
    }

    /// Whether a round is asked for (without waiting or clearing it).
    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }

    /// Wait until a round is asked for (true) or `timeout` passes (false).
    pub fn wait(&self, timeout: Duration) -> bool {
        let guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let (_guard, _) = self
            .cv
            .wait_timeout_while(guard, timeout, |_| !self.requested.load(Ordering::Acquire))
            .unwrap_or_else(|p| p.into_inner());
        self.requested.swap(false, Ordering::AcqRel)
    }
}

/// fdatasync every file; false if any failed.
pub fn sync_files(files: &[Arc<File>]) -> bool {
    let mut ok = true;
    for f in files {
        if let Err(e) = f.sync_data() {
            tracing::error!(error = %e, "fsync of a queue store segment failed; its messages are nacked");
            ok = false;
        }
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> Arc<File> {
        Arc::new(tempfile::tempfile().unwrap())
    }

    #[test]
    fn confirms_wait_for_their_round_and_merge_per_channel() {
        let mut g = GroupCommit::default();
        // Nothing written and nothing pending: confirmed at once.
        assert_eq!(
            g.confirm(1, 1, 1, true, false),
            Some(Confirm { conn: 1, channel: 1, seq: 1, multiple: false, ack: true })
        );
        g.written(file());
        assert_eq!(g.confirm(1, 1, 2, true, true), None);
        assert_eq!(g.confirm(1, 1, 3, true, true), None);
        // A transient message behind them waits too; a nack breaks the run.
        assert_eq!(g.confirm(1, 1, 4, false, false), None);
        assert_eq!(g.confirm(1, 1, 5, true, false), None);
        let (round, files) = g.start_round();
        assert_eq!(files.len(), 1);
        // Written during the round: needs the next one.
        g.written(file());
        assert_eq!(g.confirm(2, 1, 1, true, true), None);
        assert_eq!(
            g.finish_round(round, true),
            vec![
                Confirm { conn: 1, channel: 1, seq: 3, multiple: true, ack: true },
                Confirm { conn: 1, channel: 1, seq: 4, multiple: false, ack: false },
                Confirm { conn: 1, channel: 1, seq: 5, multiple: false, ack: true },
            ]
        );
        // Channel 1 of conn 1 has nothing pending any more.
        assert!(g.confirm(1, 1, 6, true, false).is_some());
        let (round, _) = g.start_round();
        assert_eq!(
            g.finish_round(round, false),
            vec![Confirm { conn: 2, channel: 1, seq: 1, multiple: false, ack: false }]
        );
        assert!(!g.has_work());
    }

    #[test]
    fn a_closed_channel_gets_no_confirms() {
        let mut g = GroupCommit::default();
        g.written(file());
        assert_eq!(g.confirm(1, 1, 1, true, true), None);
        g.forget_channel(1, 1);
        let (round, _) = g.start_round();
        assert!(g.finish_round(round, true).is_empty());
    }
}
