//! Pure membership arithmetic: (configuration, progress) + change → new configuration and
//! progress. Nothing is mutated unless the whole change is valid.

use std::collections::BTreeSet;

use super::errors::{RaftError, Result};
use prost::Message as _;

use super::progress::{Progress, ProgressMap, ProgressTracker, TrackerConfig};
use super::quorum::MajorityConfig;
use crate::proto::raftpb::{
    ConfChange, ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState,
    Entry, EntryType,
};

fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(RaftError::InvalidConfChange(msg.into()))
}

/// Builds the V2 form of a V1 change.
pub fn to_v2(cc: &ConfChange) -> ConfChangeV2 {
    ConfChangeV2 {
        transition: ConfChangeTransition::Auto as i32,
        changes: vec![ConfChangeSingle {
            change_type: cc.change_type,
            node_id: cc.node_id,
        }],
        context: cc.context.clone(),
    }
}

impl From<ConfChange> for ConfChangeV2 {
    fn from(cc: ConfChange) -> Self {
        to_v2(&cc)
    }
}

/// Decodes the change carried by a conf-change entry of either version.
pub fn decode_entry(e: &Entry) -> Result<ConfChangeV2> {
    let bad =
        |err: prost::DecodeError| RaftError::InvalidConfChange(format!("entry {}: {err}", e.index));
    match EntryType::try_from(e.entry_type) {
        Ok(EntryType::EntryConfChange) => {
            Ok(to_v2(&ConfChange::decode(e.data.clone()).map_err(bad)?))
        }
        Ok(EntryType::EntryConfChangeV2) => ConfChangeV2::decode(e.data.clone()).map_err(bad),
        _ => err(format!("entry {} is not a conf change", e.index)),
    }
}

/// An empty V2 change means "leave the joint configuration".
pub fn is_leave_joint(cc: &ConfChangeV2) -> bool {
    cc.changes.is_empty()
}

/// Whether a change must go through joint consensus, and if so whether it leaves it
/// automatically.
pub fn enters_joint(cc: &ConfChangeV2) -> Option<bool> {
    let transition =
        ConfChangeTransition::try_from(cc.transition).unwrap_or(ConfChangeTransition::Auto);
    let voter_changes = cc.changes.len();
    match transition {
        ConfChangeTransition::Auto if voter_changes <= 1 => None,
        ConfChangeTransition::Auto | ConfChangeTransition::Implicit => Some(true),
        ConfChangeTransition::Explicit => Some(false),
    }
}

/// The configuration after `cc`, decided exactly as a core holding `cs` applies it — so
/// an application deciding membership from its own metadata agrees with the core.
pub fn next_conf_state(cs: &ConfState, cc: &ConfChangeV2) -> Result<ConfState> {
    let mut tracker = ProgressTracker::new(1, u64::MAX);
    let (config, progress) = restore(&tracker, cs, 0)?;
    tracker.config = config;
    tracker.progress = progress;
    let (config, _) = Changer::new(&tracker, 0).change(cc)?;
    Ok(config.to_conf_state())
}

/// Works on copies of the tracker's configuration and progress.
pub struct Changer<'a> {
    tracker: &'a ProgressTracker,
    last_index: u64,
}

impl<'a> Changer<'a> {
    pub fn new(tracker: &'a ProgressTracker, last_index: u64) -> Self {
        Changer {
            tracker,
            last_index,
        }
    }

    /// Applies `cc` the way its shape asks: leave the joint state, enter it, or a simple
    /// change.
    pub fn change(&self, cc: &ConfChangeV2) -> Result<(TrackerConfig, ProgressMap)> {
        if is_leave_joint(cc) {
            self.leave_joint()
        } else if let Some(auto_leave) = enters_joint(cc) {
            self.enter_joint(auto_leave, &cc.changes)
        } else {
            self.simple(&cc.changes)
        }
    }

    fn copy(&self) -> (TrackerConfig, ProgressMap) {
        (self.tracker.config.clone(), self.tracker.progress.clone())
    }

    /// Enters a joint configuration: the current voters become the outgoing half, the
    /// changes apply to the incoming half.
    pub fn enter_joint(
        &self,
        auto_leave: bool,
        changes: &[ConfChangeSingle],
    ) -> Result<(TrackerConfig, ProgressMap)> {
        if self.tracker.config.voters.is_joint() {
            return err("configuration is already joint");
        }
        let (mut cfg, mut prs) = self.copy();
        if cfg.voters.incoming.is_empty() {
            return err("cannot enter joint consensus from an empty configuration");
        }
        cfg.voters.outgoing = cfg.voters.incoming.clone();
        self.apply(&mut cfg, &mut prs, changes)?;
        cfg.auto_leave = auto_leave;
        check(&cfg, &prs)?;
        Ok((cfg, prs))
    }

