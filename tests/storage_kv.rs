//! One suite of `KvEngine` tests, run against the fjall engine and the in-memory engine,
//! plus each engine's durability: fjall survives a reopen after `persist`; the in-memory
//! engine's simulated crash drops exactly what was not persisted.

use bytes::Bytes;
use flotilla::storage::MemDurability;
use flotilla::storage::fjall_kv::{FjallKvEngine, KvConfig};
use flotilla::storage::kv::{
    Keyspace, KvEngine, KvError, KvRead, KvWriteBatch, MAX_KEY_BYTES, MAX_VALUE_BYTES,
};
use flotilla::storage::mem_kv::MemKvEngine;

fn keys(
    iter: impl Iterator<Item = Result<(Bytes, Bytes), flotilla::storage::kv::KvError>>,
) -> Vec<String> {
    iter.map(|p| String::from_utf8(p.unwrap().0.to_vec()).unwrap())
        .collect()
}

fn suite<E: KvEngine>(e: &E) {
    // Puts across keyspaces in one batch; the same key is independent per keyspace.
    let mut b = KvWriteBatch::default();
    for k in ["a", "b", "c", "d", "e"] {
        b.put(Keyspace::Data, k, format!("v{k}"));
    }
    b.put(Keyspace::Meta, "a", "meta-a");
    e.write(&b).unwrap();
    assert_eq!(
        e.get(Keyspace::Data, b"a").unwrap().as_deref(),
        Some(&b"va"[..])
    );
    assert_eq!(
        e.get(Keyspace::Meta, b"a").unwrap().as_deref(),
        Some(&b"meta-a"[..])
    );
    assert_eq!(e.get(Keyspace::Meta, b"b").unwrap(), None);

    // Ranges: [start, end), forward and reverse, unbounded end, empty and inverted ranges.
    assert_eq!(
        keys(e.scan(Keyspace::Data, b"b", Some(b"d"), false)),
        ["b", "c"]
    );
    assert_eq!(
        keys(e.scan(Keyspace::Data, b"b", Some(b"d"), true)),
        ["c", "b"]
    );
    assert_eq!(
        keys(e.scan(Keyspace::Data, b"c", None, false)),
        ["c", "d", "e"]
    );
    assert_eq!(
        keys(e.scan(Keyspace::Data, b"", None, true)),
        ["e", "d", "c", "b", "a"]
    );
    assert!(keys(e.scan(Keyspace::Data, b"d", Some(b"d"), false)).is_empty());
    assert!(keys(e.scan(Keyspace::Data, b"d", Some(b"b"), false)).is_empty());

    // A view does not see later writes.
    let view = e.view();
    let mut b = KvWriteBatch::default();
    b.put(Keyspace::Data, "a", "new");
    b.delete(Keyspace::Data, "e");
    // The writing that hands the engine the batch's keys and values leaves it empty.
    e.write_and_clear(&mut b).unwrap();
    assert!(b.is_empty());
    assert_eq!(
        view.get(Keyspace::Data, b"a").unwrap().as_deref(),
        Some(&b"va"[..])
    );
    assert_eq!(
        keys(view.scan(Keyspace::Data, b"", None, false)),
        ["a", "b", "c", "d", "e"]
    );
    assert_eq!(
        e.get(Keyspace::Data, b"a").unwrap().as_deref(),
        Some(&b"new"[..])
    );
    assert_eq!(
        keys(e.scan(Keyspace::Data, b"", None, false)),
        ["a", "b", "c", "d"]
    );

    // Delete range within one keyspace, ordered with the batch's other operations: a key
    // put earlier in the batch inside the range is deleted; one put after it, one before
    // the start, one at the (exclusive) end and one in another keyspace survive.
    let mut b = KvWriteBatch::default();
    b.put(Keyspace::Data, "a", "before-start");
    b.put(Keyspace::Data, "bb", "x");
    b.put(Keyspace::Data, "d", "at-end");
    b.put(Keyspace::Meta, "bc", "other-keyspace");
    b.delete_range(Keyspace::Data, "b", Some(Bytes::from("d")));
    b.put(Keyspace::Data, "c", "again");
    e.write_and_clear(&mut b).unwrap();
    assert!(b.is_empty());
    assert_eq!(
        keys(e.scan(Keyspace::Data, b"", None, false)),
        ["a", "c", "d"]
    );
    let get = |ks, k: &[u8]| e.get(ks, k).unwrap();
    assert_eq!(get(Keyspace::Data, b"c").as_deref(), Some(&b"again"[..]));
    assert_eq!(
        get(Keyspace::Data, b"a").as_deref(),
        Some(&b"before-start"[..])
    );
    assert_eq!(get(Keyspace::Data, b"d").as_deref(), Some(&b"at-end"[..]));
    assert_eq!(
        get(Keyspace::Meta, b"bc").as_deref(),
        Some(&b"other-keyspace"[..])
    );
    assert_eq!(
        e.get(Keyspace::Meta, b"a").unwrap().as_deref(),
        Some(&b"meta-a"[..]),
        "other keyspace untouched"
    );

    range_sizes_follow_puts_deletes_and_range_deletes(e);
}

