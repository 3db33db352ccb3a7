//! The KV and admin services over gRPC on 127.0.0.1: every operation through the
//! leader's service, every region-level failure answered as its typed error with nothing
//! changed, routing as each store knows it, and the admin changes a leader can make.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use flotilla::proto::adminpb::{self, admin_client::AdminClient};
use flotilla::proto::commandpb::SplitRequest;
use flotilla::proto::commandpb::{self, op};
use flotilla::proto::kvpb::kv_client::KvClient;
use flotilla::proto::kvpb::{self, op_result, region_error::Error as Kind};
use flotilla::proto::metapb::RegionEpoch;
use flotilla::raft::Role;
use flotilla::server::{AdminService, KvService};
use flotilla::storage::mem_kv::MemKvEngine;
use flotilla::storage::mem_log::MemRaftLog;
use flotilla::store::{Engines, InProcessNetwork, RunMode, Store, StoreConfig, bootstrap_region};
use flotilla::testkit::cluster::first_region;
use flotilla::{RegionId, StoreId};
use tokio::runtime::Runtime;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Channel;

const PATIENCE: Duration = Duration::from_secs(30);
const MAX_SCAN: usize = 5;

struct Cluster {
    rt: Runtime,
    stores: Vec<Arc<Store>>,
    addrs: Vec<SocketAddr>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let net = InProcessNetwork::new(1);
        let mut stores = Vec::new();
        let mut addrs = Vec::new();
        for id in 1..=3u64 {
            let engines = Engines::new(
                Arc::new(MemRaftLog::new()),
                Arc::new(MemKvEngine::new()),
                dir.path().join(format!("snap-{id}")),
            );
            bootstrap_region(&engines, &first_region(3)).unwrap();
            let store = Arc::new(
                Store::open(
                    StoreConfig::new(StoreId(id)),
                    engines,
                    Arc::new(net.clone()),
                    RunMode::Threads,
                )
                .unwrap(),
            );
            net.register(StoreId(id), store.receiver());
            let listener = rt
                .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .unwrap();
            addrs.push(listener.local_addr().unwrap());
            rt.spawn(
                tonic::transport::Server::builder()
                    .add_service(KvService::new(store.clone(), MAX_SCAN).into_server())
                    .add_service(AdminService::new(store.clone()).into_server())
                    .serve_with_incoming(TcpListenerStream::new(listener)),
            );
            stores.push(store);
        }
        Cluster {
            rt,
            stores,
            addrs,
            _dir: dir,
        }
    }

    /// The leader's index and the region's epoch.
    fn leader(&self, region: RegionId) -> (usize, RegionEpoch) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            for (i, s) in self.stores.iter().enumerate() {
                if let Ok(st) = s.region_status(region).wait()
                    && st.role == Role::Leader
                {
                    return (i, st.region.epoch.unwrap());
                }
            }
            assert!(Instant::now() < deadline, "no leader for {region}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn client(&self, store: usize) -> KvClient<Channel> {
        self.rt
            .block_on(KvClient::connect(format!("http://{}", self.addrs[store])))
            .unwrap()
    }

    fn admin(&self, store: usize) -> AdminClient<Channel> {
        self.rt
            .block_on(AdminClient::connect(format!(
                "http://{}",
                self.addrs[store]
            )))
            .unwrap()
    }
}

fn ctx(region: u64, epoch: RegionEpoch) -> Option<kvpb::Context> {
    Some(kvpb::Context {
        region_id: region,
        region_epoch: Some(epoch),
    })
}

fn b(s: &str) -> Bytes {
    Bytes::from(s.to_string())
}

fn kind(e: Option<kvpb::RegionError>) -> Kind {
    e.expect("a region error").error.expect("its kind")
}

