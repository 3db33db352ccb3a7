//! Write entries encoded and decoded by hand, byte for byte as prost does it. prost's
//! generic code was over a quarter of an in-memory store's instructions: computing each
//! nested message's length again at every level and cloning every key and value to encode
//! a leader's entry, and about 600 instructions to decode a one-put write on each follower.
//!
//! The leader's entry (`encode_writes`) is exactly what prost would write for the same
//! `RaftCommand` (tested against it). A follower reads that canonical shape by hand
//! (`decode_command`) — fields in order, each once, none unknown — and hands anything else
//! (a split, an unknown field, a field out of order or repeated, a wire type that does not
//! fit, a length past the end) to prost, whose answer stands: the hand-written path returns
//! a command only where prost would return the same one (tested against it on random
//! commands and on damaged encodings of them).

use bytes::Bytes;
use prost::Message as _;

use crate::proto::commandpb::{
    CompareAndSwap, Delete, DeleteRange, Op, Put, RaftCommand, WriteBatch, WriteCommand, op,
    raft_command,
};
use crate::proto::metapb::RegionEpoch;

/// `data` decoded as a `RaftCommand`, as `RaftCommand::decode` would.
pub(crate) fn decode_command(data: &Bytes) -> Result<RaftCommand, prost::DecodeError> {
    match canonical_writes(data) {
        Some(command) => Ok(command),
        None => RaftCommand::decode(data.clone()),
    }
}

/// The entry data of a `RaftCommand` of `region_id`, `epoch` and these writes: the bytes
/// `encode_to_vec` gives for it, written in one pass over lengths computed once.
pub(crate) fn encode_writes(
    region_id: u64,
    epoch: &RegionEpoch,
    commands: &[WriteCommand],
) -> Vec<u8> {
    let command_lens: Vec<usize> = commands.iter().map(command_len).collect();
    let batch_len = command_lens.iter().map(|&len| 1 + nested_len(len)).sum();
    let mut out = Vec::with_capacity(entry_len(region_id, epoch, batch_len));
    if region_id != 0 {
        out.push(key(1, VARINT));
        put_varint(&mut out, region_id);
    }
    out.push(key(2, LEN));
    put_varint(&mut out, epoch_len(epoch) as u64);
    for (field, value) in [(1, epoch.conf_ver), (2, epoch.version)] {
        if value != 0 {
            out.push(key(field, VARINT));
            put_varint(&mut out, value);
        }
    }
    out.push(key(5, LEN));
    put_varint(&mut out, batch_len as u64);
    for (command, len) in commands.iter().zip(command_lens) {
        out.push(key(1, LEN));
        put_varint(&mut out, len as u64);
        for op in &command.ops {
            out.push(key(1, LEN));
            match op_body(op) {
                Some((field, body_len)) => {
                    put_varint(&mut out, (1 + nested_len(body_len)) as u64);
                    out.push(key(field, LEN));
                    put_varint(&mut out, body_len as u64);
                    put_op_body(&mut out, op);
                }
                None => out.push(0),
            }
        }
    }
    out
}

/// The encoded bytes of a `RaftCommand` of `region_id` and `epoch` whose `WriteBatch` is
/// `batch_len` bytes (its writes, each with key and length: the sum of `batched_len`).
pub(crate) fn entry_len(region_id: u64, epoch: &RegionEpoch, batch_len: usize) -> usize {
    let region = if region_id == 0 {
        0
    } else {
        1 + varint_len(region_id)
    };
    region + 1 + nested_len(epoch_len(epoch)) + 1 + nested_len(batch_len)
}

/// A write's encoded bytes as one of a `WriteBatch`'s commands (key and length included):
/// what it adds to its entry.
pub(crate) fn batched_len(command: &WriteCommand) -> usize {
    1 + nested_len(command_len(command))
}

