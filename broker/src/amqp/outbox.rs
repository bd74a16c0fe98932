//! A connection's outbound bytes. Frames are encoded straight into one shared buffer (by
//! the connection's own task and, under the core lock, by whoever delivers or confirms to
//! it), and leave in as few writes as possible:
//!
//! - A connection task handling the frames of one read marks the outboxes it writes to and,
//!   once every frame read so far is handled ([`flush_deferred`], before the next read),
//!   writes each of them to its socket itself with one non-blocking write: its own replies
//!   and confirms, and the deliveries it caused to consumers of other connections. No task
//!   switch per frame, one write per connection per read.
//! - Whatever does not go out that way (a full socket buffer, frames from the flusher
//!   thread, the tick or the admin API) is written by the connection's writer task, which
//!   takes everything buffered at once.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use amq_protocol::frame::AMQPFrame;
use bytes::{Buf, BytesMut};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;

use super::frames;

/// Buffers kept between writes are trimmed back to this when a large message grew them.
const KEEP_CAPACITY: usize = 256 * 1024;

tokio::task_local! {
    /// Outboxes written by the current connection task since its last read.
    static DEFERRED: RefCell<Vec<Arc<Outbox>>>;
}

#[derive(Debug, Default)]
struct State {
    buf: BytesMut,
    /// The writer task is writing bytes it took: nobody else may write to the socket.
    writing: bool,
    /// Listed in a connection task's deferred outboxes.
    deferred: bool,
    /// No more frames: the writer drains what is buffered and stops; later frames are dropped.
    closed: bool,
}

#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    wake: Notify,
    socket: Option<OwnedWriteHalf>,
}

/// Run `f` (a connection task) with deferred outbox writes; see the module doc.
pub async fn scope<F: std::future::Future>(f: F) -> F::Output {
    DEFERRED.scope(RefCell::new(Vec::new()), f).await
}

/// Write the outboxes the current task wrote to since its last call (no-op outside
/// [`scope`]). Called before every read and before any other wait.
pub fn flush_deferred() {
    let list = DEFERRED.try_with(|d| std::mem::take(&mut *d.borrow_mut())).unwrap_or_default();
    for o in list {
        o.flush_now();
    }
}

impl Outbox {
    /// An outbox writing to `socket` (None: bytes only accumulate, for tests).
    pub fn new(socket: Option<OwnedWriteHalf>) -> Arc<Self> {
        Arc::new(Self { state: Mutex::new(State::default()), wake: Notify::new(), socket })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Append bytes produced by `f` (encoded frames).
    pub fn with(self: &Arc<Self>, f: impl FnOnce(&mut BytesMut)) {
        let mut st = self.lock();
        if st.closed {
            return;
        }
        f(&mut st.buf);
        if st.deferred || st.buf.is_empty() {
            return;
        }
        // Inside a connection task: written at the end of its read. Elsewhere: by the writer.
        let listed = DEFERRED.try_with(|d| d.borrow_mut().push(self.clone())).is_ok();
        st.deferred = listed;
        drop(st);
        if !listed {
            self.wake.notify_one();
        }
    }

    /// Append already encoded bytes.
    pub fn send(self: &Arc<Self>, bytes: &[u8]) {
        self.with(|b| b.extend_from_slice(bytes));
    }

    /// Append one encoded frame.
    pub fn frame(self: &Arc<Self>, frame: &AMQPFrame) {
        self.with(|b| frames::encode_into(b, frame));
    }

    /// Write what is buffered now, without waiting: what the socket does not take (or what
    /// waits behind the writer task) is left to the writer task.
    fn flush_now(&self) {
        let mut st = self.lock();
        st.deferred = false;
        if st.buf.is_empty() {
            return;
        }
        if !st.writing {
            if let Some(socket) = &self.socket {
                // Non-blocking, so holding the lock is brief; it keeps writes in order.
                if let Ok(n) = socket.try_write(&st.buf) {
                    st.buf.advance(n);
                }
            }
        }
        let rest = !st.buf.is_empty();
        drop(st);
        if rest {
            self.wake.notify_one();
        }
    }

    /// Stop taking frames; the writer ends after writing what is buffered.
    pub fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
    }

    /// Swap the buffered bytes into `spare` (empty on entry) and mark the writer busy.
    /// Returns (took something, closed).
    fn take(&self, spare: &mut BytesMut) -> (bool, bool) {
        let mut st = self.lock();
        if st.buf.is_empty() {
            return (false, st.closed);
        }
        std::mem::swap(&mut st.buf, spare);
        st.writing = true;
        (true, st.closed)
    }

    async fn write_all(socket: &OwnedWriteHalf, mut bytes: &[u8]) -> std::io::Result<()> {
        while !bytes.is_empty() {
            socket.writable().await?;
            match socket.try_write(bytes) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The writer task: write what is buffered, one write per batch; send a heartbeat when
    /// nothing was written for half the negotiated interval.
    pub async fn write_loop(self: Arc<Self>, hb: tokio::sync::watch::Receiver<u16>) {
        let Some(socket) = &self.socket else { return };
        let mut spare = BytesMut::with_capacity(64 * 1024);
        loop {
            let (got, closed) = self.take(&mut spare);
            if got {
                let written = Self::write_all(socket, &spare).await;
                self.lock().writing = false;
                if written.is_err() {
                    self.close();
                    return;
                }
                spare.clear();
                if spare.capacity() > KEEP_CAPACITY {
                    spare = BytesMut::with_capacity(64 * 1024);
                }
                continue;
            }
            if closed {
                return;
            }
            let interval = *hb.borrow();
            if interval == 0 {
                self.wake.notified().await;
            } else if tokio::time::timeout(Duration::from_millis(interval as u64 * 500), self.wake.notified())
                .await
                .is_err()
            {
                let mut st = self.lock();
                if st.buf.is_empty() {
                    st.buf.extend_from_slice(&frames::heartbeat_frame());
                }
            }
        }
    }
}