/// Key and value bytes in `[start, end)`, counted.
fn exact_size(e: &impl KvRead, start: &[u8], end: Option<&[u8]>) -> u64 {
    e.scan(Keyspace::Data, start, end, false)
        .map(|p| p.map(|(k, v)| (k.len() + v.len()) as u64).unwrap())
        .sum()
}

fn assert_near(estimate: u64, exact: u64, what: &str) {
    let error = estimate.abs_diff(exact) as f64 / exact.max(1) as f64;
    assert!(error < 0.15, "{what}: estimate {estimate}, exact {exact}");
}

/// 40,000 keys (about 625 sampled) of 50 to 250 bytes under the `s/` prefix.
fn range_sizes_follow_puts_deletes_and_range_deletes(e: &impl KvEngine) {
    let key = |i: u32| format!("s/{i:06}");
    let fill = |value_len: &dyn Fn(u32) -> usize| {
        let mut b = KvWriteBatch::default();
        for i in 0..40_000 {
            b.put(Keyspace::Data, key(i), vec![b'x'; value_len(i)]);
        }
        e.write(&b).unwrap();
    };
    fill(&|i| 50 + (i % 200) as usize);
    let (lo, mid, hi) = (key(0), key(20_000), key(40_000));
    let ranges = [
        (lo.as_bytes(), Some(hi.as_bytes())),
        (lo.as_bytes(), Some(mid.as_bytes())),
        (mid.as_bytes(), Some(hi.as_bytes())),
    ];
    for (start, end) in ranges {
        let estimate = e.approximate_size(start, end).unwrap();
        assert_near(estimate, exact_size(e, start, end), "after the puts");
    }

    // Overwrites replace a sample's size; a view estimates as of its time.
    let view = e.view();
    fill(&|i| 2 * (50 + (i % 200) as usize));
    let all = (lo.as_bytes(), Some(hi.as_bytes()));
    assert_near(
        e.approximate_size(all.0, all.1).unwrap(),
        exact_size(e, all.0, all.1),
        "grown",
    );
    assert_near(
        view.approximate_size(all.0, all.1).unwrap(),
        exact_size(&view, all.0, all.1),
        "the view, before the overwrites",
    );

    // A range delete takes its samples along; single deletes take theirs.
    let mut b = KvWriteBatch::default();
    b.delete_range(Keyspace::Data, mid.clone(), None);
    for i in 0..10_000 {
        b.delete(Keyspace::Data, key(i));
    }
    e.write(&b).unwrap();
    assert_eq!(e.approximate_size(mid.as_bytes(), None).unwrap(), 0);
    assert_eq!(
        e.approximate_size(lo.as_bytes(), Some(key(10_000).as_bytes()))
            .unwrap(),
        0
    );
    let rest = (lo.as_bytes(), None);
    assert_near(
        e.approximate_size(rest.0, rest.1).unwrap(),
        exact_size(e, rest.0, rest.1),
        "what is left",
    );

    // Clean up, so the suite's other checks see only their own keys.
    let mut b = KvWriteBatch::default();
    b.delete_range(Keyspace::Data, "s/", Some(Bytes::from_static(b"s0")));
    e.write(&b).unwrap();
    assert_eq!(e.approximate_size(b"s/", Some(b"s0")).unwrap(), 0);
}

#[test]
fn fjall_engine_passes_the_suite_and_keeps_persisted_data() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = FjallKvEngine::open(&KvConfig::new(dir.path())).unwrap();
        suite(&e);
        e.persist().unwrap();
    }
    let e = FjallKvEngine::open(&KvConfig::new(dir.path())).unwrap();
    assert_eq!(
        keys(e.scan(Keyspace::Data, b"", None, false)),
        ["a", "c", "d"]
    );
    assert_eq!(
        e.get(Keyspace::Meta, b"a").unwrap().as_deref(),
        Some(&b"meta-a"[..])
    );
}

