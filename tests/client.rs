//! The Rust client against a playground over 127.0.0.1: every operation, ones spanning
//! regions split and merged, a stale cache corrected by the typed errors (a split, a
//! leader moved), a stopped store routed around, bad input refused with its typed error.

use std::time::Duration;

use bytes::Bytes;
use flotilla::client::{CasOutcome, Client, ClientConfig, ClientError, ScanOrder};
use flotilla::region::RegionError;
use flotilla::server::ServerConfig;
use flotilla::server::playground::{Playground, PlaygroundOptions};
use flotilla::{RegionId, StoreId};
use tokio::runtime::Runtime;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A playground whose servers return at most 3 pairs per scan call, so scans span calls
/// as well as regions.
fn playground(regions: usize) -> Playground {
    let mut base = ServerConfig::default();
    base.limits.max_scan_pairs = 3;
    Playground::start(PlaygroundOptions {
        regions,
        base,
        ..PlaygroundOptions::default()
    })
    .unwrap()
}

fn b(s: &str) -> Bytes {
    Bytes::from(s.to_string())
}

fn keys(pairs: &[(Bytes, Bytes)]) -> Vec<String> {
    pairs
        .iter()
        .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
        .collect()
}

/// Keys in each of the 4 regions (split at 4000, 8000, c000).
const KEYS: [&str; 8] = ["0a", "1b", "4000", "5c", "7ff", "8a", "c0", "ff"];

