//! Three `flotilla server` processes on 127.0.0.1, written to through the client while a
//! nemesis kills the store holding a leader with SIGKILL and restarts it, then pauses
//! another leader's store with SIGSTOP and resumes it. Every client history is checked
//! with the linearizability checker (a write whose outcome the client could not know is
//! unknown); final reads on every key make every acknowledged write part of the check.
//!
//! `FLOTILLA_PROC_SEED=N` changes the clients' choices (the default is 0);
//! `FLOTILLA_PROC_SECS=S` the length of each phase.

mod common;

use std::fs::OpenOptions;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flotilla::RegionId;
use flotilla::client::{CasOutcome, Client, ClientConfig, ClientError};
use flotilla::testkit::Rng;
use flotilla::testkit::linearizability::{KvInput, KvOutput, Recorder, check_kv};

/// One server process and how to start it again.
struct Server {
    id: u64,
    args: Vec<String>,
    child: Option<Child>,
    /// Its standard error, appended to across restarts: what a failure shows.
    log: PathBuf,
}

impl Server {
    fn start(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// Whether the process is gone, how it ended, and the end of what it logged.
    fn report(&mut self) -> String {
        let exited = match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => format!("exited ({status})"),
            Some(Ok(None)) => "running".to_string(),
            Some(Err(e)) => format!("unknown ({e})"),
            None => "not started".to_string(),
        };
        let logged = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = logged.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "store {}: {exited}; its log ends:\n{}",
            self.id,
            tail.join("\n")
        )
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap()
    }

    fn signal(&self, name: &str) {
        assert!(self.send_signal(name), "kill -{name} {}", self.pid());
    }

    /// Whether `kill -name` reached the process (not if it is gone and reaped).
    fn send_signal(&self, name: &str) -> bool {
        Command::new("kill")
            .args([format!("-{name}"), self.pid().to_string()])
            .status()
            .is_ok_and(|status| status.success())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The processes die with the test, whatever happens to it.
struct Cluster {
    servers: Vec<Server>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for s in &mut self.servers {
            // A process already reaped (`report` reaps one that exited) is gone: no
            // assertion here, which would abort a test already failing.
            if s.child.is_some() {
                s.send_signal("CONT");
            }
            s.kill();
        }
    }
}

/// `n` free ports, all different: each listener is held until every port is picked (a
/// port just released may be handed out again at once, and two servers on one port
/// means one never comes up).
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

fn start_cluster(dir: &Path) -> (Cluster, Vec<String>) {
    let ports: Vec<(u16, u16)> = free_ports(6)
        .chunks(2)
        .map(|pair| (pair[0], pair[1]))
        .collect();
    let initial: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, (grpc, _))| format!("{}=127.0.0.1:{grpc}", i + 1))
        .collect();
    let mut servers = Vec::new();
    for (i, (grpc, status)) in ports.iter().enumerate() {
        let id = i as u64 + 1;
        let args = vec![
            "server".to_string(),
            "--store-id".into(),
            id.to_string(),
            "--data-dir".into(),
            dir.join(format!("store-{id}")).display().to_string(),
            "--listen-addr".into(),
            format!("127.0.0.1:{grpc}"),
            "--status-addr".into(),
            format!("127.0.0.1:{status}"),
            "--initial-stores".into(),
            initial.join(","),
            "--log-level".into(),
            "warn".into(),
        ];
        let mut server = Server {
            id,
            args,
            child: None,
            log: dir.join(format!("store-{id}.log")),
        };
        server.start();
        servers.push(server);
    }
    let endpoints = ports
        .iter()
        .map(|(grpc, _)| format!("127.0.0.1:{grpc}"))
        .collect();
    (Cluster { servers }, endpoints)
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const KEYS: [&str; 6] = ["a", "b", "c", "n", "o", "p"];

/// One client's loop: random gets, puts and compare-and-swaps on a few keys, each call
/// recorded with what it returned — or unknown, when the client could not tell.
async fn client_loop(
    client: Client,
    id: u64,
    seed: u64,
    recorder: Arc<Recorder>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = Rng::new(seed);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let key = Bytes::from_static(KEYS[rng.range(0, KEYS.len() as u64) as usize].as_bytes());
        let value = Bytes::from(format!("{id}-{n}"));
        match rng.range(0, 3) {
            0 => {
                let call = recorder.call(id, KvInput::Get(key.clone()));
                match client.get(key).await {
                    Ok(v) => recorder.returned(call, KvOutput::Value(v)),
                    Err(_) => recorder.failed(call),
                }
            }
            1 => {
                let call = recorder.call(id, KvInput::Put(key.clone(), value.clone()));
                match client.put(key, value).await {
                    Ok(()) => recorder.returned(call, KvOutput::Done),
                    Err(e) => end_write(&recorder, call, &e),
                }
            }
            _ => {
                // Expect what a get just saw, so some swaps succeed.
                let expected = client.get(key.clone()).await.ok().flatten();
                let input = KvInput::Cas {
                    key: key.clone(),
                    expected: expected.clone(),
                    new: Some(value.clone()),
                };
                let call = recorder.call(id, input);
                match client.compare_and_swap(key, expected, Some(value)).await {
                    Ok(CasOutcome::Swapped) => recorder.returned(call, KvOutput::Swapped),
                    Ok(CasOutcome::Mismatch(found)) => {
                        recorder.returned(call, KvOutput::Mismatch(found))
                    }
                    Err(e) => end_write(&recorder, call, &e),
                }
            }
        }
    }
}

/// A failed write: left out if it certainly did not take effect (a region error says so),
/// else unknown.
fn end_write(
    recorder: &Recorder,
    call: flotilla::testkit::linearizability::PendingCall,
    e: &ClientError,
) {
    match e {
        ClientError::Region(_) => recorder.failed(call),
        _ => recorder.unknown(call),
    }
}

