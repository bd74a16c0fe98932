//! The receive low-water mark of a socket (SO_RCVLOWAT): how many bytes the kernel gathers
//! before it wakes a reader.
//!
//! A large frame (a produce request, a fetch response to a follower) crosses loopback in
//! segments of up to 64 KiB, and a reader that takes each as it comes is woken several times
//! per frame. On the VMs we measure on, a woken thread waited 0.3-0.4 ms on average before it
//! ran, even with a CPU idle, and the replication benchmark spent 20% more broker CPU per GB
//! reading that way (docs/benchmarks.md, results of 2026-12-04 23:04). So while a frame's body
//! is read the mark is what is still to come of that frame, capped, and it is 1 again before
//! the next frame's size is read. The mark never exceeds the bytes the peer still has to send
//! of a frame it has begun, so a read never waits for bytes that will not come.

use std::os::fd::AsRawFd;

use tokio::net::tcp::OwnedReadHalf;

/// The highest mark set: Linux clamps the mark to half the socket's receive buffer, whose
/// default ceiling (tcp_rmem) is 6 MiB; a larger value would change nothing.
pub const MAX_LOW_WATER: usize = 2 * 1024 * 1024;

/// The mark last set on one socket, so that unchanged values cost no system call.
#[derive(Debug)]
pub struct RecvLowWater {
    current: usize,
}

impl Default for RecvLowWater {
    fn default() -> Self {
        // The kernel's own default.
        Self { current: 1 }
    }
}

impl RecvLowWater {
    /// Wake the reader once `bytes` (at least 1, at most `MAX_LOW_WATER`) can be read.
    pub fn set(&mut self, socket: &OwnedReadHalf, bytes: usize) -> std::io::Result<()> {
        let bytes = bytes.clamp(1, MAX_LOW_WATER);
        if bytes == self.current {
            return Ok(());
        }
        set_socket_low_water(socket, bytes)?;
        self.current = bytes;
        Ok(())
    }

    /// The mark last set (tests check that a frame leaves it at 1).
    #[cfg(test)]
    pub(crate) fn current(&self) -> usize {
        self.current
    }
}

fn set_socket_low_water(socket: &OwnedReadHalf, bytes: usize) -> std::io::Result<()> {
    let value = bytes as libc::c_int;
    let fd = socket.as_ref().as_raw_fd();
    // SAFETY: setsockopt reads size_of::<c_int>() bytes from `value`, which outlives the call;
    // `fd` is the open socket `socket` holds.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