#[test]
fn every_operation_through_the_leaders_service() {
    let c = Cluster::start();
    let (leader, epoch) = c.leader(RegionId(1));
    let mut kv = c.client(leader);
    let rt = &c.rt;
    for (k, v) in [
        ("a", "1"),
        ("b", "2"),
        ("c", "3"),
        ("d", "4"),
        ("e", "5"),
        ("f", "6"),
    ] {
        let r = rt
            .block_on(kv.put(kvpb::PutRequest {
                context: ctx(1, epoch),
                key: b(k),
                value: b(v),
            }))
            .unwrap()
            .into_inner();
        assert_eq!(r.region_error, None);
    }
    let get = |kv: &mut KvClient<Channel>, key: &str| {
        rt.block_on(kv.get(kvpb::GetRequest {
            context: ctx(1, epoch),
            key: b(key),
        }))
        .unwrap()
        .into_inner()
    };
    let got = get(&mut kv, "b");
    assert!(got.found && got.value == b("2") && got.region_error.is_none());
    let missing = get(&mut kv, "zz");
    assert!(!missing.found && missing.value.is_empty());

    let batch = rt
        .block_on(kv.batch_get(kvpb::BatchGetRequest {
            context: ctx(1, epoch),
            keys: vec![b("c"), b("nope"), b("a")],
        }))
        .unwrap()
        .into_inner();
    let keys: Vec<_> = batch.pairs.iter().map(|p| p.key.clone()).collect();
    assert_eq!(keys, vec![b("c"), b("a")], "found keys, in the order asked");

    let scan = |kv: &mut KvClient<Channel>, limit: u32, reverse: bool| {
        rt.block_on(kv.scan(kvpb::ScanRequest {
            context: ctx(1, epoch),
            start_key: b("b"),
            end_key: b("e"),
            limit,
            reverse,
        }))
        .unwrap()
        .into_inner()
        .pairs
        .into_iter()
        .map(|p| p.key)
        .collect::<Vec<_>>()
    };
    assert_eq!(scan(&mut kv, 2, false), vec![b("b"), b("c")]);
    assert_eq!(scan(&mut kv, 0, true), vec![b("d"), b("c"), b("b")]);
    // No limit asked: the server's maximum bounds it.
    let all = rt
        .block_on(kv.scan(kvpb::ScanRequest {
            context: ctx(1, epoch),
            limit: 0,
            ..Default::default()
        }))
        .unwrap()
        .into_inner();
    assert_eq!(all.pairs.len(), MAX_SCAN);

    let cas = |kv: &mut KvClient<Channel>, expected: Option<&str>, new: Option<&str>| {
        rt.block_on(kv.compare_and_swap(kvpb::CompareAndSwapRequest {
            context: ctx(1, epoch),
            key: b("a"),
            expected: expected.map(b),
            new_value: new.map(b),
        }))
        .unwrap()
        .into_inner()
    };
    let lost = cas(&mut kv, Some("wrong"), Some("x"));
    assert!(!lost.swapped && lost.current == Some(b("1")));
    let won = cas(&mut kv, Some("1"), Some("x"));
    assert!(won.swapped && won.current.is_none());
    assert_eq!(get(&mut kv, "a").value, b("x"));

    let ops = vec![
        commandpb::Op {
            op: Some(op::Op::Put(commandpb::Put {
                key: b("g"),
                value: b("7"),
            })),
        },
        commandpb::Op {
            op: Some(op::Op::CompareAndSwap(commandpb::CompareAndSwap {
                key: b("g"),
                expected: Some(b("7")),
                new_value: Some(b("8")),
            })),
        },
        commandpb::Op {
            op: Some(op::Op::CompareAndSwap(commandpb::CompareAndSwap {
                key: b("b"),
                expected: None,
                new_value: Some(b("never")),
            })),
        },
        commandpb::Op {
            op: Some(op::Op::Delete(commandpb::Delete { key: b("f") })),
        },
    ];
    let written = rt
        .block_on(kv.batch_write(kvpb::BatchWriteRequest {
            context: ctx(1, epoch),
            ops,
        }))
        .unwrap()
        .into_inner();
    let results: Vec<_> = written
        .results
        .into_iter()
        .map(|r| r.result.unwrap())
        .collect();
    assert_eq!(
        results,
        vec![
            op_result::Result::Done(kvpb::Done {}),
            op_result::Result::Swapped(kvpb::Done {}),
            op_result::Result::Mismatch(kvpb::Mismatch {
                current: Some(b("2"))
            }),
            op_result::Result::Done(kvpb::Done {}),
        ]
    );
    assert_eq!(get(&mut kv, "g").value, b("8"));
    assert!(!get(&mut kv, "f").found);

    let deleted = rt
        .block_on(kv.delete(kvpb::DeleteRequest {
            context: ctx(1, epoch),
            key: b("g"),
        }))
        .unwrap()
        .into_inner();
    assert_eq!(deleted.region_error, None);
    assert!(!get(&mut kv, "g").found);
    let ranged = rt
        .block_on(kv.delete_range(kvpb::DeleteRangeRequest {
            context: ctx(1, epoch),
            start_key: b("b"),
            end_key: b("d"),
        }))
        .unwrap()
        .into_inner();
    assert_eq!(ranged.region_error, None);
    assert_eq!(scan(&mut kv, 0, false), vec![b("d")]);
}

