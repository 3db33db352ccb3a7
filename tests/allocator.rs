//! The allocator the `flotilla` binary installs (`flotilla::use_mimalloc!`), installed here
//! the same way: its settings take effect before the first allocation, and mimalloc's
//! environment variables still override them; the purge thread starts.
#![cfg(all(feature = "mimalloc", target_os = "linux"))]

use std::process::Command;

flotilla::use_mimalloc!();

const EAGER_COMMIT_VAR: &str = "MIMALLOC_ARENA_EAGER_COMMIT";
/// Set for the copy of this test binary that `an_environment_variable_still_wins` runs.
const CHILD_VAR: &str = "FLOTILLA_ALLOCATOR_TEST_CHILD";

#[test]
fn arenas_commit_as_used_from_the_first_allocation() {
    if std::env::var_os(EAGER_COMMIT_VAR).is_some() {
        eprintln!("{EAGER_COMMIT_VAR} is set: the default is not what is read");
        return;
    }
    // By now the test harness has allocated plenty: the setting was in place before.
    assert!(!flotilla::allocator::arenas_commit_eagerly());
    let v: Vec<u64> = (0..1 << 16).collect();
    assert_eq!(v.iter().sum::<u64>(), (1u64 << 16) * ((1 << 16) - 1) / 2);
}

/// What the child prints: the option as mimalloc reads it there.
#[test]
fn report_setting_in_child() {
    if std::env::var_os(CHILD_VAR).is_none() {
        return;
    }
    println!(
        "eager commit: {}",
        flotilla::allocator::arenas_commit_eagerly()
    );
}

#[test]
fn the_purge_thread_runs() {
    flotilla::allocator::spawn_purger(std::time::Duration::from_millis(1)).expect("spawned");
    let named = || {
        std::fs::read_dir("/proc/self/task")
            .expect("the process's threads")
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .any(|name| name.trim() == "mimalloc-purge")
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !named() {
        assert!(std::time::Instant::now() < deadline, "no purge thread");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // It purges while this thread allocates and frees.
    for round in 0..50u64 {
        let v = vec![round; 1 << 14];
        assert_eq!(v.len(), 1 << 14);
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[test]
fn an_environment_variable_still_wins() {
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = Command::new(exe)
        .args(["report_setting_in_child", "--exact", "--nocapture"])
        .env(CHILD_VAR, "1")
        .env(EAGER_COMMIT_VAR, "1")
        .output()
        .expect("runs the test binary again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed: {stdout}");
    assert!(
        stdout.contains("eager commit: true"),
        "the environment did not override the default: {stdout}"
    );
}
