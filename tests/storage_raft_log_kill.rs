//! A child process writes the model workload's batches (synced, purging now and then) and
//! is killed with SIGKILL at a random moment; the reopened log must hold exactly the
//! batches it acknowledged, or one more, never part of one. A binary of its own: a child
//! inherits raft-engine's lock file, so no other test of this process may hold a log.
//!
//! `FLOTILLA_LOG_KILL_RUNS=N` runs more kills (CI runs a bounded number).

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::log_model::{Workload, check, config};
use flotilla::storage::SyncMode;
use flotilla::storage::raft_log::{RaftLogEngine, RaftLogStore};
use flotilla::testkit::Rng;

const CHILD_DIR: &str = "FLOTILLA_LOG_CHILD_DIR";
const CHILD_SEED: &str = "FLOTILLA_LOG_CHILD_SEED";

/// Not a test of its own: the body of the child process that the kill test starts. It
/// writes synced batches from the seed's workload forever (purging now and then) and
/// prints the number of each batch once its write returned.
#[test]
fn child_writer() {
    let (Ok(dir), Ok(seed)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_SEED)) else {
        return;
    };
    let seed: u64 = seed.parse().expect("seed");
    let log = RaftLogEngine::open(&config(Path::new(&dir), 4)).expect("open");
    let mut w = Workload::new(seed);
    for n in 1.. {
        let mut batch = w.next_batch();
        log.write(&mut batch, SyncMode::Sync).expect("write");
        println!("acked {n}");
        if n % 5 == 0 {
            log.purge_expired_files().expect("purge");
        }
    }
}

fn parse_ack(line: std::io::Result<String>) -> Result<Option<u64>, String> {
    let line = line.map_err(|e| e.to_string())?;
    match line.strip_prefix("acked ") {
        Some(n) => n.parse().map(Some).map_err(|_| format!("bad line {line}")),
        None => Ok(None),
    }
}

/// A child writes synced batches and is killed with SIGKILL at a random moment; the log
/// then holds exactly the batches up to the last acknowledged one, or one more (the write
/// in flight), never a mix.
fn kill_child_once(seed: u64) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut rng = Rng::new(seed ^ 0xdead);
    let kill_after = rng.range(3, 120);
    let mut child = Command::new(exe)
        .args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir.path())
        .env(CHILD_SEED, seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut acked = 0u64;
    for line in lines.by_ref() {
        acked = parse_ack(line)?.unwrap_or(acked);
        if acked >= kill_after {
            break;
        }
    }
    // Somewhere inside a later write.
    std::thread::sleep(Duration::from_micros(rng.range(0, 3000)));
    child.kill().map_err(|e| e.to_string())?;
    child.wait().map_err(|e| e.to_string())?;
    // Acknowledgements printed before the kill.
    for line in lines {
        acked = parse_ack(line)?.unwrap_or(acked);
    }
    if acked < kill_after {
        return Err(format!("child stopped after {acked} batches"));
    }

    let log = RaftLogEngine::open(&config(dir.path(), 4)).map_err(|e| format!("reopen: {e}"))?;
    let mut w = Workload::new(seed);
    for _ in 0..acked {
        let _ = w.next_batch();
    }
    eprintln!("kill run {seed}: killed after {acked} acknowledged batches");
    let mut tried = Vec::new();
    // The batch in flight was either written whole or not at all.
    for extra in 0..2 {
        match check(&log, &w.model) {
            Ok(()) => return Ok(()),
            Err(e) => tried.push(format!("after {} batches: {e}", acked + extra)),
        }
        let _ = w.next_batch();
    }
    Err(tried.join("\n"))
}

#[test]
fn a_killed_writer_loses_nothing_acknowledged() {
    let runs: u64 = std::env::var("FLOTILLA_LOG_KILL_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    for seed in 0..runs {
        if let Err(e) = kill_child_once(seed) {
            panic!(
                "kill run {seed}: {e}\nreplay: FLOTILLA_LOG_KILL_RUNS={} cargo test --test \
                 storage_raft_log_kill a_killed_writer",
                seed + 1
            );
        }
    }
}