#[test]
fn region_failures_come_back_typed_and_change_nothing() {
    let c = Cluster::start();
    let region = RegionId(1);
    let (leader, epoch) = c.leader(region);
    let rt = &c.rt;
    let mut kv = c.client(leader);
    let put = |kv: &mut KvClient<Channel>, context, key: &str| {
        rt.block_on(kv.put(kvpb::PutRequest {
            context,
            key: b(key),
            value: b("v"),
        }))
        .unwrap()
        .into_inner()
    };
    assert_eq!(put(&mut kv, ctx(1, epoch), "m").region_error, None);
    // Split at "m": the old epoch is stale, and the region now ends at "m".
    let (split, _) = {
        let splits = vec![SplitRequest {
            split_key: b"m".to_vec().into(),
            new_region_id: 2,
            new_peer_ids: vec![21, 22, 23],
        }];
        let r = c.stores[leader]
            .split(region, epoch, splits)
            .wait()
            .unwrap();
        (r, ())
    };
    let new_epoch = split.regions[0].epoch.unwrap();

    match kind(put(&mut kv, ctx(1, epoch), "a").region_error) {
        Kind::EpochNotMatch(e) => {
            // The region now holding the key, at its new epoch.
            let current = &e.current_regions[0];
            assert_eq!(current.id, 1);
            assert!(current.epoch.unwrap().version > epoch.version);
        }
        other => panic!("expected EpochNotMatch, got {other:?}"),
    }
    match kind(put(&mut kv, ctx(1, new_epoch), "z").region_error) {
        Kind::KeyNotInRegion(k) => {
            assert_eq!((k.key, k.region_id, k.end_key), (b("z"), 1, b("m")));
        }
        other => panic!("expected KeyNotInRegion, got {other:?}"),
    }
    assert!(matches!(
        kind(put(&mut kv, ctx(99, new_epoch), "a").region_error),
        Kind::RegionNotFound(kvpb::RegionNotFound { region_id: 99 })
    ));
    assert!(matches!(
        kind(put(&mut kv, ctx(1, new_epoch), "").region_error),
        Kind::InvalidRequest(_)
    ));
    assert!(matches!(
        kind(put(&mut kv, None, "a").region_error),
        Kind::InvalidRequest(_)
    ));
    let follower = (leader + 1) % 3;
    let mut on_follower = c.client(follower);
    match kind(put(&mut on_follower, ctx(1, new_epoch), "a").region_error) {
        Kind::NotLeader(n) => {
            let leader_peer = n.leader.expect("the follower knows its leader");
            assert_eq!(leader_peer.store_id, leader as u64 + 1);
        }
        other => panic!("expected NotLeader, got {other:?}"),
    }
    let read_on_follower = rt
        .block_on(on_follower.get(kvpb::GetRequest {
            context: ctx(1, new_epoch),
            key: b("m"),
        }))
        .unwrap()
        .into_inner();
    assert!(matches!(
        kind(read_on_follower.region_error),
        Kind::NotLeader(_)
    ));
    assert!(!read_on_follower.found, "no data with an error");

    // Nothing of the refused writes landed.
    let scan = rt
        .block_on(kv.scan(kvpb::ScanRequest {
            context: ctx(1, new_epoch),
            ..Default::default()
        }))
        .unwrap()
        .into_inner();
    assert_eq!(scan.region_error, None);
    assert!(scan.pairs.is_empty(), "{:?}", scan.pairs);
}

