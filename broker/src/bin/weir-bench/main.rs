//! `weir-bench`: benchmarks of the storage core. Not a test: it measures, prints a Markdown
//! table and optionally appends one JSON line of figures to a file.
//!
//! `weir-bench log` compares, in one run and one directory, the machine's plain sequential
//! write with `Log::append` of the same bytes, then reads the log back and times offset and
//! timestamp lookups. `weir-bench open` times opening and truncating a log with and without
//! the producer-state snapshots (`open.rs`). See docs/benchmarks.md for how to read the
//! figures.

mod open;

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::{Args, Parser, Subcommand};

use weir_broker::log::batch::{self, BatchMut, BatchView, BASE_TIMESTAMP, HEADER_SIZE, MAX_TIMESTAMP};
use weir_broker::log::{now_ms, Log, LogConfig, LogMetrics};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

#[derive(Parser)]
#[command(name = "weir-bench", about = "Benchmarks of the Weir storage core")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Plain sequential write vs. Log::append, sequential read, offset and timestamp lookups.
    #[command(args_override_self = true)]
    Log(LogArgs),
    /// Opening and truncating a written log, with and without producer-state snapshots.
    Open(open::OpenArgs),
}

#[derive(Args)]
struct LogArgs {
    /// Directory to work in (plain file and logs are created inside it and removed at the
    /// end). Default: a fresh directory under ./weir-bench-data, removed at the end.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Bytes written by each plain-write and each log-append phase (suffixes K/KiB, M/MiB, G/GiB).
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    bytes: u64,
    /// Rounds of (plain write, log append, reads, lookups, unaligned log append), in that order.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// segment.bytes of the benchmarked log (default 256 MiB instead of Kafka's 1 GiB, so
    /// that a 1 GiB run rolls segments).
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    segment_bytes: u64,
    /// Size of each plain write, and the exact size of a log batch (header included): the
    /// record values are sized so that the batch is exactly this long.
    #[arg(long, default_value = "16KiB", value_parser = parse_size)]
    write_size: u64,
    /// Records per batch (16 records of ~1 KiB in a 16 KiB batch by default).
    #[arg(long, default_value_t = 16)]
    records_per_batch: usize,
    /// Value size of the extra "unaligned" log phase: batches of records with values of
    /// exactly this many bytes, so a batch is not a multiple of the page size (16,589 bytes
    /// with the defaults), as producers' batches are. 0 skips that phase.
    #[arg(long, default_value_t = 1024)]
    unaligned_value_bytes: usize,
    /// Random offset lookups per round.
    #[arg(long, default_value_t = 1_000_000)]
    lookups: usize,
    /// Random timestamp lookups per round.
    #[arg(long, default_value_t = 1_000_000)]
    ts_lookups: usize,
    /// Append one JSON line with every figure to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Skip the discarded warm-up plain write before round 1.
    #[arg(long)]
    no_warmup: bool,
    /// Keep the data files (default: remove them).
    #[arg(long)]
    keep: bool,
}

fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a size"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => KIB,
        "m" | "mib" | "mb" => MIB,
        "g" | "gib" | "gb" => GIB,
        other => return Err(format!("unknown size unit `{other}` (use K, M or G; all binary)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("`{s}` is too large"))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Log(args) => bench_log(args),
        Cmd::Open(args) => open::bench_open(args),
    }
}

// ---------------------------------------------------------------------------------------
// Figures

/// Latency percentiles, in nanoseconds.
#[derive(Clone, Copy, Default)]
struct Lat {
    n: usize,
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
    mean: f64,
}

impl Lat {
    fn of(samples: &mut [u64]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1];
        Self {
            n: samples.len(),
            p50: at(0.50),
            p99: at(0.99),
            p999: at(0.999),
            max: *samples.last().expect("non-empty"),
            mean: samples.iter().sum::<u64>() as f64 / samples.len() as f64,
        }
    }
    fn us(ns: u64) -> f64 {
        ns as f64 / 1000.0
    }
    fn json(&self) -> String {
        format!(
            "{{\"n\":{},\"p50_us\":{:.3},\"p99_us\":{:.3},\"p999_us\":{:.3},\"max_us\":{:.3},\"mean_us\":{:.3}}}",
            self.n,
            Self::us(self.p50),
            Self::us(self.p99),
            Self::us(self.p999),
            Self::us(self.max),
            self.mean / 1000.0
        )
    }
    fn cell(&self) -> String {
        format!("{:.1} / {:.1} / {:.0}", Self::us(self.p50), Self::us(self.p99), Self::us(self.max))
    }
    fn cell_fine(&self) -> String {
        format!("{:.2} / {:.2} / {:.1}", Self::us(self.p50), Self::us(self.p99), Self::us(self.max))
    }
}

