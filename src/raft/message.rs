//! Message helpers: construction and validation of messages from the network. A message
//! that fails validation is rejected with `RaftError::InvalidMessage` and changes nothing.

use super::errors::{Result, invalid};
use super::pb::{EntryType, Message, MessageType};

/// Context of a vote request sent because of a leader transfer (it may break leases).
pub const TRANSFER_CONTEXT: &[u8] = b"transfer";

pub fn msg(msg_type: MessageType, to: u64, term: u64) -> Message {
    Message {
        msg_type: msg_type as i32,
        to,
        term,
        ..Default::default()
    }
}

pub fn msg_type(m: &Message) -> Result<MessageType> {
    MessageType::try_from(m.msg_type)
        .map_err(|_| invalid(format!("unknown message type {}", m.msg_type)))
}

pub fn is_local(t: MessageType) -> bool {
    matches!(
        t,
        MessageType::MsgHup
            | MessageType::MsgBeat
            | MessageType::MsgPropose
            | MessageType::MsgUnreachable
            | MessageType::MsgSnapshotStatus
            | MessageType::MsgCheckQuorum
    )
}

/// Message types a follower may send without a term (forwarded requests).
fn term_optional(t: MessageType) -> bool {
    matches!(
        t,
        MessageType::MsgReadIndex | MessageType::MsgTransferLeader
    )
}

/// Structural checks on a message from the network, addressed to `self_id`.
pub fn validate(m: &Message, self_id: u64) -> Result<MessageType> {
    let t = msg_type(m)?;
    if is_local(t) {
        return Err(invalid(format!(
            "{t:?} is local and cannot come from the network"
        )));
    }
    if m.to != self_id {
        return Err(invalid(format!(
            "message for {} delivered to {self_id}",
            m.to
        )));
    }
    if m.from == 0 || m.from == self_id && t != MessageType::MsgRequestVoteResponse {
        return Err(invalid(format!("bad sender {}", m.from)));
    }
    if m.term == 0 && !term_optional(t) {
        return Err(invalid(format!("{t:?} without a term")));
    }
    match t {
        MessageType::MsgAppend => validate_entries(m)?,
        MessageType::MsgSnapshot => {
            let meta = m.snapshot.as_ref().and_then(|s| s.metadata.as_ref());
            let meta = meta.ok_or_else(|| invalid("snapshot without metadata"))?;
            if meta.conf_state.is_none() || meta.index == 0 || meta.term == 0 || meta.term > m.term
            {
                return Err(invalid("snapshot metadata is inconsistent"));
            }
        }
        MessageType::MsgRequestVote | MessageType::MsgRequestPreVote if m.log_term > m.term => {
            return Err(invalid("candidate's last log term is above its term"));
        }
        _ if !m.entries.is_empty() => return Err(invalid(format!("{t:?} carries entries"))),
        _ => {}
    }
    Ok(t)
}

/// Entries of an append must directly follow `index`, with terms that never decrease, lie
/// between `log_term` and the message term, and known entry types.
fn validate_entries(m: &Message) -> Result<()> {
    if m.log_term > m.term {
        return Err(invalid("append's previous term is above its term"));
    }
    let mut prev_term = m.log_term;
    for (i, e) in m.entries.iter().enumerate() {
        if Some(e.index) != m.index.checked_add(i as u64 + 1) {
            return Err(invalid(format!(
                "entry index {} does not follow {}",
                e.index, m.index
            )));
        }
        if e.term < prev_term || e.term > m.term || e.term == 0 {
            return Err(invalid(format!(
                "entry {} has term {} out of order",
                e.index, e.term
            )));
        }
        if EntryType::try_from(e.entry_type).is_err() {
            return Err(invalid(format!(
                "entry {} has unknown type {}",
                e.index, e.entry_type
            )));
        }
        prev_term = e.term;
    }
    Ok(())
}
