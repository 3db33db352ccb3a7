//! Reading the Prometheus text exposition back, as a scraper would.

use std::collections::HashMap;

/// Every sample of an exposition: `name{labels}` → value (labels as rendered).
pub fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The sum of every sample of `name` whose labels contain each of `labels`.
pub fn sum(samples: &HashMap<String, f64>, name: &str, labels: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|(k, _)| {
            let bare = k.split('{').next().unwrap_or("");
            bare == name && labels.iter().all(|l| k.contains(l))
        })
        .map(|(_, v)| v)
        .sum()
}

/// Batches between three stores and heartbeats folded per batch, over a quiet window.
pub struct Traffic {
    /// Batches per ordered store pair per heartbeat interval.
    pub per_pair_interval: f64,
    /// Folded heartbeats (and responses) per batch.
    pub per_batch: f64,
}

impl Traffic {
    /// The traffic of three stores between two scrapes, `heartbeat_ticks` ticks to a
    /// heartbeat interval. The window must be quiet: nothing but heartbeats, their
    /// responses and pings (a message sent whole would show).
    pub fn between(
        before: &HashMap<String, f64>,
        after: &HashMap<String, f64>,
        heartbeat_ticks: usize,
        what: &str,
    ) -> Traffic {
        let delta =
            |name: &str, labels: &[&str]| sum(after, name, labels) - sum(before, name, labels);
        let intervals = delta("flotilla_store_ticks_total", &[]) / 3.0 / heartbeat_ticks as f64;
        assert!(intervals >= 8.0, "the timer hardly ticked: {intervals}");
        let batches = delta("flotilla_transport_rpcs_total", &["dir=\"sent\""]);
        let folded = delta(
            "flotilla_transport_heartbeats_coalesced_total",
            &["dir=\"sent\""],
        );
        assert_eq!(
            delta("flotilla_transport_messages_total", &["dir=\"sent\""]),
            0.0,
            "whole messages in a quiet window"
        );
        let t = Traffic {
            per_pair_interval: batches / 6.0 / intervals,
            per_batch: folded / batches,
        };
        eprintln!(
            "{what}: {intervals:.0} heartbeat intervals, {batches} batches ({:.2} per store pair per interval), {folded} folded heartbeats ({:.0} per batch)",
            t.per_pair_interval, t.per_batch
        );
        t
    }
}

/// The batches per store pair and interval do not follow the region count (`many` has
/// `regions`, `few` 16), the heartbeats per batch do. Either figure settles near 1 or
/// near 3 from run to run, whatever the region count (whether a tick's heartbeats and the
/// other store's answers meet in one batch: seen 1.07 and 2.4-2.9 for both 16 and 1,000
/// regions), so the bound is three times the 16-region figure, never below one batch per
/// interval — still far under a count that followed the regions.
pub fn assert_coalesced(few: &Traffic, many: &Traffic, regions: u64) {
    assert!(
        many.per_pair_interval <= few.per_pair_interval.max(1.0) * 3.0 + 0.5,
        "{:.2} batches per pair and interval for {regions} regions, {:.2} for 16",
        many.per_pair_interval,
        few.per_pair_interval
    );
    assert!(
        many.per_pair_interval <= 5.0,
        "{:.2}",
        many.per_pair_interval
    );
    assert!(
        many.per_batch >= few.per_batch * (regions as f64 / 16.0) / 4.0,
        "{:.0} heartbeats per batch for {regions} regions, {:.0} for 16",
        many.per_batch,
        few.per_batch
    );
}