/// Latencies in whole µs, joined.
fn us_list(ns: &[u64], sep: &str) -> String {
    ns.iter().map(|n| format!("{:.0}", Lat::us(*n))).collect::<Vec<_>>().join(sep)
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

fn ns(d: Duration) -> u64 {
    d.as_nanos() as u64
}

/// A write phase: `bytes` written by `ops` calls taking `write` in all, then one sync taking `sync`.
#[derive(Clone, Copy, Default)]
struct WritePhase {
    bytes: u64,
    ops: u64,
    write: Duration,
    sync: Duration,
    lat: Lat,
}

impl WritePhase {
    fn mbps_with_sync(&self) -> f64 {
        mbps(self.bytes, self.write + self.sync)
    }
    fn mbps_without_sync(&self) -> f64 {
        mbps(self.bytes, self.write)
    }
    fn json(&self) -> String {
        format!(
            "{{\"bytes\":{},\"ops\":{},\"write_s\":{:.6},\"sync_s\":{:.6},\"mbps_with_sync\":{:.1},\"mbps_without_sync\":{:.1},\"op_latency\":{}}}",
            self.bytes,
            self.ops,
            self.write.as_secs_f64(),
            self.sync.as_secs_f64(),
            self.mbps_with_sync(),
            self.mbps_without_sync(),
            self.lat.json()
        )
    }
}

#[derive(Default)]
struct AppendPhase {
    w: WritePhase,
    records: u64,
    batch_bytes: usize,
    segments: usize,
    /// Latency of the appends that rolled a segment.
    roll_lat: Vec<u64>,
    /// Latency of the second append into each segment (its first index entries).
    second_lat: Vec<u64>,
    /// Latency of the appends that did not roll.
    no_roll_lat: Lat,
    /// Sum of per-append latencies (the rest of the loop wall time is the bench's own work).
    in_append: Duration,
    restamps: u64,
}

impl AppendPhase {
    fn json(&self, plain: &WritePhase) -> String {
        format!(
            "{{\"io\":{},\"records\":{},\"batch_bytes\":{},\"segments\":{},\"msgs_per_s_with_sync\":{:.0},\"msgs_per_s_without_sync\":{:.0},\"ratio_with_sync\":{:.4},\"ratio_without_sync\":{:.4},\"roll_latency_us\":[{}],\"second_append_latency_us\":[{}],\"no_roll_latency\":{},\"in_append_s\":{:.6},\"restamps\":{}}}",
            self.w.json(),
            self.records,
            self.batch_bytes,
            self.segments,
            self.msgs_with_sync(),
            self.msgs_without_sync(),
            self.w.mbps_with_sync() / plain.mbps_with_sync(),
            self.w.mbps_without_sync() / plain.mbps_without_sync(),
            us_list(&self.roll_lat, ","),
            us_list(&self.second_lat, ","),
            self.no_roll_lat.json(),
            self.in_append.as_secs_f64(),
            self.restamps
        )
    }
    fn msgs_with_sync(&self) -> f64 {
        self.records as f64 / (self.w.write + self.w.sync).as_secs_f64()
    }
    fn msgs_without_sync(&self) -> f64 {
        self.records as f64 / self.w.write.as_secs_f64()
    }
}

#[derive(Clone, Copy, Default)]
struct ReadPhase {
    log_bytes: u64,
    bytes_read: u64,
    reads: u64,
    batches: u64,
    elapsed: Duration,
}

impl ReadPhase {
    fn mbps(&self) -> f64 {
        mbps(self.log_bytes, self.elapsed)
    }
    fn json(&self) -> String {
        format!(
            "{{\"log_bytes\":{},\"bytes_read\":{},\"reads\":{},\"batches\":{},\"elapsed_s\":{:.6},\"mbps\":{:.1}}}",
            self.log_bytes,
            self.bytes_read,
            self.reads,
            self.batches,
            self.elapsed.as_secs_f64(),
            self.mbps()
        )
    }
}

/// Costs measured outside the log, to explain where append time goes.
#[derive(Clone, Copy, Default)]
struct Breakdown {
    /// `BatchView::parse` (CRC-32C of the batch) per batch, ns.
    crc_per_batch_ns: f64,
    /// Bytes written by each loop below (no sync).
    bytes: u64,
    /// `write` of write_size buffers, as the plain phase: MB/s and latency.
    write: (f64, Lat),
    /// `pwrite` of write_size buffers at increasing positions, as `LogSegment::append`.
    pwrite: (f64, Lat),
    /// Size of the unaligned batch.
    unaligned_size: usize,
    /// `pwrite` of unaligned-batch-sized buffers.
    pwrite_unaligned: (f64, Lat),
}

#[derive(Default)]
struct Round {
    plain: WritePhase,
    append: AppendPhase,
    /// The same with batches that are not a multiple of the page size.
    unaligned: Option<AppendPhase>,
    read_plain: ReadPhase,
    read_crc: ReadPhase,
    read_raw: ReadPhase,
    offset_lookup: Lat,
    ts_lookup: Lat,
    ts_lookup_found: usize,
}

struct Facts {
    nproc: usize,
    kernel: String,
    cpu: String,
    mem_total: String,
    fs_type: String,
    fs_device: String,
    free_bytes_before: u64,
    dirty: String,
    /// /proc/loadavg at the start and at the end: other work on the machine skews everything.
    load_before: String,
    load_after: String,
}

// ---------------------------------------------------------------------------------------
// The benchmark

fn bench_log(args: LogArgs) -> Result<()> {
    ensure!(args.bytes >= args.write_size, "--bytes must be at least one write");
    ensure!(args.rounds >= 1, "--rounds must be at least 1");
    ensure!(args.records_per_batch >= 1, "--records-per-batch must be at least 1");

    let (dir, remove_dir) = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            (d.clone(), false)
        }
        None => {
            let d = PathBuf::from("weir-bench-data").join(format!("log-{}-{}", std::process::id(), now_ms()));
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
            (d, true)
        }
    };
    let dir = dir.canonicalize()?;
    let mut facts = machine_facts(&dir);
    let need = 2 * args.bytes + args.segment_bytes;
    if facts.free_bytes_before > 0 && facts.free_bytes_before < need + GIB {
        bail!(
            "{} has {} free; this run needs about {} (plus 1 GiB slack). Use a smaller --bytes.",
            dir.display(),
            human(facts.free_bytes_before),
            human(need)
        );
    }

    eprintln!(
        "weir-bench log: {} per phase, {} rounds, segment.bytes={}, in {} ({} {}, {} free)",
        human(args.bytes),
        args.rounds,
        human(args.segment_bytes),
        dir.display(),
        facts.fs_type,
        facts.fs_device,
        human(facts.free_bytes_before)
    );

    let load1: f64 = facts.load_before.split_whitespace().next().and_then(|l| l.parse().ok()).unwrap_or(0.0);
    if load1 > 0.5 * facts.nproc as f64 {
        eprintln!(
            "warning: load average {} on {} CPUs: other work is running and will skew the figures",
            facts.load_before, facts.nproc
        );
    }

    let mut rounds = Vec::new();
    let mut warmup = None;
    let mut breakdown = Breakdown::default();
    let result = (|| -> Result<()> {
        if !args.no_warmup {
            // The first phase to fill the page cache with fresh memory is slowed by the VM
            // (guest pages the hypervisor has reclaimed fault back in): a discarded plain
            // write takes that hit, so that every measured phase reuses pages just freed.
            eprintln!("warm-up: plain write (not compared) ...");
            let w = plain_write(&dir.join("plain.dat"), args.bytes, args.write_size as usize, false)?;
            eprintln!("warm-up: {:.0} MB/s with sync, {:.0} MB/s without", w.mbps_with_sync(), w.mbps_without_sync());
            warmup = Some(w);
        }
        breakdown = measure_breakdown(&dir, &args)?;
        for r in 1..=args.rounds {
            let mut round = Round::default();
            eprintln!("round {r}: plain write ...");
            round.plain = plain_write(&dir.join("plain.dat"), args.bytes, args.write_size as usize, args.keep)?;
            eprintln!(
                "round {r}: plain {:.0} MB/s with sync, {:.0} MB/s without; log append ...",
                round.plain.mbps_with_sync(),
                round.plain.mbps_without_sync()
            );
            let log_dir = dir.join(format!("log-{r}"));
            let _ = std::fs::remove_dir_all(&log_dir);
            let (mut log, append) = log_append(&log_dir, &args, Shape::Exact(args.write_size as usize))?;
            round.append = append;
            eprintln!(
                "round {r}: append {:.0} MB/s with flush, {:.0} MB/s without; reading ...",
                round.append.w.mbps_with_sync(),
                round.append.w.mbps_without_sync()
            );
            // A discarded first pass: the first read of just-written pages also moves them to
            // the active LRU list, a cost the later passes would not pay.
            sequential_read(&log, ReadMode::NoCrc)?;
            round.read_plain = sequential_read(&log, ReadMode::NoCrc)?;
            round.read_crc = sequential_read(&log, ReadMode::Crc)?;
            round.read_raw = sequential_read(&log, ReadMode::RawPread)?;
            eprintln!("round {r}: lookups ...");
            round.offset_lookup = offset_lookups(&log, args.lookups, 0x5eed_0000 + r as u64)?;
            let (lat, found) = timestamp_lookups(&log, args.ts_lookups, 0x7157_0000 + r as u64)?;
            round.ts_lookup = lat;
            round.ts_lookup_found = found;
            log.close(now_ms())?;
            drop(log);
            if !args.keep {
                std::fs::remove_dir_all(&log_dir).with_context(|| format!("removing {}", log_dir.display()))?;
            }
            if args.unaligned_value_bytes > 0 {
                eprintln!("round {r}: log append, unaligned batches ...");
                let log_dir = dir.join(format!("log-{r}-unaligned"));
                let _ = std::fs::remove_dir_all(&log_dir);
                let (mut log, append) = log_append(&log_dir, &args, Shape::Values(args.unaligned_value_bytes))?;
                eprintln!(
                    "round {r}: unaligned append {:.0} MB/s with flush, {:.0} MB/s without",
                    append.w.mbps_with_sync(),
                    append.w.mbps_without_sync()
                );
                round.unaligned = Some(append);
                log.close(now_ms())?;
                drop(log);
                if !args.keep {
                    std::fs::remove_dir_all(&log_dir).with_context(|| format!("removing {}", log_dir.display()))?;
                }
            }
            rounds.push(round);
        }
        Ok(())
    })();
    if !args.keep {
        if remove_dir {
            let _ = std::fs::remove_dir_all(&dir);
            // ./weir-bench-data itself goes too when nothing else is in it.
            if let Some(parent) = dir.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        } else {
            let _ = std::fs::remove_file(dir.join("plain.dat"));
            let _ = std::fs::remove_file(dir.join("breakdown.dat"));
        }
    }
    result?;
    facts.load_after = loadavg();

    let table = render_table(&args, &facts, &breakdown, warmup.as_ref(), &rounds);
    println!("{table}");
    if let Some(path) = &args.json {
        let line = render_json(&args, &facts, &breakdown, warmup.as_ref(), &rounds);
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        writeln!(f, "{line}")?;
        eprintln!("appended the figures to {}", path.display());
    }
    Ok(())
}

