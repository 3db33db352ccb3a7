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
