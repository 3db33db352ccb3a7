//! `flotilla ctl` against a playground: each command with `--json`, its output parsed,
//! and the tables people read.

use std::process::{Command, Output};

use flotilla::server::playground::{Playground, PlaygroundOptions};
use serde_json::Value;

struct Ctl {
    endpoints: String,
}

impl Ctl {
    fn raw(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .args(["ctl", "--endpoints", &self.endpoints])
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs a command with --json; its document.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.raw(&all);
        assert!(
            out.status.success(),
            "ctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn text(&self, args: &[&str]) -> String {
        let out = self.raw(args);
        assert!(
            out.status.success(),
            "ctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

#[test]
fn ctl_round_trips_with_json() {
    let playground = Playground::start(PlaygroundOptions {
        regions: 2,
        ..PlaygroundOptions::default()
    })
    .unwrap();
    let ctl = Ctl {
        endpoints: playground.endpoints().join(","),
    };
    assert_eq!(ctl.json(&["put", "hello", "world"])["ok"], true);
    assert_eq!(ctl.json(&["put", "a1", "x"])["ok"], true);
    let got = ctl.json(&["get", "hello"]);
    assert_eq!(
        (got["found"].clone(), got["value"].clone()),
        (true.into(), "world".into())
    );
    assert_eq!(ctl.text(&["get", "hello"]).trim(), "world");
    let cas = ctl.json(&["cas", "hello", "--expect", "nope", "--new", "x"]);
    assert_eq!(
        (cas["swapped"].clone(), cas["current"].clone()),
        (false.into(), "world".into())
    );
    assert_eq!(
        ctl.json(&["cas", "hello", "--expect", "world", "--new", "there"])["swapped"],
        true
    );
    assert_eq!(
        ctl.json(&["cas", "absent", "--new", "now"])["swapped"],
        true
    );
    let scan = ctl.json(&["scan"]);
    let keys: Vec<&str> = scan["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["a1", "absent", "hello"]);
    let reverse = ctl.json(&["scan", "--reverse", "--limit", "2"]);
    assert_eq!(reverse["pairs"][0]["key"], "hello");
    assert_eq!(reverse["pairs"].as_array().unwrap().len(), 2);
    assert_eq!(ctl.json(&["delete", "absent"])["ok"], true);
    assert_eq!(ctl.json(&["get", "absent"])["found"], false);

    // Regions: two, tiling the key space, three voters each, one leader each.
    let regions = ctl.json(&["region", "list"]);
    let regions = regions.as_array().unwrap();
    assert_eq!(regions.len(), 2);
    assert_eq!(regions[0]["start_key"], "");
    assert_eq!(regions[0]["end_key"], "8000");
    assert_eq!(regions[1]["start_key"], "8000");
    for r in regions {
        assert_eq!(r["peers"].as_array().unwrap().len(), 3);
    }
    let shown = ctl.json(&["region", "show", "1"]);
    assert_eq!(shown["id"], 1);
    assert!(shown["leader"].as_u64().is_some());
    assert!(shown["applied_index"].as_u64().unwrap() > 0);

    // Split, then move the new region's leadership and change its membership.
    let split = ctl.json(&["region", "split", "1", "4000"]);
    let split = split.as_array().unwrap();
    assert_eq!(split.len(), 2);
    assert_eq!(split[1]["start_key"], "4000");
    let new_region = split[1]["id"].as_u64().unwrap().to_string();
    let shown = ctl.json(&["region", "show", &new_region]);
    let leader = shown["leader"].as_u64().unwrap();
    let other = shown["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .find(|&p| p != leader)
        .unwrap();
    assert_eq!(
        ctl.json(&["region", "transfer-leader", &new_region, &other.to_string()])["ok"],
        true
    );
    let mut moved = false;
    for _ in 0..200 {
        if ctl.json(&["region", "show", &new_region])["leader"] == other {
            moved = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(moved, "the leadership did not move");
    // The old leader, now a follower.
    let removed = ctl.json(&["region", "remove-peer", &new_region, &leader.to_string()]);
    assert_eq!(removed["peers"].as_array().unwrap().len(), 2, "{removed}");
    let store_of_removed = shown["leader_store"].as_u64().unwrap();
    let added = ctl.json(&[
        "region",
        "add-peer",
        &new_region,
        &store_of_removed.to_string(),
        "--learner",
    ]);
    let learner = added["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["role"] == "learner")
        .unwrap()["id"]
        .as_u64()
        .unwrap();
    let promoted = ctl.json(&["region", "promote", &new_region, &learner.to_string()]);
    assert!(
        promoted["peers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["role"] == "voter"),
        "{promoted}"
    );

    // Stores.
    let stores = ctl.json(&["store", "list"]);
    let stores = stores.as_array().unwrap();
    assert_eq!(stores.len(), 3);
    assert!(stores.iter().all(|s| s["state"] == "up"));
    // Each store hears from both others.
    for store in stores {
        let peers = store["peer_stores"].as_array().unwrap();
        assert_eq!(peers.len(), 2, "{store}");
        assert!(
            peers.iter().all(|p| p.as_str().unwrap().ends_with(" live")),
            "{store}"
        );
    }
    let second = ctl.json(&["store", "status", "2"]);
    assert_eq!(second[0]["id"], 2);
    assert_eq!(
        second[0]["address"].as_str().unwrap(),
        ctl.endpoints.split(',').nth(1).unwrap()
    );
    // Store 2 holds both first regions; the third's replica there may be the one just
    // removed and re-added.
    let regions = ctl.json(&["store", "status", "2"])[0]["regions"]
        .as_u64()
        .unwrap();
    assert!((2..=3).contains(&regions), "{regions}");
    let table = ctl.text(&["store", "list"]);
    assert!(
        table.contains("127.0.0.1") && table.contains("regions"),
        "{table}"
    );

    // Errors: typed message, exit code 1, a JSON error document with --json.
    let out = ctl.raw(&["--json", "put", "", "v"]);
    assert_eq!(out.status.code(), Some(1));
    let err: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        err["error"].as_str().unwrap().contains("invalid request"),
        "{err}"
    );
    let out = ctl.raw(&["region", "show", "999"]);
    assert_eq!(out.status.code(), Some(1));
    playground.shutdown();
}

/// `flotilla bench --embedded --json`: a short run against its own playground reports
/// operations of every kind, their latencies in order, and no errors. A run that a
/// stalled machine let do only a handful of operations (writes waiting seconds on a disk
/// busy writing back) says nothing about the mix: it is checked like any other, then run
/// again.
#[test]
fn bench_runs_against_an_embedded_playground_and_reports_json() {
    // At 40/40/20 %, 50 operations miss a kind with a chance of about 1 in 70,000.
    const ENOUGH_OPS: u64 = 50;
    let mut mix_seen = false;
    for attempt in 1..=5 {
        let out = Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .args([
                "bench",
                "--embedded",
                "--regions",
                "2",
                "--clients",
                "4",
                "--duration",
                "2",
                "--keys",
                "100",
                "--mix",
                "reads=40,writes=40,cas=20",
                "--distribution",
                "zipfian",
                "--json",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["errors"], 0, "{report}");
        let ops = report["ops"].as_u64().unwrap();
        assert!(ops > 0);
        let all = &report["all"];
        let p = |q: &str| all[q].as_u64().unwrap();
        assert!(
            p("p50_us") <= p("p90_us") && p("p90_us") <= p("p99_us") && p("p99_us") <= p("max_us")
        );
        assert_eq!(
            report["reads"]["count"].as_u64().unwrap()
                + report["writes"]["count"].as_u64().unwrap()
                + report["cas"]["count"].as_u64().unwrap(),
            ops
        );
        if ops < ENOUGH_OPS {
            eprintln!("attempt {attempt}: only {ops} operations in 2 s; running again");
            continue;
        }
        for kind in ["reads", "writes", "cas"] {
            assert!(
                report[kind]["count"].as_u64().unwrap() > 0,
                "{kind}: {report}"
            );
        }
        mix_seen = true;
        break;
    }
    assert!(mix_seen, "no run in five did {ENOUGH_OPS} operations");
    // A bad mix is refused before anything starts.
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["bench", "--embedded", "--mix", "reads=60"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("add up to 60"));
}