/// An `Op`'s oneof field: its number and the encoded bytes of its message; `None` when
/// unset (the op is then an empty message).
fn op_body(op: &Op) -> Option<(u8, usize)> {
    Some(match op.op.as_ref()? {
        op::Op::Put(p) => (1, bytes_len(&p.key) + bytes_len(&p.value)),
        op::Op::Delete(d) => (2, bytes_len(&d.key)),
        op::Op::DeleteRange(r) => (3, bytes_len(&r.start_key) + bytes_len(&r.end_key)),
        op::Op::CompareAndSwap(c) => (4, cas_len(c)),
    })
}

/// The fields of an `Op`'s oneof message.
fn put_op_body(out: &mut Vec<u8>, op: &Op) {
    match &op.op {
        None => {}
        Some(op::Op::Put(p)) => {
            put_bytes(out, 1, &p.key);
            put_bytes(out, 2, &p.value);
        }
        Some(op::Op::Delete(d)) => put_bytes(out, 1, &d.key),
        Some(op::Op::DeleteRange(r)) => {
            put_bytes(out, 1, &r.start_key);
            put_bytes(out, 2, &r.end_key);
        }
        Some(op::Op::CompareAndSwap(c)) => {
            put_bytes(out, 1, &c.key);
            // Optional fields: written when present, even empty.
            for (field, value) in [(2, &c.expected), (3, &c.new_value)] {
                if let Some(v) = value {
                    put_field(out, field, v);
                }
            }
        }
    }
}

/// A proto3 bytes field: left out when empty.
fn put_bytes(out: &mut Vec<u8>, field: u8, value: &[u8]) {
    if !value.is_empty() {
        put_field(out, field, value);
    }
}

