//! `flotilla server` as a whole, on 127.0.0.1: nodes on disk engines bootstrapping a
//! cluster, a restart resuming its data, data directories of another store or cluster
//! refused, the status HTTP server (/health, /status, /metrics), gRPC reflection, the
//! playground, and the binary's configuration errors and signal handling.

use std::io::{BufRead, BufReader, Lines};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flotilla::proto::commandpb::{Op, Put, WriteCommand, op};
use flotilla::raft::Role;
use flotilla::region::{DroppedReason, RegionError};
use flotilla::server::playground::{Playground, PlaygroundOptions, split_key};
use flotilla::server::{IDENTITY_FILE, Node, NodeError, ServerConfig};
use flotilla::store::{ReadRequest, ReadResponse};
use flotilla::testkit::cluster::{PATIENCE, wait_until};
use flotilla::{RegionId, StoreId};

mod common;

fn one_store_config(dir: &Path) -> ServerConfig {
    // The listen address is taken from a listener bound first (port 0 is refused as an
    // initial store's address by nothing, but peers could not reach it).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    ServerConfig {
        store_id: 1,
        data_dir: dir.to_path_buf(),
        listen_addr: addr.to_string(),
        status_addr: "127.0.0.1:0".into(),
        initial_stores: format!("1={addr}"),
        ..ServerConfig::default()
    }
}

fn put(key: &str, value: &str) -> WriteCommand {
    WriteCommand {
        ops: vec![Op {
            op: Some(op::Op::Put(Put {
                key: Bytes::from(key.to_string()),
                value: Bytes::from(value.to_string()),
            })),
        }],
    }
}

fn leader_epoch(node: &Node, region: RegionId) -> flotilla::proto::metapb::RegionEpoch {
    let mut epoch = None;
    wait_until("the region's leader", || {
        epoch = node
            .store()
            .region_status(region)
            .wait()
            .ok()
            .filter(|st| st.role == Role::Leader)
            .and_then(|st| st.region.epoch);
        epoch.is_some()
    });
    epoch.unwrap()
}

fn get(node: &Node, key: &str) -> Option<Bytes> {
    let epoch = leader_epoch(node, RegionId(1));
    match node
        .store()
        .read(
            RegionId(1),
            epoch,
            ReadRequest::Get {
                key: Bytes::from(key.to_string()),
            },
        )
        .wait()
        .unwrap()
    {
        ReadResponse::Value(v) => v,
        other => panic!("a get answered {other:?}"),
    }
}

/// A single-store cluster bootstraps, serves, shuts down, and resumes its data on restart;
/// its data directory is claimed for it.
#[test]
fn a_node_bootstraps_and_a_restart_resumes_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let config = one_store_config(dir.path());
    let node = Node::start(config.clone().check().unwrap()).unwrap();
    let epoch = leader_epoch(&node, RegionId(1));
    node.store()
        .propose(RegionId(1), epoch, put("k", "v1"))
        .wait()
        .unwrap();
    node.shutdown();
    let identity = std::fs::read_to_string(dir.path().join(IDENTITY_FILE)).unwrap();
    assert!(identity.contains("store_id = 1"), "{identity}");

    let node = Node::start(config.check().unwrap()).unwrap();
    assert_eq!(get(&node, "k"), Some(Bytes::from("v1")));
    assert_eq!(node.store().regions().len(), 1, "bootstrapped once only");
    node.shutdown();
}

#[test]
fn shutting_down_or_dropping_a_node_stops_its_store_without_waiting_out_an_idle_grace() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = one_store_config(dir.path());
    config.limits.shutdown_grace_ms = 60_000;
    let stopped = |store: &flotilla::store::Store| {
        matches!(
            store.region_status(RegionId(1)).wait(),
            Err(RegionError::ProposalDropped {
                reason: DroppedReason::StoreStopping,
                ..
            })
        )
    };

    let node = Node::start(config.clone().check().unwrap()).unwrap();
    leader_epoch(&node, RegionId(1));
    let store = node.store().clone();
    let started = Instant::now();
    node.shutdown();
    // Nothing was running: no reason to wait for the minute of grace.
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(stopped(&store));
    // The store's engines (and raft-engine's directory lock) go with the last handle.
    drop(store);

    let node = Node::start(config.check().unwrap()).unwrap();
    leader_epoch(&node, RegionId(1));
    let store = node.store().clone();
    drop(node);
    assert!(stopped(&store));
}

