//! Drives tracemeter's real adapters, step by step, against the recorder, with the
//! arguments of `tests/goldens/inputs.json` (the ones the SDKs were driven with).

use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tracemeter::adapters::credential::Credential;
use tracemeter::adapters::langfuse::{LangfuseClient, LangfuseScanner};
use tracemeter::adapters::stripe::StripeClient;
use tracemeter::adapters::stripe_events::StripeEvents;
use tracemeter::adapters::stripe_meter::retrieve_meter;
use tracemeter::adapters::stripe_reports::StripeReports;
use tracemeter::config::{
    IngestConfig, LangfuseKeys, ProcessConfig, Secret, StripeApiMode, StripeKey,
};
use tracemeter::domain::ingest::PendingScan;
use tracemeter::domain::meter::MeterEvent;
use tracemeter::domain::scan::Walk;
use tracemeter::ports::{MeterErrorReports, MeterReports, MeterSink, TraceLister, UsageSource};

/// One driving step and the golden calls its requests are, in order.
#[derive(Debug, Clone, Copy)]
pub enum Step {
    MeterEventV1,
    MeterEventStream,
    Summaries,
    ErrorReports,
    MeterRetrieve,
    ObservationsBatch,
    ObservationsScan,
    LegacyTracesList,
    LegacyTraceGet,
    Score,
}

/// Every step, in the order they run.
pub const STEPS: &[Step] = &[
    Step::MeterEventV1,
    Step::MeterEventStream,
    Step::Summaries,
    Step::ErrorReports,
    Step::MeterRetrieve,
    Step::ObservationsBatch,
    Step::ObservationsScan,
    Step::LegacyTracesList,
    Step::LegacyTraceGet,
    Step::Score,
];

impl Step {
    /// (service, golden call) of each request the step sends, in order.
    pub fn calls(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Step::MeterEventV1 => &[("stripe", "v1_meter_event_create")],
            Step::MeterEventStream => &[
                ("stripe", "v2_meter_event_session_create"),
                ("stripe", "v2_meter_event_stream_create"),
            ],
            Step::Summaries => &[("stripe", "meter_event_summaries_list")],
            Step::ErrorReports => &[
                ("stripe", "v2_core_events_list"),
                ("stripe", "v2_core_events_retrieve"),
            ],
            Step::MeterRetrieve => &[("stripe", "billing_meter_retrieve")],
            Step::ObservationsBatch => &[
                ("langfuse", "v2_observations_batch"),
                ("langfuse", "v2_observations_batch_next"),
            ],
            Step::ObservationsScan => &[
                ("langfuse", "v2_observations_scan"),
                ("langfuse", "v2_observations_scan_next"),
            ],
            Step::LegacyTracesList => &[("langfuse", "legacy_traces_list")],
            Step::LegacyTraceGet => &[("langfuse", "legacy_trace_get")],
            Step::Score => &[("langfuse", "score_create")],
        }
    }
}

/// The adapters, all pointed at one recorder.
pub struct Rig {
    inputs: Value,
    process: ProcessConfig,
    legacy: ProcessConfig,
    ingest: IngestConfig,
    ingest_legacy: IngestConfig,
    stripe_key: Credential<StripeKey>,
    langfuse_keys: Credential<LangfuseKeys>,
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_default())
        .expect("an RFC 3339 time in inputs.json")
        .with_timezone(&Utc)
}