#[test]
fn routes_as_the_store_knows_them() {
    let c = Cluster::start();
    let (leader, epoch) = c.leader(RegionId(1));
    c.stores[leader]
        .split(
            RegionId(1),
            epoch,
            vec![SplitRequest {
                split_key: b"m".to_vec().into(),
                new_region_id: 2,
                new_peer_ids: vec![21, 22, 23],
            }],
        )
        .wait()
        .unwrap();
    c.leader(RegionId(2));
    let mut kv = c.client(leader);
    let route =
        c.rt.block_on(kv.route(kvpb::RouteRequest { key: b("q") }))
            .unwrap()
            .into_inner()
            .route
            .expect("a region holds q");
    let region = route.region.unwrap();
    assert_eq!((region.id, region.start_key.as_slice()), (2, &b"m"[..]));
    let ranges =
        c.rt.block_on(kv.route_range(kvpb::RouteRangeRequest {
            start_key: b("a"),
            end_key: Bytes::new(),
        }))
        .unwrap()
        .into_inner()
        .routes;
    let ids: Vec<u64> = ranges
        .iter()
        .map(|r| r.region.as_ref().unwrap().id)
        .collect();
    assert_eq!(ids, vec![1, 2], "in key order");
    let only_first =
        c.rt.block_on(kv.route_range(kvpb::RouteRangeRequest {
            start_key: b("a"),
            end_key: b("m"),
        }))
        .unwrap()
        .into_inner()
        .routes;
    assert_eq!(only_first.len(), 1);
    // The leader of region 1 is known on its own store.
    assert!(only_first[0].leader.is_some());
}