#[test]
fn a_data_directory_of_another_store_or_cluster_or_none_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = one_store_config(dir.path());
    Node::start(config.clone().check().unwrap())
        .unwrap()
        .shutdown();
    let other_cluster = ServerConfig {
        cluster_id: 2,
        ..config.clone()
    };
    let other_store = ServerConfig {
        store_id: 2,
        initial_stores: format!("{},2=127.0.0.1:9", config.initial_stores),
        ..config.clone()
    };
    for other in [other_cluster, other_store] {
        match Node::start(other.check().unwrap()) {
            Err(NodeError::Identity { reason, .. }) => {
                assert!(
                    reason.contains("belongs to store 1 of cluster 1"),
                    "{reason}"
                )
            }
            Ok(_) => panic!("another store's data directory was taken"),
            Err(e) => panic!("refused for another reason: {e}"),
        }
    }
    // A directory holding files but no identity is not a store's.
    let foreign = tempfile::tempdir().unwrap();
    std::fs::write(foreign.path().join("notes.txt"), "mine").unwrap();
    let config = ServerConfig {
        data_dir: foreign.path().to_path_buf(),
        ..config
    };
    assert!(matches!(
        Node::start(config.check().unwrap()),
        Err(NodeError::Identity { .. })
    ));
    assert!(!foreign.path().join(IDENTITY_FILE).exists());
    // A crash while the identity was written leaves only its temporary file: a new
    // directory still.
    let interrupted = tempfile::tempdir().unwrap();
    std::fs::write(interrupted.path().join("identity.tmp"), "cluster_id = ").unwrap();
    let config = ServerConfig {
        data_dir: interrupted.path().to_path_buf(),
        ..one_store_config(interrupted.path())
    };
    Node::start(config.check().unwrap()).unwrap().shutdown();
    assert!(!interrupted.path().join("identity.tmp").exists());
    // A damaged identity is refused, not rewritten.
    std::fs::write(dir.path().join(IDENTITY_FILE), "store_id = [").unwrap();
    let config = one_store_config(dir.path());
    match Node::start(config.check().unwrap()) {
        Err(NodeError::Identity { reason, .. }) => assert!(reason.contains("damaged"), "{reason}"),
        Ok(_) => panic!("a damaged identity was taken"),
        Err(e) => panic!("refused for another reason: {e}"),
    }
}

#[test]
fn a_taken_address_is_refused_with_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let config = ServerConfig {
        listen_addr: addr.to_string(),
        initial_stores: format!("1={addr}"),
        ..one_store_config(dir.path())
    };
    match Node::start(config.check().unwrap()) {
        Err(NodeError::Listen { addr: a, .. }) => assert_eq!(a, addr),
        Ok(_) => panic!("started on a taken address"),
        Err(e) => panic!("refused for another reason: {e}"),
    }
}

/// /health, /status and /metrics of a playground's store; reflection lists the services.
/// An advertise address in the playground's base configuration is not given to every store:
/// each advertises its own listener.
#[test]
fn the_status_server_and_reflection_describe_the_store() {
    let playground = Playground::start(PlaygroundOptions {
        regions: 4,
        base: ServerConfig {
            advertise_addr: "192.0.2.1:20160".into(),
            ..ServerConfig::default()
        },
        ..PlaygroundOptions::default()
    })
    .unwrap();
    let node = &playground.node(StoreId(1)).unwrap();
    let (code, body) = common::http::get(node.status_addr(), "/health");
    assert_eq!((code, body.as_str()), (200, "ok\n"));

    let mut status = serde_json::Value::Null;
    // The split is applied here once this store's replica catches up (it may follow).
    wait_until("every peer store heard from and the split applied", || {
        let (code, body) = common::http::get(node.status_addr(), "/status");
        assert_eq!(code, 200);
        status = serde_json::from_str(&body).unwrap();
        status["peer_stores"].as_array().unwrap().len() == 2 && status["regions"] == 4
    });
    assert_eq!(status["store_id"], 1);
    assert_eq!(status["cluster_id"], 1);
    assert_eq!(status["regions"], 4);
    assert_eq!(status["address"], node.grpc_addr().to_string());
    assert!(status["failure"].is_null());
    for peer in status["peer_stores"].as_array().unwrap() {
        assert_eq!(peer["liveness"], "live");
    }
    // Every region has one leader among the three stores, once each has elected.
    wait_until("a leader for every region", || {
        let leaders: u64 = playground
            .nodes()
            .map(|n| {
                let (_, body) = common::http::get(n.status_addr(), "/status");
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                v["leaders"].as_u64().unwrap()
            })
            .sum();
        leaders == 4
    });

    // Left idle, the regions sleep, and /status counts them.
    wait_until("every replica on store 1 asleep", || {
        let (_, body) = common::http::get(node.status_addr(), "/status");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["hibernated"] == 4
    });
    let (code, metrics) = common::http::get(node.status_addr(), "/metrics");
    assert_eq!(code, 200);
    for family in [
        "flotilla_wal_writes_total",
        "flotilla_store_regions",
        "flotilla_transport_rpcs_total",
        "raft_engine_",
    ] {
        assert!(metrics.contains(family), "/metrics lacks {family}");
    }
    let (code, _) = common::http::get(node.status_addr(), "/nothing");
    assert_eq!(code, 404);

    let services = reflected_services(node.grpc_addr());
    for service in ["kvpb.Kv", "adminpb.Admin"] {
        assert!(services.contains(&service.to_string()), "{services:?}");
    }
    playground.shutdown();
}

