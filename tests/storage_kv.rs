//! One suite of `KvEngine` tests, run against the fjall engine and the in-memory engine,
//! plus each engine's durability: fjall survives a reopen after `persist`; the in-memory
//! engine's simulated crash drops exactly what was not persisted.

use bytes::Bytes;
use flotilla::storage::fjall_kv::{FjallKvEngine, KvConfig};
use flotilla::storage::kv::{Keyspace, KvEngine, KvRead, KvWriteBatch};
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
    e.write(&b).unwrap();
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
    // put earlier in the batch is deleted, a key put after it survives.
    let mut b = KvWriteBatch::default();
    b.put(Keyspace::Data, "bb", "x");
    b.delete_range(Keyspace::Data, "b", Some(Bytes::from("d")));
    b.put(Keyspace::Data, "c", "again");
    e.write(&b).unwrap();
    assert_eq!(
        keys(e.scan(Keyspace::Data, b"", None, false)),
        ["a", "c", "d"]
    );
    assert_eq!(
        e.get(Keyspace::Data, b"c").unwrap().as_deref(),
        Some(&b"again"[..])
    );
    assert_eq!(
        e.get(Keyspace::Meta, b"a").unwrap().as_deref(),
        Some(&b"meta-a"[..]),
        "other keyspace untouched"
    );

    // Sizes count keys and values in the range.
    let all = e.approximate_size(Keyspace::Data, b"", None).unwrap();
    let part = e
        .approximate_size(Keyspace::Data, b"a", Some(b"c"))
        .unwrap();
    assert_eq!(part, 1 + 3, "a -> new");
    assert_eq!(all, (1 + 3) + (1 + 5) + (1 + 2), "a, c, d");
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