#[test]
fn admin_lists_splits_moves_leadership_and_changes_peers() {
    let c = Cluster::start();
    let (leader, epoch) = c.leader(RegionId(1));
    let rt = &c.rt;
    let mut admin = c.admin(leader);
    let listed = rt
        .block_on(admin.list_regions(adminpb::ListRegionsRequest {}))
        .unwrap()
        .into_inner()
        .regions;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].role, adminpb::Role::Leader as i32);

    let split = rt
        .block_on(admin.split(adminpb::SplitRequest {
            context: ctx(1, epoch),
            splits: vec![adminpb::SplitKey {
                split_key: b("m"),
                new_region_id: 2,
                new_peer_ids: vec![21, 22, 23],
            }],
        }))
        .unwrap()
        .into_inner();
    assert_eq!(split.region_error, None);
    let ids: Vec<u64> = split.regions.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![1, 2]);
    // The old epoch is stale now: the same split again is refused, typed.
    let again = rt
        .block_on(admin.split(adminpb::SplitRequest {
            context: ctx(1, epoch),
            splits: vec![adminpb::SplitKey {
                split_key: b("t"),
                new_region_id: 3,
                new_peer_ids: vec![31, 32, 33],
            }],
        }))
        .unwrap()
        .into_inner();
    assert!(matches!(kind(again.region_error), Kind::EpochNotMatch(_)));

    let shown = rt
        .block_on(admin.show_region(adminpb::ShowRegionRequest { region_id: 2 }))
        .unwrap()
        .into_inner();
    let info = shown.info.expect("region 2 is here");
    assert_eq!(info.region.unwrap().start_key, b("m").to_vec());
    let missing = rt
        .block_on(admin.show_region(adminpb::ShowRegionRequest { region_id: 77 }))
        .unwrap()
        .into_inner();
    assert!(matches!(
        kind(missing.region_error),
        Kind::RegionNotFound(_)
    ));

    // Leadership of region 1 moves to another store's peer.
    let epoch = split.regions[0].epoch.unwrap();
    let target = split.regions[0]
        .peers
        .iter()
        .find(|p| p.store_id != leader as u64 + 1)
        .copied()
        .unwrap();
    let moved = rt
        .block_on(admin.transfer_leader(adminpb::TransferLeaderRequest {
            context: ctx(1, epoch),
            to_peer_id: target.id,
        }))
        .unwrap()
        .into_inner();
    assert_eq!(moved.region_error, None);
    let (new_leader, _) = {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let (l, e) = c.leader(RegionId(1));
            if l as u64 + 1 == target.store_id {
                break (l, e);
            }
            assert!(Instant::now() < deadline, "leadership did not move");
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    // Membership: remove a follower, then add it back as a learner and promote it.
    let mut admin = c.admin(new_leader);
    let region = c.stores[new_leader].region(RegionId(1)).unwrap();
    let follower = *region.peers.iter().find(|p| p.id != target.id).unwrap();
    // Each change names the epoch the one before it answered with.
    let change =
        |admin: &mut AdminClient<Channel>, epoch: RegionEpoch, t: adminpb::ChangeType, peer| {
            rt.block_on(admin.change_peers(adminpb::ChangePeersRequest {
                context: ctx(1, epoch),
                changes: vec![adminpb::PeerChange {
                    change_type: t as i32,
                    peer: Some(peer),
                }],
            }))
            .unwrap()
            .into_inner()
        };
    let epoch = region.epoch.unwrap();
    let removed = change(&mut admin, epoch, adminpb::ChangeType::Remove, follower);
    assert_eq!(removed.region_error, None);
    let after_removal = removed.region.unwrap();
    assert_eq!(after_removal.peers.len(), 2);
    let comeback = flotilla::proto::metapb::Peer {
        id: 40,
        store_id: follower.store_id,
        role: flotilla::proto::metapb::PeerRole::Learner as i32,
    };
    let added = change(
        &mut admin,
        after_removal.epoch.unwrap(),
        adminpb::ChangeType::AddLearner,
        comeback,
    );
    assert_eq!(added.region_error, None);
    let promoted = change(
        &mut admin,
        added.region.unwrap().epoch.unwrap(),
        adminpb::ChangeType::AddVoter,
        comeback,
    );
    assert_eq!(promoted.region_error, None);
    let after = promoted.region.unwrap();
    assert_eq!(after.peers.len(), 3);
    assert!(
        after
            .peers
            .iter()
            .any(|p| p.id == 40 && p.role == flotilla::proto::metapb::PeerRole::Voter as i32)
    );
    // A change of no known type is refused and changes nothing.
    let bad = change(
        &mut admin,
        after.epoch.unwrap(),
        adminpb::ChangeType::Unspecified,
        comeback,
    );
    assert!(matches!(kind(bad.region_error), Kind::InvalidRequest(_)));

    let status = rt
        .block_on(admin.store_status(adminpb::StoreStatusRequest {}))
        .unwrap()
        .into_inner();
    assert_eq!(status.store_id, new_leader as u64 + 1);
    assert_eq!(status.regions, 2);
    assert!(status.leaders >= 1);
    assert!(status.failure.is_empty());

    // Declared, not built: placement's operations.
    let merge = rt
        .block_on(admin.merge(adminpb::MergeRequest {
            source_region_id: 2,
            target_region_id: 1,
        }))
        .unwrap_err();
    assert_eq!(merge.code(), tonic::Code::Unimplemented);
    let move_peer = rt
        .block_on(admin.move_peer(adminpb::MovePeerRequest {
            region_id: 1,
            from_store_id: 1,
            to_store_id: 2,
        }))
        .unwrap_err();
    assert_eq!(move_peer.code(), tonic::Code::Unimplemented);
    let rebalance = rt
        .block_on(admin.rebalance(adminpb::RebalanceRequest {}))
        .unwrap_err();
    assert_eq!(rebalance.code(), tonic::Code::Unimplemented);
}

