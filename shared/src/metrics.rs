//! CloudWatch metrics in Embedded Metric Format (EMF): each invocation writes one JSON
//! document per dimension set to stdout, and Lambda's log pipeline turns them into metrics in
//! the `tracemeter` namespace. No `PutMetricData` call, no extra IAM, nothing to batch.
//!
//! Every metric has the dimension `Function` (`process` or `ingest`); a metric may add one
//! more (e.g. `Reason` for failures). The format comes from the maintained
//! `metrics_cloudwatch_embedded` emitter, installed once per process as the `metrics`
//! facade's recorder.

use metrics::Unit;
use metrics_cloudwatch_embedded::{Builder, Collector};
use std::sync::OnceLock;

/// The CloudWatch namespace of every tracemeter metric.
pub const NAMESPACE: &str = "tracemeter";

/// One metric value of an invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// The metric name, e.g. `TracesMetered`.
    pub name: &'static str,
    /// Its unit.
    pub unit: Unit,
    /// The value for this invocation.
    pub value: u64,
    /// An extra dimension (name, value), e.g. `("Reason", "unmapped_customer")`.
    pub dimension: Option<(&'static str, String)>,
}

impl Metric {
    /// A count.
    pub fn count(name: &'static str, value: u64) -> Metric {
        Metric {
            name,
            unit: Unit::Count,
            value,
            dimension: None,
        }
    }

    /// A duration in milliseconds.
    pub fn millis(name: &'static str, value: u64) -> Metric {
        Metric {
            unit: Unit::Milliseconds,
            ..Metric::count(name, value)
        }
    }

    /// A duration in seconds.
    pub fn seconds(name: &'static str, value: u64) -> Metric {
        Metric {
            unit: Unit::Seconds,
            ..Metric::count(name, value)
        }
    }

    /// The same metric with an extra dimension.
    pub fn by(self, dimension: &'static str, value: impl Into<String>) -> Metric {
        Metric {
            dimension: Some((dimension, value.into())),
            ..self
        }
    }
}

/// One function's EMF emitter, built once per cold start.
pub struct Metrics {
    collector: &'static Collector,
    function: &'static str,
}

static COLLECTOR: OnceLock<Result<&'static Collector, String>> = OnceLock::new();

impl Metrics {
    /// An emitter for `function` (the `Function` dimension). The process-wide recorder is
    /// installed on first use.
    pub fn new(function: &'static str) -> crate::Result<Metrics> {
        let collector = COLLECTOR.get_or_init(|| {
            Builder::new()
                .cloudwatch_namespace(NAMESPACE)
                .emit_zeros(true)
                .init()
                .map_err(|e| e.to_string())
        });
        match collector {
            Ok(collector) => Ok(Metrics {
                collector,
                function,
            }),
            Err(e) => Err(crate::Error::Config(format!(
                "the metrics recorder could not be installed: {e}"
            ))),
        }
    }

    /// Writes the invocation's metrics as EMF documents (one JSON line per dimension set).
    pub fn write(&self, values: &[Metric], out: impl std::io::Write) -> std::io::Result<()> {
        for m in values {
            metrics::describe_counter!(m.name, m.unit, "");
            let function = ("Function", self.function);
            match &m.dimension {
                Some((name, value)) => {
                    metrics::counter!(m.name, function.0 => function.1, *name => value.clone())
                        .increment(m.value)
                }
                None => metrics::counter!(m.name, function.0 => function.1).increment(m.value),
            }
        }
        self.collector.flush(out)
    }

    /// Writes the invocation's metrics to stdout (where Lambda picks them up); a failure to
    /// write is logged, never fatal.
    pub fn emit(&self, values: &[Metric]) {
        if let Err(e) = self.write(values, std::io::stdout().lock()) {
            tracing::warn!(error = %e, "could not write the invocation's metrics");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn documents(metrics: &Metrics, values: &[Metric]) -> Vec<Value> {
        let mut out = Vec::new();
        metrics.write(values, &mut out).expect("write");
        String::from_utf8(out)
            .expect("utf-8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is one JSON document"))
            .collect()
    }

    // One test: the recorder is process-wide, and a flush writes every pending value.
    #[test]
    fn each_line_is_an_emf_document_with_per_invocation_values() {
        let m = Metrics::new("process").expect("recorder");
        let docs = documents(
            &m,
            &[
                Metric::count("TracesMetered", 7),
                Metric::millis("BatchDuration", 120),
                Metric::count("TracesFailed", 2).by("Reason", "unmapped_customer"),
            ],
        );
        assert_eq!(docs.len(), 2, "one document per dimension set: {docs:?}");
        for d in &docs {
            let cw = &d["_aws"]["CloudWatchMetrics"][0];
            assert_eq!(cw["Namespace"], NAMESPACE);
            assert!(d["_aws"]["Timestamp"].as_u64().is_some());
            assert_eq!(d["Function"], "process");
            for metric in cw["Metrics"].as_array().expect("metrics") {
                let name = metric["Name"].as_str().expect("name");
                assert!(d[name].is_number(), "{name} has its value: {d}");
            }
        }
        let plain = docs
            .iter()
            .find(|d| d.get("Reason").is_none())
            .expect("plain");
        assert_eq!(plain["TracesMetered"], 7);
        assert_eq!(plain["BatchDuration"], 120);
        let units: Vec<&str> = plain["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .expect("metrics")
            .iter()
            .filter_map(|m| m["Unit"].as_str())
            .collect();
        assert!(units.contains(&"Milliseconds"), "{units:?}");
        let failed = docs
            .iter()
            .find(|d| d.get("Reason").is_some())
            .expect("failed");
        assert_eq!(failed["Reason"], "unmapped_customer");
        assert_eq!(failed["TracesFailed"], 2);
        assert_eq!(
            failed["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0],
            serde_json::json!(["Function", "Reason"])
        );
        // Values are per invocation, not running totals.
        let again = documents(&m, &[Metric::count("TracesMetered", 3)]);
        let plain = again
            .iter()
            .find(|d| d.get("Reason").is_none())
            .expect("plain");
        assert_eq!(plain["TracesMetered"], 3);
    }
}