impl Rig {
    pub fn new(inputs: Value, base_url: &str) -> Rig {
        let (s, l) = (&inputs["stripe"], &inputs["langfuse"]);
        let env: HashMap<String, String> = [
            ("TABLE_NAME", "goldens".to_string()),
            ("QUEUE_URL", format!("{base_url}/queue")),
            ("LANGFUSE_BASE_URL", base_url.to_string()),
            ("LANGFUSE_PUBLIC_KEY", text(&l["public_key"])),
            ("LANGFUSE_SECRET_KEY", text(&l["secret_key"])),
            ("LANGFUSE_REQUESTS_PER_MINUTE", "unlimited".to_string()),
            ("LANGFUSE_SCORE_ENABLED", "true".to_string()),
            ("STRIPE_SECRET_KEY", text(&s["secret_key"])),
            ("STRIPE_METER_EVENT_NAME", text(&s["event_name"])),
            ("STRIPE_API_BASE", base_url.to_string()),
            ("STRIPE_METER_EVENTS_BASE", base_url.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let config = |legacy: bool| {
            let mut env = env.clone();
            if legacy {
                env.insert("LANGFUSE_API".into(), "legacy".into());
            }
            let process = ProcessConfig::from_lookup(&|k| env.get(k).cloned()).expect("config");
            let ingest = IngestConfig::from_lookup(&|k| env.get(k).cloned()).expect("config");
            (process, ingest)
        };
        let ((process, ingest), (legacy, ingest_legacy)) = (config(false), config(true));
        let stripe_key = StripeKey::new(&text(&s["secret_key"])).expect("key");
        let langfuse_keys = LangfuseKeys {
            public_key: text(&l["public_key"]),
            secret_key: Secret::new(text(&l["secret_key"])),
        };
        Rig {
            inputs,
            process,
            legacy,
            ingest,
            ingest_legacy,
            stripe_key: Credential::fixed(stripe_key, "STRIPE_SECRET_KEY"),
            langfuse_keys: Credential::fixed(langfuse_keys, "LANGFUSE_PUBLIC_KEY"),
        }
    }

    fn meter_event(&self) -> MeterEvent {
        let s = &self.inputs["stripe"];
        MeterEvent {
            identifier: text(&s["identifier"]),
            customer_id: text(&s["customer"]),
            value: s["value"].as_u64().unwrap_or_default(),
            timestamp: s["timestamp"].as_i64().unwrap_or_default(),
        }
    }

    fn walk(&self, legacy: bool) -> Walk {
        let l = &self.inputs["langfuse"];
        let (from, to) = (time(&l["from"]), time(&l["to"]));
        let position = if legacy { from } else { to };
        Walk::new(PendingScan { from, to, position })
    }

    /// Runs one step; what it is answered does not matter, only what it sends.
    pub async fn drive(&self, step: Step) {
        let (s, l) = (&self.inputs["stripe"], &self.inputs["langfuse"]);
        let stripe = || StripeClient::new(&self.process.stripe, self.stripe_key.clone());
        let langfuse =
            |c: &ProcessConfig| LangfuseClient::new(&c.langfuse, self.langfuse_keys.clone());
        let until = Instant::now() + Duration::from_secs(10);
        match step {
            Step::MeterEventV1 => {
                let client = stripe().expect("client").with_mode(StripeApiMode::V1);
                client.send(&self.meter_event()).await.expect("sent");
            }
            Step::MeterEventStream => {
                let client = stripe().expect("client").with_mode(StripeApiMode::V2Stream);
                client.send(&self.meter_event()).await.expect("sent");
            }
            Step::Summaries => {
                let reports = StripeReports::new(
                    &self.process.stripe,
                    self.stripe_key.clone(),
                    text(&s["meter_id"]),
                )
                .expect("reports");
                let at = |k: &str| DateTime::from_timestamp(s[k].as_i64().unwrap_or_default(), 0);
                let (start, end) = (at("summary_start"), at("summary_end"));
                let customer = text(&s["customer"]);
                let total = reports.aggregated(&customer, start.expect("start"), end.expect("end"));
                total.await.expect("summaries");
            }
            Step::ErrorReports => {
                let events = StripeEvents::new(&self.process.stripe, self.stripe_key.clone())
                    .expect("events");
                events
                    .error_reports(time(&s["since"]))
                    .await
                    .expect("reports");
            }
            Step::MeterRetrieve => {
                let meter = text(&s["meter_id"]);
                let found = retrieve_meter(&self.process.stripe, &self.stripe_key, &meter).await;
                found.expect("meter");
            }
            Step::ObservationsBatch => {
                let ids: Vec<String> = serde_json::from_value(l["trace_ids"].clone()).expect("ids");
                let client = langfuse(&self.process).expect("client");
                client.traces_usage(&ids).await.expect("batch read");
            }
            Step::ObservationsScan => {
                let scanner = LangfuseScanner::new(&self.ingest, self.langfuse_keys.clone())
                    .expect("scanner");
                let mut walk = self.walk(false);
                scanner.next_page(&mut walk, until).await.expect("page");
                let to = time(&l["to"]).timestamp_millis();
                walk.token = Some(format!("{to}|{}", text(&l["cursor"])));
                walk.done = false;
                scanner
                    .next_page(&mut walk, until)
                    .await
                    .expect("next page");
            }
            Step::LegacyTracesList => {
                let scanner = LangfuseScanner::new(&self.ingest_legacy, self.langfuse_keys.clone())
                    .expect("scanner");
                scanner
                    .next_page(&mut self.walk(true), until)
                    .await
                    .expect("page");
            }
            Step::LegacyTraceGet => {
                let client = langfuse(&self.legacy).expect("client");
                client
                    .trace_usage(&text(&l["trace_id"]))
                    .await
                    .expect("trace");
            }
            Step::Score => {
                let client = langfuse(&self.process).expect("client");
                let (trace, id) = (text(&l["trace_id"]), text(&l["score_id"]));
                let credits = l["credits"].as_u64().unwrap_or_default();
                client
                    .record_billed(&trace, &id, credits)
                    .await
                    .expect("score");
            }
        }
    }
}