async fn leader_store(client: &Client, region: u64) -> Option<u64> {
    client
        .show_region(RegionId(region))
        .await
        .ok()
        .and_then(|info| info.leader)
        .map(|l| l.store_id)
}

/// Puts until a put is acknowledged: one sent to the store just killed or paused, before
/// the client knew, has an unknown outcome (a key outside the checked history, so a
/// repeat changes nothing checked).
async fn put_acknowledged(client: &Client, key: &'static str) {
    for _ in 0..5 {
        match client.put(key, "1").await {
            Ok(()) => return,
            Err(ClientError::Indeterminate(e)) => {
                eprintln!("put {key}: outcome unknown ({e}); again")
            }
            Err(e) => panic!("put {key}: {e}"),
        }
    }
    panic!("put {key}: five outcomes unknown");
}

async fn every_store_answers(client: &Client) -> bool {
    for (_, address) in client.stores() {
        if client.store_status_at(&address).await.is_err() {
            return false;
        }
    }
    true
}

#[test]
fn killed_and_paused_stores_lose_no_acknowledged_write() {
    let seed = env_u64("FLOTILLA_PROC_SEED", 0);
    let phase = Duration::from_secs(env_u64("FLOTILLA_PROC_SECS", 3));
    eprintln!(
        "seed {seed}: rerun with FLOTILLA_PROC_SEED={seed} cargo test --test process_cluster"
    );
    let dir = tempfile::tempdir().unwrap();
    let (mut cluster, endpoints) = start_cluster(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut config = ClientConfig::new(endpoints);
    config.timeout = Duration::from_secs(8);
    config.rpc_timeout = Duration::from_secs(1);
    let connected = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match Client::connect(config.clone()).await {
                // Every store must answer, not only a quorum: the split below asks each
                // for the ids it holds.
                Ok(c)
                    if c.stores().len() == 3
                        && every_store_answers(&c).await
                        && c.put("ready", "1").await.is_ok() =>
                {
                    break Ok(c);
                }
                _ if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Ok(c) => break Err(format!("{} stores known to the client", c.stores().len())),
                Err(e) => break Err(e.to_string()),
            }
        }
    });
    let client = connected.unwrap_or_else(|why| {
        let reports: Vec<String> = cluster.servers.iter_mut().map(Server::report).collect();
        panic!(
            "the servers did not come up ({why}):\n{}",
            reports.join("\n")
        )
    });
    // A server runs the allocator's purge thread (flotilla::allocator::spawn_purger).
    #[cfg(all(feature = "mimalloc", target_os = "linux"))]
    for server in &cluster.servers {
        assert!(
            common::threads::thread_names(server.pid())
                .iter()
                .any(|n| n == "mimalloc-purge"),
            "store {} runs no purge thread",
            server.id
        );
    }
    // Two regions, so the nemesis hits one region's leader while the other may live
    // elsewhere.
    rt.block_on(client.split(RegionId(1), vec![Bytes::from_static(b"m")]))
        .unwrap();

    let recorder = Arc::new(Recorder::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|i| {
            rt.spawn(client_loop(
                client.clone(),
                i,
                seed.wrapping_mul(1000) + i,
                recorder.clone(),
                stop.clone(),
            ))
        })
        .collect();

    std::thread::sleep(phase);
    // SIGKILL the store leading region 1, let the others go on, restart it.
    let victim = rt
        .block_on(leader_store(&client, 1))
        .expect("a leader of region 1");
    let index = cluster.servers.iter().position(|s| s.id == victim).unwrap();
    cluster.servers[index].kill();
    std::thread::sleep(phase);
    // The others elected a new leader and serve without it.
    let now = rt.block_on(async {
        put_acknowledged(&client, "during-kill").await;
        leader_store(&client, 1).await
    });
    assert_ne!(now, Some(victim), "region 1 still led by the killed store");
    cluster.servers[index].start();
    std::thread::sleep(phase);
    // SIGSTOP the store leading region 2: a paused process, not a dead one.
    let paused = rt
        .block_on(leader_store(&client, 2))
        .expect("a leader of region 2");
    let index = cluster.servers.iter().position(|s| s.id == paused).unwrap();
    cluster.servers[index].signal("STOP");
    std::thread::sleep(phase);
    let now = rt.block_on(async {
        put_acknowledged(&client, "p-during-pause").await;
        leader_store(&client, 2).await
    });
    assert_ne!(now, Some(paused), "region 2 still led by the paused store");
    cluster.servers[index].signal("CONT");
    std::thread::sleep(phase);

    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for c in clients {
            c.await.unwrap();
        }
        // Final reads: every key's last acknowledged value is in the history's check.
        for key in KEYS {
            let key = Bytes::from_static(key.as_bytes());
            let call = recorder.call(99, KvInput::Get(key.clone()));
            let value = client.get(key).await.expect("a final read");
            recorder.returned(call, KvOutput::Value(value));
        }
    });
    let history = recorder.history();
    let acknowledged = history
        .iter()
        .filter(|op| {
            !matches!(
                op.outcome,
                flotilla::testkit::linearizability::Outcome::Unknown
            )
        })
        .count();
    eprintln!(
        "{} operations recorded ({acknowledged} with a known outcome, {} failed without effect); killed store {victim}, paused store {paused}",
        history.len(),
        recorder.failures()
    );
    assert!(acknowledged > 50, "too little got through: {acknowledged}");
    if let Err(bad) = check_kv(&history) {
        panic!(
            "seed {seed}: key {:?} is not linearizable: {:#?}",
            bad.key, bad.operations
        );
    }
}
