//! `weir-bench open`: what opening and truncating a partition log costs, with and without
//! the producer-state snapshots, in one run on one log. The log is written once (one-record
//! batches from a set of idempotent producers in turn), then each round times, with the page
//! cache dropped before each open:
//!
//! 1. a clean open that uses the snapshot written at the close;
//! 2. a clean open with the snapshots moved aside, so every batch header is read (how every
//!    open worked before snapshots);
//! 3. an open after a crash (the log dropped without closing, the close's snapshot removed as
//!    if the crash came long after the last clean start; recovery point at the log end): the
//!    active segment's batches are checked (CRC) as after any crash, and the producer state
//!    comes from the last roll's snapshot and the active segment's headers;
//! 4. `truncate_to` one record below the log end, right after (3): the last roll's snapshot
//!    and the active segment's headers again (in the page cache now).
//!
//! Every open must restore the same producers as were written.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use clap::Args;

use weir_broker::log::batch::{build_batch, BatchMut, BASE_SEQUENCE, PRODUCER_EPOCH, PRODUCER_ID};
use weir_broker::log::producer_snapshot;
use weir_broker::log::producer_state::ActiveProducer;
use weir_broker::log::{now_ms, Log, LogConfig, LogMetrics};

use super::{human, loadavg, parse_size};

#[derive(Args)]
pub struct OpenArgs {
    /// Directory to work in (the log is created in a fresh subdirectory and removed at the
    /// end). Default: a fresh directory under ./weir-bench-data.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Bytes of the log written before the rounds (by default 3.9 segments: the active one
    /// nearly full, the worst case for an open after a crash).
    #[arg(long, default_value = "4000MiB", value_parser = parse_size)]
    bytes: u64,
    /// segment.bytes (Kafka's default 1 GiB).
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    segment_bytes: u64,
    /// Value bytes of each one-record batch (1,000 gives batches of 1,070 bytes).
    #[arg(long, default_value_t = 1000)]
    value_bytes: usize,
    /// Idempotent producers whose batches alternate.
    #[arg(long, default_value_t = 100)]
    producers: i64,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Append one JSON line with every figure to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Default)]
struct Round {
    clean_snapshot: Duration,
    clean_every_header: Duration,
    after_crash: Duration,
    truncate: Duration,
}

fn config(args: &OpenArgs) -> LogConfig {
    LogConfig { segment_bytes: args.segment_bytes, ..LogConfig::default() }
}