/// Deterministic pseudo-random bytes (splitmix64), so data is not trivially compressible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        // Multiply-shift: uniform enough for picking offsets.
        ((self.next() as u128 * n as u128) >> 64) as u64
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// 1. `bytes` in `write_size` writes to a plain file, then fdatasync.
fn plain_write(path: &Path, bytes: u64, write_size: usize, keep: bool) -> Result<WritePhase> {
    let mut buf = vec![0u8; write_size];
    Rng(1).fill(&mut buf);
    let ops = bytes.div_ceil(write_size as u64);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    let mut lat = Vec::with_capacity(ops as usize);
    let start = Instant::now();
    for _ in 0..ops {
        let t = Instant::now();
        f.write_all(&buf)?;
        lat.push(ns(t.elapsed()));
    }
    let write = start.elapsed();
    f.sync_data()?;
    let sync = start.elapsed() - write;
    drop(f);
    if !keep {
        std::fs::remove_file(path)?;
    }
    Ok(WritePhase { bytes: ops * write_size as u64, ops, write, sync, lat: Lat::of(&mut lat) })
}

fn log_config(args: &LogArgs) -> LogConfig {
    LogConfig { segment_bytes: args.segment_bytes, ..LogConfig::default() }
}

/// A record for `batch::build_batch`: (key, value).
type Record<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// What the append phase writes.
#[derive(Clone, Copy)]
enum Shape {
    /// Batches of exactly this many bytes (values sized to fit).
    Exact(usize),
    /// Values of exactly this many bytes.
    Values(usize),
}

