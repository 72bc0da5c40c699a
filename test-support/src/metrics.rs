//! The `/metrics` page, parsed by `prometheus-parse` and flattened back into
//! the series as exposed (`x_bucket{le=…}`, `x_sum`, `x_count`), which is
//! what the contract names and the tests look up.

use prometheus_parse::{Scrape, Value};

/// One exposed series and its value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// A parsed `/metrics` page.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// The page as served.
    pub text: String,
    pub samples: Vec<Sample>,
}

impl Metrics {
    /// Parses the Prometheus text exposition format; panics on a page that
    /// is not one.
    pub fn parse(text: &str) -> Metrics {
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .unwrap_or_else(|e| panic!("not a Prometheus text page ({e}):\n{text}"));
        let mut samples = Vec::new();
        for s in scrape.samples {
            let labels: Vec<(String, String)> = s
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let with = |key: &str, bound: f64| {
                let mut l = labels.clone();
                l.push((key.to_string(), bound_text(bound)));
                l
            };
            match s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => samples.push(Sample {
                    name: s.metric,
                    labels,
                    value: v,
                }),
                Value::Histogram(buckets) => samples.extend(buckets.iter().map(|b| Sample {
                    name: format!("{}_bucket", s.metric),
                    labels: with("le", b.less_than),
                    value: b.count,
                })),
                Value::Summary(quantiles) => samples.extend(quantiles.iter().map(|q| Sample {
                    name: s.metric.clone(),
                    labels: with("quantile", q.quantile),
                    value: q.count,
                })),
            }
        }
        Metrics {
            text: text.to_string(),
            samples,
        }
    }

    /// The sum of all samples named `name` whose labels include `labels`;
    /// `None` when there is no such sample.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = None;
        for s in &self.samples {
            if s.name != name {
                continue;
            }
            let all = labels
                .iter()
                .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v));
            if all {
                *found.get_or_insert(0.0) += s.value;
            }
        }
        found
    }

    /// Like `value`, treating a missing series as 0.
    pub fn value_or_zero(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }

    /// Whether any sample has this name.
    pub fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s.name == name)
    }
}

/// A bucket bound or quantile as the exposition format writes it.
fn bound_text(v: f64) -> String {
    match v {
        f64::INFINITY => "+Inf".to_string(),
        f64::NEG_INFINITY => "-Inf".to_string(),
        v => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metrics_parser_reads_labels_and_sums_matching_series() {
        let m = Metrics::parse(
            "# TYPE a counter\na{reason=\"x\",k=\"q\"} 2\na{reason=\"y\"} 3\nb 1.5\n\
             # TYPE h histogram\nh_bucket{le=\"0.005\"} 1\nh_bucket{le=\"+Inf\"} 4\nh_sum 0.5\nh_count 4\n",
        );
        assert_eq!(m.value("a", &[]), Some(5.0));
        assert_eq!(m.value("a", &[("reason", "x")]), Some(2.0));
        assert_eq!(m.value("a", &[("k", "q")]), Some(2.0));
        assert_eq!(m.value("b", &[]), Some(1.5));
        assert_eq!(m.value("h_bucket", &[("le", "+Inf")]), Some(4.0));
        assert_eq!(m.value("h_bucket", &[("le", "0.005")]), Some(1.0));
        assert_eq!(m.value("h_count", &[]), Some(4.0));
        assert_eq!(m.value("h_sum", &[]), Some(0.5));
        assert_eq!(m.value("c", &[]), None);
    }
}