/// Drop the page cache so each open reads from the disk, as after a reboot or a long quiet
/// time. Needs root; returns whether it happened.
fn drop_page_cache() -> bool {
    let _ = std::process::Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

fn open(dir: &Path, args: &OpenArgs, recovery_point: i64, clean: bool) -> Result<(Log, Duration, Option<i64>)> {
    let t = Instant::now();
    let (log, report) = Log::open(dir, config(args), recovery_point, 0, clean, LogMetrics::unregistered(), now_ms())?;
    Ok((log, t.elapsed(), report.producer_snapshot))
}

fn write_log(dir: &Path, args: &OpenArgs) -> Result<(Log, Duration)> {
    let (mut log, _) = Log::open(dir, config(args), 0, 0, true, LogMetrics::unregistered(), now_ms())?;
    let value = vec![b'v'; args.value_bytes];
    let mut batch = build_batch(&[(None, Some(&value[..]))], now_ms());
    let batches = args.bytes / batch.len() as u64;
    let t = Instant::now();
    for i in 0..batches {
        let pid = i as i64 % args.producers;
        let seq = (i as i64 / args.producers) as i32;
        batch[PRODUCER_ID..PRODUCER_ID + 8].copy_from_slice(&pid.to_be_bytes());
        batch[PRODUCER_EPOCH..PRODUCER_EPOCH + 2].copy_from_slice(&0i16.to_be_bytes());
        batch[BASE_SEQUENCE..BASE_SEQUENCE + 4].copy_from_slice(&seq.to_be_bytes());
        BatchMut::new(&mut batch).update_crc();
        log.append(&mut batch, 0, now_ms())?;
    }
    log.flush(now_ms())?;
    Ok((log, t.elapsed()))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub fn bench_open(args: OpenArgs) -> Result<()> {
    ensure!(args.producers >= 1 && args.rounds >= 1, "--producers and --rounds must be at least 1");
    let base = args.dir.clone().unwrap_or_else(|| PathBuf::from("weir-bench-data"));
    let work = base.join(format!("open-{}-{}", std::process::id(), now_ms()));
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let result = run(&work, &args);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn run(work: &Path, args: &OpenArgs) -> Result<()> {
    let dir = work.join("bench-0");
    let aside = work.join("snapshots-aside");
    std::fs::create_dir_all(&aside)?;
    eprintln!("weir-bench open: writing {} in {} ...", human(args.bytes), dir.display());
    let (mut log, wrote) = write_log(&dir, args)?;
    let expected: Vec<ActiveProducer> = log.active_producers();
    ensure!(expected.len() as i64 == args.producers.min(log.log_end_offset()), "producers were not all recorded");
    let (segments, batches) = (log.segment_count(), log.log_end_offset());
    eprintln!("wrote {batches} batches in {segments} segments in {:.1} s", wrote.as_secs_f64());
    log.close(now_ms())?;
    drop(log);
    let load_before = loadavg();
    let check = |log: &Log, what: &str| -> Result<()> {
        let got = log.active_producers();
        ensure!(got.len() == expected.len(), "{what}: {} producers restored, {} written", got.len(), expected.len());
        Ok(())
    };

    let mut rounds = Vec::new();
    let mut dropped = true;
    for r in 1..=args.rounds {
        let mut round = Round::default();
        // 1. Clean open with the close's snapshot.
        dropped &= drop_page_cache();
        let (mut log, d, snap) = open(&dir, args, 0, true)?;
        ensure!(snap == Some(log.log_end_offset()), "clean open did not use the log end's snapshot: {snap:?}");
        check(&log, "clean open")?;
        round.clean_snapshot = d;
        log.close(now_ms())?;
        drop(log);
        // 2. The same without snapshots: every header.
        let moved: Vec<i64> = producer_snapshot::list(&dir)?;
        for &o in &moved {
            let from = producer_snapshot::snapshot_path(&dir, o);
            std::fs::rename(&from, aside.join(from.file_name().expect("a file name")))?;
        }
        dropped &= drop_page_cache();
        let (mut log, d, snap) = open(&dir, args, 0, true)?;
        ensure!(snap.is_none(), "an open without snapshot files used one: {snap:?}");
        check(&log, "open reading every header")?;
        round.clean_every_header = d;
        log.close(now_ms())?;
        drop(log);
        for &o in &moved {
            let to = producer_snapshot::snapshot_path(&dir, o);
            std::fs::rename(aside.join(to.file_name().expect("a file name")), &to)?;
        }
        // 3. After a crash: open, append a little (plain batches: the producers stay as they
        // are), drop without closing. The snapshot of the close is then removed, so the open
        // starts from the last roll's, as when the crash came long after the last clean start.
        let (mut log, _, _) = open(&dir, args, 0, true)?;
        let mut plain = build_batch(&[(None, Some(&b"after the close"[..]))], now_ms());
        for _ in 0..1000 {
            log.append(&mut plain, 0, now_ms())?;
        }
        let leo = log.log_end_offset();
        let bases = log.segment_base_offsets();
        drop(log);
        for o in producer_snapshot::list(&dir)? {
            if !bases.contains(&o) {
                std::fs::remove_file(producer_snapshot::snapshot_path(&dir, o))?;
            }
        }
        dropped &= drop_page_cache();
        let (mut log, d, snap) = open(&dir, args, leo, false)?;
        ensure!(snap.is_some_and(|s| s < leo), "an open after a crash used {snap:?}");
        check(&log, "open after a crash")?;
        round.after_crash = d;
        // 4. Truncate the last record.
        let t = Instant::now();
        log.truncate_to(leo - 1, now_ms())?;
        round.truncate = t.elapsed();
        check(&log, "truncation")?;
        log.close(now_ms())?;
        drop(log);
        eprintln!(
            "round {r}: clean open {:.1} ms with the snapshot, {:.1} ms reading every header; after a crash {:.1} ms; truncate {:.1} ms",
            ms(round.clean_snapshot),
            ms(round.clean_every_header),
            ms(round.after_crash),
            ms(round.truncate)
        );
        rounds.push(round);
    }

    let col =
        |f: fn(&Round) -> Duration| rounds.iter().map(|r| format!("{:.1}", ms(f(r)))).collect::<Vec<_>>().join(", ");
    println!(
        "Log of {} ({batches} one-record batches of {} B from {} idempotent producers, {segments} segments of {}), written in {:.1} s; page cache {} before each open; load {load_before} -> {}\n",
        human(args.bytes),
        args.value_bytes + 70,
        args.producers,
        human(args.segment_bytes),
        wrote.as_secs_f64(),
        if dropped { "dropped" } else { "NOT dropped (not root)" },
        loadavg()
    );
    println!("| Operation | ms per round |");
    println!("|---|---|");
    println!("| Clean open, producer state from the snapshot | {} |", col(|r| r.clean_snapshot));
    println!("| Clean open, every batch header read (no snapshots) | {} |", col(|r| r.clean_every_header));
    println!(
        "| Open after a crash (active segment checked; last roll's snapshot + headers after it) | {} |",
        col(|r| r.after_crash)
    );
    println!("| Truncate one record off the end (warm) | {} |", col(|r| r.truncate));
    if let Some(path) = &args.json {
        use std::io::Write as _;
        let list =
            |f: fn(&Round) -> Duration| rounds.iter().map(|r| format!("{:.3}", ms(f(r)))).collect::<Vec<_>>().join(",");
        let line = format!(
            "{{\"bench\":\"open\",\"at_ms\":{},\"bytes\":{},\"batches\":{batches},\"segments\":{segments},\"producers\":{},\"page_cache_dropped\":{dropped},\"clean_snapshot_ms\":[{}],\"clean_every_header_ms\":[{}],\"after_crash_ms\":[{}],\"truncate_ms\":[{}]}}\n",
            now_ms(),
            args.bytes,
            args.producers,
            list(|r| r.clean_snapshot),
            list(|r| r.clean_every_header),
            list(|r| r.after_crash),
            list(|r| r.truncate)
        );
        std::fs::OpenOptions::new().create(true).append(true).open(path)?.write_all(line.as_bytes())?;
    }
    Ok(())
}