/// The one batch an append phase writes again and again: `records` records without key.
fn build_bench_batch(records: usize, shape: Shape, ts: i64) -> Result<Vec<u8>> {
    let mut rng = Rng(2);
    let build = |lens: &[usize], rng: &mut Rng| {
        let values: Vec<Vec<u8>> = lens
            .iter()
            .map(|&n| {
                let mut v = vec![0u8; n];
                rng.fill(&mut v);
                v
            })
            .collect();
        let recs: Vec<Record<'_>> = values.iter().map(|v| (None, Some(v.as_slice()))).collect();
        batch::build_batch(&recs, ts)
    };
    match shape {
        Shape::Values(n) => Ok(build(&vec![n; records], &mut rng)),
        Shape::Exact(size) => {
            // Start from an estimate and hand out the remaining bytes one per record; varint
            // lengths make this converge in a step or two.
            let mut lens = vec![(size.saturating_sub(HEADER_SIZE) / records).saturating_sub(9).max(1); records];
            for _ in 0..8 {
                let b = build(&lens, &mut rng);
                if b.len() == size {
                    return Ok(b);
                }
                let diff = size as i64 - b.len() as i64;
                let per = diff / records as i64;
                let rest = diff - per * records as i64;
                for (i, l) in lens.iter_mut().enumerate() {
                    let extra = per + if (i as i64) < rest.abs() { rest.signum() } else { 0 };
                    *l = (*l as i64 + extra).max(1) as usize;
                }
            }
            bail!("cannot build a batch of exactly {size} bytes from {records} records")
        }
    }
}

/// Give the batch fresh timestamps (record i at `ts + i`), as a producer would, and fix its CRC.
fn restamp(buf: &mut [u8], ts: i64, records: usize) {
    buf[BASE_TIMESTAMP..BASE_TIMESTAMP + 8].copy_from_slice(&ts.to_be_bytes());
    let max = ts + records as i64 - 1;
    buf[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&max.to_be_bytes());
    BatchMut::new(buf).update_crc();
}

