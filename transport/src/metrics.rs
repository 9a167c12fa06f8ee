//! Prometheus metrics in the text exposition format, the one way both servers keep and render
//! them: a [`Metric`] is a named atomic (a counter, a gauge, or a counter of microseconds shown
//! in seconds) and [`render`] writes a list of them under a name prefix.
//!
//! Non-features: no labels, no histograms (latency figures come from the benchmarks), no push.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Seconds,
}

/// One metric.
#[derive(Debug)]
pub struct Metric {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    value: AtomicU64,
}

impl Metric {
    const fn new(name: &'static str, help: &'static str, kind: Kind) -> Self {
        Self {
            name,
            help,
            kind,
            value: AtomicU64::new(0),
        }
    }

    /// A monotonically increasing counter (its name should end in `_total`).
    pub const fn counter(name: &'static str, help: &'static str) -> Self {
        Self::new(name, help, Kind::Counter)
    }

    /// A value that goes up and down.
    pub const fn gauge(name: &'static str, help: &'static str) -> Self {
        Self::new(name, help, Kind::Gauge)
    }

    /// A counter of time, added to in microseconds and rendered in seconds (name it
    /// `..._seconds_total`).
    pub const fn seconds(name: &'static str, help: &'static str) -> Self {
        Self::new(name, help, Kind::Seconds)
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n` (microseconds for a [`Metric::seconds`]).
    pub fn add(&self, n: u64) {
        self.value.fetch_add(n, Ordering::Relaxed);
    }

    /// Subtracts `n` (gauges).
    pub fn sub(&self, n: u64) {
        self.value.fetch_sub(n, Ordering::Relaxed);
    }

    /// The current value (microseconds for a [`Metric::seconds`]).
    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }

    fn write(&self, prefix: &str, out: &mut String) {
        let (kind, value) = match self.kind {
            Kind::Counter => ("counter", self.get().to_string()),
            Kind::Gauge => ("gauge", self.get().to_string()),
            Kind::Seconds => ("counter", format!("{:.6}", self.get() as f64 / 1e6)),
        };
        let name = self.name;
        let help = self.help;
        out.push_str(&format!(
            "# HELP {prefix}{name} {help}\n# TYPE {prefix}{name} {kind}\n{prefix}{name} {value}\n"
        ));
    }
}

/// The text exposition of `metrics`, each name prefixed with `prefix`.
pub fn render(prefix: &str, metrics: &[&Metric]) -> String {
    let mut out = String::new();
    for m in metrics {
        m.write(prefix, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_each_kind() {
        let c = Metric::counter("things_total", "things done");
        let g = Metric::gauge("open", "open now");
        let s = Metric::seconds("busy_seconds_total", "time busy");
        c.add(3);
        g.add(2);
        g.sub(1);
        s.add(1_500_000);
        let text = render("x_", &[&c, &g, &s]);
        assert!(text.contains("# TYPE x_things_total counter\nx_things_total 3\n"));
        assert!(text.contains("# TYPE x_open gauge\nx_open 1\n"));
        assert!(text.contains("# HELP x_busy_seconds_total time busy\n# TYPE x_busy_seconds_total counter\nx_busy_seconds_total 1.500000\n"));
    }
}
