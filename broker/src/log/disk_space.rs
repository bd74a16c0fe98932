//! The size and free space of the file system holding a data directory (statvfs): the AMQP
//! disk alarm and DescribeLogDirs read it.

use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpace {
    pub total_bytes: u64,
    /// Available to unprivileged users (root's reserve left out), as `df` reports it.
    pub usable_bytes: u64,
}

/// `None` when the path cannot be asked about (it does not exist, or statvfs failed).
pub fn of(path: &Path) -> Option<DiskSpace> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| DiskSpace {
        total_bytes: st.f_blocks as u64 * st.f_frsize as u64,
        usable_bytes: st.f_bavail as u64 * st.f_frsize as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_file_system_has_a_size_and_no_more_usable_than_that() {
        let root = of(Path::new("/")).expect("statvfs of /");
        assert!(root.total_bytes > 0 && root.usable_bytes <= root.total_bytes, "{root:?}");
        assert_eq!(of(Path::new("/no/such/dir/here")), None);
    }
}
