//! What the coordinator's and the workers' `/metrics` endpoints share: duration histograms,
//! the Prometheus text exposition format, and the bearer-token check every service applies.

use std::fmt::{Display, Write as _};

/// Task durations' histogram buckets, seconds (Prometheus `le`).
pub const DURATION_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

/// A histogram over [`DURATION_BUCKETS`].
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); those above the last bucket only count.
    pub buckets: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: vec![0; DURATION_BUCKETS.len()],
            sum: 0.0,
            count: 0,
        }
    }
}

impl Histogram {
    pub fn observe(&mut self, seconds: f64) {
        if let Some(b) = DURATION_BUCKETS.iter().position(|&le| seconds <= le) {
            self.buckets[b] += 1;
        }
        self.sum += seconds;
        self.count += 1;
    }
}

/// A Prometheus text exposition being written.
#[derive(Debug, Default)]
pub struct Exposition(String);

impl Exposition {
    /// A metric's `# HELP` and `# TYPE` lines.
    pub fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample; label values are escaped.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                let v = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(self.0, "{}{k}=\"{v}\"", if i > 0 { "," } else { "" });
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// A histogram's `_bucket` (cumulative, with `+Inf`), `_sum` and `_count` samples.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (le, n) in DURATION_BUCKETS.iter().zip(&h.buckets) {
            cumulative += n;
            let le = le.to_string();
            let mut l = labels.to_vec();
            l.push(("le", &le));
            self.sample(&bucket, &l, cumulative);
        }
        let mut l = labels.to_vec();
        l.push(("le", "+Inf"));
        self.sample(&bucket, &l, h.count);
        self.sample(&format!("{name}_sum"), labels, h.sum);
        self.sample(&format!("{name}_count"), labels, h.count);
    }

    pub fn finish(self) -> String {
        self.0
    }
}

/// Why a request is refused a service's bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    Wrong,
}

/// Whether an `authorization` value carries `Bearer <token>`: the one check of the gRPC
/// interceptor and of every HTTP endpoint.
pub fn bearer_refusal(authorization: Option<&str>, token: &str) -> Option<Refusal> {
    match authorization {
        Some(v) if v.strip_prefix("Bearer ") == Some(token) => None,
        Some(_) => Some(Refusal::Wrong),
        None => Some(Refusal::Missing),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_is_written_cumulative_with_its_sum_and_count() {
        let mut h = Histogram::default();
        for s in [0.001, 0.02, 0.02, 100.0] {
            h.observe(s);
        }
        let mut e = Exposition::default();
        e.head("t_seconds", "histogram", "Test.");
        e.histogram("t_seconds", &[("kind", "a\"b")], &h);
        let text = e.finish();
        assert!(text.contains("t_seconds_bucket{kind=\"a\\\"b\",le=\"0.005\"} 1\n"));
        assert!(text.contains("t_seconds_bucket{kind=\"a\\\"b\",le=\"0.025\"} 3\n"));
        assert!(text.contains("t_seconds_bucket{kind=\"a\\\"b\",le=\"60\"} 3\n"));
        assert!(text.contains("t_seconds_bucket{kind=\"a\\\"b\",le=\"+Inf\"} 4\n"));
        assert!(text.contains("t_seconds_count{kind=\"a\\\"b\"} 4\n"));
    }

    #[test]
    fn only_the_exact_bearer_token_passes() {
        assert_eq!(bearer_refusal(Some("Bearer s"), "s"), None);
        assert_eq!(bearer_refusal(Some("Bearer x"), "s"), Some(Refusal::Wrong));
        assert_eq!(bearer_refusal(Some("s"), "s"), Some(Refusal::Wrong));
        assert_eq!(bearer_refusal(None, "s"), Some(Refusal::Missing));
    }
}
