//! CloudWatch metrics: the series skiff measures, which CloudWatch's read
//! API (`crate::api::cloudwatch`) queries.
//!
//! What is measured is skiff's own: its load balancers' request counts
//! and target health (see [`crate::core::lb_metrics::measure`]) and its
//! services' utilization ([`crate::core::task_metrics`]), under AWS's
//! namespaces, names and dimensions. Series live in memory for [`RETENTION`] at
//! one-second resolution and start over when the control plane restarts:
//! they are derived from live counters that start over too.

use crate::error::ApiError;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// How long datapoints are kept.
pub const RETENTION: i64 = 24 * 3600;

/// A metric: namespace, name and dimensions (sorted by name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Key {
    pub namespace: String,
    pub name: String,
    pub dims: Vec<(String, String)>,
}

impl Key {
    pub(crate) fn new(namespace: &str, name: &str, dims: &[(&str, &str)]) -> Key {
        let dims = dims
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        Key::with(namespace, name, dims)
    }

    pub(crate) fn with(namespace: &str, name: &str, mut dims: Vec<(String, String)>) -> Key {
        dims.sort();
        Key {
            namespace: namespace.to_string(),
            name: name.to_string(),
            dims,
        }
    }
}

/// The statistics of the values recorded in one second (or period).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Stats {
    count: f64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Stats {
    fn of(v: f64) -> Stats {
        Stats {
            count: 1.0,
            sum: v,
            min: v,
            max: v,
        }
    }

    fn merge(&mut self, o: &Stats) {
        self.count += o.count;
        self.sum += o.sum;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
    }

    pub(crate) fn get(&self, stat: Stat) -> f64 {
        match stat {
            Stat::SampleCount => self.count,
            Stat::Sum => self.sum,
            Stat::Average => self.sum / self.count,
            Stat::Minimum => self.min,
            Stat::Maximum => self.max,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stat {
    SampleCount,
    Average,
    Sum,
    Minimum,
    Maximum,
}

impl Stat {
    const ALL: [(&'static str, Stat); 5] = [
        ("SampleCount", Stat::SampleCount),
        ("Average", Stat::Average),
        ("Sum", Stat::Sum),
        ("Minimum", Stat::Minimum),
        ("Maximum", Stat::Maximum),
    ];

    pub(crate) fn parse(s: &str) -> Result<Stat, ApiError> {
        Self::ALL
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, st)| *st)
            .ok_or_else(|| {
                ApiError::coded("InvalidParameterValueException", format!(
                    "the statistic {s:?} is not supported: skiff computes SampleCount, Average, Sum, Minimum and Maximum (no percentiles or other extended statistics)"
                ))
            })
    }

    pub(crate) fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, st)| *st == self)
            .map_or("Sum", |(n, _)| n)
    }
}

#[derive(Debug)]
struct Series {
    unit: &'static str,
    /// By the second.
    points: BTreeMap<i64, Stats>,
}

#[derive(Debug, Default)]
struct Store {
    series: BTreeMap<Key, Series>,
    /// Counters' last readings, for [`Metrics::delta`].
    last: HashMap<String, u64>,
}

/// The metric store.
#[derive(Debug, Default)]
pub struct Metrics {
    store: Mutex<Store>,
}

impl Metrics {
    /// Records `value` for a metric at `at` (seconds since the epoch).
    pub fn record(
        &self,
        namespace: &str,
        name: &str,
        dims: &[(&str, &str)],
        unit: &'static str,
        at: i64,
        value: f64,
    ) {
        let Ok(mut store) = self.store.lock() else {
            return;
        };
        let series = store
            .series
            .entry(Key::new(namespace, name, dims))
            .or_insert_with(|| Series {
                unit,
                points: BTreeMap::new(),
            });
        let v = Stats::of(value);
        series
            .points
            .entry(at)
            .and_modify(|s| s.merge(&v))
            .or_insert(v);
        while series
            .points
            .first_key_value()
            .is_some_and(|(t, _)| *t < at - RETENTION)
        {
            series.points.pop_first();
        }
    }

    /// How much the counter named `id` grew since its last reading, now
    /// `current` (a counter that went down started over: all of it is new).
    /// The first reading counts whole.
    pub fn delta(&self, id: &str, current: u64) -> u64 {
        let Ok(mut store) = self.store.lock() else {
            return 0;
        };
        let prior = store.last.insert(id.to_string(), current).unwrap_or(0);
        if current >= prior {
            current - prior
        } else {
            current
        }
    }

    /// Forgets counters not read by `keep`.
    pub fn retain_counters(&self, keep: impl Fn(&str) -> bool) {
        if let Ok(mut store) = self.store.lock() {
            store.last.retain(|id, _| keep(id));
        }
    }

    /// The statistics of `key`'s points in [start, end), by periods from
    /// `start` rounded down as CloudWatch rounds it (to the minute, or for
    /// a shorter period to a multiple of it): (period start, stats), oldest
    /// first. None if no such metric (or not in `unit`).
    pub(crate) fn aggregate(
        &self,
        key: &Key,
        unit: Option<&str>,
        start: i64,
        end: i64,
        period: i64,
    ) -> Option<(&'static str, Vec<(i64, Stats)>)> {
        let store = self.store.lock().ok()?;
        let series = store.series.get(key)?;
        if unit.is_some_and(|u| u != series.unit) {
            return None;
        }
        let start = start - start.rem_euclid(period.min(60));
        let mut out: Vec<(i64, Stats)> = Vec::new();
        for (t, s) in series.points.range(start..end) {
            let bucket = start + (t - start) / period * period;
            match out.last_mut() {
                Some((b, acc)) if *b == bucket => acc.merge(s),
                _ => out.push((bucket, *s)),
            }
        }
        Some((series.unit, out))
    }

    /// The metrics `keep` keeps, given each one's key and the time of its
    /// latest point, in key order.
    pub(crate) fn keys(&self, keep: impl Fn(&Key, Option<i64>) -> bool) -> Vec<Key> {
        let Ok(store) = self.store.lock() else {
            return Vec::new();
        };
        store
            .series
            .iter()
            .filter(|(k, s)| keep(k, s.points.last_key_value().map(|(t, _)| *t)))
            .map(|(k, _)| k.clone())
            .collect()
    }
}