fn reflected_services(addr: SocketAddr) -> Vec<String> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = ServerReflectionClient::new(channel);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        let answer = answers.message().await.unwrap().unwrap();
        match answer.message_response {
            Some(MessageResponse::ListServicesResponse(list)) => {
                list.service.into_iter().map(|s| s.name).collect()
            }
            other => panic!("reflection answered {other:?}"),
        }
    })
}

/// The playground's regions tile the key space at its split keys, each replicated on
/// every store; a playground kept on disk resumes with its regions, not split again.
#[test]
fn a_playground_splits_its_key_space_and_resumes_from_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let options = PlaygroundOptions {
        regions: 4,
        data_dir: Some(dir.path().to_path_buf()),
        ..PlaygroundOptions::default()
    };
    let playground = Playground::start(options.clone()).unwrap();
    for node in playground.nodes() {
        wait_until("every store holds every region", || {
            node.store().regions().len() == 4
        });
        let mut regions = node.store().regions();
        regions.sort_by(|a, b| a.start_key.cmp(&b.start_key));
        let bounds: Vec<_> = regions
            .iter()
            .map(|r| (r.start_key.clone(), r.end_key.clone()))
            .collect();
        assert_eq!(
            bounds,
            vec![
                (b"".to_vec(), b"4000".to_vec()),
                (b"4000".to_vec(), b"8000".to_vec()),
                (b"8000".to_vec(), b"c000".to_vec()),
                (b"c000".to_vec(), b"".to_vec()),
            ]
        );
    }
    // Region k's peers are (k-1)·3 + 1 ..= k·3, one on each store: no id repeats.
    for region in playground.node(StoreId(1)).unwrap().store().regions() {
        let mut peers: Vec<(u64, u64)> = region.peers.iter().map(|p| (p.id, p.store_id)).collect();
        peers.sort();
        let k = region.id;
        let first = (k - 1) * 3;
        assert_eq!(
            peers,
            [(first + 1, 1), (first + 2, 2), (first + 3, 3)],
            "region {k}"
        );
    }
    playground.shutdown();
    let playground = Playground::start(PlaygroundOptions {
        regions: 16,
        ..options
    })
    .unwrap();
    assert_eq!(
        playground.node(StoreId(1)).unwrap().store().regions().len(),
        4
    );
    assert_eq!(
        playground.node(StoreId(1)).unwrap().store().id(),
        StoreId(1)
    );
    playground.shutdown();
}

/// A node stopping gracefully hands its leaderships to the others first: the moment its
/// stop returns, another store's replica already leads each of its regions (without the
/// hand-off, they would wait an election timeout — a second at the default ticks — and
/// then elect).
#[test]
fn a_stopping_node_leaves_its_regions_led_elsewhere() {
    let mut playground = Playground::start(PlaygroundOptions {
        regions: 3,
        ..PlaygroundOptions::default()
    })
    .unwrap();
    let leads = |node: &Node, region: RegionId| {
        node.store()
            .region_status(region)
            .wait()
            .is_ok_and(|st| st.role == Role::Leader)
    };
    let store_1 = playground.node(StoreId(1)).unwrap().store().clone();
    wait_until("the key space is split", || store_1.regions().len() == 3);
    let regions: Vec<RegionId> = store_1.regions().iter().map(|r| r.region_id()).collect();
    drop(store_1);
    // Wait for every region to have a leader, then stop the store leading the first.
    wait_until("every region is led", || {
        regions
            .iter()
            .all(|&r| playground.nodes().any(|n| leads(n, r)))
    });
    let stopping = playground
        .nodes()
        .find(|n| leads(n, regions[0]))
        .map(|n| n.store().id())
        .unwrap();
    let led_there: Vec<RegionId> = regions
        .iter()
        .copied()
        .filter(|&r| leads(playground.node(stopping).unwrap(), r))
        .collect();
    playground.stop_store(stopping);
    for region in led_there {
        assert!(
            playground.nodes().any(|n| leads(n, region)),
            "{region} has no leader right after store {stopping} stopped"
        );
    }
    playground.shutdown();
}

