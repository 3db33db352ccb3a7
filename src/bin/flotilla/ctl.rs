//! `flotilla ctl`: the cluster from the command line, through the Rust client. Tables for
//! people, `--json` for scripts (one JSON document on stdout).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Subcommand};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use flotilla::RegionId;
use flotilla::client::{CasOutcome, Client, ClientConfig, ClientError, ScanOrder};
use flotilla::proto::adminpb::{self, ChangeType};
use flotilla::proto::metapb::{Peer, PeerRole, Region};
use flotilla::region::newest_regions;
use serde_json::{Value, json};

#[derive(Args)]
pub struct CtlArgs {
    /// Stores to reach, `host:port`, comma-separated; the others are found through them.
    #[arg(long, value_delimiter = ',', required = true)]
    endpoints: Vec<String>,
    /// Print one JSON document instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Give up on an operation after this many seconds.
    #[arg(long, default_value_t = 10)]
    timeout_secs: u64,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Subcommand)]
enum CtlCommand {
    /// Set a key.
    Put { key: String, value: String },
    /// Read a key (linearizable).
    Get { key: String },
    /// Remove a key.
    Delete { key: String },
    /// Pairs of [start, end) in key order (an empty end: to the end of the key space).
    Scan {
        #[arg(long, default_value = "")]
        start: String,
        #[arg(long, default_value = "")]
        end: String,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Descending, from the end.
        #[arg(long)]
        reverse: bool,
    },
    /// Compare-and-swap: if KEY holds --expect (left out: absent), set it to --new (left
    /// out: delete it).
    Cas {
        key: String,
        #[arg(long)]
        expect: Option<String>,
        #[arg(long)]
        new: Option<String>,
    },
    /// Regions: list, show, split, move leadership, change membership.
    #[command(subcommand)]
    Region(RegionCommand),
    /// Stores: list, status.
    #[command(subcommand)]
    Store(StoreCommand),
}

#[derive(Subcommand)]
enum RegionCommand {
    /// Every region any store holds, with its range, epoch, peers and leader.
    List,
    /// One region as its leader sees it.
    Show { id: u64 },
    /// Split a region at keys (in order).
    Split {
        id: u64,
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Move a region's leadership to one of its peers.
    TransferLeader { id: u64, peer: u64 },
    /// Add a replica on a store, as a voter or with --learner as a learner.
    AddPeer {
        id: u64,
        store: u64,
        #[arg(long)]
        learner: bool,
    },
    /// Promote a learner to a voter.
    Promote { id: u64, peer: u64 },
    /// Remove a replica.
    RemovePeer { id: u64, peer: u64 },
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Every store reachable through the endpoints.
    List,
    /// One store's status and what it sees of its peers.
    Status { id: u64 },
}

/// Bytes as text when they are printable UTF-8, else `0x` and hex.
fn text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) if s.chars().all(|c| !c.is_control()) => s.to_string(),
        _ => {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            format!("0x{hex}")
        }
    }
}

fn role_name(role: i32) -> &'static str {
    match PeerRole::try_from(role) {
        Ok(PeerRole::Voter) => "voter",
        Ok(PeerRole::Learner) => "learner",
        Ok(PeerRole::IncomingVoter) => "incoming-voter",
        Ok(PeerRole::DemotingVoter) => "demoting-voter",
        Err(_) => "unknown",
    }
}

fn peers_json(peers: &[Peer]) -> Value {
    peers
        .iter()
        .map(|p| json!({"id": p.id, "store": p.store_id, "role": role_name(p.role)}))
        .collect()
}