    /// Leaves the joint configuration: the outgoing half is dropped, `learners_next` become
    /// learners, and members of neither half lose their progress.
    pub fn leave_joint(&self) -> Result<(TrackerConfig, ProgressMap)> {
        if !self.tracker.config.voters.is_joint() {
            return err("configuration is not joint");
        }
        let (mut cfg, mut prs) = self.copy();
        for id in std::mem::take(&mut cfg.learners_next) {
            cfg.learners.insert(id);
            if let Some(p) = prs.get_mut(&id) {
                p.is_learner = true;
            }
        }
        let outgoing = std::mem::take(&mut cfg.voters.outgoing.voters);
        for id in outgoing {
            if !cfg.voters.incoming.voters.contains(&id) && !cfg.learners.contains(&id) {
                prs.remove(&id);
            }
        }
        cfg.auto_leave = false;
        check(&cfg, &prs)?;
        Ok((cfg, prs))
    }

    /// A change of at most one voter, applied directly (no joint state needed).
    pub fn simple(&self, changes: &[ConfChangeSingle]) -> Result<(TrackerConfig, ProgressMap)> {
        if self.tracker.config.voters.is_joint() {
            return err("cannot apply a simple change in a joint configuration");
        }
        let (mut cfg, mut prs) = self.copy();
        self.apply(&mut cfg, &mut prs, changes)?;
        let before = &self.tracker.config.voters.incoming.voters;
        let after = &cfg.voters.incoming.voters;
        if before.symmetric_difference(after).count() > 1 {
            return err("more than one voter changed without joint consensus");
        }
        check(&cfg, &prs)?;
        Ok((cfg, prs))
    }

    fn apply(
        &self,
        cfg: &mut TrackerConfig,
        prs: &mut ProgressMap,
        changes: &[ConfChangeSingle],
    ) -> Result<()> {
        for cc in changes {
            if cc.node_id == 0 {
                return err("node id 0");
            }
            match ConfChangeType::try_from(cc.change_type) {
                Ok(ConfChangeType::AddNode) => self.make_voter(cfg, prs, cc.node_id),
                Ok(ConfChangeType::AddLearnerNode) => self.make_learner(cfg, prs, cc.node_id),
                Ok(ConfChangeType::RemoveNode) => remove(cfg, prs, cc.node_id),
                Err(_) => return err(format!("unknown change type {}", cc.change_type)),
            }
        }
        if cfg.voters.incoming.is_empty() {
            return err("removing all voters is not allowed");
        }
        Ok(())
    }

    fn new_progress(&self, is_learner: bool) -> Progress {
        Progress::new(
            self.last_index + 1,
            self.tracker.max_inflight,
            self.tracker.max_inflight_bytes,
            is_learner,
        )
    }

    fn make_voter(&self, cfg: &mut TrackerConfig, prs: &mut ProgressMap, id: u64) {
        prs.get_or_insert_with(id, || self.new_progress(false))
            .is_learner = false;
        cfg.learners.remove(&id);
        cfg.learners_next.remove(&id);
        cfg.voters.incoming.voters.insert(id);
    }

    fn make_learner(&self, cfg: &mut TrackerConfig, prs: &mut ProgressMap, id: u64) {
        if cfg.learners.contains(&id) {
            return;
        }
        cfg.voters.incoming.voters.remove(&id);
        prs.get_or_insert_with(id, || self.new_progress(true))
            .is_learner = true;
        // A voter of the outgoing half keeps voting there until the joint state is left.
        if cfg.voters.outgoing.voters.contains(&id) {
            cfg.learners_next.insert(id);
            if let Some(p) = prs.get_mut(&id) {
                p.is_learner = false;
            }
        } else {
            cfg.learners.insert(id);
        }
    }
}

fn remove(cfg: &mut TrackerConfig, prs: &mut ProgressMap, id: u64) {
    cfg.voters.incoming.voters.remove(&id);
    cfg.learners.remove(&id);
    cfg.learners_next.remove(&id);
    if !cfg.voters.outgoing.voters.contains(&id) {
        prs.remove(&id);
    }
}

/// Invariants every configuration must satisfy.
fn check(cfg: &TrackerConfig, prs: &ProgressMap) -> Result<()> {
    for id in cfg
        .voters
        .ids()
        .iter()
        .chain(&cfg.learners)
        .chain(&cfg.learners_next)
    {
        if !prs.contains_key(id) {
            return err(format!("no progress for member {id}"));
        }
    }
    for id in &cfg.learners_next {
        if !cfg.voters.outgoing.voters.contains(id) {
            return err(format!(
                "{id} is in learners_next but not an outgoing voter"
            ));
        }
        if prs.get(id).is_some_and(|p| p.is_learner) {
            return err(format!("{id} is in learners_next but already a learner"));
        }
    }
    for id in &cfg.learners {
        if cfg.voters.contains(*id) {
            return err(format!("{id} is both a learner and a voter"));
        }
        if prs.get(id).is_some_and(|p| !p.is_learner) {
            return err(format!("learner {id} is tracked as a voter"));
        }
    }
    if !cfg.voters.is_joint() && (cfg.auto_leave || !cfg.learners_next.is_empty()) {
        return err("auto_leave or learners_next set outside joint consensus");
    }
    Ok(())
}