#[test]
fn a_playground_store_stops_and_comes_back_at_its_addresses() {
    let mut playground = Playground::start(PlaygroundOptions {
        regions: 1,
        ..PlaygroundOptions::default()
    })
    .unwrap();
    let node = playground.node(StoreId(2)).unwrap();
    let (grpc, status, store) = (node.grpc_addr(), node.status_addr(), node.store().clone());
    playground.stop_store(StoreId(2));
    assert!(playground.node(StoreId(2)).is_none());
    assert!(playground.node(StoreId(1)).is_some());
    assert_eq!(playground.nodes().count(), 2);
    assert!(
        store.region_status(RegionId(1)).wait().is_err(),
        "still running"
    );
    drop(store);
    for absent in [0, 4] {
        assert!(matches!(
            playground.restart_store(StoreId(absent)),
            Err(flotilla::server::playground::PlaygroundError::Options(_))
        ));
    }
    playground.restart_store(StoreId(2)).unwrap();
    let node = playground.node(StoreId(2)).unwrap();
    assert_eq!(node.store().id(), StoreId(2));
    assert_eq!((node.grpc_addr(), node.status_addr()), (grpc, status));
    playground.shutdown();
}

#[test]
fn split_keys_are_evenly_spaced_hex() {
    assert_eq!(split_key(0, 2), b"8000");
    assert_eq!(split_key(0, 16), b"1000");
    assert_eq!(split_key(14, 16), b"f000");
    assert_eq!(split_key(0, 3), b"5555");
    assert_eq!(split_key(0, 0x1_0000), b"0001");
    assert_eq!(split_key(0xfffe, 0x1_0000), b"ffff");
}

fn flotilla() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flotilla"))
}

