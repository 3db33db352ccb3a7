//! /metrics of `flotilla server` shows heartbeat coalescing over gRPC: between two stores,
//! the batches per heartbeat interval stay about one whether they share 16 regions or
//! 1,000, while the heartbeats folded into each batch grow with the regions. One test in
//! this binary: the metrics are the process's, shared by the playground's three stores.
//!
//! `FLOTILLA_SERVER_COALESCE_REGIONS=N` sets the larger count (default 1,000).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::prometheus::{Traffic, assert_coalesced, samples};
use flotilla::raft::Role;
use flotilla::server::ServerConfig;
use flotilla::server::playground::{Playground, PlaygroundOptions};
use flotilla::{RegionId, StoreId};

mod common;

fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let (code, body) = common::http::get(addr, "/metrics");
    assert_eq!(code, 200);
    samples(&body)
}

/// A playground of `regions` regions, all awake (hibernation off, so every region
/// heartbeats at the default timing): its traffic over a quiet window, from /metrics.
fn heartbeat_traffic(regions: usize) -> Traffic {
    let mut base = ServerConfig::default();
    base.hibernation.idle_ticks = 0;
    let playground = Playground::start(PlaygroundOptions {
        regions,
        base: base.clone(),
        ..PlaygroundOptions::default()
    })
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !(1..=regions as u64).all(|r| {
        playground.nodes().any(|n| {
            n.store()
                .region_status(RegionId(r))
                .wait()
                .is_ok_and(|st| st.role == Role::Leader)
        })
    }) {
        assert!(
            std::time::Instant::now() < deadline,
            "regions without a leader"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let status = playground.node(StoreId(1)).unwrap().status_addr();
    let before = scrape(status);
    std::thread::sleep(Duration::from_secs(2));
    let after = scrape(status);
    playground.shutdown();
    let what = format!("{regions} regions over gRPC");
    Traffic::between(&before, &after, base.raft.heartbeat_ticks, &what)
}

#[test]
fn metrics_show_heartbeats_coalesced_per_store_pair_over_grpc() {
    let regions: usize = std::env::var("FLOTILLA_SERVER_COALESCE_REGIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let few = heartbeat_traffic(16);
    let many = heartbeat_traffic(regions);
    assert_coalesced(&few, &many, regions as u64);
}