/// 2. The same bytes through `Log::append`, then `Log::flush`.
fn log_append(log_dir: &Path, args: &LogArgs, shape: Shape) -> Result<(Log, AppendPhase)> {
    let (mut log, _) = Log::open(log_dir, log_config(args), 0, 0, true, LogMetrics::unregistered(), now_ms())?;
    let mut stamped = now_ms();
    let mut buf = build_bench_batch(args.records_per_batch, shape, stamped)?;
    let batch_bytes = buf.len();
    let records_per_batch = BatchView::parse(&buf)?.records_count() as u64;
    let batches = args.bytes.div_ceil(batch_bytes as u64);
    let mut lat = Vec::with_capacity(batches as usize);
    let mut roll_lat = Vec::new();
    let mut no_roll = Vec::with_capacity(batches as usize);
    let mut restamps = 0u64;
    let mut in_append = Duration::ZERO;
    let mut segments = log.segment_count();
    let mut second_lat = Vec::new();
    let mut rolled_before = false;
    let start = Instant::now();
    for i in 0..batches {
        // Timestamps follow the wall clock at millisecond grain: a batch is re-stamped (and
        // its CRC recomputed, ~1 µs) only when the clock has moved, outside the timed append.
        let now = now_ms();
        if now != stamped {
            restamp(&mut buf, now, records_per_batch as usize);
            stamped = now;
            restamps += 1;
        }
        let t = Instant::now();
        log.append(&mut buf, 0, now)?;
        let d = t.elapsed();
        in_append += d;
        lat.push(ns(d));
        if log.segment_count() != segments {
            segments = log.segment_count();
            roll_lat.push(ns(d));
            rolled_before = true;
        } else {
            no_roll.push(ns(d));
            // The second append into a segment writes its first index entries (the first
            // batch of a segment gets none): the first touch of the fresh index mappings.
            if rolled_before || i == 1 {
                second_lat.push(ns(d));
            }
            rolled_before = false;
        }
    }
    let write = start.elapsed();
    if std::env::var_os("WEIR_BENCH_DEBUG").is_some() {
        let mut idx: Vec<usize> = (0..lat.len()).collect();
        idx.sort_by_key(|&i| std::cmp::Reverse(lat[i]));
        eprintln!(
            "slowest appends (batch#: µs): {:?}",
            idx[..8.min(idx.len())].iter().map(|&i| (i, lat[i] / 1000)).collect::<Vec<_>>()
        );
    }
    log.flush(now_ms())?;
    let sync = start.elapsed() - write;
    ensure!(log.log_end_offset() == (batches * records_per_batch) as i64, "log end offset is off");
    let phase = AppendPhase {
        w: WritePhase { bytes: batches * batch_bytes as u64, ops: batches, write, sync, lat: Lat::of(&mut lat) },
        records: batches * records_per_batch,
        batch_bytes,
        segments: log.segment_count(),
        roll_lat,
        second_lat,
        no_roll_lat: Lat::of(&mut no_roll),
        in_append,
        restamps,
    };
    Ok((log, phase))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ReadMode {
    /// `LogSlice::read_into`, batch boundaries from headers only.
    NoCrc,
    /// `LogSlice::read_into`, every batch through `BatchView::parse` (CRC-32C).
    Crc,
    /// Diagnostic: `pread` straight into a reused buffer instead of `read_into` (which
    /// zero-fills the buffer before reading over it), headers only.
    RawPread,
}

/// 3. Read the whole log from its start in 1 MiB fetches, as a consumer would.
fn sequential_read(log: &Log, mode: ReadMode) -> Result<ReadPhase> {
    const MAX_BYTES: usize = 1 << 20;
    let leo = log.log_end_offset();
    let mut offset = log.log_start_offset();
    let mut buf: Vec<u8> = Vec::with_capacity(2 * MAX_BYTES);
    if mode == ReadMode::RawPread {
        buf.resize(2 * MAX_BYTES, 0);
    }
    let mut phase = ReadPhase::default();
    let start = Instant::now();
    while offset < leo {
        let slice = log.read(offset, MAX_BYTES, i64::MAX, true)?.context("read returned nothing below the LEO")?;
        let data: &[u8] = match mode {
            ReadMode::RawPread => {
                if buf.len() < slice.len {
                    buf.resize(slice.len, 0);
                }
                slice.file.read_exact_at(&mut buf[..slice.len], slice.position)?;
                &buf[..slice.len]
            }
            _ => {
                buf.clear();
                slice.read_into(&mut buf)?;
                &buf
            }
        };
        phase.reads += 1;
        phase.bytes_read += data.len() as u64;
        let mut at = 0usize;
        while at < data.len() {
            let rest = &data[at..];
            // A batch cut by max_bytes is fetched again whole by the next read.
            match batch::batch_size(rest) {
                Some(size) if size <= rest.len() && rest.len() >= HEADER_SIZE => {}
                _ => break,
            }
            let v = if mode == ReadMode::Crc { BatchView::parse(rest)? } else { BatchView::header_unchecked(rest) };
            let size = v.size();
            if v.last_offset() >= offset {
                offset = v.last_offset() + 1;
            }
            at += size;
            phase.batches += 1;
            phase.log_bytes += size as u64;
        }
        ensure!(at > 0, "a read at offset {offset} returned no whole batch");
    }
    phase.elapsed = start.elapsed();
    ensure!(phase.log_bytes == log.size_bytes(), "read {} bytes of a {}-byte log", phase.log_bytes, log.size_bytes());
    Ok(phase)
}

/// 4a. Random `read(offset, 1)`: locate the batch (index + header read), do not read its bytes.
fn offset_lookups(log: &Log, n: usize, seed: u64) -> Result<Lat> {
    let (lo, hi) = (log.log_start_offset(), log.log_end_offset());
    let mut rng = Rng(seed);
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let off = lo + rng.below((hi - lo) as u64) as i64;
        let t = Instant::now();
        let slice = log.read(off, 1, i64::MAX, true)?;
        let d = t.elapsed();
        let slice = slice.context("lookup found nothing")?;
        ensure!(slice.first_batch_offset <= off, "lookup of {off} landed on {}", slice.first_batch_offset);
        lat.push(ns(d));
    }
    Ok(Lat::of(&mut lat))
}

/// 4b. Random `find_batch_by_timestamp` over the log's time span.
fn timestamp_lookups(log: &Log, n: usize, seed: u64) -> Result<(Lat, usize)> {
    let first = log.read(log.log_start_offset(), 1, i64::MAX, true)?.context("empty log")?;
    let mut h = [0u8; HEADER_SIZE];
    first.file.read_exact_at(&mut h, first.position)?;
    let lo = BatchView::header_unchecked(&h).max_timestamp();
    // The last batch's max timestamp: the largest one, timestamps only grow here.
    let last_off = log.log_end_offset() - 1;
    let last = log.read(last_off, 1, i64::MAX, true)?.context("empty log")?;
    last.file.read_exact_at(&mut h, last.position)?;
    let hi = BatchView::header_unchecked(&h).max_timestamp();
    let mut rng = Rng(seed);
    let mut lat = Vec::with_capacity(n);
    let mut found = 0usize;
    for _ in 0..n {
        let ts = lo + rng.below((hi - lo + 1) as u64) as i64;
        let t = Instant::now();
        let b = log.find_batch_by_timestamp(ts)?;
        let d = t.elapsed();
        if let Some(b) = b {
            ensure!(b.max_timestamp >= ts, "timestamp lookup of {ts} found a batch with max {}", b.max_timestamp);
            found += 1;
        }
        lat.push(ns(d));
    }
    Ok((Lat::of(&mut lat), found))
}

