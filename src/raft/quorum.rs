//! Majority and joint-majority arithmetic. Nothing here knows about logs or messages: a
//! configuration answers "which index has a quorum acknowledged" and "who won the vote".

use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteResult {
    Pending,
    Won,
    Lost,
}

/// A set of voters deciding by simple majority.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MajorityConfig {
    pub voters: BTreeSet<u64>,
}

impl MajorityConfig {
    pub fn new(voters: impl IntoIterator<Item = u64>) -> Self {
        MajorityConfig {
            voters: voters.into_iter().collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.voters.is_empty()
    }

    /// The largest value acknowledged by a majority; `u64::MAX` for an empty config so that
    /// it never constrains the other half of a joint config.
    pub fn committed_index(&self, acked: &impl Fn(u64) -> Option<u64>) -> u64 {
        if self.voters.is_empty() {
            return u64::MAX;
        }
        let mut values: Vec<u64> = self
            .voters
            .iter()
            .map(|&id| acked(id).unwrap_or(0))
            .collect();
        values.sort_unstable_by(|a, b| b.cmp(a));
        values[self.voters.len() / 2]
    }

    pub fn vote_result(&self, votes: &HashMap<u64, bool>) -> VoteResult {
        if self.voters.is_empty() {
            // An empty half agrees with whatever the other half decides.
            return VoteResult::Won;
        }
        let (mut yes, mut missing) = (0, 0);
        for id in &self.voters {
            match votes.get(id) {
                Some(true) => yes += 1,
                Some(false) => {}
                None => missing += 1,
            }
        }
        let quorum = self.voters.len() / 2 + 1;
        if yes >= quorum {
            VoteResult::Won
        } else if yes + missing >= quorum {
            VoteResult::Pending
        } else {
            VoteResult::Lost
        }
    }
}

/// The incoming and (during joint consensus) outgoing voter sets; decisions need both.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JointConfig {
    pub incoming: MajorityConfig,
    pub outgoing: MajorityConfig,
}

impl JointConfig {
    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    pub fn contains(&self, id: u64) -> bool {
        self.incoming.voters.contains(&id) || self.outgoing.voters.contains(&id)
    }

    pub fn ids(&self) -> BTreeSet<u64> {
        self.incoming
            .voters
            .union(&self.outgoing.voters)
            .copied()
            .collect()
    }

    /// The largest value acknowledged by a majority of each half. 0 with no voters at all.
    pub fn committed_index(&self, acked: impl Fn(u64) -> Option<u64>) -> u64 {
        let v = self
            .incoming
            .committed_index(&acked)
            .min(self.outgoing.committed_index(&acked));
        if v == u64::MAX { 0 } else { v }
    }

    pub fn vote_result(&self, votes: &HashMap<u64, bool>) -> VoteResult {
        let a = self.incoming.vote_result(votes);
        let b = self.outgoing.vote_result(votes);
        match (a, b) {
            (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
            (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
            _ => VoteResult::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acked(map: &[(u64, u64)]) -> impl Fn(u64) -> Option<u64> + '_ {
        move |id| map.iter().find(|(i, _)| *i == id).map(|(_, v)| *v)
    }

    #[test]
    fn majority_committed_index_table() {
        type Case<'a> = (&'a [u64], &'a [(u64, u64)], u64);
        let cases: &[Case] = &[
            (&[1], &[(1, 5)], 5),
            (&[1, 2, 3], &[(1, 5), (2, 3), (3, 1)], 3),
            (&[1, 2, 3], &[(1, 5)], 0),
            (&[1, 2, 3, 4], &[(1, 9), (2, 8), (3, 7), (4, 1)], 7),
            (
                &[1, 2, 3, 4, 5],
                &[(1, 9), (2, 8), (3, 7), (4, 1), (5, 1)],
                7,
            ),
        ];
        for (voters, acks, want) in cases {
            let c = MajorityConfig::new(voters.iter().copied());
            assert_eq!(
                c.committed_index(&acked(acks)),
                *want,
                "voters {voters:?} acks {acks:?}"
            );
        }
    }

    #[test]
    fn joint_committed_index_is_min_of_halves() {
        let j = JointConfig {
            incoming: MajorityConfig::new([1, 2, 3]),
            outgoing: MajorityConfig::new([3, 4, 5]),
        };
        let acks = [(1, 10), (2, 10), (3, 4), (4, 2), (5, 1)];
        assert_eq!(j.committed_index(acked(&acks)), 2);
        let simple = JointConfig {
            incoming: MajorityConfig::new([1, 2, 3]),
            ..Default::default()
        };
        assert_eq!(simple.committed_index(acked(&acks)), 10);
        assert_eq!(JointConfig::default().committed_index(acked(&acks)), 0);
    }

    #[test]
    fn vote_results() {
        let c = MajorityConfig::new([1, 2, 3]);
        let votes = |v: &[(u64, bool)]| v.iter().copied().collect::<HashMap<_, _>>();
        assert_eq!(c.vote_result(&votes(&[(1, true)])), VoteResult::Pending);
        assert_eq!(
            c.vote_result(&votes(&[(1, true), (2, true)])),
            VoteResult::Won
        );
        assert_eq!(
            c.vote_result(&votes(&[(1, true), (2, false), (3, false)])),
            VoteResult::Lost
        );
        let j = JointConfig {
            incoming: MajorityConfig::new([1, 2, 3]),
            outgoing: MajorityConfig::new([4, 5, 6]),
        };
        assert_eq!(
            j.vote_result(&votes(&[(1, true), (2, true)])),
            VoteResult::Pending
        );
        assert_eq!(
            j.vote_result(&votes(&[(1, true), (2, true), (4, false), (5, false)])),
            VoteResult::Lost
        );
        assert_eq!(
            j.vote_result(&votes(&[(1, true), (2, true), (4, true), (5, true)])),
            VoteResult::Won
        );
    }
}
