//! `RegionLog`: one region's log as the consensus core reads it, with a cache of recent
//! entries so a leader's replication rarely reads the disk, and the snapshot slot.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::RwLock;

use super::{LogError, RaftLogStore};
use crate::RegionId;
use crate::proto::raftpb::{ConfState, Entry, Snapshot};
use crate::proto::storagepb::RaftLocalState;
use crate::raft::StorageError;
use crate::raft::storage::{
    ByteBudget, LogStorage, RaftState, StorageResult, entry_size, snapshot_index,
};

/// Recent entries of one region, newest last, bounded in bytes.
#[derive(Debug, Default)]
struct EntryCache {
    entries: VecDeque<Entry>,
    bytes: u64,
}

impl EntryCache {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|e| e.index)
    }

    fn append(&mut self, ents: &[Entry], max_bytes: u64) {
        let Some(first) = ents.first() else { return };
        let contiguous = self
            .entries
            .back()
            .is_none_or(|b| first.index <= b.index + 1)
            && self.first_index().is_none_or(|f| first.index >= f);
        if !contiguous {
            self.clear();
        }
        while self.entries.back().is_some_and(|b| b.index >= first.index) {
            let e = self.entries.pop_back().expect("checked non-empty");
            self.bytes -= entry_size(&e);
        }
        for e in ents {
            self.bytes += entry_size(e);
            self.entries.push_back(e.clone());
        }
        while self.bytes > max_bytes && self.entries.len() > 1 {
            let e = self.entries.pop_front().expect("more than one entry");
            self.bytes -= entry_size(&e);
        }
    }

    fn drop_below(&mut self, index: u64) {
        while self.entries.front().is_some_and(|e| e.index < index) {
            let e = self.entries.pop_front().expect("checked non-empty");
            self.bytes -= entry_size(&e);
        }
    }

    /// Drops every entry and the room they took.
    fn release(&mut self) {
        *self = EntryCache::default();
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    fn get(&self, index: u64) -> Option<&Entry> {
        let first = self.first_index()?;
        self.entries
            .get(usize::try_from(index.checked_sub(first)?).ok()?)
    }
}

struct RegionLogState {
    local: RaftLocalState,
    conf_state: ConfState,
    /// The last entry dropped from the log (by compaction or a snapshot): index and term.
    truncated: (u64, u64),
    cache: EntryCache,
    snapshot: SnapshotSlot,
}

/// Snapshots are generated off the raft thread (they read the KV engine and write
/// files). The core's requests are recorded and answered "temporarily unavailable" until
/// the store offers a snapshot recent enough; one snapshot serves every follower that
/// needs it while the log has not been truncated past it.
#[derive(Debug, Default)]
struct SnapshotSlot {
    /// The lowest snapshot index the core asked for, not yet handed to the store.
    requested: Option<u64>,
    /// The store took a request and has not offered (or abandoned) a snapshot since.
    generating: bool,
    /// Boxed: rarely there, and every region has a slot.
    ready: Option<Box<Snapshot>>,
}

/// One region's log as the consensus core reads it.
pub struct RegionLog {
    region: RegionId,
    engine: Arc<dyn RaftLogStore>,
    cache_bytes: u64,
    state: RwLock<RegionLogState>,
}