/// Costs outside the log that bound what append can do: the CRC check of a batch, and bare
/// syscall loops (no log, no sync) of the plain phase's `write`s, of `pwrite`s of the same
/// size (what `LogSegment::append` does), and of `pwrite`s of the unaligned batch size.
fn measure_breakdown(dir: &Path, args: &LogArgs) -> Result<Breakdown> {
    let buf = build_bench_batch(args.records_per_batch, Shape::Exact(args.write_size as usize), now_ms())?;
    let iters = 20_000u32;
    let t = Instant::now();
    for _ in 0..iters {
        std::hint::black_box(BatchView::parse(std::hint::black_box(&buf))?);
    }
    let crc_per_batch_ns = t.elapsed().as_nanos() as f64 / iters as f64;

    let bytes = args.bytes.min(256 * MIB);
    let path = dir.join("breakdown.dat");
    let run = |size: usize, positional: bool| -> Result<(f64, Lat)> {
        let mut data = vec![0u8; size];
        Rng(3).fill(&mut data);
        let mut f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path)?;
        let n = bytes.div_ceil(size as u64);
        let mut lat = Vec::with_capacity(n as usize);
        let t = Instant::now();
        let mut pos = 0u64;
        for _ in 0..n {
            let t = Instant::now();
            if positional {
                f.write_all_at(&data, pos)?;
            } else {
                f.write_all(&data)?;
            }
            lat.push(ns(t.elapsed()));
            pos += size as u64;
        }
        let r = (mbps(pos, t.elapsed()), Lat::of(&mut lat));
        drop(f);
        std::fs::remove_file(&path)?;
        Ok(r)
    };
    let write = run(args.write_size as usize, false)?;
    let pwrite = run(args.write_size as usize, true)?;
    let unaligned_size = if args.unaligned_value_bytes > 0 {
        build_bench_batch(args.records_per_batch, Shape::Values(args.unaligned_value_bytes), now_ms())?.len()
    } else {
        args.write_size as usize + 205
    };
    let pwrite_unaligned = run(unaligned_size, true)?;
    Ok(Breakdown { crc_per_batch_ns, bytes, write, pwrite, unaligned_size, pwrite_unaligned })
}

// ---------------------------------------------------------------------------------------
// Machine facts

fn machine_facts(dir: &Path) -> Facts {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = read("/proc/meminfo");
    let mem = |key: &str| {
        meminfo
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| human(kb * KIB))
            .unwrap_or_else(|| "unknown".into())
    };
    let mem_total = format!("{} (free {}, page cache {})", mem("MemTotal:"), mem("MemFree:"), mem("Cached:"));
    let dirty = format!(
        "dirty_ratio={} dirty_background_ratio={}",
        read("/proc/sys/vm/dirty_ratio").trim(),
        read("/proc/sys/vm/dirty_background_ratio").trim()
    );
    // `df -PT --block-size=1 DIR`: Filesystem Type Size Used Avail Use% Mounted-on.
    let (mut fs_type, mut fs_device, mut free) = ("unknown".to_string(), "unknown".to_string(), 0u64);
    if let Ok(out) = Command::new("df").arg("-PT").arg("--block-size=1").arg(dir).output() {
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some(line) = text.lines().nth(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() >= 5 {
                fs_device = cols[0].to_string();
                fs_type = cols[1].to_string();
                free = cols[4].parse().unwrap_or(0);
            }
        }
    }
    Facts {
        nproc: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
        cpu,
        mem_total,
        fs_type,
        fs_device,
        free_bytes_before: free,
        dirty,
        load_before: loadavg(),
        load_after: String::new(),
    }
}

/// The 1, 5 and 15 minute load averages.
fn loadavg() -> String {
    let l = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if bytes >= GIB {
        format!("{:.1} GiB", b / GIB as f64)
    } else if bytes >= MIB {
        format!("{:.0} MiB", b / MIB as f64)
    } else if bytes >= KIB {
        format!("{:.0} KiB", b / KIB as f64)
    } else {
        format!("{bytes} B")
    }
}

// ---------------------------------------------------------------------------------------
// Output