/// Rebuilds a tracker configuration from a `ConfState` (restart or snapshot), validating it.
pub fn restore(
    tracker: &ProgressTracker,
    cs: &ConfState,
    last_index: u64,
) -> Result<(TrackerConfig, ProgressMap)> {
    let set = |v: &[u64]| v.iter().copied().collect::<BTreeSet<u64>>();
    let cfg = TrackerConfig {
        voters: super::quorum::JointConfig {
            incoming: MajorityConfig::new(cs.voters.iter().copied()),
            outgoing: MajorityConfig::new(cs.voters_outgoing.iter().copied()),
        },
        learners: set(&cs.learners),
        learners_next: set(&cs.learners_next),
        auto_leave: cs.auto_leave,
    };
    if cfg.voters.ids().contains(&0) || cfg.learners.contains(&0) {
        return err("node id 0 in configuration");
    }
    let mut prs = ProgressMap::new();
    for id in cfg
        .voters
        .ids()
        .into_iter()
        .chain(cfg.learners.iter().copied())
    {
        let is_learner = cfg.learners.contains(&id);
        prs.insert(
            id,
            Progress::new(
                last_index + 1,
                tracker.max_inflight,
                tracker.max_inflight_bytes,
                is_learner,
            ),
        );
    }
    check(&cfg, &prs)?;
    Ok((cfg, prs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(t: ConfChangeType, id: u64) -> ConfChangeSingle {
        ConfChangeSingle {
            change_type: t as i32,
            node_id: id,
        }
    }

    fn tracker(voters: &[u64], learners: &[u64]) -> ProgressTracker {
        let mut t = ProgressTracker::new(8, u64::MAX);
        let cs = ConfState {
            voters: voters.to_vec(),
            learners: learners.to_vec(),
            ..Default::default()
        };
        let (cfg, prs) = restore(&t, &cs, 10).unwrap();
        t.config = cfg;
        t.progress = prs;
        t
    }

    fn install(t: &mut ProgressTracker, r: (TrackerConfig, ProgressMap)) {
        t.config = r.0;
        t.progress = r.1;
    }

    /// A member starts probing optimistically just past the leader's log, having matched
    /// nothing: on restore and when a change adds it.
    #[test]
    fn new_members_start_past_the_last_index_with_nothing_matched() {
        let t = tracker(&[1, 2, 3], &[4]);
        for (_, pr) in t.progress.iter() {
            assert_eq!((pr.next_idx, pr.matched), (11, 0));
        }
        let added = Changer::new(&t, 20)
            .simple(&[change(ConfChangeType::AddNode, 5)])
            .unwrap();
        assert_eq!((added.1[&5].next_idx, added.1[&5].matched), (21, 0));
        assert_eq!(
            added.1[&1].next_idx, 11,
            "existing members keep their progress"
        );
    }

    #[test]
    fn simple_change_allows_one_voter_only() {
        let t = tracker(&[1, 2, 3], &[]);
        let c = Changer::new(&t, 10);
        assert!(c.simple(&[change(ConfChangeType::AddNode, 4)]).is_ok());
        assert!(
            c.simple(&[change(ConfChangeType::AddLearnerNode, 5)])
                .is_ok()
        );
        assert!(
            c.simple(&[
                change(ConfChangeType::AddNode, 4),
                change(ConfChangeType::AddNode, 5)
            ])
            .is_err()
        );
        assert!(
            c.simple(&[
                change(ConfChangeType::RemoveNode, 1),
                change(ConfChangeType::AddNode, 4)
            ])
            .is_err()
        );
        let one = tracker(&[1], &[]);
        assert!(
            Changer::new(&one, 10)
                .simple(&[change(ConfChangeType::RemoveNode, 1)])
                .is_err()
        );
    }

    #[test]
    fn joint_replace_voter_then_leave() {
        let mut t = tracker(&[1, 2, 3], &[]);
        let r = Changer::new(&t, 10)
            .enter_joint(
                true,
                &[
                    change(ConfChangeType::RemoveNode, 3),
                    change(ConfChangeType::AddNode, 4),
                ],
            )
            .unwrap();
        install(&mut t, r);
        let cs = t.config.to_conf_state();
        assert_eq!(cs.voters, vec![1, 2, 4]);
        assert_eq!(cs.voters_outgoing, vec![1, 2, 3]);
        assert!(cs.auto_leave);
        assert!(
            t.progress.contains_key(&3),
            "outgoing voter keeps progress while joint"
        );
        assert!(
            Changer::new(&t, 10).enter_joint(false, &[]).is_err(),
            "already joint"
        );
        assert!(
            Changer::new(&t, 10)
                .simple(&[change(ConfChangeType::AddNode, 5)])
                .is_err()
        );
        let r = Changer::new(&t, 10).leave_joint().unwrap();
        install(&mut t, r);
        assert_eq!(t.config.to_conf_state().voters_outgoing, Vec::<u64>::new());
        assert!(!t.progress.contains_key(&3));
        assert!(Changer::new(&t, 10).leave_joint().is_err());
    }

    #[test]
    fn demoted_voter_becomes_learner_when_joint_is_left() {
        let mut t = tracker(&[1, 2, 3], &[]);
        let r = Changer::new(&t, 10)
            .enter_joint(false, &[change(ConfChangeType::AddLearnerNode, 3)])
            .unwrap();
        install(&mut t, r);
        assert_eq!(t.config.to_conf_state().learners_next, vec![3]);
        assert!(t.is_voter(3), "still votes in the outgoing half");
        let r = Changer::new(&t, 10).leave_joint().unwrap();
        install(&mut t, r);
        let cs = t.config.to_conf_state();
        assert_eq!((cs.voters, cs.learners), (vec![1, 2], vec![3]));
        assert!(t.progress[&3].is_learner);
    }

    #[test]
    fn learner_promotion_keeps_progress() {
        let mut t = tracker(&[1, 2, 3], &[4]);
        t.progress.get_mut(&4).unwrap().matched = 9;
        let r = Changer::new(&t, 10)
            .simple(&[change(ConfChangeType::AddNode, 4)])
            .unwrap();
        install(&mut t, r);
        assert!(t.is_voter(4));
        assert!(!t.progress[&4].is_learner);
        assert_eq!(t.progress[&4].matched, 9);
    }

    #[test]
    fn restore_rejects_inconsistent_conf_state() {
        let t = ProgressTracker::new(8, u64::MAX);
        let bad = [
            ConfState {
                voters: vec![1, 2],
                learners: vec![2],
                ..Default::default()
            },
            ConfState {
                voters: vec![1],
                learners_next: vec![2],
                ..Default::default()
            },
            ConfState {
                voters: vec![0],
                ..Default::default()
            },
            ConfState {
                voters: vec![1],
                auto_leave: true,
                ..Default::default()
            },
        ];
        for cs in bad {
            assert!(restore(&t, &cs, 0).is_err(), "{cs:?}");
        }
    }

    #[test]
    fn enters_joint_by_transition() {
        let v2 = |t: ConfChangeTransition, n: usize| ConfChangeV2 {
            transition: t as i32,
            changes: (0..n)
                .map(|i| change(ConfChangeType::AddNode, i as u64 + 1))
                .collect(),
            context: vec![],
        };
        assert_eq!(enters_joint(&v2(ConfChangeTransition::Auto, 1)), None);
        assert_eq!(enters_joint(&v2(ConfChangeTransition::Auto, 2)), Some(true));
        assert_eq!(
            enters_joint(&v2(ConfChangeTransition::Implicit, 1)),
            Some(true)
        );
        assert_eq!(
            enters_joint(&v2(ConfChangeTransition::Explicit, 1)),
            Some(false)
        );
        assert!(is_leave_joint(&v2(ConfChangeTransition::Auto, 0)));
    }

    #[test]
    fn decodes_both_entry_versions_and_refuses_garbage() {
        let v1 = ConfChange {
            change_type: ConfChangeType::AddLearnerNode as i32,
            node_id: 7,
            context: b"c".to_vec(),
        };
        let e1 = Entry {
            index: 3,
            entry_type: EntryType::EntryConfChange as i32,
            data: v1.encode_to_vec().into(),
            ..Default::default()
        };
        let cc = decode_entry(&e1).unwrap();
        assert_eq!(cc.changes, vec![change(ConfChangeType::AddLearnerNode, 7)]);
        assert_eq!(cc.context, b"c".to_vec());
        let e2 = Entry {
            entry_type: EntryType::EntryConfChangeV2 as i32,
            data: cc.encode_to_vec().into(),
            ..e1.clone()
        };
        assert_eq!(decode_entry(&e2).unwrap(), cc);
        let garbage = Entry {
            data: vec![0xff, 0xff, 0xff].into(),
            ..e2
        };
        assert!(matches!(
            decode_entry(&garbage),
            Err(RaftError::InvalidConfChange(_))
        ));
        let normal = Entry {
            entry_type: EntryType::EntryNormal as i32,
            ..e1
        };
        assert!(decode_entry(&normal).is_err());
    }
}
