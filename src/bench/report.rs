//! What a bench measured: samples per phase, their percentiles, and the
//! table and JSON they are printed as.

use serde_json::{Value, json};

/// One phase's samples, in microseconds.
#[derive(Debug, Clone, Default)]
pub struct Phase {
    pub name: &'static str,
    /// What it measures, for the table and the JSON.
    pub what: &'static str,
    pub micros: Vec<f64>,
}

/// Percentiles of one phase (microseconds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Phase {
    pub fn new(name: &'static str, what: &'static str) -> Phase {
        Phase {
            name,
            what,
            micros: Vec::new(),
        }
    }

    /// Its percentiles (nearest rank), if it has samples.
    pub fn summary(&self) -> Option<Summary> {
        let mut v = self.micros.clone();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let i = ((p / 100.0) * v.len() as f64).ceil() as usize;
            v[i.clamp(1, v.len()) - 1]
        };
        Some(Summary {
            count: v.len(),
            p50: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
            max: v[v.len() - 1],
        })
    }
}

/// A measured quantity, printed in the unit that suits it.
pub fn duration(micros: f64) -> String {
    if micros >= 1_000_000.0 {
        format!("{:.2} s", micros / 1e6)
    } else if micros >= 1_000.0 {
        format!("{:.2} ms", micros / 1e3)
    } else {
        format!("{micros:.1} µs")
    }
}

/// Byte counts as people read them.
pub fn bytes(n: u64) -> String {
    skiff_runtime::format_bytes(n)
}

/// The phases as a table: name, samples, p50, p90, p99, max.
pub fn table(phases: &[Phase]) -> String {
    table_headed(phases, "phase", "tasks")
}

/// [`table`] with its first two columns headed `name` and `count`.
pub fn table_headed(phases: &[Phase], name: &str, count: &str) -> String {
    let mut out = format!(
        "{:<34} {:>6} {:>10} {:>10} {:>10} {:>10}\n",
        name, count, "p50", "p90", "p99", "max"
    );
    for p in phases {
        let Some(s) = p.summary() else { continue };
        out.push_str(&format!(
            "{:<34} {:>6} {:>10} {:>10} {:>10} {:>10}\n",
            p.name,
            s.count,
            duration(s.p50),
            duration(s.p90),
            duration(s.p99),
            duration(s.max)
        ));
    }
    out
}

/// Microseconds to the nanosecond, for JSON.
pub fn ns(micros: f64) -> f64 {
    (micros * 1e3).round() / 1e3
}

/// The phases as JSON: `{name: {order, what, count, p50Micros, …}}`
/// (`order`: where it comes in the table), phases with no samples left
/// out. Times are to the nanosecond (what a clock gives), not carrying
/// the float noise of converting them.
pub fn json(phases: &[Phase]) -> Value {
    let mut out = serde_json::Map::new();
    for (order, p) in phases.iter().enumerate() {
        if let Some(s) = p.summary() {
            out.insert(
                p.name.trim().to_string(),
                json!({
                    "order": order,
                    "what": p.what,
                    "count": s.count,
                    "p50Micros": ns(s.p50),
                    "p90Micros": ns(s.p90),
                    "p99Micros": ns(s.p99),
                    "maxMicros": ns(s.max),
                }),
            );
        }
    }
    Value::Object(out)
}

/// This machine, for the record: cores, memory, kernel.
pub fn machine() -> Value {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb * 1024);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .ok();
    let model = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| {
        c.lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
    });
    json!({"cpus": cpus, "memoryBytes": memory, "kernel": kernel, "cpuModel": model})
}

/// The first line of a bench's text: the machine it ran on (from its
/// JSON's `machine`), then a blank line.
pub fn print_machine(out: &Value) {
    let machine = &out["machine"];
    println!(
        "machine: {} cores, {}, Linux {}",
        machine["cpus"],
        machine["memoryBytes"]
            .as_u64()
            .map(bytes)
            .unwrap_or_else(|| "? memory".into()),
        machine["kernel"].as_str().unwrap_or("?")
    );
    println!();
}

/// `, VERSION` after a tool's name, or nothing when it has none.
pub fn version_suffix(version: Option<&str>) -> String {
    version.map(|v| format!(", {v}")).unwrap_or_default()
}

/// The peak resident memory of process `pid` (its VmHWM), if it can be
/// read.
pub fn peak_memory(pid: u32) -> Option<u64> {
    proc_kb(&format!("/proc/{pid}/status"), "VmHWM:")
}

/// A `FIELD:   N kB` line of a /proc file, in bytes.
pub fn proc_kb(path: &str, field: &str) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// Failure reasons with how many each, the most frequent first.
pub fn by_count(failures: std::collections::HashMap<String, usize>) -> Vec<(String, usize)> {
    let mut failures: Vec<(String, usize)> = failures.into_iter().collect();
    failures.sort_by_key(|f| std::cmp::Reverse(f.1));
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut p = Phase::new("x", "");
        assert!(p.summary().is_none());
        p.micros = (1..=100).rev().map(f64::from).collect();
        let s = p.summary().unwrap();
        assert_eq!(
            (s.count, s.p50, s.p90, s.p99, s.max),
            (100, 50.0, 90.0, 99.0, 100.0)
        );
        p.micros = vec![7.0];
        let s = p.summary().unwrap();
        assert_eq!((s.p50, s.p99, s.max), (7.0, 7.0, 7.0));
    }

    #[test]
    fn durations_read_in_their_unit() {
        assert_eq!(duration(12.34), "12.3 µs");
        assert_eq!(duration(1_234.0), "1.23 ms");
        assert_eq!(duration(2_500_000.0), "2.50 s");
    }
}