fn render_table(args: &LogArgs, f: &Facts, b: &Breakdown, warmup: Option<&WritePhase>, rounds: &[Round]) -> String {
    let mut s = String::new();
    let a0 = &rounds[0].append;
    let _ = writeln!(s, "## weir-bench log\n");
    let _ = writeln!(
        s,
        "Machine: {} CPUs ({}), {} RAM, kernel {}, {} on {} ({} free before the run), {}. \
         Load average before / after: {} / {}.\n",
        f.nproc,
        f.cpu,
        f.mem_total,
        f.kernel,
        f.fs_type,
        f.fs_device,
        human(f.free_bytes_before),
        f.dirty,
        f.load_before,
        f.load_after
    );
    let _ = writeln!(
        s,
        "Each phase writes {} ({} bytes). Plain: {}-byte `write`s to one file, then `fdatasync`. \
         Log: `Log::append` of one {}-byte batch ({} records of ~{} B, no key) re-stamped when the \
         ms clock moves, default LogConfig except segment.bytes={} ({} segments, {} rolls), then \
         `Log::flush`. Order per run: plain, log, reads, lookups{}. MB/s = 10^6 bytes/s. \
         Reads are from the page cache.\n",
        human(args.bytes),
        args.bytes,
        args.write_size,
        a0.batch_bytes,
        args.records_per_batch,
        a0.batch_bytes / args.records_per_batch,
        human(args.segment_bytes),
        a0.segments,
        a0.segments.saturating_sub(1),
        if args.unaligned_value_bytes > 0 {
            format!(
                ", log with unaligned batches ({} records of {} B values = {}-byte batches)",
                args.records_per_batch, args.unaligned_value_bytes, b.unaligned_size
            )
        } else {
            String::new()
        }
    );
    let mut header = "| Figure |".to_string();
    let mut rule = "|---|".to_string();
    for i in 1..=rounds.len() {
        let _ = write!(header, " Run {i} |");
        rule.push_str("---:|");
    }
    let _ = writeln!(s, "{header}\n{rule}");
    let mut row = |name: &str, cell: &dyn Fn(&Round) -> String| {
        let mut line = format!("| {name} |");
        for r in rounds {
            let _ = write!(line, " {} |", cell(r));
        }
        let _ = writeln!(s, "{line}");
    };
    let pct = |a: f64, b: f64| format!("{:.0}%", 100.0 * a / b);
    row("Plain write incl. final fdatasync (MB/s)", &|r| format!("{:.0}", r.plain.mbps_with_sync()));
    row("Plain write excl. final fdatasync: page cache only (MB/s)", &|r| {
        format!("{:.0}", r.plain.mbps_without_sync())
    });
    row("Plain: write loop s + fdatasync s", &|r| {
        format!("{:.2} + {:.2}", r.plain.write.as_secs_f64(), r.plain.sync.as_secs_f64())
    });
    row("Log append incl. final flush (MB/s)", &|r| format!("{:.0}", r.append.w.mbps_with_sync()));
    row("Log append excl. final flush: page cache only (MB/s)", &|r| format!("{:.0}", r.append.w.mbps_without_sync()));
    row("Log: append loop s + flush s", &|r| {
        format!("{:.2} + {:.2}", r.append.w.write.as_secs_f64(), r.append.w.sync.as_secs_f64())
    });
    row("**Append / plain, incl. sync** (goal >= 80%)", &|r| {
        format!("**{}**", pct(r.append.w.mbps_with_sync(), r.plain.mbps_with_sync()))
    });
    row("Append / plain, excl. sync", &|r| pct(r.append.w.mbps_without_sync(), r.plain.mbps_without_sync()));
    row("Append / plain by median call (p50 `write` / p50 append)", &|r| {
        pct(r.plain.lat.p50 as f64, r.append.w.lat.p50 as f64)
    });
    row("Log append msgs/s incl. flush", &|r| format!("{:.0}", r.append.msgs_with_sync()));
    row("Log append msgs/s excl. flush", &|r| format!("{:.0}", r.append.msgs_without_sync()));
    row("Plain `write` latency p50 / p99 / max (µs)", &|r| r.plain.lat.cell());
    row("Append latency per batch p50 / p99 / max (µs)", &|r| r.append.w.lat.cell());
    row("Latency of the appends that rolled (µs)", &|r| us_list(&r.append.roll_lat, ", "));
    row("Latency of the 2nd append into each segment: first index write (µs)", &|r| {
        us_list(&r.append.second_lat, ", ")
    });
    row("Latency of all appends that did not roll: p99 / max (µs)", &|r| {
        format!("{:.1} / {:.0}", Lat::us(r.append.no_roll_lat.p99), Lat::us(r.append.no_roll_lat.max))
    });
    if args.unaligned_value_bytes > 0 {
        let un = |r: &Round, f: &dyn Fn(&AppendPhase) -> String| r.unaligned.as_ref().map(f).unwrap_or_default();
        row(&format!("Unaligned log ({}-byte batches) incl. flush (MB/s)", b.unaligned_size), &|r| {
            un(r, &|a| format!("{:.0}", a.w.mbps_with_sync()))
        });
        row("Unaligned log excl. flush: page cache only (MB/s)", &|r| {
            un(r, &|a| format!("{:.0}", a.w.mbps_without_sync()))
        });
        row("Unaligned log / plain, incl. sync", &|r| un(r, &|a| pct(a.w.mbps_with_sync(), r.plain.mbps_with_sync())));
        row("Unaligned log / plain, excl. sync", &|r| {
            un(r, &|a| pct(a.w.mbps_without_sync(), r.plain.mbps_without_sync()))
        });
        row("Unaligned append latency p50 / p99 / max (µs)", &|r| un(r, &|a| a.w.lat.cell()));
    }
    row("Sequential read, 1 MiB `read` + `read_into`, no CRC (MB/s)", &|r| format!("{:.0}", r.read_plain.mbps()));
    row("Sequential read, same + `BatchView::parse` CRC (MB/s)", &|r| format!("{:.0}", r.read_crc.mbps()));
    row("Sequential read, `pread` into a reused buffer, no CRC (MB/s, diagnostic)", &|r| {
        format!("{:.0}", r.read_raw.mbps())
    });
    row("Offset lookup `read(o, 1)` p50 / p99 / max (µs)", &|r| r.offset_lookup.cell_fine());
    row("Timestamp lookup p50 / p99 / max (µs)", &|r| r.ts_lookup.cell_fine());
    let _ = writeln!(
        s,
        "\nOutside the log (after the warm-up; {} per loop, no sync): `BatchView::parse` (CRC-32C) of a \
         {}-byte batch {:.2} µs ({:.0} MB/s). Bare syscall loops: `write` of {} B {:.0} MB/s (p50 {:.1} µs); \
         `pwrite` of {} B {:.0} MB/s (p50 {:.1} µs); `pwrite` of {} B (unaligned) {:.0} MB/s (p50 {:.1} µs).",
        human(b.bytes),
        a0.batch_bytes,
        b.crc_per_batch_ns / 1000.0,
        a0.batch_bytes as f64 / b.crc_per_batch_ns * 1000.0,
        args.write_size,
        b.write.0,
        Lat::us(b.write.1.p50),
        args.write_size,
        b.pwrite.0,
        Lat::us(b.pwrite.1.p50),
        b.unaligned_size,
        b.pwrite_unaligned.0,
        Lat::us(b.pwrite_unaligned.1.p50),
    );
    if let Some(w) = warmup {
        let _ = writeln!(
            s,
            "\nWarm-up plain write before run 1, not compared (it takes the hit of the VM faulting fresh \
             memory in): {:.0} MB/s incl. fdatasync, {:.0} MB/s excl.; `write` p50 / p99 / max {} µs.",
            w.mbps_with_sync(),
            w.mbps_without_sync(),
            w.lat.cell()
        );
    }
    let lookups_ok = rounds.iter().all(|r| r.offset_lookup.p99 < 5_000);
    let ts_ok = rounds.iter().all(|r| r.ts_lookup.p99 < 5_000);
    let append_ok = rounds.iter().all(|r| r.append.w.mbps_with_sync() >= 0.8 * r.plain.mbps_with_sync());
    let append_nosync_ok = rounds.iter().all(|r| r.append.w.mbps_without_sync() >= 0.8 * r.plain.mbps_without_sync());
    let yes = |b: bool| if b { "met" } else { "NOT met" };
    let _ = writeln!(
        s,
        "\nGoals, in every run: append >= 80% of plain incl. sync: {}; excl. sync: {}; \
         offset lookup p99 < 5 µs: {}; timestamp lookup p99 < 5 µs: {}.",
        yes(append_ok),
        yes(append_nosync_ok),
        yes(lookups_ok),
        yes(ts_ok)
    );
    s
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn render_json(args: &LogArgs, f: &Facts, b: &Breakdown, warmup: Option<&WritePhase>, rounds: &[Round]) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "{{\"bench\":\"log\",\"unix_ms\":{},\"machine\":{{\"nproc\":{},\"kernel\":{},\"cpu\":{},\"mem_total\":{},\"fs_type\":{},\"fs_device\":{},\"free_bytes\":{},\"vm\":{},\"load_before\":{},\"load_after\":{}}}",
        now_ms(),
        f.nproc,
        json_str(&f.kernel),
        json_str(&f.cpu),
        json_str(&f.mem_total),
        json_str(&f.fs_type),
        json_str(&f.fs_device),
        f.free_bytes_before,
        json_str(&f.dirty),
        json_str(&f.load_before),
        json_str(&f.load_after)
    );
    let _ = write!(
        s,
        ",\"config\":{{\"bytes\":{},\"write_size\":{},\"records_per_batch\":{},\"unaligned_value_bytes\":{},\"segment_bytes\":{},\"lookups\":{},\"ts_lookups\":{},\"warmup\":{}}}",
        args.bytes,
        args.write_size,
        args.records_per_batch,
        args.unaligned_value_bytes,
        args.segment_bytes,
        args.lookups,
        args.ts_lookups,
        !args.no_warmup
    );
    let _ = write!(
        s,
        ",\"breakdown\":{{\"bytes\":{},\"crc_per_batch_us\":{:.3},\"write_mbps\":{:.1},\"write_latency\":{},\"pwrite_mbps\":{:.1},\"pwrite_latency\":{},\"unaligned_size\":{},\"pwrite_unaligned_mbps\":{:.1},\"pwrite_unaligned_latency\":{}}}",
        b.bytes,
        b.crc_per_batch_ns / 1000.0,
        b.write.0,
        b.write.1.json(),
        b.pwrite.0,
        b.pwrite.1.json(),
        b.unaligned_size,
        b.pwrite_unaligned.0,
        b.pwrite_unaligned.1.json()
    );
    if let Some(w) = warmup {
        let _ = write!(s, ",\"warmup_plain\":{}", w.json());
    }
    s.push_str(",\"rounds\":[");
    for (i, r) in rounds.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{{\"plain\":{},\"append\":{}", r.plain.json(), r.append.json(&r.plain));
        if let Some(u) = &r.unaligned {
            let _ = write!(s, ",\"append_unaligned\":{}", u.json(&r.plain));
        }
        let _ = write!(
            s,
            ",\"read_no_crc\":{},\"read_crc\":{},\"read_raw_pread\":{},\"offset_lookup\":{},\"ts_lookup\":{},\"ts_lookup_found\":{}}}",
            r.read_plain.json(),
            r.read_crc.json(),
            r.read_raw.json(),
            r.offset_lookup.json(),
            r.ts_lookup.json(),
            r.ts_lookup_found
        );
    }
    s.push_str("]}");
    s
}