#[test]
fn the_server_command_names_the_field_of_a_bad_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flotilla.toml");
    std::fs::write(
        &file,
        "store_id = 1\ninitial_stores = \"1=127.0.0.1:1\"\n[raft]\nelection_ticks = 1\n",
    )
    .unwrap();
    let out = flotilla()
        .args(["server", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("raft.election_ticks"), "{err}");

    // A flag overrides the file, and is checked the same way.
    let out = flotilla()
        .args(["server", "--config"])
        .arg(&file)
        .args(["--store-id", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("store_id"));

    std::fs::write(&file, "stor_id = 1\n").unwrap();
    let out = flotilla()
        .args(["server", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("stor_id"));

    // --print-config shows every default, and reads back as the same configuration.
    let out = flotilla()
        .args(["server", "--print-config", "--store-id", "7"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    let parsed = ServerConfig::from_toml(&printed).unwrap();
    assert_eq!(parsed.store_id, 7);
    assert_eq!(parsed.raft, ServerConfig::default().raft);
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_for_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(exit) = child.try_wait().unwrap() {
            return exit;
        }
        assert!(Instant::now() < deadline, "the process did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `command` (a `flotilla server`) with its output piped and waits until it says it
/// serves; its stdout comes back too, to be kept open until it exits (it must never
/// write to a closed pipe).
fn serving(command: &mut Command) -> (Child, Lines<BufReader<ChildStdout>>) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(
        says(&mut stdout, "serving gRPC"),
        "it exited before serving"
    );
    (child, stdout)
}

/// Reads `lines` up to the first that contains `text`; whether one did before they ended.
fn says(lines: &mut Lines<impl BufRead>, text: &str) -> bool {
    lines.map(|l| l.unwrap()).any(|l| l.contains(text))
}

/// `flotilla server` logs at the level asked, serves, stops cleanly on SIGTERM, and a
/// restart on the same directory resumes.
#[test]
fn the_server_command_stops_cleanly_on_sigterm_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let config = one_store_config(dir.path());
    let start = || {
        serving(
            flotilla()
                .args(["server", "--store-id", "1", "--data-dir"])
                .arg(dir.path())
                .args(["--listen-addr", &config.listen_addr])
                .args(["--status-addr", "127.0.0.1:0"])
                .args(["--initial-stores", &config.initial_stores])
                .args(["--log-level", "info"]),
        )
    };
    for run in 0..2 {
        let (mut child, _stdout) = start();
        signal(child.id(), "TERM");
        assert!(wait_for_exit(&mut child).success());
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert!(
            stderr.contains("INFO") && stderr.contains("serving"),
            "{stderr}"
        );
        assert!(stderr.contains("shutting down"), "{stderr}");
        // Bootstrapped once; the restart resumed.
        assert_eq!(stderr.contains("bootstrapped"), run == 0, "{stderr}");
    }
    assert!(dir.path().join(IDENTITY_FILE).exists());
}

/// A stopping server waits for a call in flight (up to its grace), and a second signal
/// during that wait ends the process at once, with exit code 130.
#[test]
fn a_second_signal_while_a_stop_waits_for_a_call_exits_at_once() {
    let (dir, config_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut config = one_store_config(dir.path());
    config.limits.shutdown_grace_ms = 600_000;
    // A status port known up front (bound and let go, as the listen address is).
    let status_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    config.status_addr = status_listener.local_addr().unwrap().to_string();
    drop(status_listener);
    let config_file = config_dir.path().join("flotilla.toml");
    std::fs::write(&config_file, config.to_toml()).unwrap();
    let (mut child, _stdout) = serving(flotilla().args(["server", "--config"]).arg(&config_file));
    // A KV call whose request body never ends: the server counts it running, unanswered.
    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let addr: SocketAddr = config.listen_addr.parse().unwrap();
    let _held = client.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (h2, connection) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(connection);
        let request = tonic::codegen::http::Request::post(format!("http://{addr}/kvpb.Kv/Get"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
        let mut h2 = h2.ready().await.unwrap();
        let (response, body) = h2.send_request(request, false).unwrap();
        // Given time to reach the server (the connection task runs on its own).
        tokio::time::sleep(Duration::from_millis(500)).await;
        (h2, response, body)
    });
    signal(child.id(), "TERM");
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    assert!(says(&mut stderr, "shutting down"), "no stop began");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the stop did not wait for the call in flight"
    );
    // While it drains, /health says so: a load balancer sends new calls elsewhere.
    let status_addr: SocketAddr = config.status_addr.parse().unwrap();
    let (code, body) = common::http::get(status_addr, "/health");
    assert_eq!(code, 503, "{body}");
    assert!(body.starts_with("draining"), "{body}");
    signal(child.id(), "TERM");
    let exit = wait_for_exit(&mut child);
    assert_eq!(exit.code(), Some(130), "{exit:?}");
}

/// The playground command comes up, says where it serves, and stops cleanly on Ctrl-C
/// (SIGINT), removing its temporary directory.
#[test]
fn the_playground_command_serves_until_interrupted() {
    let mut child = flotilla()
        .args(["playground", "--regions", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut data_dir = None;
    let mut status = None;
    let mut examples = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains(" ctl --endpoints ") {
            examples.push(line.trim().to_string());
        }
        if let Some(dir) = line.trim().strip_prefix("data ") {
            data_dir = Some(std::path::PathBuf::from(dir.trim()));
        }
        if status.is_none()
            && let Some(at) = line.find("status http://")
        {
            let addr = line[at + "status http://".len()..]
                .split('/')
                .next()
                .unwrap()
                .to_string();
            status = Some(addr.parse::<SocketAddr>().unwrap());
        }
        if line.contains("serving until Ctrl-C") {
            break;
        }
    }
    let (data_dir, status) = (data_dir.unwrap(), status.unwrap());
    assert!(data_dir.exists());
    assert_eq!(common::http::get(status, "/health").0, 200);
    // The ctl lines it prints work as printed (shell quoting aside: none is needed).
    assert!(examples.len() >= 5, "{examples:?}");
    let run = |line: &str| {
        let words: Vec<&str> = line.split_whitespace().collect();
        let out = Command::new(words[0]).args(&words[1..]).output().unwrap();
        assert!(
            out.status.success(),
            "{line}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    for example in &examples {
        run(example);
    }
    let get = examples.iter().find(|l| l.ends_with(" get hello")).unwrap();
    // The examples ran in order: put hello world, get, …, cas hello world → there.
    assert_eq!(run(get).trim(), "there");
    signal(child.id(), "INT");
    let exit = wait_for_exit(&mut child);
    assert!(exit.success(), "{exit:?}");
    assert!(
        !data_dir.exists(),
        "the temporary directory was left behind"
    );
}