#[test]
fn every_operation_works_across_regions() {
    let rt = runtime();
    let playground = playground(4);
    rt.block_on(async {
        let client = Client::connect(ClientConfig::new(playground.endpoints()))
            .await
            .unwrap();
        assert_eq!(client.stores().len(), 3);
        // Given one endpoint, a client learns the other stores from it.
        let one = Client::connect(ClientConfig::new([playground.endpoints()[0].clone()]))
            .await
            .unwrap();
        assert_eq!(one.stores().len(), 3);
        for k in KEYS {
            client.put(b(k), b(&format!("v-{k}"))).await.unwrap();
        }
        assert_eq!(client.cached_regions(), 4);
        for k in KEYS {
            assert_eq!(client.get(b(k)).await.unwrap(), Some(b(&format!("v-{k}"))));
        }
        assert_eq!(client.get(b("nothing")).await.unwrap(), None);

        // Batch get: the keys' order, absent keys left out, four regions read.
        let asked = vec![b("ff"), b("absent"), b("0a"), b("8a"), b("5c")];
        let got = client.batch_get(asked).await.unwrap();
        assert_eq!(keys(&got), ["ff", "0a", "8a", "5c"]);

        // Scans cross regions and the server's cap of 3 pairs per call.
        let all = client
            .scan(b"", b"", 100, ScanOrder::Forward)
            .await
            .unwrap();
        assert_eq!(keys(&all), KEYS);
        assert_eq!(all[3].1, b("v-5c"));
        let some = client
            .scan(b"1", b"c", 4, ScanOrder::Forward)
            .await
            .unwrap();
        assert_eq!(keys(&some), ["1b", "4000", "5c", "7ff"]);
        // Bounded by its end key, not its limit: it stops inside the region holding it.
        let bounded = client
            .scan(b"1", b"c", 100, ScanOrder::Forward)
            .await
            .unwrap();
        assert_eq!(keys(&bounded), ["1b", "4000", "5c", "7ff", "8a"]);
        let back = client
            .scan(b"", b"", 100, ScanOrder::Reverse)
            .await
            .unwrap();
        let mut reversed = KEYS.to_vec();
        reversed.reverse();
        assert_eq!(keys(&back), reversed);
        let back_some = client
            .scan(b"1", b"c0", 5, ScanOrder::Reverse)
            .await
            .unwrap();
        assert_eq!(keys(&back_some), ["8a", "7ff", "5c", "4000", "1b"]);
        assert!(
            client
                .scan(b"z", b"a", 10, ScanOrder::Forward)
                .await
                .unwrap()
                .is_empty()
        );

        // Compare-and-swap, both ways, and on an absent key.
        let cas = client
            .compare_and_swap(b("5c"), Some(b("v-5c")), Some(b("w")))
            .await
            .unwrap();
        assert_eq!(cas, CasOutcome::Swapped);
        let cas = client
            .compare_and_swap(b("5c"), Some(b("v-5c")), Some(b("x")))
            .await
            .unwrap();
        assert_eq!(cas, CasOutcome::Mismatch(Some(b("w"))));
        let cas = client
            .compare_and_swap(b("new"), None, Some(b("n")))
            .await
            .unwrap();
        assert_eq!(cas, CasOutcome::Swapped);

        client.delete(b("0a")).await.unwrap();
        assert_eq!(client.get(b("0a")).await.unwrap(), None);
        // A range delete over three regions.
        client.delete_range(b"1", b"c").await.unwrap();
        let left = client
            .scan(b"", b"", 100, ScanOrder::Forward)
            .await
            .unwrap();
        assert_eq!(keys(&left), ["c0", "ff", "new"]);

        // Bad input: typed, nothing changed.
        match client.put(b(""), b("v")).await {
            Err(ClientError::Region(RegionError::InvalidRequest { .. })) => {}
            other => panic!("an empty key: {other:?}"),
        }
        let huge = Bytes::from(vec![7u8; 5 << 20]);
        match client.put(b("c0"), huge).await {
            Err(ClientError::Region(RegionError::InvalidRequest { reason })) => {
                assert!(reason.contains("value"), "{reason}")
            }
            other => panic!("an oversized value: {other:?}"),
        }
        // Three values of 3 MiB are each fine, but not as one 9 MiB entry.
        let put = |k: &str| flotilla::proto::commandpb::Op {
            op: Some(flotilla::proto::commandpb::op::Op::Put(
                flotilla::proto::commandpb::Put {
                    key: b(k),
                    value: Bytes::from(vec![1u8; 3 << 20]),
                },
            )),
        };
        match client
            .batch_write(vec![put("c1"), put("c2"), put("c3")])
            .await
        {
            Err(ClientError::Region(RegionError::EntryTooLarge { .. })) => {}
            other => panic!("an oversized entry: {:?}", other.map(|r| r.len())),
        }
        assert_eq!(client.get(b("c1")).await.unwrap(), None);
        assert_eq!(client.get(b("c0")).await.unwrap(), Some(b("v-c0")));

        // A range delete with no end: everything from its start on.
        client.delete_range(b"f", b"").await.unwrap();
        let left = client
            .scan(b"", b"", 100, ScanOrder::Forward)
            .await
            .unwrap();
        assert_eq!(keys(&left), ["c0"]);
    });
    playground.shutdown();
}

