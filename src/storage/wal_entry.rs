//! raft-engine stores entries of a protobuf v2 `Message` type. flotilla's entries are prost
//! types, so each entry travels as a tiny hand-written protobuf v2 message wrapping the
//! prost encoding: field 1 = the encoded `Entry`, field 2 = its index (raft-engine asks for
//! the index of every entry it is given, and decoding the whole entry for that would waste
//! work).

use std::any::Any;

use bytes::Bytes;
use protobuf::reflect::MessageDescriptor;
use protobuf::{
    CachedSize, Clear, CodedInputStream, CodedOutputStream, ProtobufError, ProtobufResult,
    UnknownFields, wire_format,
};

use crate::raft::pb::Entry;

const ENTRY_FIELD: u32 = 1;
const INDEX_FIELD: u32 = 2;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct WalEntry {
    /// The prost encoding of one `Entry`.
    pub encoded: Vec<u8>,
    pub index: u64,
    cached_size: CachedSize,
    unknown_fields: UnknownFields,
}

impl WalEntry {
    pub fn from_entry(e: &Entry) -> Self {
        WalEntry {
            encoded: prost::Message::encode_to_vec(e),
            index: e.index,
            ..Default::default()
        }
    }

    /// Decodes the wrapped entry; a corrupt record is an error, never a panic.
    pub fn to_entry(&self) -> Result<Entry, prost::DecodeError> {
        <Entry as prost::Message>::decode(Bytes::copy_from_slice(&self.encoded))
    }
}

/// The `MessageExt` raft-engine needs to find entry indices.
pub struct WalEntryExt;

impl raft_engine::MessageExt for WalEntryExt {
    type Entry = WalEntry;

    fn index(e: &WalEntry) -> u64 {
        e.index
    }
}

impl Clear for WalEntry {
    fn clear(&mut self) {
        self.encoded.clear();
        self.index = 0;
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
                    self.encoded = is.read_bytes()?
                }
                (INDEX_FIELD, wire_format::WireTypeVarint) => self.index = is.read_uint64()?,
                (ENTRY_FIELD | INDEX_FIELD, _) => {
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
        os.write_bytes(ENTRY_FIELD, &self.encoded)?;
        os.write_uint64(INDEX_FIELD, self.index)?;
        Ok(())
    }

    fn compute_size(&self) -> u32 {
        let size = protobuf::rt::bytes_size(ENTRY_FIELD, &self.encoded)
            + protobuf::rt::value_size(INDEX_FIELD, self.index, wire_format::WireTypeVarint);
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
    use crate::raft::pb::EntryType;
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
        let back = WalEntry::parse_from_bytes(&bytes).unwrap();
        assert_eq!(back, w);
        assert_eq!(back.index, 12345);
        assert_eq!(back.to_entry().unwrap(), e);
        assert_eq!(w.compute_size() as usize, bytes.len());
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
        // A well-formed wrapper around garbage: the inner decode fails, without panicking.
        let garbage = WalEntry {
            encoded: vec![0xff; 5],
            index: 1,
            ..Default::default()
        };
        assert!(garbage.to_entry().is_err());
    }
}