#[test]
fn mem_engine_passes_the_suite_and_a_crash_drops_what_was_not_persisted() {
    let e = MemKvEngine::new();
    suite(&e);
    e.persist().unwrap();
    let mut b = KvWriteBatch::default();
    b.put(Keyspace::Data, "late", "1");
    b.put(Keyspace::Meta, "late", "1");
    e.write(&b).unwrap();
    let view = e.view();
    e.crash();
    assert_eq!(e.get(Keyspace::Data, b"late").unwrap(), None);
    assert_eq!(e.get(Keyspace::Meta, b"late").unwrap(), None);
    assert_eq!(
        keys(e.scan(Keyspace::Data, b"", None, false)),
        ["a", "c", "d"]
    );
    // A view taken before the crash keeps what it saw.
    assert!(view.get(Keyspace::Data, b"late").unwrap().is_some());
}

/// A volatile engine passes the same suite, and keeps nothing for a crash: a persist
/// changes nothing, the crash loses every write.
#[test]
fn volatile_mem_engine_passes_the_suite_and_a_crash_loses_everything() {
    let e = MemKvEngine::with_durability(MemDurability::Volatile);
    suite(&e);
    e.persist().unwrap();
    assert_eq!(e.unsynced_batches(), 0, "no journal is kept");
    let view = e.view();
    e.crash_keeping(1);
    assert_eq!(
        keys(e.scan(Keyspace::Data, b"", None, false)),
        Vec::<String>::new()
    );
    assert_eq!(e.get(Keyspace::Meta, b"a").unwrap(), None);
    // A view taken before the crash keeps what it saw.
    assert_eq!(
        keys(view.scan(Keyspace::Data, b"", None, false)),
        ["a", "c", "d"]
    );
    let mut b = KvWriteBatch::default();
    b.put(Keyspace::Data, "after", "1");
    e.write(&b).unwrap();
    assert_eq!(keys(e.scan(Keyspace::Data, b"", None, false)), ["after"]);
}

/// A crash at the instant the power is cut: the store runs on, but every write and
/// persist after the cut fails; the writes before it are what `crash_keeping` keeps a
/// prefix of. Afterwards the power is back.
#[test]
fn mem_engine_keeps_nothing_written_after_its_power_was_cut() {
    let e = MemKvEngine::new();
    let put = |k: &'static str| {
        let mut b = KvWriteBatch::default();
        b.put(Keyspace::Data, k, "1");
        e.write(&b)
    };
    put("durable").unwrap();
    e.persist().unwrap();
    put("before-1").unwrap();
    put("before-2").unwrap();
    e.cut_power();
    assert!(put("after").is_err());
    assert!(e.persist().is_err());
    assert!(e.get(Keyspace::Data, b"after").unwrap().is_none());
    e.crash_keeping(1);
    assert_eq!(
        keys(e.scan(Keyspace::Data, b"", None, false)),
        ["before-1", "durable"]
    );
    put("again").unwrap();
    e.persist().unwrap();
    e.crash();
    assert_eq!(
        keys(e.scan(Keyspace::Data, b"", None, false)),
        ["again", "before-1", "durable"]
    );
}

/// A volatile engine's writes fail once its power is cut, whichever way they are written,
/// and nothing of them is seen.
#[test]
fn volatile_mem_engine_refuses_writes_after_its_power_was_cut() {
    let e = MemKvEngine::with_durability(MemDurability::Volatile);
    let batch = |k: &'static str| {
        let mut b = KvWriteBatch::default();
        b.put(Keyspace::Data, k, "1");
        b
    };
    e.write_and_clear(&mut batch("before")).unwrap();
    e.cut_power();
    assert!(e.write(&batch("after")).is_err());
    let mut b = batch("taken");
    assert!(e.write_and_clear(&mut b).is_err());
    assert!(b.is_empty());
    assert_eq!(keys(e.scan(Keyspace::Data, b"", None, false)), ["before"]);
}

