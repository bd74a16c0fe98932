//! Fetched records sent from the page cache with `sendfile(2)`.
//!
//! A fetch response is encoded by the `kafka-protocol` crate, which needs every partition's
//! records as `Bytes` of their real length to write the length prefix. Reading them into
//! memory first costs a copy into user space and a second one into the socket. Instead the
//! response body carries a *placeholder* of the right length, a slice of one read-only
//! anonymous mapping made once (address space only: its pages are never touched), and the encoder
//! (`codec::GatherBuf`) puts the segment file range in its place in the frame. Placeholders
//! of one response are disjoint slices, so each is found by address and length; a response
//! whose records do not fit in the region reads the rest into memory as before.
//!
//! The socket side (`send_file`) waits for writability and lets the kernel move the range
//! from the page cache; a segment truncated meanwhile (a follower truncating) makes the
//! frame impossible to finish, and the connection is closed (the client fetches again).

use std::os::fd::AsRawFd;
use std::sync::OnceLock;

use bytes::Bytes;
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::log::LogSlice;

/// Records ranges at least this long are sent with sendfile; shorter ones are read into the
/// response (one syscall and a small copy beat a separate write for a few KiB).
pub const SENDFILE_MIN_BYTES: usize = 32 * 1024;

/// Placeholder address space per response: more than a fetch of librdkafka's or Java's
/// default `fetch.max.bytes` (50 MiB) plus one oversized first batch.
const REGION_BYTES: usize = 128 << 20;

/// The placeholder region, mapped on first use; `None` if the mapping failed (then every
/// fetch reads its records into memory).
fn region() -> Option<&'static [u8]> {
    static REGION: OnceLock<Option<memmap2::Mmap>> = OnceLock::new();
    REGION
        .get_or_init(|| {
            memmap2::MmapOptions::new()
                .len(REGION_BYTES)
                .map_anon()
                .and_then(|m| m.make_read_only())
                .map_err(|e| tracing::warn!(error = %e, "no placeholder region: fetches will not use sendfile"))
                .ok()
        })
        .as_deref()
}

/// Hands out disjoint placeholders for one response.
#[derive(Debug, Default)]
pub struct Placeholders {
    used: usize,
}

impl Placeholders {
    /// A placeholder of `len` bytes, or `None` when the region is used up.
    pub fn take(&mut self, len: usize) -> Option<Bytes> {
        let region = region()?;
        let end = self.used.checked_add(len)?;
        let b = Bytes::from_static(region.get(self.used..end)?);
        self.used = end;
        Some(b)
    }
}

/// Send `slice` of its segment file to `stream` with sendfile, from the page cache.
pub async fn send_file(stream: &TcpStream, slice: &LogSlice) -> std::io::Result<()> {
    let end = slice.position + slice.len as u64;
    let mut offset = slice.position as libc::off_t;
    while (offset as u64) < end {
        stream.writable().await?;
        let remaining = (end - offset as u64) as usize;
        let sent = stream.try_io(Interest::WRITABLE, || {
            // SAFETY: both descriptors are open for the call (`stream`, and `slice.file` held
            // by an Arc); `offset` is a valid pointer to this loop's file offset, which
            // sendfile advances (the file's own position is left alone, so concurrent
            // fetches of the same segment do not interfere).
            let n = unsafe { libc::sendfile(stream.as_raw_fd(), slice.file.as_raw_fd(), &mut offset, remaining) };
            if n < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match sent {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "segment ended before the end of the fetched range (truncated meanwhile)",
                ))
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