fn peers_text(peers: &[Peer]) -> String {
    peers
        .iter()
        .map(|p| match PeerRole::try_from(p.role) {
            Ok(PeerRole::Voter) => format!("{}@{}", p.id, p.store_id),
            _ => format!("{}@{} ({})", p.id, p.store_id, role_name(p.role)),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn region_json(region: &Region, leader: Option<&Peer>) -> Value {
    let epoch = region.epoch.unwrap_or_default();
    json!({
        "id": region.id,
        "start_key": text(&region.start_key),
        "end_key": text(&region.end_key),
        "epoch": {"conf_ver": epoch.conf_ver, "version": epoch.version},
        "peers": peers_json(&region.peers),
        "leader": leader.map(|l| l.id),
        "leader_store": leader.map(|l| l.store_id),
    })
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED);
    t.set_header(header.iter().copied());
    t
}

/// What one command prints: JSON for `--json`, else a table or a line.
enum Output {
    Line(String, Value),
    Table(Box<Table>, Value),
}

pub fn run(args: CtlArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = args.json;
    match runtime.block_on(execute(args)) {
        Ok(output) => {
            match (json, output) {
                (true, Output::Line(_, value) | Output::Table(_, value)) => println!("{value}"),
                (false, Output::Line(line, _)) => println!("{line}"),
                (false, Output::Table(table, _)) => println!("{table}"),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if json {
                println!("{}", json!({"error": e.to_string()}));
            }
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(args: CtlArgs) -> Result<Output, ClientError> {
    let mut config = ClientConfig::new(args.endpoints);
    config.timeout = Duration::from_secs(args.timeout_secs);
    let client = Client::connect(config).await?;
    let b = |s: String| Bytes::from(s.into_bytes());
    Ok(match args.command {
        CtlCommand::Put { key, value } => {
            client.put(b(key), b(value)).await?;
            Output::Line("OK".into(), json!({"ok": true}))
        }
        CtlCommand::Get { key } => {
            let value = client.get(b(key.clone())).await?;
            let line = value.as_deref().map_or("(not found)".into(), text);
            let value = json!({
                "key": key,
                "found": value.is_some(),
                "value": value.as_deref().map(text),
            });
            Output::Line(line, value)
        }
        CtlCommand::Delete { key } => {
            client.delete(b(key)).await?;
            Output::Line("OK".into(), json!({"ok": true}))
        }
        CtlCommand::Scan {
            start,
            end,
            limit,
            reverse,
        } => {
            let order = if reverse {
                ScanOrder::Reverse
            } else {
                ScanOrder::Forward
            };
            let pairs = client
                .scan(start.as_bytes(), end.as_bytes(), limit, order)
                .await?;
            let mut t = table(&["key", "value"]);
            for (k, v) in &pairs {
                t.add_row([text(k), text(v)]);
            }
            let value = json!({"pairs": pairs
                .iter()
                .map(|(k, v)| json!({"key": text(k), "value": text(v)}))
                .collect::<Vec<_>>()});
            Output::Table(Box::new(t), value)
        }
        CtlCommand::Cas { key, expect, new } => {
            let outcome = client
                .compare_and_swap(b(key), expect.map(b), new.map(b))
                .await?;
            match outcome {
                CasOutcome::Swapped => Output::Line("swapped".into(), json!({"swapped": true})),
                CasOutcome::Mismatch(current) => {
                    let current = current.as_deref().map(text);
                    let line = format!(
                        "not swapped: the value is {}",
                        current.as_deref().unwrap_or("absent")
                    );
                    Output::Line(line, json!({"swapped": false, "current": current}))
                }
            }
        }
        CtlCommand::Region(command) => region(&client, command).await?,
        CtlCommand::Store(command) => store(&client, command).await?,
    })
}

/// The regions the stores' replicas describe, in key order: a region's newest epoch wins,
/// and its leader (with its term) is the replica leading in the highest term.
fn merge_views(
    views: impl IntoIterator<Item = adminpb::RegionInfo>,
) -> Vec<(Region, Option<(u64, Peer)>)> {
    let mut described = Vec::new();
    let mut leaders: BTreeMap<u64, (u64, Peer)> = BTreeMap::new();
    for info in views {
        let Some(region) = info.region else { continue };
        if info.role == adminpb::Role::Leader as i32
            && let Some(peer) = info.peer
            && leaders
                .get(&region.id)
                .is_none_or(|(term, _)| info.term > *term)
        {
            leaders.insert(region.id, (info.term, peer));
        }
        described.push(region);
    }
    newest_regions(described)
        .into_iter()
        .map(|region| {
            let leader = leaders.remove(&region.id);
            (region, leader)
        })
        .collect()
}

async fn region(client: &Client, command: RegionCommand) -> Result<Output, ClientError> {
    Ok(match command {
        RegionCommand::List => {
            let mut views = Vec::new();
            for (_, address) in client.stores() {
                // A store that does not answer is left out: the others still describe
                // every region they hold.
                if let Ok(infos) = client.regions_at(&address).await {
                    views.extend(infos);
                }
            }
            let sorted = merge_views(views);
            let mut t = table(&["region", "start", "end", "epoch", "peers", "leader"]);
            for (r, leader) in &sorted {
                let epoch = r.epoch.unwrap_or_default();
                t.add_row([
                    r.id.to_string(),
                    text(&r.start_key),
                    text(&r.end_key),
                    format!("{}/{}", epoch.conf_ver, epoch.version),
                    peers_text(&r.peers),
                    leader.map_or("?".into(), |(_, p)| format!("{}@{}", p.id, p.store_id)),
                ]);
            }
            let value = sorted
                .iter()
                .map(|(r, leader)| region_json(r, leader.as_ref().map(|(_, p)| p)))
                .collect();
            Output::Table(Box::new(t), Value::Array(value))
        }
        RegionCommand::Show { id } => {
            let info = client.show_region(RegionId(id)).await?;
            let region = info.region.unwrap_or_default();
            let mut value = region_json(&region, info.leader.as_ref());
            let fields = [
                ("term", info.term),
                ("commit_index", info.commit_index),
                ("applied_index", info.applied_index),
                ("first_index", info.first_index),
            ];
            let mut t = table(&["field", "value"]);
            t.add_row(["region".to_string(), id.to_string()]);
            t.add_row([
                "range".to_string(),
                format!("[{}, {})", text(&region.start_key), text(&region.end_key)),
            ]);
            t.add_row(["peers".to_string(), peers_text(&region.peers)]);
            t.add_row([
                "leader".to_string(),
                info.leader
                    .map_or("?".into(), |p| format!("{}@{}", p.id, p.store_id)),
            ]);
            for (name, v) in fields {
                t.add_row([name.to_string(), v.to_string()]);
                value[name] = json!(v);
            }
            t.add_row(["hibernated".to_string(), info.hibernated.to_string()]);
            value["hibernated"] = json!(info.hibernated);
            Output::Table(Box::new(t), value)
        }
        RegionCommand::Split { id, keys } => {
            let keys = keys
                .into_iter()
                .map(|k| Bytes::from(k.into_bytes()))
                .collect();
            let regions = client.split(RegionId(id), keys).await?;
            let mut t = table(&["region", "start", "end"]);
            for r in &regions {
                t.add_row([r.id.to_string(), text(&r.start_key), text(&r.end_key)]);
            }
            let value = regions.iter().map(|r| region_json(r, None)).collect();
            Output::Table(Box::new(t), Value::Array(value))
        }
        RegionCommand::TransferLeader { id, peer } => {
            client.transfer_leader(RegionId(id), peer).await?;
            Output::Line(
                format!("transfer of region {id} to peer {peer} started"),
                json!({"ok": true}),
            )
        }
        RegionCommand::AddPeer { id, store, learner } => {
            let peer = Peer {
                id: client.next_peer_id().await?,
                store_id: store,
                role: if learner {
                    PeerRole::Learner
                } else {
                    PeerRole::Voter
                } as i32,
            };
            let change = if learner {
                ChangeType::AddLearner
            } else {
                ChangeType::AddVoter
            };
            change_peers(client, id, change, peer).await?
        }
        RegionCommand::Promote { id, peer } => {
            let peer = peer_of(client, id, peer).await?;
            change_peers(client, id, ChangeType::AddVoter, peer).await?
        }
        RegionCommand::RemovePeer { id, peer } => {
            let peer = peer_of(client, id, peer).await?;
            change_peers(client, id, ChangeType::Remove, peer).await?
        }
    })
}

async fn peer_of(client: &Client, region: u64, peer: u64) -> Result<Peer, ClientError> {
    let info = client.show_region(RegionId(region)).await?;
    info.region
        .and_then(|r| r.peers.into_iter().find(|p| p.id == peer))
        .ok_or_else(|| ClientError::Protocol(format!("region {region} has no peer {peer}")))
}

async fn change_peers(
    client: &Client,
    id: u64,
    change: ChangeType,
    peer: Peer,
) -> Result<Output, ClientError> {
    let change = adminpb::PeerChange {
        change_type: change as i32,
        peer: Some(peer),
    };
    let region = client.change_peers(RegionId(id), vec![change]).await?;
    Ok(Output::Line(
        format!("region {id}: peers {}", peers_text(&region.peers)),
        region_json(&region, None),
    ))
}

async fn store(client: &Client, command: StoreCommand) -> Result<Output, ClientError> {
    let statuses = match command {
        StoreCommand::List => {
            let mut all = Vec::new();
            for (id, address) in client.stores() {
                all.push((
                    id.get(),
                    address.clone(),
                    client.store_status_at(&address).await,
                ));
            }
            all
        }
        StoreCommand::Status { id } => {
            let Some((_, address)) = client.stores().into_iter().find(|(s, _)| s.get() == id)
            else {
                return Err(ClientError::Unavailable(format!("store {id} is not known")));
            };
            let status = client.store_status_at(&address).await?;
            vec![(id, address, Ok(status))]
        }
    };
    let mut t = table(&[
        "store",
        "address",
        "regions",
        "leaders",
        "hibernated",
        "peer stores",
        "state",
    ]);
    let mut value = Vec::new();
    for (id, address, status) in statuses {
        match status {
            Ok(s) => {
                let peers: Vec<String> = s
                    .peer_stores
                    .iter()
                    .map(|p| {
                        let live = p.liveness == adminpb::Liveness::Live as i32;
                        format!("{} {}", p.store_id, if live { "live" } else { "down" })
                    })
                    .collect();
                let state = if s.failure.is_empty() {
                    "up".to_string()
                } else {
                    format!("stopped: {}", s.failure)
                };
                t.add_row([
                    id.to_string(),
                    address.clone(),
                    s.regions.to_string(),
                    s.leaders.to_string(),
                    s.hibernated.to_string(),
                    peers.join(", "),
                    state.clone(),
                ]);
                value.push(json!({
                    "id": id, "address": address, "regions": s.regions, "leaders": s.leaders,
                    "hibernated": s.hibernated, "peer_stores": peers, "state": state,
                }));
            }
            Err(e) => {
                t.add_row([
                    id.to_string(),
                    address.clone(),
                    "".into(),
                    "".into(),
                    "".into(),
                    "".into(),
                    format!("unreachable: {e}"),
                ]);
                value.push(
                    json!({"id": id, "address": address, "state": format!("unreachable: {e}")}),
                );
            }
        }
    }
    Ok(Output::Table(Box::new(t), Value::Array(value)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla::proto::metapb::RegionEpoch;

    fn peer(id: u64, role: PeerRole) -> Peer {
        Peer {
            id,
            store_id: id % 10,
            role: role as i32,
        }
    }

    #[test]
    fn printable_bytes_are_text_and_the_rest_hex() {
        assert_eq!(text(b"ok key"), "ok key");
        assert_eq!(text(b""), "");
        assert_eq!(text(b"\x01a"), "0x0161");
        assert_eq!(text(&[0xff, 0x00]), "0xff00");
    }

    #[test]
    fn peers_print_with_their_store_and_any_role_but_voter() {
        let peers = [
            peer(11, PeerRole::Voter),
            peer(42, PeerRole::Learner),
            peer(23, PeerRole::IncomingVoter),
        ];
        assert_eq!(
            peers_text(&peers),
            "11@1, 42@2 (learner), 23@3 (incoming-voter)"
        );
    }

    #[test]
    fn the_newest_epoch_and_the_leader_of_the_highest_term_win() {
        let region = |id: u64, start: &str, version: u64, conf_ver: u64| Region {
            id,
            start_key: start.as_bytes().to_vec(),
            epoch: Some(RegionEpoch { conf_ver, version }),
            ..Region::default()
        };
        let view =
            |region: Region, peer_id: u64, role: adminpb::Role, term: u64| adminpb::RegionInfo {
                region: Some(region),
                peer: Some(peer(peer_id, PeerRole::Voter)),
                role: role as i32,
                term,
                ..Default::default()
            };
        use adminpb::Role::{Follower, Leader};
        let merged = merge_views([
            view(region(2, "m", 1, 1), 21, Follower, 3),
            // A newer membership of region 2, then an older one seen later.
            view(region(2, "m", 1, 2), 22, Leader, 3),
            view(region(2, "m", 1, 1), 23, Leader, 2),
            view(region(1, "", 2, 1), 11, Leader, 5),
            view(region(1, "", 1, 9), 12, Leader, 6),
            view(region(1, "", 2, 1), 13, Follower, 7),
            adminpb::RegionInfo::default(),
        ]);
        let summary: Vec<String> = merged
            .iter()
            .map(|(r, leader)| {
                let epoch = r.epoch.unwrap_or_default();
                let leader = leader.map(|(term, p)| format!("{}@{term}", p.id));
                format!("{} {}/{} {leader:?}", r.id, epoch.version, epoch.conf_ver)
            })
            .collect();
        // In key order; region 1's version beats a higher conf_ver; the leader of the
        // highest term among leaders, never a follower.
        assert_eq!(summary, ["1 2/1 Some(\"12@6\")", "2 1/2 Some(\"22@3\")"]);
    }
}