#[test]
fn a_stale_cache_is_corrected_by_the_typed_errors() {
    let rt = runtime();
    let playground = playground(1);
    rt.block_on(async {
        let config = ClientConfig::new(playground.endpoints());
        let admin = Client::connect(config.clone()).await.unwrap();
        let stale = Client::connect(config).await.unwrap();
        for k in KEYS {
            stale.put(b(k), b(k)).await.unwrap();
        }
        // The stale client caches the single region and its leader; the admin splits it
        // and moves a leader.
        let regions = admin
            .split(RegionId(1), vec![b("4000"), b("c000")])
            .await
            .unwrap();
        assert_eq!(regions.len(), 3);
        // New regions and peers get fresh ids, each split's after the one before.
        let peer_ids = |r: &flotilla::proto::metapb::Region| -> Vec<u64> {
            let mut ids: Vec<u64> = r.peers.iter().map(|p| p.id).collect();
            ids.sort();
            ids
        };
        assert_eq!(regions[2].id, regions[1].id + 1);
        assert!(regions[1].id > 1);
        let (first, second) = (peer_ids(&regions[1]), peer_ids(&regions[2]));
        assert_eq!(first.len(), 3);
        assert_eq!(second, first.iter().map(|id| id + 3).collect::<Vec<_>>());
        assert!(first[0] > peer_ids(&regions[0])[2]);
        // A region id no store holds: a typed error at once, not a timeout.
        match admin.show_region(RegionId(999)).await {
            Err(ClientError::Region(RegionError::RegionNotFound { region })) => {
                assert_eq!(region, RegionId(999))
            }
            other => panic!("an unknown region: {other:?}"),
        }
        // A batch get over the three new regions from the client still caching one: its
        // keys are regrouped by the regions the errors teach.
        let batch = stale
            .batch_get(KEYS.iter().map(|k| b(k)).collect())
            .await
            .unwrap();
        assert_eq!(keys(&batch), KEYS);
        // Atomic writes whose keys the split put in two regions are refused, typed.
        let put = |k: &str| flotilla::proto::commandpb::Op {
            op: Some(flotilla::proto::commandpb::op::Op::Put(
                flotilla::proto::commandpb::Put {
                    key: b(k),
                    value: b("x"),
                },
            )),
        };
        match stale.batch_write(vec![put("0a"), put("ff")]).await {
            Err(ClientError::Region(RegionError::KeyNotInRegion { .. })) => {}
            other => panic!("a batch write across regions: {:?}", other.map(|r| r.len())),
        }
        let info = admin.show_region(RegionId(1)).await.unwrap();
        // The leader's own view.
        assert_eq!(info.role, flotilla::proto::adminpb::Role::Leader as i32);
        assert_eq!(info.peer, info.leader);
        let leader = info.leader.unwrap();
        let other = info
            .region
            .unwrap()
            .peers
            .into_iter()
            .find(|p| p.id != leader.id)
            .unwrap();
        admin.transfer_leader(RegionId(1), other.id).await.unwrap();
        let mut moved = false;
        for _ in 0..100 {
            let now = admin.show_region(RegionId(1)).await.unwrap();
            if now.leader.map(|l| l.id) == Some(other.id) {
                moved = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(moved, "the leadership did not move");
        // Every key, through the stale client: EpochNotMatch teaches it the new regions,
        // NotLeader the new leader.
        for k in KEYS {
            stale.put(b(k), b(&format!("again-{k}"))).await.unwrap();
        }
        assert_eq!(stale.cached_regions(), 3);
        let all = stale.scan(b"", b"", 100, ScanOrder::Forward).await.unwrap();
        assert_eq!(keys(&all), KEYS);
        assert!(
            all.iter()
                .all(|(k, v)| v == &Bytes::from(format!("again-{}", String::from_utf8_lossy(k))))
        );
    });
    playground.shutdown();
}

#[test]
fn a_stopped_store_is_routed_around_and_its_writes_are_there_when_it_returns() {
    let rt = runtime();
    let mut playground = playground(1);
    let client = rt.block_on(async {
        let client = Client::connect(ClientConfig::new(playground.endpoints()))
            .await
            .unwrap();
        client.put(b("before"), b("1")).await.unwrap();
        client
    });
    let leader = rt
        .block_on(client.show_region(RegionId(1)))
        .unwrap()
        .leader
        .unwrap();
    playground.stop_store(StoreId(leader.store_id));
    rt.block_on(async {
        // The leader's store is gone: the client finds the new leader.
        client.put(b("after"), b("2")).await.unwrap();
        assert_eq!(client.get(b("before")).await.unwrap(), Some(b("1")));
    });
    playground.restart_store(StoreId(leader.store_id)).unwrap();
    rt.block_on(async {
        client.put(b("back"), b("3")).await.unwrap();
        let all = client.scan(b"", b"", 10, ScanOrder::Forward).await.unwrap();
        assert_eq!(keys(&all), ["after", "back", "before"]);
    });
    // The returned store caught up: made the leader, it serves the write made while it
    // was away.
    rt.block_on(async {
        let region = client
            .show_region(RegionId(1))
            .await
            .unwrap()
            .region
            .unwrap();
        let returned = region
            .peers
            .iter()
            .find(|p| p.store_id == leader.store_id)
            .unwrap()
            .id;
        let mut moved = false;
        for _ in 0..100 {
            let _ = client.transfer_leader(RegionId(1), returned).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = client.show_region(RegionId(1)).await.unwrap().leader;
            if now.map(|l| l.id) == Some(returned) {
                moved = true;
                break;
            }
        }
        assert!(moved, "the returned store never took the lead");
        assert_eq!(client.get(b("after")).await.unwrap(), Some(b("2")));
    });
    playground.shutdown();
}

#[test]
fn no_reachable_endpoint_is_an_error_not_a_hang() {
    let rt = runtime();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap().to_string();
    drop(free);
    let mut config = ClientConfig::new([addr]);
    config.timeout = Duration::from_secs(2);
    match rt.block_on(Client::connect(config)) {
        Err(ClientError::Unavailable(_)) => {}
        other => panic!("connecting to nothing: {:?}", other.map(|_| ())),
    }
    match rt.block_on(Client::connect(ClientConfig::new(Vec::<String>::new()))) {
        Err(ClientError::Unavailable(_)) => {}
        other => panic!("no endpoints: {:?}", other.map(|_| ())),
    }
}

/// A peer id handed out is past every one a store reports, even one above the clock's
/// floor (a peer added with an id of the embedder's choosing).
#[test]
fn a_new_peer_id_is_past_every_peer_id_any_store_reports() {
    use flotilla::proto::adminpb::{ChangeType, PeerChange};
    use flotilla::proto::metapb::{Peer, PeerRole};
    const HIGH: u64 = 1 << 62;
    let rt = runtime();
    let playground = playground(1);
    rt.block_on(async {
        let client = Client::connect(ClientConfig::new(playground.endpoints()))
            .await
            .unwrap();
        let shown = client.show_region(RegionId(1)).await.unwrap();
        let leader = shown.peer.unwrap();
        let region = shown.region.unwrap();
        let before = client.next_peer_id().await.unwrap();
        assert!(region.peers.iter().all(|p| p.id < before), "{before}");
        let follower = *region.peers.iter().find(|p| p.id != leader.id).unwrap();
        let change = |change_type: ChangeType, peer: Peer| PeerChange {
            change_type: change_type as i32,
            peer: Some(peer),
        };
        client
            .change_peers(RegionId(1), vec![change(ChangeType::Remove, follower)])
            .await
            .unwrap();
        let high = Peer {
            id: HIGH,
            store_id: follower.store_id,
            role: PeerRole::Learner as i32,
        };
        let added = client
            .change_peers(RegionId(1), vec![change(ChangeType::AddLearner, high)])
            .await
            .unwrap();
        assert!(added.peers.iter().any(|p| p.id == HIGH), "{added:?}");
        let next = client.next_peer_id().await.unwrap();
        assert!(next > HIGH, "{next}");
    });
    playground.shutdown();
}

/// Stores gone after the client learned them: a look-up that reaches none ends at the
/// deadline with the last store's failure, and a region id no store could be asked about
/// is not reported as one that does not exist.
#[test]
fn stores_gone_after_connecting_end_at_the_deadline_not_in_a_false_answer() {
    let rt = runtime();
    let playground = playground(1);
    let endpoints = playground.endpoints();
    let mut config = ClientConfig::new(endpoints.clone());
    config.timeout = Duration::from_secs(1);
    let client = rt.block_on(Client::connect(config)).unwrap();
    assert_eq!(client.cached_regions(), 0);
    playground.shutdown();
    rt.block_on(async {
        match client.get(b("k")).await {
            Err(ClientError::DeadlineExceeded { last, .. }) => assert!(
                endpoints.iter().any(|e| last.contains(e.as_str())),
                "the last failure names no store: {last}"
            ),
            other => panic!("a key no store could be asked about: {other:?}"),
        }
        match client.show_region(RegionId(1)).await {
            Err(ClientError::DeadlineExceeded { .. }) => {}
            other => panic!("a region no store could be asked about: {other:?}"),
        }
    });
}

/// A store stopped gracefully under load: the writes it took commit before it goes,
/// the calls it refuses meanwhile go elsewhere, and no client sees an error.
#[test]
fn a_graceful_stop_under_load_fails_no_request() {
    let rt = runtime();
    let mut playground = playground(1);
    let client = rt
        .block_on(Client::connect(ClientConfig::new(playground.endpoints())))
        .unwrap();
    rt.block_on(client.put(b("warm"), b("up"))).unwrap();
    let leader = rt
        .block_on(client.show_region(RegionId(1)))
        .unwrap()
        .leader
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|i| {
            let (client, stop) = (client.clone(), stop.clone());
            rt.spawn(async move {
                let mut done = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let key = b(&format!("k{i}-{}", done % 10));
                    client.put(key.clone(), b(&done.to_string())).await?;
                    client.get(key).await?;
                    done += 1;
                }
                Ok::<u64, ClientError>(done)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    playground.stop_store(StoreId(leader.store_id));
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let done: u64 = rt.block_on(async {
        let mut total = 0;
        for task in load {
            total += task.await.unwrap().expect("no request fails");
        }
        total
    });
    assert!(done > 0);
    playground.shutdown();
}

#[test]
fn a_bench_counts_what_it_did_and_what_failed() {
    use flotilla::client::bench::{self, BenchOptions, KeyDistribution, Mix};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    let rt = runtime();
    let playground = playground(1);
    // A deadline a loaded machine cannot miss while the cluster runs; a short one for the
    // run after it is gone (connected now, while it answers).
    let mut config = ClientConfig::new(playground.endpoints());
    config.timeout = Duration::from_secs(30);
    config.rpc_timeout = Duration::from_secs(30);
    let client = rt.block_on(Client::connect(config.clone())).unwrap();
    config.timeout = Duration::from_millis(200);
    config.rpc_timeout = Duration::from_millis(200);
    let impatient = rt.block_on(Client::connect(config)).unwrap();
    let options = BenchOptions {
        clients: 2,
        duration: Duration::from_secs(1),
        keys: 1_000,
        value_bytes: 16,
        mix: Mix::parse("cas=100").unwrap(),
        distribution: KeyDistribution::Uniform,
        seed: 1,
    };
    // Compare-and-swaps expecting a value no key has: every one finds another.
    let done = Arc::new(AtomicU64::new(0));
    let report = rt.block_on(bench::run(client.clone(), options.clone(), done.clone()));
    assert!(report.ops > 0);
    assert_eq!(report.errors, 0, "{:?}", report.first_error);
    assert_eq!(done.load(Ordering::Relaxed), report.ops);
    assert_eq!(
        (report.cas.count, report.cas_mismatches, report.all.count),
        (report.ops, report.ops, report.ops)
    );
    assert_eq!((report.reads.count, report.writes.count), (0, 0));
    assert_eq!(
        report.ops_per_sec,
        report.ops as f64 / report.seconds,
        "{report:?}"
    );

    // With the cluster gone, every operation fails after the client's deadline, counted.
    playground.shutdown();
    let one_client = BenchOptions {
        clients: 1,
        ..options
    };
    let report = rt.block_on(bench::run(impatient, one_client, Arc::default()));
    assert_eq!(report.ops, 0);
    assert!(report.errors >= 2, "{report:?}");
    assert!(report.first_error.is_some());
}
