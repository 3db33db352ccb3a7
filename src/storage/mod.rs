//! Storage: one raft-engine log for every region of a store (`raft_log`, with the adapter
//! raft-engine's protobuf v2 entry trait needs in `wal_entry`), and the KV engine (`kv`:
//! the trait; `fjall_kv` on disk; `mem_kv` in memory with explicit durability), region
//! snapshots (`snapshot`), region and apply state (`region_meta`) and log GC (`log_gc`).

pub mod fjall_kv;
mod journaled;
pub mod kv;
pub mod log_gc;
pub mod mem_kv;
pub mod mem_log;
pub mod raft_log;
pub mod region_meta;
pub mod snapshot;
pub mod wal_entry;

/// Whether a write waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Fsynced before the write returns: what votes and append acknowledgements wait for.
    Sync,
    /// Left in the page cache (or the engine's journal buffer); a crash may lose it.
    NoSync,
}

/// What an in-memory engine (`MemKvEngine`, `MemRaftLog`) keeps for a crash.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MemDurability {
    /// A synced write (a persisted one, for the KV engine) is durable: a simulated crash
    /// keeps those and may keep a prefix of the rest, as a disk would. The engine keeps a
    /// second copy of its state and a journal of the writes since the last sync for it:
    /// what the crash tests and the simulator need.
    #[default]
    Simulated,
    /// Nothing outlives the process, as nothing outlives it in a store run in memory:
    /// one copy of the state, no journal, a sync does nothing, and a crash loses
    /// everything. For the in-memory embedded mode and the in-memory benchmark.
    Volatile,
}

/// How a block that ends with the CRC32 (little-endian) of the bytes before it checks out.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Crc32Trailer<'a> {
    /// The checksum matches; the bytes it covers.
    Intact(&'a [u8]),
    /// The checksum does not match.
    Mismatch,
    /// Too short to hold a checksum.
    TooShort,
}

/// Checks a block's CRC32 trailer (raft-engine's entry blocks, snapshot meta files).
pub(crate) fn check_crc32_trailer(block: &[u8]) -> Crc32Trailer<'_> {
    let Some(split) = block.len().checked_sub(4) else {
        return Crc32Trailer::TooShort;
    };
    let (body, crc) = block.split_at(split);
    let crc = u32::from_le_bytes(crc.try_into().expect("four bytes"));
    if crc32fast::hash(body) == crc {
        Crc32Trailer::Intact(body)
    } else {
        Crc32Trailer::Mismatch
    }
}
