//! raft-engine stores entries of a protobuf v2 `Message` type. flotilla's entries are prost
//! types, so each travels inside a tiny hand-written protobuf v2 message whose only field
//! (1, length-delimited) is the prost encoding of the `Entry`. The wrapper holds the
//! decoded `Entry`: writing encodes it straight into raft-engine's buffer (through one
//! reused scratch buffer per thread), reading decodes it once, and the payload stays
//! shared `Bytes` throughout.

use std::any::Any;
use std::cell::RefCell;

use bytes::Bytes;
use prost::Message as _;
use protobuf::reflect::MessageDescriptor;
use protobuf::{
    CachedSize, Clear, CodedInputStream, CodedOutputStream, ProtobufError, ProtobufResult,
    UnknownFields, wire_format,
};

use crate::proto::raftpb::Entry;

const ENTRY_FIELD: u32 = 1;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// An `Entry` as raft-engine stores it: the protobuf v2 wrapper of the module's notes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WalEntry {
    /// The wrapped entry, decoded.
    pub entry: Entry,
    cached_size: CachedSize,
    unknown_fields: UnknownFields,
}

impl WalEntry {
    /// Wraps a copy of the entry (its payload `Bytes` shared, not copied).
    pub fn from_entry(e: &Entry) -> Self {
        WalEntry {
            entry: e.clone(),
            ..Default::default()
        }
    }

    /// The wrapped entry.
    pub fn into_entry(self) -> Entry {
        self.entry
    }
}

/// The `MessageExt` raft-engine needs to find entry indices.
pub struct WalEntryExt;

impl raft_engine::MessageExt for WalEntryExt {
    type Entry = WalEntry;

    fn index(e: &WalEntry) -> u64 {
        e.entry.index
    }
}

fn corrupt(what: String) -> ProtobufError {
    ProtobufError::IoError(std::io::Error::new(std::io::ErrorKind::InvalidData, what))
}

impl Clear for WalEntry {
    fn clear(&mut self) {
        self.entry = Entry::default();
        self.unknown_fields.clear();
    }
}

impl protobuf::Message for WalEntry {
    /// Reflection is not supported (as in protobuf's lite runtime); raft-engine only
    /// encodes and decodes.
    fn descriptor(&self) -> &'static MessageDescriptor {
        Self::descriptor_static()
    }

    fn is_initialized(&self) -> bool {
        true
    }

    fn merge_from(&mut self, is: &mut CodedInputStream) -> ProtobufResult<()> {
        while !is.eof()? {
            let (field, wire_type) = is.read_tag_unpack()?;
            match (field, wire_type) {
                (ENTRY_FIELD, wire_format::WireTypeLengthDelimited) => {
                    let raw = Bytes::from(is.read_bytes()?);
                    self.entry = Entry::decode(raw).map_err(|e| corrupt(format!("entry: {e}")))?;
                }
                (ENTRY_FIELD, _) => {
                    return Err(ProtobufError::WireError(
                        protobuf::error::WireError::UnexpectedWireType(wire_type),
                    ));
                }
                _ => is.skip_field(wire_type)?,
            }
        }
        Ok(())
    }

    fn write_to_with_cached_sizes(&self, os: &mut CodedOutputStream) -> ProtobufResult<()> {
        SCRATCH.with(|scratch| {
            let mut buf = scratch.borrow_mut();
            buf.clear();
            self.entry
                .encode(&mut *buf)
                .map_err(|e| corrupt(format!("encode: {e}")))?;
            os.write_tag(ENTRY_FIELD, wire_format::WireTypeLengthDelimited)?;
            os.write_raw_varint32(buf.len() as u32)?;
            os.write_raw_bytes(&buf)
        })
    }

    fn compute_size(&self) -> u32 {
        let len = self.entry.encoded_len() as u32;
        let size = protobuf::rt::tag_size(ENTRY_FIELD)
            + protobuf::rt::compute_raw_varint32_size(len)
            + len;
        self.cached_size.set(size);
        size
    }

    fn get_cached_size(&self) -> u32 {
        self.cached_size.get()
    }

    fn get_unknown_fields(&self) -> &UnknownFields {
        &self.unknown_fields
    }

    fn mut_unknown_fields(&mut self) -> &mut UnknownFields {
        &mut self.unknown_fields
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }

    fn new() -> Self {
        Self::default()
    }

    fn default_instance() -> &'static Self {
        static INSTANCE: std::sync::OnceLock<WalEntry> = std::sync::OnceLock::new();
        INSTANCE.get_or_init(WalEntry::default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::raftpb::EntryType;
    use protobuf::Message as _;

    #[test]
    fn round_trips_through_protobuf_v2() {
        let e = Entry {
            term: 7,
            index: 12345,
            entry_type: EntryType::EntryConfChangeV2 as i32,
            data: Bytes::from_static(b"payload"),
            context: b"ctx".to_vec(),
        };
        let w = WalEntry::from_entry(&e);
        let bytes = w.write_to_bytes().unwrap();
        assert_eq!(w.compute_size() as usize, bytes.len());
        let back = WalEntry::parse_from_bytes(&bytes).unwrap();
        assert_eq!(back, w);
        assert_eq!(
            <WalEntryExt as raft_engine::MessageExt>::index(&back),
            12345
        );
        assert_eq!(back.into_entry(), e);
    }

    #[test]
    fn corrupt_records_are_errors() {
        let w = WalEntry::from_entry(&Entry {
            index: 3,
            term: 1,
            ..Default::default()
        });
        let bytes = w.write_to_bytes().unwrap();
        // Truncated record.
        assert!(WalEntry::parse_from_bytes(&bytes[..bytes.len() - 1]).is_err());
        // Field 1 with the wrong wire type.
        assert!(WalEntry::parse_from_bytes(&[0x08, 0x01]).is_err());
        // A well-formed wrapper around garbage: an error, not a panic.
        assert!(WalEntry::parse_from_bytes(&[0x0a, 0x03, 0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn the_protobuf_message_contract_holds() {
        let mut w = WalEntry::from_entry(&Entry {
            term: 2,
            index: 9,
            data: Bytes::from_static(b"abc"),
            ..Default::default()
        });
        let size = w.compute_size();
        assert_eq!(
            w.get_cached_size(),
            size,
            "compute_size caches what it returns"
        );
        // Unknown fields set through one accessor are seen through the other.
        w.mut_unknown_fields().add_varint(9, 1);
        assert!(w.get_unknown_fields().get(9).is_some());
        // Clearing forgets the entry and the unknown fields.
        w.clear();
        assert_eq!(w.entry, Entry::default());
        assert!(w.get_unknown_fields().get(9).is_none());
        // One shared default instance.
        assert!(std::ptr::eq(
            WalEntry::default_instance(),
            WalEntry::default_instance()
        ));
        assert_eq!(*WalEntry::default_instance(), WalEntry::default());
    }
}