impl std::fmt::Debug for RegionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegionLog")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl RegionLog {
    /// `truncated` is the (index, term) the log starts after — from the region's apply state
    /// — and `conf_state` the configuration as of the applied index.
    pub fn new(
        region: RegionId,
        engine: Arc<dyn RaftLogStore>,
        local: RaftLocalState,
        truncated: (u64, u64),
        conf_state: ConfState,
        cache_bytes: u64,
    ) -> Self {
        let state = RegionLogState {
            local,
            conf_state,
            truncated,
            cache: EntryCache::default(),
            snapshot: SnapshotSlot::default(),
        };
        RegionLog {
            region,
            engine,
            cache_bytes,
            state: RwLock::new(state),
        }
    }

    /// The region whose log this is.
    pub fn region(&self) -> RegionId {
        self.region
    }

    /// A write holding these entries and this state is durable: remember them.
    pub fn on_written(&self, entries: &[Entry], local: &RaftLocalState) {
        let mut st = self.state.write();
        st.cache.append(entries, self.cache_bytes);
        st.local = *local;
    }

    /// Entries the cache holds or has room for.
    #[cfg(test)]
    pub(crate) fn cache_slots(&self) -> usize {
        self.state.read().cache.entries.capacity()
    }

    /// Empties the entry cache and gives back its room, for a region gone quiet: its
    /// entries are durable in the log engine, and read from there should a follower need
    /// them after it wakes.
    pub fn release_cache(&self) {
        self.state.write().cache.release();
    }

    /// The log now starts after `(index, term)` (compaction or snapshot).
    /// Returns the offered snapshot if the truncation leaves it too old to send: its
    /// files may go.
    #[must_use]
    pub fn on_truncated(&self, index: u64, term: u64) -> Option<Snapshot> {
        let mut st = self.state.write();
        if index <= st.truncated.0 {
            return None;
        }
        st.truncated = (index, term);
        st.cache.drop_below(index + 1);
        let stale = st
            .snapshot
            .ready
            .as_ref()
            .is_some_and(|s| snapshot_index(s) < index);
        if stale {
            st.snapshot.ready.take().map(|s| *s)
        } else {
            None
        }
    }

    /// The lowest snapshot index the core asked for, if it asked and no generation is
    /// under way: the store then generates one at its applied index (at least this) and
    /// calls `offer_snapshot`, or `abandon_snapshot` if that failed.
    pub fn take_snapshot_request(&self) -> Option<u64> {
        let mut st = self.state.write();
        if st.snapshot.generating {
            return None;
        }
        let requested = st.snapshot.requested.take();
        st.snapshot.generating = requested.is_some();
        requested
    }

    /// A generated snapshot (metadata and a descriptor of its files) for the core to send.
    /// Returns the one it replaces, or itself if an offered one is newer: its files may go.
    #[must_use]
    pub fn offer_snapshot(&self, snapshot: Snapshot) -> Option<Snapshot> {
        let mut st = self.state.write();
        st.snapshot.generating = false;
        let offered = snapshot_index(&snapshot);
        let held = st.snapshot.ready.as_deref().map_or(0, snapshot_index);
        // A request the core made while this one was generated is served by it (or by the
        // newer one held): it must not start a second generation of the same snapshot.
        if st
            .snapshot
            .requested
            .is_some_and(|r| r <= offered.max(held))
        {
            st.snapshot.requested = None;
        }
        if held > offered {
            return Some(snapshot);
        }
        st.snapshot.ready.replace(Box::new(snapshot)).map(|s| *s)
    }

    /// The generation the store took a request for failed; the next request starts anew.
    pub fn abandon_snapshot(&self) {
        self.state.write().snapshot.generating = false;
    }

    /// Replaces the configuration `initial_state` reports; as for `new`, it should be the
    /// configuration as of the applied index.
    pub fn set_conf_state(&self, cs: ConfState) {
        self.state.write().conf_state = cs;
    }

    /// A read the log could not serve. A range a concurrent compaction or reset moved
    /// out of the log is `Compacted` (below it) or `Unavailable` (beyond it), which the core
    /// handles (a snapshot, a retry); anything else is a failure of the log itself.
    fn engine_error(&self, e: LogError) -> StorageError {
        match e {
            LogError::OutOfRange { low, span, .. } => match span.0 {
                Some(s) if low < s.first => StorageError::Compacted,
                _ => StorageError::Unavailable,
            },
            source => StorageError::backend(RegionLogError {
                region: self.region,
                source,
            }),
        }
    }
}

/// A failure of the store's raft log, as one region's `LogStorage` reports it: the core
/// gets it as `StorageError::Backend`, from which the store can downcast it.
#[derive(Debug, thiserror::Error)]
#[error("raft log of region {region}: {source}")]
pub struct RegionLogError {
    /// The region whose read failed.
    pub region: RegionId,
    /// What the raft log reported.
    pub source: LogError,
}

impl LogStorage for RegionLog {
    fn initial_state(&self) -> StorageResult<RaftState> {
        let st = self.state.read();
        Ok(RaftState {
            hard_state: st.local.hard_state.unwrap_or_default(),
            conf_state: st.conf_state.clone(),
        })
    }