/// Sends raw bytes as the body of a gRPC call: what a broken or hostile client could send.
mod raw {
    use bytes::{Buf, BufMut, Bytes};
    use tonic::Status;
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    #[derive(Default)]
    pub struct RawCodec;

    pub struct RawEncoder;
    pub struct RawDecoder;

    impl Codec for RawCodec {
        type Encode = Bytes;
        type Decode = Bytes;
        type Encoder = RawEncoder;
        type Decoder = RawDecoder;
        fn encoder(&mut self) -> RawEncoder {
            RawEncoder
        }
        fn decoder(&mut self) -> RawDecoder {
            RawDecoder
        }
    }

    impl Encoder for RawEncoder {
        type Item = Bytes;
        type Error = Status;
        fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
            dst.put(item);
            Ok(())
        }
    }

    impl Decoder for RawDecoder {
        type Item = Bytes;
        type Error = Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
            Ok(Some(src.copy_to_bytes(src.remaining())))
        }
    }
}

/// Malformed and oversized input reaches the KV service: each call is refused with an
/// error naming it (a typed region error where the request could be read), nothing is
/// written, and the server goes on serving.
#[test]
fn malformed_and_oversized_requests_are_refused_and_the_server_goes_on() {
    let c = Cluster::start();
    let (leader, epoch) = c.leader(RegionId(1));
    let rt = &c.rt;
    let channel = rt
        .block_on(
            tonic::transport::Endpoint::from_shared(format!("http://{}", c.addrs[leader]))
                .unwrap()
                .connect(),
        )
        .unwrap();
    let raw_call = |body: Bytes| {
        rt.block_on(async {
            let mut grpc = tonic::client::Grpc::new(channel.clone());
            grpc.ready().await.unwrap();
            let path = tonic::codegen::http::uri::PathAndQuery::from_static("/kvpb.Kv/Put");
            grpc.unary(tonic::Request::new(body), path, raw::RawCodec)
                .await
        })
    };
    // Not protobuf at all; a field of the wrong wire type; a length running past the end.
    for garbage in [
        Bytes::from_static(&[0xff; 16]),
        Bytes::from_static(&[0x12, 0x05, b'a']),
        Bytes::from_static(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]),
    ] {
        let status = raw_call(garbage).expect_err("garbage decoded");
        assert_ne!(status.code(), tonic::Code::Ok);
    }
    let mut kv = c.client(leader);
    let put = |kv: &mut KvClient<Channel>, key: Bytes, value: Bytes| {
        rt.block_on(kv.put(kvpb::PutRequest {
            context: ctx(1, epoch),
            key,
            value,
        }))
    };
    // A key past the limit (8 KiB) and a value past its own are typed, not written.
    let long_key = Bytes::from(vec![b'k'; 9 << 10]);
    let answer = put(&mut kv, long_key.clone(), b("v")).unwrap().into_inner();
    assert!(matches!(kind(answer.region_error), Kind::InvalidRequest(_)));
    let answer = put(&mut kv, b("big"), Bytes::from(vec![0; 5 << 20]))
        .unwrap()
        .into_inner();
    assert!(matches!(kind(answer.region_error), Kind::InvalidRequest(_)));
    // A message past what the server decodes (64 MiB) is refused by the transport layer.
    let status = put(&mut kv, b("huge"), Bytes::from(vec![0; 65 << 20])).expect_err("decoded");
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status}");
    // Still serving, and none of it landed.
    assert_eq!(
        put(&mut kv, b("after"), b("ok"))
            .unwrap()
            .into_inner()
            .region_error,
        None
    );
    let scan = rt
        .block_on(kv.scan(kvpb::ScanRequest {
            context: ctx(1, epoch),
            ..Default::default()
        }))
        .unwrap()
        .into_inner();
    let keys: Vec<Bytes> = scan.pairs.into_iter().map(|p| p.key).collect();
    assert_eq!(keys, vec![b("after")]);
}