/// A length-delimited field: key, length, bytes.
fn put_field(out: &mut Vec<u8>, field: u8, value: &[u8]) {
    out.push(key(field, LEN));
    put_varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A one-byte field key (fields 1-15).
fn key(field: u8, wire: u8) -> u8 {
    field << 3 | wire
}

fn varint_len(value: u64) -> usize {
    // Seven bits a byte; zero still takes one.
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

/// A length-delimited body of `len` bytes with its length in front.
fn nested_len(len: usize) -> usize {
    varint_len(len as u64) + len
}

fn epoch_len(epoch: &RegionEpoch) -> usize {
    [epoch.conf_ver, epoch.version]
        .iter()
        .filter(|&&v| v != 0)
        .map(|&v| 1 + varint_len(v))
        .sum()
}

/// A proto3 bytes field's encoded bytes (none when empty).
fn bytes_len(value: &[u8]) -> usize {
    if value.is_empty() {
        0
    } else {
        1 + nested_len(value.len())
    }
}

fn cas_len(c: &CompareAndSwap) -> usize {
    let optional = |v: &Option<Bytes>| v.as_ref().map_or(0, |v| 1 + nested_len(v.len()));
    bytes_len(&c.key) + optional(&c.expected) + optional(&c.new_value)
}

/// An `Op`'s encoded bytes (without its own key and length).
fn op_len(op: &Op) -> usize {
    op_body(op).map_or(0, |(_, body_len)| 1 + nested_len(body_len))
}

/// A `WriteCommand`'s encoded bytes (without its own key and length).
fn command_len(command: &WriteCommand) -> usize {
    command
        .ops
        .iter()
        .map(|op| 1 + nested_len(op_len(op)))
        .sum()
}

/// Protobuf wire types this shape uses.
const VARINT: u8 = 0;
const LEN: u8 = 2;

/// A command of writes in prost's canonical encoding; `None` for anything else.
fn canonical_writes(data: &Bytes) -> Option<RaftCommand> {
    let mut r = Reader::new(data, 0, data.len());
    let mut command = RaftCommand::default();
    let mut field = r.key();
    if field == Some((1, VARINT)) {
        command.region_id = r.varint()?;
        field = r.key();
    }
    if field == Some((2, LEN)) {
        command.epoch = Some(epoch(r.message()?)?);
        field = r.key();
    }
    if field != Some((5, LEN)) {
        return None;
    }
    let writes = write_batch(r.message()?)?;
    command.body = Some(raft_command::Body::Writes(writes));
    r.at_end().then_some(command)
}

fn epoch(mut r: Reader<'_>) -> Option<RegionEpoch> {
    let mut epoch = RegionEpoch::default();
    let mut field = r.key();
    if field == Some((1, VARINT)) {
        epoch.conf_ver = r.varint()?;
        field = r.key();
    }
    if field == Some((2, VARINT)) {
        epoch.version = r.varint()?;
        field = r.key();
    }
    field.is_none().then_some(epoch)
}

fn write_batch(mut r: Reader<'_>) -> Option<WriteBatch> {
    let mut commands = Vec::with_capacity(r.count_fields()?);
    while let Some(field) = r.key() {
        if field != (1, LEN) {
            return None;
        }
        commands.push(write_command(r.message()?)?);
    }
    Some(WriteBatch { commands })
}

fn write_command(mut r: Reader<'_>) -> Option<WriteCommand> {
    // A command is usually one operation: no count first.
    let mut ops = Vec::with_capacity(1);
    while let Some(field) = r.key() {
        if field != (1, LEN) {
            return None;
        }
        ops.push(operation(r.message()?)?);
    }
    Some(WriteCommand { ops })
}

/// An `Op`: its oneof set at most once.
fn operation(mut r: Reader<'_>) -> Option<Op> {
    let op = match r.key() {
        None => return Some(Op { op: None }),
        Some((1, LEN)) => op::Op::Put(put(r.message()?)?),
        Some((2, LEN)) => op::Op::Delete(delete(r.message()?)?),
        Some((3, LEN)) => op::Op::DeleteRange(delete_range(r.message()?)?),
        Some((4, LEN)) => op::Op::CompareAndSwap(compare_and_swap(r.message()?)?),
        Some(_) => return None,
    };
    r.at_end().then_some(Op { op: Some(op) })
}

fn put(mut r: Reader<'_>) -> Option<Put> {
    let mut put = Put::default();
    let mut field = r.key();
    if field == Some((1, LEN)) {
        put.key = r.bytes()?;
        field = r.key();
    }
    if field == Some((2, LEN)) {
        put.value = r.bytes()?;
        field = r.key();
    }
    field.is_none().then_some(put)
}

fn delete(mut r: Reader<'_>) -> Option<Delete> {
    let mut delete = Delete::default();
    let mut field = r.key();
    if field == Some((1, LEN)) {
        delete.key = r.bytes()?;
        field = r.key();
    }
    field.is_none().then_some(delete)
}

fn delete_range(mut r: Reader<'_>) -> Option<DeleteRange> {
    let mut range = DeleteRange::default();
    let mut field = r.key();
    if field == Some((1, LEN)) {
        range.start_key = r.bytes()?;
        field = r.key();
    }
    if field == Some((2, LEN)) {
        range.end_key = r.bytes()?;
        field = r.key();
    }
    field.is_none().then_some(range)
}

fn compare_and_swap(mut r: Reader<'_>) -> Option<CompareAndSwap> {
    let mut cas = CompareAndSwap::default();
    let mut field = r.key();
    if field == Some((1, LEN)) {
        cas.key = r.bytes()?;
        field = r.key();
    }
    // Optional: present (even empty) is not absent.
    if field == Some((2, LEN)) {
        cas.expected = Some(r.bytes()?);
        field = r.key();
    }
    if field == Some((3, LEN)) {
        cas.new_value = Some(r.bytes()?);
        field = r.key();
    }
    field.is_none().then_some(cas)
}

/// A cursor over one message's bytes: `buf` is the shared buffer up to the message's
/// end, and the message starts at `pos`.
struct Reader<'a> {
    data: &'a Bytes,
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(data: &'a Bytes, pos: usize, end: usize) -> Self {
        Reader {
            data,
            buf: &data[..end],
            pos,
        }
    }

    fn at_end(&self) -> bool {
        self.pos == self.buf.len()
    }

    /// A varint of at most ten bytes whose tenth holds at most the top bit (what prost
    /// accepts); `None` past the end or for anything longer.
    #[inline]
    fn varint(&mut self) -> Option<u64> {
        let byte = *self.buf.get(self.pos)?;
        if byte < 0x80 {
            self.pos += 1;
            return Some(u64::from(byte));
        }
        self.long_varint()
    }

    fn long_varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for i in 0..10 {
            let byte = *self.buf.get(self.pos)?;
            if i == 9 && byte > 1 {
                return None;
            }
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                return Some(value);
            }
        }
        None
    }

    /// The next field's number and wire type, read as a one-byte key (every field of this
    /// shape is numbered 1-15); `None` at the message's end. A longer key reads as a field
    /// numbered 16 or more, which no reader here takes: callers accept only the exact
    /// (field, wire type) pairs they expect.
    #[inline]
    fn key(&mut self) -> Option<(u8, u8)> {
        let byte = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some((byte >> 3, byte & 7))
    }

    /// The bounds of the length-delimited field at the cursor, the cursor past it.
    #[inline]
    fn span(&mut self) -> Option<(usize, usize)> {
        let len = usize::try_from(self.varint()?).ok()?;
        let start = self.pos;
        let end = start.checked_add(len).filter(|&e| e <= self.buf.len())?;
        self.pos = end;
        Some((start, end))
    }

    /// The length-delimited field at the cursor as a reader of its own.
    fn message(&mut self) -> Option<Reader<'a>> {
        let (start, end) = self.span()?;
        Some(Reader::new(self.data, start, end))
    }

    /// The bytes field at the cursor, sharing the buffer.
    fn bytes(&mut self) -> Option<Bytes> {
        let (start, end) = self.span()?;
        Some(self.data.slice(start..end))
    }

    /// How many fields the message holds (for a list's capacity), the cursor unmoved;
    /// `None` if a field does not read or has a wire type this shape never uses.
    fn count_fields(&self) -> Option<usize> {
        let mut probe = Reader {
            data: self.data,
            buf: self.buf,
            pos: self.pos,
        };
        let mut count = 0;
        while let Some((_, wire)) = probe.key() {
            match wire {
                LEN => {
                    probe.span()?;
                }
                VARINT => {
                    probe.varint()?;
                }
                _ => return None,
            }
            count += 1;
        }
        Some(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::commandpb::{SplitCommand, SplitRequest};
    use crate::raft::rng::Rng;

    fn bytes(rng: &mut Rng) -> Bytes {
        let len = match rng.range(0, 100) {
            0..25 => 0,
            25..50 => rng.range(1, 4),
            50..75 => rng.range(4, 40),
            75..99 => rng.range(120, 300),
            // Lengths past 16,383 take three bytes, and so do the lengths around them.
            _ => rng.range(16_300, 20_000),
        };
        (0..len).map(|_| rng.range(0, 256) as u8).collect()
    }

    fn maybe_bytes(rng: &mut Rng) -> Option<Bytes> {
        rng.chance(70).then(|| bytes(rng))
    }

    fn random_op(rng: &mut Rng) -> Op {
        let op = match rng.range(0, 5) {
            0 => None,
            1 => Some(op::Op::Delete(Delete { key: bytes(rng) })),
            2 => Some(op::Op::DeleteRange(DeleteRange {
                start_key: bytes(rng),
                end_key: bytes(rng),
            })),
            3 => Some(op::Op::CompareAndSwap(CompareAndSwap {
                key: bytes(rng),
                expected: maybe_bytes(rng),
                new_value: maybe_bytes(rng),
            })),
            _ => Some(op::Op::Put(Put {
                key: bytes(rng),
                value: bytes(rng),
            })),
        };
        Op { op }
    }

    /// A command of writes with every shape the encoding can take: ids and epochs of
    /// every varint length (zero, left out), empty batches, commands and operations.
    fn command(rng: &mut Rng) -> RaftCommand {
        let big = |rng: &mut Rng| match rng.range(0, 3) {
            0 => 0,
            1 => rng.range(1, 200),
            _ => rng.next_u64(),
        };
        let commands = (0..rng.range(0, 6))
            .map(|_| WriteCommand {
                ops: (0..rng.range(0, 4)).map(|_| random_op(rng)).collect(),
            })
            .collect();
        RaftCommand {
            region_id: big(rng),
            epoch: rng.chance(90).then(|| RegionEpoch {
                conf_ver: big(rng),
                version: big(rng),
            }),
            body: Some(raft_command::Body::Writes(WriteBatch { commands })),
        }
    }

    /// The seeds to run: `FLOTILLA_CODEC_SEEDS` of them (default 2,000) from
    /// `FLOTILLA_CODEC_FIRST_SEED` (default 0).
    fn seeds() -> std::ops::Range<u64> {
        let var = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let first = var("FLOTILLA_CODEC_FIRST_SEED", 0);
        first..first + var("FLOTILLA_CODEC_SEEDS", 2_000)
    }

    fn replay(seed: u64) -> String {
        format!(
            "replay: FLOTILLA_CODEC_SEEDS=1 FLOTILLA_CODEC_FIRST_SEED={seed} cargo test --lib store::codec"
        )
    }

    /// Every command of writes prost encodes is read by hand, into the very same command.
    #[test]
    fn commands_of_writes_are_read_by_hand_as_prost_reads_them() {
        for seed in seeds() {
            let mut rng = Rng::new(seed);
            let original = command(&mut rng);
            let data = Bytes::from(original.encode_to_vec());
            let read = canonical_writes(&data);
            assert_eq!(read.as_ref(), Some(&original), "{}", replay(seed));
        }
    }

    /// The leader's encoding is prost's, byte for byte, and each write's share of it is
    /// what prost counts.
    #[test]
    fn writes_are_encoded_as_prost_encodes_them() {
        for seed in seeds() {
            let mut rng = Rng::new(seed);
            let mut command = command(&mut rng);
            // A leader's entry always has an epoch.
            let epoch = *command.epoch.get_or_insert_with(RegionEpoch::default);
            let Some(raft_command::Body::Writes(writes)) = &command.body else {
                unreachable!("commands of writes");
            };
            let encoded = command.encode_to_vec();
            assert_eq!(
                encode_writes(command.region_id, &epoch, &writes.commands),
                encoded,
                "{}",
                replay(seed)
            );
            let batch_len = writes.commands.iter().map(batched_len).sum();
            assert_eq!(
                entry_len(command.region_id, &epoch, batch_len),
                encoded.len(),
                "{}",
                replay(seed)
            );
            for write in &writes.commands {
                assert_eq!(
                    batched_len(write),
                    prost::encoding::message::encoded_len(1, write),
                    "{}",
                    replay(seed)
                );
            }
        }
    }

    /// Damaged encodings (a byte changed, cut short, bytes inserted or repeated) decode
    /// to whatever prost makes of them: the same command, or an error for both.
    #[test]
    fn damaged_commands_decode_as_prost_decodes_them() {
        let mut by_hand = 0;
        for seed in seeds() {
            let mut rng = Rng::new(seed);
            // Splits too: damage may make one look like writes.
            let original = if rng.chance(20) {
                split_command(&mut rng)
            } else {
                command(&mut rng)
            };
            let mut data = original.encode_to_vec();
            if data.is_empty() {
                continue;
            }
            for _ in 0..rng.range(1, 4) {
                let at = rng.range(0, data.len() as u64) as usize;
                match rng.range(0, 4) {
                    0 => data[at] = rng.range(0, 256) as u8,
                    1 => data.truncate(at),
                    2 => data.insert(at, rng.range(0, 256) as u8),
                    _ => {
                        let end = (at + rng.range(1, 8) as usize).min(data.len());
                        let copy = data[at..end].to_vec();
                        data.splice(at..at, copy);
                    }
                }
                if data.is_empty() {
                    break;
                }
            }
            let data = Bytes::from(data);
            let ours = decode_command(&data);
            let prosts = RaftCommand::decode(data.clone());
            assert_eq!(
                ours.as_ref().ok(),
                prosts.as_ref().ok(),
                "{data:?}; {}",
                replay(seed)
            );
            by_hand += usize::from(canonical_writes(&data).is_some());
        }
        // Some damage leaves a canonical command (a changed key or value byte).
        assert!(by_hand > 0, "no damaged command was read by hand");
    }

    fn split_command(rng: &mut Rng) -> RaftCommand {
        RaftCommand {
            region_id: rng.range(0, 1_000),
            epoch: Some(RegionEpoch {
                conf_ver: rng.range(0, 9),
                version: rng.range(0, 9),
            }),
            body: Some(raft_command::Body::Split(SplitCommand {
                splits: (0..rng.range(1, 4))
                    .map(|_| SplitRequest {
                        split_key: bytes(rng),
                        new_region_id: rng.next_u64(),
                        new_peer_ids: (0..3).map(|_| rng.range(0, 1 << 20)).collect(),
                    })
                    .collect(),
            })),
        }
    }

    /// Encodings a hostile or careless leader could write, byte by byte: each decodes as
    /// prost decodes it. `ok` says whether prost takes it.
    #[test]
    fn hostile_encodings_decode_as_prost_decodes_them() {
        // RaftCommand { region_id: 7, epoch: {1, 2}, writes: [[put a = v]] } is
        // 08 07 | 12 04 08 01 10 02 | 2a 0c 0a 0a 0a 08 0a 06 0a 01 61 12 01 76
        let canonical: Vec<u8> = vec![
            0x08, 7, 0x12, 4, 0x08, 1, 0x10, 2, 0x2a, 12, 0x0a, 10, 0x0a, 8, 0x0a, 6, 0x0a, 1,
            b'a', 0x12, 1, b'v',
        ];
        let cases: Vec<(&str, Vec<u8>, bool)> = vec![
            ("canonical", canonical.clone(), true),
            (
                "a length in two bytes (not minimal)",
                [&canonical[..9], &[0x8c, 0x00], &canonical[10..]].concat(),
                true,
            ),
            (
                "a key in two bytes (not minimal)",
                [&[0x88, 0x00][..], &canonical[1..]].concat(),
                true,
            ),
            (
                "a ten-byte varint whose last byte is 1",
                [&[0x08][..], &[0xff; 9], &[0x01], &canonical[2..]].concat(),
                true,
            ),
            (
                "a ten-byte varint whose last byte is 2",
                [&[0x08][..], &[0xff; 9], &[0x02], &canonical[2..]].concat(),
                false,
            ),
            (
                "an eleven-byte varint",
                [&[0x08][..], &[0xff; 10], &[0x00], &canonical[2..]].concat(),
                false,
            ),
            (
                "the epoch's varint running past the epoch",
                [&canonical[..3], &[2, 0x08, 0x80], &canonical[8..]].concat(),
                false,
            ),
            (
                "a key's length running past its put",
                [&canonical[..17], &[9], &canonical[18..]].concat(),
                false,
            ),
            (
                "a put's key twice (prost keeps the last)",
                [
                    &[0x2a, 15, 0x0a, 13, 0x0a, 11, 0x0a, 9][..],
                    &[0x0a, 1, b'a', 0x0a, 1, b'b', 0x12, 1, b'v'],
                ]
                .concat(),
                true,
            ),
            (
                "the epoch's conf_ver twice",
                [
                    &canonical[..3],
                    &[6, 0x08, 1, 0x08, 3, 0x10, 2],
                    &canonical[8..],
                ]
                .concat(),
                true,
            ),
            (
                "a fixed64 field in a put",
                [
                    &[0x2a, 18, 0x0a, 16, 0x0a, 14, 0x0a, 12][..],
                    &[0x0a, 1, b'a', 0x19, 0, 0, 0, 0, 0, 0, 0, 0],
                ]
                .concat(),
                true,
            ),
            (
                "a zero field number",
                [&[0x00, 0x00][..], &canonical].concat(),
                false,
            ),
            (
                "cut short",
                canonical[..canonical.len() - 1].to_vec(),
                false,
            ),
            ("nothing", Vec::new(), true),
        ];
        for (what, data, ok) in cases {
            let data = Bytes::from(data);
            let prosts = RaftCommand::decode(data.clone());
            assert_eq!(prosts.is_ok(), ok, "{what}: prost says {prosts:?}");
            assert_eq!(decode_command(&data).ok(), prosts.ok(), "{what}");
        }
        // The canonical bytes are what the encoder writes for that command.
        let put = Op {
            op: Some(op::Op::Put(Put {
                key: Bytes::from_static(b"a"),
                value: Bytes::from_static(b"v"),
            })),
        };
        let epoch = RegionEpoch {
            conf_ver: 1,
            version: 2,
        };
        assert_eq!(
            encode_writes(7, &epoch, &[WriteCommand { ops: vec![put] }]),
            canonical
        );
    }

    /// What is not a command of writes in the canonical shape goes to prost.
    #[test]
    fn other_shapes_go_to_prost() {
        let split = RaftCommand {
            region_id: 1,
            epoch: None,
            body: Some(raft_command::Body::Split(SplitCommand {
                splits: vec![SplitRequest {
                    split_key: Bytes::from_static(b"k"),
                    new_region_id: 2,
                    new_peer_ids: vec![3],
                }],
            })),
        };
        let put = |key: &'static [u8]| Op {
            op: Some(op::Op::Put(Put {
                key: Bytes::from_static(key),
                value: Bytes::from_static(b"v"),
            })),
        };
        let writes = RaftCommand {
            region_id: 1,
            epoch: Some(RegionEpoch::default()),
            body: Some(raft_command::Body::Writes(WriteBatch {
                commands: vec![WriteCommand {
                    ops: vec![put(b"a")],
                }],
            })),
        };
        let encoded = |c: &RaftCommand| c.encode_to_vec();
        let mut unknown_field = encoded(&writes);
        unknown_field.extend_from_slice(&[6 << 3, 1]);
        let mut region_twice = encoded(&writes);
        region_twice.extend_from_slice(&[1 << 3, 9]);
        let no_body = RaftCommand {
            body: None,
            ..writes.clone()
        };
        // The epoch after the body: prost reads it, this shape has it first.
        let mut epoch_last = vec![1 << 3, 1];
        let body = &encoded(&writes)[2..];
        let epoch_at = body.iter().position(|&b| b == (5 << 3 | 2)).unwrap();
        epoch_last.extend_from_slice(&body[epoch_at..]);
        epoch_last.extend_from_slice(&body[..epoch_at]);
        for (what, data) in [
            ("a split", encoded(&split)),
            ("an unknown field", unknown_field),
            ("a field twice", region_twice),
            ("no body", encoded(&no_body)),
            ("the epoch last", epoch_last),
        ] {
            let data = Bytes::from(data);
            assert_eq!(canonical_writes(&data), None, "{what}");
            assert_eq!(
                decode_command(&data).ok(),
                RaftCommand::decode(data.clone()).ok(),
                "{what}"
            );
            assert!(decode_command(&data).is_ok(), "{what} decodes");
        }
        // An operation with two of its oneof set: prost keeps the last.
        let mut two_ops = Vec::new();
        put(b"a").encode(&mut two_ops).unwrap();
        Op {
            op: Some(op::Op::Delete(Delete {
                key: Bytes::from_static(b"b"),
            })),
        }
        .encode(&mut two_ops)
        .unwrap();
        let data = Bytes::from(two_ops);
        assert_eq!(operation(Reader::new(&data, 0, data.len())), None);
    }
}
