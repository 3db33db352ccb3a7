//! The allocator the `flotilla` binary installs (`flotilla::use_mimalloc!`), installed here
//! the same way: its setting is in place, mimalloc's environment variables still override
//! it, and the purge thread starts.
#![cfg(all(feature = "mimalloc", target_os = "linux"))]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

flotilla::use_mimalloc!();

const EAGER_COMMIT_VAR: &str = "MIMALLOC_ARENA_EAGER_COMMIT";

#[test]
fn arenas_commit_as_used() {
    if std::env::var_os(EAGER_COMMIT_VAR).is_some() {
        eprintln!("{EAGER_COMMIT_VAR} is set: the default is not what is read");
        return;
    }
    assert!(!flotilla::allocator::arenas_commit_eagerly());
}

/// Run by `an_environment_variable_still_wins` in a copy of this binary: prints the option
/// as mimalloc reads it there.
#[test]
#[ignore = "run by an_environment_variable_still_wins"]
fn report_setting_in_child() {
    println!(
        "eager commit: {}",
        flotilla::allocator::arenas_commit_eagerly()
    );
}

#[test]
fn an_environment_variable_still_wins() {
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = Command::new(exe)
        .args([
            "report_setting_in_child",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
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

#[test]
fn the_purge_thread_starts() {
    flotilla::allocator::spawn_purger(Duration::from_millis(1)).expect("spawned");
    let named = || {
        common::threads::thread_names(std::process::id())
            .iter()
            .any(|name| name == "mimalloc-purge")
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !named() {
        assert!(Instant::now() < deadline, "no purge thread");
        std::thread::sleep(Duration::from_millis(5));
    }
}
