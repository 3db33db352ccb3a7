//! /metrics of `flotilla server` shows heartbeat coalescing over gRPC: between two stores,
//! the batches per heartbeat interval stay about one whether they share 16 regions or
//! 1,000, while the heartbeats folded into each batch grow with the regions. One test in
//! this binary: the metrics are the process's, shared by the playground's three stores.
//!
//! `FLOTILLA_SERVER_COALESCE_REGIONS=N` sets the larger count (default 1,000).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::prometheus::{samples, sum};
use flotilla::raft::Role;
use flotilla::server::ServerConfig;
use flotilla::server::playground::{Playground, PlaygroundOptions};
use flotilla::{RegionId, StoreId};

mod common;

fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{}", &response[..40]);
    samples(response.split_once("\r\n\r\n").unwrap().1)
}

struct Traffic {
    /// Batches per ordered store pair per heartbeat interval.
    per_pair_interval: f64,
    /// Folded heartbeats (and responses) per batch.
    per_batch: f64,
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
    let delta =
        |name: &str, labels: &[&str]| sum(&after, name, labels) - sum(&before, name, labels);
    let intervals =
        delta("flotilla_store_ticks_total", &[]) / 3.0 / base.raft.heartbeat_ticks as f64;
    assert!(intervals >= 8.0, "the timer hardly ticked: {intervals}");
    let batches = delta("flotilla_transport_rpcs_total", &["dir=\"sent\""]);
    let folded = delta(
        "flotilla_transport_heartbeats_coalesced_total",
        &["dir=\"sent\""],
    );
    let t = Traffic {
        per_pair_interval: batches / 6.0 / intervals,
        per_batch: folded / batches,
    };
    eprintln!(
        "{regions} regions over gRPC: {intervals:.0} heartbeat intervals, {batches} batches ({:.2} per store pair per interval), {folded} folded heartbeats ({:.0} per batch)",
        t.per_pair_interval, t.per_batch
    );
    t
}

#[test]
fn metrics_show_heartbeats_coalesced_per_store_pair_over_grpc() {
    let regions: usize = std::env::var("FLOTILLA_SERVER_COALESCE_REGIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let few = heartbeat_traffic(16);
    let many = heartbeat_traffic(regions);
    // The 16-region figure swings between about 1 and 3 per run (whether a tick's
    // heartbeats and the other store's answers meet in one batch), and on a loaded
    // machine a poller round of 1,000 regions can outlast the heartbeat hold (2.8 seen
    // in CI, 1.07 alone): the bound allows that, and still fails a count that follows the
    // regions (62 times as many).
    assert!(
        many.per_pair_interval <= few.per_pair_interval.max(1.0) * 3.0 + 0.5,
        "{:.2} batches per pair and interval for {regions} regions, {:.2} for 16",
        many.per_pair_interval,
        few.per_pair_interval
    );
    assert!(
        many.per_pair_interval <= 5.0,
        "{:.2}",
        many.per_pair_interval
    );
    assert!(
        many.per_batch >= few.per_batch * (regions as f64 / 16.0) / 4.0,
        "{:.0} heartbeats per batch for {regions} regions, {:.0} for 16",
        many.per_batch,
        few.per_batch
    );
}
