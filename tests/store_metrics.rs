//! The store's metrics, read the way Prometheus would: a recorder installed for this test
//! binary renders the text exposition, and the tests read values from it. One test at a
//! time (the recorder is the process's).
//!
//! `FLOTILLA_COALESCE_REGIONS=N` runs the heartbeat-coalescing test with N regions
//! (default 1,000; the figure is 10,000).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use common::prometheus::{Traffic, assert_coalesced, sum};
use flotilla::StoreId;
use flotilla::store::{RaftSettings, ReadRequest, StoreConfig};
use flotilla::testkit::cluster::*;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

mod common;

fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        PrometheusBuilder::new()
            .install_recorder()
            .expect("the test binary's recorder")
    })
}

/// The tests share the process's recorder: one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every sample of the exposition.
fn samples() -> HashMap<String, f64> {
    common::prometheus::samples(&handle().render())
}

#[test]
fn the_store_reports_its_work_in_metrics() {
    let _serial = serial();
    handle();
    let c = Cluster::start(3);
    let regions = c.split_first_region(10, |i| format!("r{i:05}"));
    for r in &regions {
        c.wait_leader(*r);
    }
    c.must_put(regions[3], b"r00003-k", b"v");
    c.must_read(
        regions[3],
        ReadRequest::Get {
            key: Bytes::from_static(b"r00003-k"),
        },
    );
    wait_until("every region sleeps", || {
        c.running().all(|s| s.ticking_regions() == 0)
    });
    let m = samples();
    for name in [
        "flotilla_store_poll_batch_fsms",
        "flotilla_store_poll_duration_seconds",
        "flotilla_store_mailbox_depth",
        "flotilla_wal_write_batch_regions",
        "flotilla_wal_write_batch_bytes",
        "flotilla_wal_fsync_duration_seconds",
        "flotilla_apply_batch_entries",
        "flotilla_apply_duration_seconds",
    ] {
        assert!(
            sum(&m, &format!("{name}_count"), &[]) > 0.0,
            "{name} recorded nothing"
        );
    }
    let positive = |name: &str, labels: &[&str]| {
        assert!(sum(&m, name, labels) > 0.0, "{name}{labels:?} is 0");
    };
    positive("flotilla_wal_fsyncs_total", &[]);
    positive("flotilla_wal_writes_total", &[]);
    positive(
        "flotilla_store_requests_total",
        &["request=\"write\"", "outcome=\"ok\""],
    );
    positive(
        "flotilla_store_requests_total",
        &["request=\"read\"", "outcome=\"ok\""],
    );
    positive(
        "flotilla_store_requests_total",
        &["request=\"split\"", "outcome=\"ok\""],
    );
    positive("flotilla_raft_proposals_total", &[]);
    positive("flotilla_store_read_index_requests_total", &[]);
    positive("flotilla_store_read_index_rounds_total", &[]);
    positive("flotilla_transport_rpcs_total", &["dir=\"sent\""]);
    positive("flotilla_transport_rpcs_total", &["dir=\"received\""]);
    positive("flotilla_transport_messages_total", &["dir=\"sent\""]);
    positive(
        "flotilla_transport_heartbeats_coalesced_total",
        &["dir=\"received\""],
    );
    positive("flotilla_store_ticks_total", &[]);
    positive("flotilla_store_region_sleeps_total", &[]);
    // Regions by role and hibernation: every replica counted once, each region led once.
    assert_eq!(sum(&m, "flotilla_store_regions", &[]), 30.0);
    assert_eq!(
        sum(
            &m,
            "flotilla_store_regions",
            &["role=\"leader\"", "hibernated=\"true\""]
        ),
        10.0
    );
    assert_eq!(
        sum(&m, "flotilla_store_regions", &["hibernated=\"true\""]),
        30.0
    );
    // Each store watches the two others, live.
    assert_eq!(
        sum(&m, "flotilla_store_peer_stores", &["state=\"live\""]),
        6.0
    );
    assert_eq!(
        sum(&m, "flotilla_store_peer_stores", &["state=\"down\""]),
        0.0
    );
    drop(c);
    let m = samples();
    assert_eq!(
        sum(&m, "flotilla_store_regions", &[]),
        0.0,
        "stopped stores count no region"
    );
}

/// `regions` regions on three stores, all awake (hibernation off, so every region
/// heartbeats): the traffic between the stores once they settle.
fn heartbeat_traffic(regions: u64) -> Traffic {
    let config = |s: StoreId| {
        // The default timing (100 ms ticks, heartbeats held up to 50 ms).
        let mut cfg: StoreConfig = test_config(s);
        cfg.raft = RaftSettings::default();
        cfg.hibernation.idle_ticks = None;
        cfg
    };
    let c = Cluster::start_with(3, config);
    let ids = c.split_first_region(regions, |i| format!("r{i:05}"));
    wait_until("every region has a leader", || {
        ids.iter().all(|&r| {
            c.running().any(|s| {
                answer(s.region_status(r)).is_ok_and(|st| st.role == flotilla::raft::Role::Leader)
            })
        })
    });
    // Let elections and catch-up traffic settle, then measure a quiet window.
    std::thread::sleep(Duration::from_millis(500));
    let before = samples();
    std::thread::sleep(Duration::from_secs(2));
    let after = samples();
    let heartbeat_ticks = config(StoreId(1)).raft.heartbeat_ticks;
    Traffic::between(
        &before,
        &after,
        heartbeat_ticks,
        &format!("{regions} regions"),
    )
}

/// Many regions' heartbeats between two stores travel folded, in about one batch each way
/// per heartbeat interval whatever the region count: the batches do not grow with the
/// regions, the heartbeats per batch do. (The raft poller holds plain heartbeats and
/// responses up to `heartbeat_hold` so that a tick's — and the answers to the other
/// store's — leave together.)
#[test]
fn heartbeats_of_many_regions_share_a_batch_per_store_pair() {
    let _serial = serial();
    handle();
    let regions: u64 = std::env::var("FLOTILLA_COALESCE_REGIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let few = heartbeat_traffic(16);
    let many = heartbeat_traffic(regions);
    assert_coalesced(&few, &many, regions);
}