/// Keys fjall cannot hold (empty, over 65,535 bytes, or legal but with a size-sample key
/// one byte too long) and oversized values are refused with a typed error, and nothing of
/// the batch is written.
fn limits_refuse_keys_the_engine_cannot_hold(e: &impl KvEngine) {
    let long = |n: usize| vec![b'k'; n];
    let bad: Vec<(KvWriteBatch, &str)> = vec![
        (with_ok(|b| b.put(Keyspace::Data, "", "v")), "empty key"),
        (with_ok(|b| b.delete(Keyspace::Data, "")), "empty delete"),
        (
            with_ok(|b| b.put(Keyspace::Meta, "", "v")),
            "empty meta key",
        ),
        (
            with_ok(|b| b.put(Keyspace::Data, long(65_536), "v")),
            "65,536",
        ),
        (
            with_ok(|b| b.put(Keyspace::Data, long(65_535), "v")),
            "65,535",
        ),
        (
            with_ok(|b| b.put(Keyspace::Meta, long(65_536), "v")),
            "meta 65,536",
        ),
        (
            with_ok(|b| b.put(Keyspace::Data, long(MAX_KEY_BYTES + 1), "v")),
            "max+1",
        ),
        (
            with_ok(|b| b.delete(Keyspace::Data, long(65_535))),
            "delete 65,535",
        ),
        (
            with_ok(|b| b.put(Keyspace::Data, "big", vec![0u8; MAX_VALUE_BYTES + 1])),
            "value max+1",
        ),
    ];
    for (mut batch, what) in bad {
        let r = e.write(&batch);
        assert!(
            matches!(
                r,
                Err(KvError::InvalidKey { .. } | KvError::ValueTooLarge { .. })
            ),
            "{what}: {r:?}"
        );
        assert_eq!(e.get(Keyspace::Data, b"ok").unwrap(), None, "{what}");
        let r = e.write_and_clear(&mut batch);
        assert!(
            matches!(
                r,
                Err(KvError::InvalidKey { .. } | KvError::ValueTooLarge { .. })
            ),
            "{what}, taken: {r:?}"
        );
        assert!(batch.is_empty(), "{what}: a refused batch is cleared too");
        assert_eq!(e.get(Keyspace::Data, b"ok").unwrap(), None, "{what}, taken");
    }
    // A key over the user limit (written under an older one) can still be deleted.
    let mut b = KvWriteBatch::default();
    b.delete(Keyspace::Data, long(MAX_KEY_BYTES + 1));
    e.write(&b).unwrap();
    // The largest key and value are accepted, sampled or not.
    let mut b = KvWriteBatch::default();
    for i in 0..200u8 {
        let mut key = long(MAX_KEY_BYTES);
        key[0] = i;
        b.put(Keyspace::Data, key, vec![i; 16]);
    }
    b.put(Keyspace::Data, "big", vec![7u8; MAX_VALUE_BYTES]);
    e.write(&b).unwrap();
    let big = e.get(Keyspace::Data, b"big").unwrap().unwrap();
    assert_eq!(big.len(), MAX_VALUE_BYTES);
    let n = e.scan(Keyspace::Data, b"", None, false).count();
    assert_eq!(n, 201);
    assert!(
        e.approximate_size(b"", None).unwrap() > 0,
        "some keys sampled"
    );
}

/// A batch with a valid put of `ok` first, then what `add` puts in.
fn with_ok(add: impl FnOnce(&mut KvWriteBatch)) -> KvWriteBatch {
    let mut b = KvWriteBatch::default();
    b.put(Keyspace::Data, "ok", "1");
    add(&mut b);
    b
}

#[test]
fn limits_on_both_engines() {
    let dir = tempfile::tempdir().unwrap();
    limits_refuse_keys_the_engine_cannot_hold(
        &FjallKvEngine::open(&KvConfig::new(dir.path())).unwrap(),
    );
    limits_refuse_keys_the_engine_cannot_hold(&MemKvEngine::new());
    limits_refuse_keys_the_engine_cannot_hold(&MemKvEngine::with_durability(
        MemDurability::Volatile,
    ));
}

/// A range delete is atomic against a concurrent writer. Each round races a writer
/// (put `k<r>`, delete `m<r>`) against a range delete of `k` (then put `m<r>`): in any
/// serial order exactly one of the two keys survives; a put landing between the range
/// delete's read of the keys present and its commit would leave both.
#[test]
fn fjall_range_delete_is_atomic_against_writers() {
    let dir = tempfile::tempdir().unwrap();
    let e = std::sync::Arc::new(FjallKvEngine::open(&KvConfig::new(dir.path())).unwrap());
    let rounds: u32 = std::env::var("FLOTILLA_KV_RACE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    for r in 0..rounds {
        let (k, m) = (format!("k{r:06}"), format!("m{r:06}"));
        let writer = {
            let (e, k, m) = (e.clone(), k.clone(), m.clone());
            std::thread::spawn(move || {
                let mut b = KvWriteBatch::default();
                b.put(Keyspace::Data, k, "w");
                b.delete(Keyspace::Data, m);
                e.write(&b).unwrap();
            })
        };
        let mut b = KvWriteBatch::default();
        b.delete_range(Keyspace::Data, "k", Some(Bytes::from_static(b"l")));
        b.put(Keyspace::Data, m.clone(), "d");
        e.write(&b).unwrap();
        writer.join().unwrap();
        let has = |key: &str| e.get(Keyspace::Data, key.as_bytes()).unwrap().is_some();
        assert!(has(&k) != has(&m), "round {r}: k {} m {}", has(&k), has(&m));
    }
}