    fn entries(&self, low: u64, high: u64, max_bytes: u64) -> StorageResult<Vec<Entry>> {
        let st = self.state.read();
        let last = st.local.last_index.max(st.truncated.0);
        if low <= st.truncated.0 {
            return Err(StorageError::Compacted);
        }
        if high > last + 1 || low > high {
            return Err(StorageError::Unavailable);
        }
        if low == high {
            return Ok(Vec::new());
        }
        let cached_from = st.cache.first_index().unwrap_or(u64::MAX);
        let mut out = if low < cached_from {
            let end = high.min(cached_from);
            let stored = self
                .engine
                .entries(self.region, low, end, max_bytes)
                .map_err(|e| self.engine_error(e))?;
            if (stored.len() as u64) < end - low {
                if stored.is_empty() {
                    return Err(StorageError::Unavailable);
                }
                return Ok(stored);
            }
            stored
        } else {
            Vec::new()
        };
        let mut budget = ByteBudget::new(max_bytes);
        for e in &out {
            budget.take(e);
        }
        for index in low.max(cached_from)..high {
            let Some(e) = st.cache.get(index) else {
                return Err(StorageError::Unavailable);
            };
            if !budget.take(e) {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    fn term(&self, index: u64) -> StorageResult<u64> {
        let st = self.state.read();
        let (t_index, t_term) = st.truncated;
        match index.cmp(&t_index) {
            std::cmp::Ordering::Equal => return Ok(t_term),
            std::cmp::Ordering::Less => return Err(StorageError::Compacted),
            std::cmp::Ordering::Greater => {}
        }
        if index > st.local.last_index {
            return Err(StorageError::Unavailable);
        }
        if index == st.local.last_index && st.local.last_term != 0 {
            return Ok(st.local.last_term);
        }
        if let Some(e) = st.cache.get(index) {
            return Ok(e.term);
        }
        match self.engine.entry(self.region, index) {
            Ok(Some(e)) => Ok(e.term),
            Ok(None) => Err(StorageError::Unavailable),
            Err(e) => Err(self.engine_error(e)),
        }
    }

    fn first_index(&self) -> u64 {
        self.state.read().truncated.0 + 1
    }

    fn last_index(&self) -> u64 {
        let st = self.state.read();
        st.local.last_index.max(st.truncated.0)
    }

    /// The offered snapshot if it covers `request_index` and everything truncated;
    /// otherwise the request is recorded for the store and the leader retries later.
    fn snapshot(&self, request_index: u64) -> StorageResult<Snapshot> {
        let mut st = self.state.write();
        let needed = request_index.max(st.truncated.0);
        // One made before a member of the current configuration joined would not name it:
        // a follower given it drops it (a replica born from it would apply entries of a
        // membership it is not part of), so a new one is made.
        let none = ConfState::default();
        let ready = st.snapshot.ready.as_ref().filter(|s| {
            s.metadata.as_ref().is_some_and(|m| {
                let members = m.conf_state.as_ref().unwrap_or(&none);
                m.index >= needed && names_all(members, &st.conf_state)
            })
        });
        if let Some(snapshot) = ready {
            return Ok(Snapshot::clone(snapshot));
        }
        let requested = st.snapshot.requested.get_or_insert(needed);
        *requested = (*requested).max(needed);
        Err(StorageError::SnapshotTemporarilyUnavailable)
    }
}

/// Whether configuration `snapshot` names every member of configuration `current`.
fn names_all(snapshot: &ConfState, current: &ConfState) -> bool {
    let members = |cs: &ConfState| -> std::collections::BTreeSet<u64> {
        [
            &cs.voters,
            &cs.learners,
            &cs.voters_outgoing,
            &cs.learners_next,
        ]
        .into_iter()
        .flatten()
        .copied()
        .collect()
    };
    members(current).is_subset(&members(snapshot))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ents(first: u64, last: u64, term: u64) -> Vec<Entry> {
        (first..=last)
            .map(|index| Entry {
                index,
                term,
                data: vec![0; 10].into(),
                ..Default::default()
            })
            .collect()
    }

    /// (index, term) of every cached entry, checking `first_index`, `get` and the byte
    /// count agree with them.
    fn held(c: &EntryCache) -> Vec<(u64, u64)> {
        let out: Vec<(u64, u64)> = c.entries.iter().map(|e| (e.index, e.term)).collect();
        assert_eq!(c.first_index(), out.first().map(|&(i, _)| i));
        for &(i, t) in &out {
            assert_eq!(c.get(i).map(|e| e.term), Some(t), "entry {i}");
        }
        assert_eq!(c.bytes, c.entries.iter().map(entry_size).sum::<u64>());
        out
    }

    /// A snapshot made before a member of the current configuration joined is not handed
    /// out again (its follower would refuse it): a new one is asked for. One naming a
    /// member removed since still serves.
    #[test]
    fn a_snapshot_missing_a_current_member_is_made_again() {
        use crate::proto::raftpb::SnapshotMetadata;
        use crate::storage::mem_log::MemRaftLog;
        let members = |voters: &[u64], learners: &[u64]| ConfState {
            voters: voters.to_vec(),
            learners: learners.to_vec(),
            ..Default::default()
        };
        let made = |index, cs: ConfState| Snapshot {
            metadata: Some(SnapshotMetadata {
                conf_state: Some(cs),
                index,
                term: 2,
            }),
            ..Default::default()
        };
        let log = RegionLog::new(
            RegionId(5),
            Arc::new(MemRaftLog::new()),
            RaftLocalState::default(),
            (10, 2),
            members(&[1, 2], &[]),
            0,
        );
        let unavailable = Err(StorageError::SnapshotTemporarilyUnavailable);
        assert_eq!(log.snapshot(11), unavailable);
        assert_eq!(log.take_snapshot_request(), Some(11));
        assert_eq!(log.offer_snapshot(made(12, members(&[1, 2], &[]))), None);
        let served = |log: &RegionLog| log.snapshot(11).map(|s| snapshot_index(&s));
        assert_eq!(served(&log), Ok(12), "the same members: served again");

        log.set_conf_state(members(&[1, 2], &[3]));
        assert_eq!(log.snapshot(11), unavailable, "peer 3 is not in it");
        assert_eq!(log.take_snapshot_request(), Some(11));
        let _ = log.offer_snapshot(made(14, members(&[1, 2], &[3])));
        assert_eq!(served(&log), Ok(14));

        log.set_conf_state(members(&[1, 3], &[]));
        assert_eq!(
            served(&log),
            Ok(14),
            "peer 2 removed: still names every member"
        );
    }

    /// A read a concurrent write moved out of the log is `Compacted` below the log and
    /// `Unavailable` beyond it (or with no log); any other failure is the log's own.
    #[test]
    fn engine_errors_map_to_what_the_core_handles() {
        use crate::storage::mem_log::MemRaftLog;
        use crate::storage::raft_log::{LogSpan, SpanDisplay};
        let log = RegionLog::new(
            RegionId(5),
            Arc::new(MemRaftLog::new()),
            RaftLocalState::default(),
            (0, 0),
            ConfState::default(),
            0,
        );
        let moved = |low: u64, span: Option<LogSpan>| LogError::OutOfRange {
            region: RegionId(5),
            low,
            high: low + 1,
            span: SpanDisplay(span),
        };
        let span = Some(LogSpan { first: 5, last: 10 });
        let table = [
            (moved(4, span), StorageError::Compacted),
            (moved(5, span), StorageError::Unavailable),
            (moved(11, span), StorageError::Unavailable),
            (moved(1, None), StorageError::Unavailable),
        ];
        for (e, want) in table {
            assert_eq!(log.engine_error(e), want);
        }
        let own = LogError::Corrupt {
            region: RegionId(5),
            what: "test".into(),
        };
        assert!(matches!(log.engine_error(own), StorageError::Backend(_)));
    }

    /// The cache follows the log: appends continue it, an overwrite replaces the suffix,
    /// anything that does not connect (a gap after it, a start before it) starts it over,
    /// and it keeps the newest entries within its byte budget (at least one).
    #[test]
    fn entry_cache_follows_appends_overwrites_and_its_budget() {
        let size = entry_size(&ents(1, 1, 1)[0]);
        let mut c = EntryCache::default();
        c.append(&ents(1, 3, 1), u64::MAX);
        assert_eq!(held(&c), [(1, 1), (2, 1), (3, 1)]);
        c.append(&ents(4, 5, 1), u64::MAX);
        assert_eq!(held(&c), [(1, 1), (2, 1), (3, 1), (4, 1), (5, 1)]);
        c.append(&ents(3, 4, 2), u64::MAX);
        assert_eq!(held(&c), [(1, 1), (2, 1), (3, 2), (4, 2)], "overwrite");
        c.append(&ents(6, 7, 2), u64::MAX);
        assert_eq!(held(&c), [(6, 2), (7, 2)], "a gap starts over");
        c.append(&ents(2, 3, 3), u64::MAX);
        assert_eq!(
            held(&c),
            [(2, 3), (3, 3)],
            "a start before the cache starts over"
        );
        c.append(&ents(4, 8, 3), 3 * size);
        assert_eq!(
            held(&c),
            [(6, 3), (7, 3), (8, 3)],
            "the newest within the budget"
        );
        c.append(&ents(9, 9, 3), 0);
        assert_eq!(held(&c), [(9, 3)], "at least one");
        assert!(c.get(8).is_none() && c.get(10).is_none());
        c.append(&[], u64::MAX);
        assert_eq!(held(&c), [(9, 3)]);
        c.append(&ents(10, 12, 3), u64::MAX);
        c.drop_below(11);
        assert_eq!(held(&c), [(11, 3), (12, 3)]);
        c.clear();
        assert!(held(&c).is_empty());
    }

    /// A log that serves at most two entries per read, as one whose byte budget ran out
    /// would.
    struct ShortReads(crate::storage::mem_log::MemRaftLog);

    impl RaftLogStore for ShortReads {
        fn write(
            &self,
            batch: &mut crate::storage::raft_log::LogWriteBatch,
            sync: crate::storage::SyncMode,
        ) -> Result<usize, LogError> {
            self.0.write(batch, sync)
        }
        fn recover(&self) -> Result<Vec<(RegionId, RaftLocalState)>, LogError> {
            self.0.recover()
        }
        fn local_state(&self, region: RegionId) -> Result<Option<RaftLocalState>, LogError> {
            self.0.local_state(region)
        }
        fn span(&self, region: RegionId) -> Option<crate::storage::raft_log::LogSpan> {
            self.0.span(region)
        }
        fn entry(&self, region: RegionId, index: u64) -> Result<Option<Entry>, LogError> {
            self.0.entry(region, index)
        }
        fn entries(
            &self,
            region: RegionId,
            low: u64,
            high: u64,
            max_bytes: u64,
        ) -> Result<Vec<Entry>, LogError> {
            let mut got = self.0.entries(region, low, high, max_bytes)?;
            got.truncate(2);
            Ok(got)
        }
        fn purge_expired_files(&self) -> Result<Vec<RegionId>, LogError> {
            self.0.purge_expired_files()
        }
    }

    /// A restarted region knows its last entry's term from its recorded state: reading it
    /// would decompress the whole write batch that held the entry. Unrecorded (0), the
    /// term comes from the log.
    #[test]
    fn the_last_term_comes_from_the_recorded_state() {
        let engine = Arc::new(crate::storage::mem_log::MemRaftLog::new());
        let local = |last_term| RaftLocalState {
            hard_state: None,
            last_index: 10,
            last_term,
        };
        // The log holds none of the entries: only the state can answer.
        let log = RegionLog::new(
            RegionId(1),
            engine.clone(),
            local(7),
            (4, 2),
            ConfState::default(),
            1 << 20,
        );
        assert_eq!(log.term(10), Ok(7));
        assert_eq!(log.term(4), Ok(2));
        assert!(log.term(9).is_err());
        assert_eq!(log.term(11), Err(StorageError::Unavailable));
        let unrecorded = RegionLog::new(
            RegionId(1),
            engine,
            local(0),
            (4, 2),
            ConfState::default(),
            1 << 20,
        );
        assert!(unrecorded.term(10).is_err());
        // A write moves it along.
        log.on_written(
            &ents(11, 12, 8),
            &RaftLocalState {
                hard_state: None,
                last_index: 12,
                last_term: 8,
            },
        );
        assert_eq!(log.term(12), Ok(8));
    }

    /// A read the log answers short (its byte budget ran out) is returned as it is, never
    /// continued from the cache past a gap: what `entries` returns is consecutive.
    #[test]
    fn a_short_read_from_the_log_is_not_continued_past_a_gap() {
        use crate::storage::SyncMode;
        use crate::storage::raft_log::LogWriteBatch;
        let engine = Arc::new(ShortReads(crate::storage::mem_log::MemRaftLog::new()));
        let r = RegionId(1);
        let mut batch = LogWriteBatch::default();
        batch.append(r, &ents(1, 10, 1)).unwrap();
        let local = RaftLocalState {
            hard_state: None,
            last_index: 10,
            last_term: 1,
        };
        batch.put_state(r, &local);
        engine.write(&mut batch, SyncMode::Sync).unwrap();
        let log = RegionLog::new(r, engine, local, (0, 0), ConfState::default(), 1 << 20);
        // The cache holds 8..=10 only (a restart, then the last write).
        log.on_written(&ents(8, 10, 1), &local);
        let got = log.entries(1, 11, u64::MAX).unwrap();
        let indices: Vec<u64> = got.iter().map(|e| e.index).collect();
        assert_eq!(indices, vec![1, 2]);
        // Reads inside the cache still come whole.
        let got = log.entries(8, 11, u64::MAX).unwrap();
        assert_eq!(got.len(), 3);
    }
}
