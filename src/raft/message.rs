//! Message helpers: construction and validation of messages from the network. A message
//! that fails validation is rejected with `RaftError::InvalidMessage` and changes nothing.

use super::errors::{Result, invalid};
use crate::proto::raftpb::{EntryType, Message, MessageType};

/// Indices and terms from the network must stay below this, so that `+ 1` anywhere in the
/// core cannot overflow (2^62 is far beyond any real log or term).
pub const MAX_INDEX_OR_TERM: u64 = 1 << 62;

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
    let numbers = [
        m.term,
        m.log_term,
        m.index,
        m.commit,
        m.reject_hint,
        m.read_round,
    ];
    if numbers.iter().any(|&n| n >= MAX_INDEX_OR_TERM) {
        return Err(invalid("index or term out of range"));
    }
    if t != MessageType::MsgAppend && !m.entries.is_empty() {
        return Err(invalid(format!("{t:?} carries entries")));
    }
    match t {
        MessageType::MsgAppend => validate_entries(m)?,
        MessageType::MsgSnapshot => {
            let meta = m.snapshot.as_ref().and_then(|s| s.metadata.as_ref());
            let meta = meta.ok_or_else(|| invalid("snapshot without metadata"))?;
            // A configuration without voters could never elect anyone again.
            let no_voters = meta
                .conf_state
                .as_ref()
                .is_none_or(|cs| cs.voters.is_empty());
            if no_voters
                || meta.index == 0
                || meta.index >= MAX_INDEX_OR_TERM
                || meta.term == 0
                || meta.term > m.term
            {
                return Err(invalid("snapshot metadata is inconsistent"));
            }
        }
        MessageType::MsgTransferLeader if m.transferee == 0 => {
            return Err(invalid("transfer request without a transferee"));
        }
        MessageType::MsgRequestVote | MessageType::MsgRequestPreVote if m.log_term > m.term => {
            return Err(invalid("candidate's last log term is above its term"));
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::raftpb::Entry;
    use crate::raft::RaftError;

    fn append(index: u64, log_term: u64, terms: &[u64]) -> Message {
        let mut m = msg(MessageType::MsgAppend, 2, 3);
        m.from = 1;
        m.index = index;
        m.log_term = log_term;
        m.entries = terms
            .iter()
            .enumerate()
            .map(|(i, &term)| Entry {
                index: index + 1 + i as u64,
                term,
                ..Default::default()
            })
            .collect();
        m
    }

    fn rejected(m: &Message) -> bool {
        matches!(validate(m, 2), Err(RaftError::InvalidMessage(_)))
    }

    #[test]
    fn well_formed_append_passes() {
        assert_eq!(
            validate(&append(4, 1, &[1, 2, 3]), 2).unwrap(),
            MessageType::MsgAppend
        );
    }

    #[test]
    fn malformed_messages_are_rejected() {
        let mut cases = vec![
            append(4, 2, &[1]),    // entry term below the previous term
            append(4, 1, &[2, 1]), // decreasing terms
            append(4, 1, &[4]),    // entry term above the message term
            append(4, 4, &[]),     // previous term above the message term
        ];
        let mut gap = append(4, 1, &[1, 1]);
        gap.entries[1].index = 9;
        cases.push(gap);
        let mut bad_type = append(4, 1, &[1]);
        bad_type.entries[0].entry_type = 99;
        cases.push(bad_type);
        let mut unknown = append(4, 1, &[]);
        unknown.msg_type = 1000;
        cases.push(unknown);
        let mut local = append(4, 1, &[]);
        local.msg_type = MessageType::MsgHup as i32;
        cases.push(local);
        let mut misrouted = append(4, 1, &[]);
        misrouted.to = 7;
        cases.push(misrouted);
        let mut anonymous = append(4, 1, &[]);
        anonymous.from = 0;
        cases.push(anonymous);
        let mut termless = append(4, 0, &[]);
        termless.term = 0;
        cases.push(termless);
        let mut huge_term = append(4, 1, &[]);
        huge_term.term = u64::MAX;
        cases.push(huge_term);
        let mut huge_index = append(4, 1, &[]);
        huge_index.index = u64::MAX - 1;
        cases.push(huge_index);
        let mut snap = msg(MessageType::MsgSnapshot, 2, 3);
        snap.from = 1;
        cases.push(snap);
        let mut heartbeat_with_entries = append(4, 1, &[1]);
        heartbeat_with_entries.msg_type = MessageType::MsgHeartbeat as i32;
        cases.push(heartbeat_with_entries);
        for m in cases {
            assert!(rejected(&m), "{m:?}");
        }
    }

    #[test]
    fn forwarded_requests_may_omit_the_term() {
        let mut m = msg(MessageType::MsgReadIndex, 2, 0);
        m.from = 3;
        assert!(validate(&m, 2).is_ok());
    }
}
