//! `weir-broker`: parse the command line, set up logging, run the broker.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use weir_broker::cli::BrokerArgs;

fn main() -> ExitCode {
    keep_large_buffers_in_the_heap();
    let args = BrokerArgs::parse();

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,openraft=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the tokio runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(weir_broker::server::run(args));
    // Do not wait for blocking tasks that are still running (a log load cut short by a signal).
    runtime.shutdown_timeout(Duration::from_millis(500));
    let code = match result {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("weir-broker failed: {e:#}");
            1
        }
    };
    exit_without_exit_handlers(code)
}

/// End the process without the C and C++ exit handlers. `exit()` destroys RocksDB's static
/// state (its default environment's thread pools and locks) while one of its threads may
/// still run, the metadata store's database not always being dropped by then, and the process
/// then aborted with "pthread lock: Invalid argument": exit code -6 after a clean SIGTERM
/// shutdown, in about one run in 18 of e2e/amqp/test_weir_kill_under_load.py. Nothing is lost
/// by skipping them: the clean shutdown closed and synced the logs, and RocksDB has handed
/// every write to the kernel (its WAL, which it recovers from, as after a SIGKILL).
fn exit_without_exit_handlers(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: _exit only ends the process; every buffer that matters was flushed above.
    unsafe { libc::_exit(code) }
}

/// glibc serves a request buffer of a megabyte or more (a produce request, a fetched range
/// read into memory) with its own mmap, or from a heap it trims back to the kernel once the
/// buffer is freed, so every such request faulted fresh zeroed pages in again: about a quarter
/// of the broker's CPU in an acks=all produce profile (exc_page_fault, clear_page, munmap).
/// Raising both thresholds (which also stops glibc from adjusting them) keeps freed buffers
/// for reuse. The `MALLOC_MMAP_THRESHOLD_` / `MALLOC_TRIM_THRESHOLD_` environment variables,
/// when set, win. No-op on other C libraries.
fn keep_large_buffers_in_the_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // The largest threshold glibc accepts on 64-bit (half its per-thread heap size).
        const MMAP_THRESHOLD: libc::c_int = 32 << 20;
        // Free heap above this goes back to the kernel.
        const TRIM_THRESHOLD: libc::c_int = 256 << 20;
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() && std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_none()
        {
            // SAFETY: mallopt only sets allocator parameters; called before any thread starts.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
                libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
            }
        }
    }
}
