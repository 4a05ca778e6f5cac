//! Every request tracemeter sends is the request the official SDK sends.
//!
//! `tests/goldens/{stripe,langfuse}/<call>.json` hold what stripe-python and langfuse's
//! generated client sent for each call tracemeter makes (`make goldens`, dev/goldens.py).
//! Here tracemeter's real adapters are driven with the same arguments against a recorder
//! that answers the same way, and each request is compared, normalised alike
//! (`tracemeter_local::fakes::recorder::normalise`): method, path, query pairs, body, and the
//! headers that carry meaning. A difference kept on purpose is in [`ON_PURPOSE`] with its
//! reason; any other difference fails, and so does an entry that no longer differs.

mod drive;

use chrono::DateTime;
use drive::{Rig, STEPS};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use tracemeter::adapters::stripe::API_VERSION;
use tracemeter_local::fakes::recorder::{Recorder, normalise};

/// The witnesses of each service: the directories of `tests/goldens` whose requests
/// tracemeter's must equal.
const WITNESSES: &[(&str, &[&str])] = &[
    ("stripe", &["stripe", "stripe-node"]),
    ("langfuse", &["langfuse"]),
];

/// A difference kept on purpose: where (witness, call or `*` for every call, aspect), why,
/// and what must still hold (`same`, given the golden's value and ours).
struct OnPurpose {
    service: &'static str,
    call: &'static str,
    /// `method`, `path`, `body`, `header:<name>` or `query:<name>`.
    aspect: &'static str,
    reason: &'static str,
    same: fn(&Value, &Value) -> bool,
}

const SAME_INSTANT: &str = "the same instant: tracemeter writes every time as RFC 3339 UTC \
    with milliseconds (`2026-12-01T06:00:00.000Z`), the generated client as Python's \
    isoformat (`06:00:00Z`, `00:00:00.123000Z`); Langfuse parses both to the same time";

const NO_RANDOM_KEY: &str = "the SDK sends a random Idempotency-Key with every v2 POST so \
    that its own network retries replay; tracemeter makes no HTTP-level retry of a session or \
    stream request (a failed batch is retried as new messages, and the stream deduplicates \
    by each event's identifier), so a random key would protect nothing";

const NODE_VERSION: &str = "stripe-node 23.2.0 pins 2026-11-18.endive, a later GA version \
    of the same release; tracemeter pins stripe-python 16.1.0's 2026-10-28.endive, which \
    documents all it uses";

const NODE_GET_TYPE: &str = "stripe-node labels a GET, which has no body, with a \
    Content-Type; stripe-python and tracemeter send none";

/// The differences kept on purpose.
const ON_PURPOSE: &[OnPurpose] = &[
    OnPurpose {
        service: "stripe-node",
        call: "*",
        aspect: "header:stripe-version",
        reason: NODE_VERSION,
        same: |node, ours| node == "2026-11-18.endive" && ours == API_VERSION,
    },
    OnPurpose {
        service: "stripe-node",
        call: "*",
        aspect: "header:content-type",
        reason: NODE_GET_TYPE,
        same: |_, ours| ours.is_null(),
    },
    no_key("stripe-node", "v2_meter_event_session_create"),
    no_key("stripe-node", "v2_meter_event_stream_create"),
    time("langfuse", "v2_observations_scan", "query:fromStartTime"),
    time("langfuse", "v2_observations_scan", "query:toStartTime"),
    time(
        "langfuse",
        "v2_observations_scan_next",
        "query:fromStartTime",
    ),
    time("langfuse", "v2_observations_scan_next", "query:toStartTime"),
    time("langfuse", "legacy_traces_list", "query:fromTimestamp"),
    time("langfuse", "legacy_traces_list", "query:toTimestamp"),
    no_key("stripe", "v2_meter_event_session_create"),
    no_key("stripe", "v2_meter_event_stream_create"),
];

const fn time(service: &'static str, call: &'static str, aspect: &'static str) -> OnPurpose {
    OnPurpose {
        service,
        call,
        aspect,
        reason: SAME_INSTANT,
        same: same_instants,
    }
}

const fn no_key(service: &'static str, call: &'static str) -> OnPurpose {
    OnPurpose {
        service,
        call,
        aspect: "header:idempotency-key",
        reason: NO_RANDOM_KEY,
        same: |golden, ours| golden == "<random>" && ours.is_null(),
    }
}

/// Calls with a golden that tracemeter does not make yet (in every witness), with why.
const NOT_YET: &[(&str, &str)] = &[];

fn same_instants(golden: &Value, ours: &Value) -> bool {
    let instants = |v: &Value| -> Option<Vec<_>> {
        v.as_array()?
            .iter()
            .map(|t| DateTime::parse_from_rfc3339(t.as_str()?).ok())
            .collect()
    };
    instants(golden).is_some_and(|g| Some(g) == instants(ours))
}

fn goldens_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("goldens")
}

fn read_json(path: PathBuf) -> Value {
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (make goldens writes it)", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A normalised request as named aspects.
fn aspects(request: &Value) -> BTreeMap<String, Value> {
    let n = normalise(request).expect("a request the recorder can read");
    let mut out = BTreeMap::new();
    for k in ["method", "path", "body"] {
        out.insert(k.to_string(), n[k].clone());
    }
    for (name, value) in n["headers"].as_object().into_iter().flatten() {
        out.insert(format!("header:{name}"), value.clone());
    }
    let mut query: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for pair in n["query"].as_array().into_iter().flatten() {
        let key = pair[0].as_str().unwrap_or_default().to_string();
        query.entry(key).or_default().push(pair[1].clone());
    }
    for (k, v) in query {
        out.insert(format!("query:{k}"), Value::Array(v));
    }
    out
}

/// The differences of one call that are not on purpose, and the entries used.
fn compare(service: &str, call: &str, golden: &Value, ours: &Value) -> (Vec<String>, Vec<usize>) {
    let (g, o) = (aspects(golden), aspects(ours));
    let keys: BTreeSet<&String> = g.keys().chain(o.keys()).collect();
    let (mut failures, mut used) = (Vec::new(), Vec::new());
    for key in keys {
        let (gv, ov) = (
            g.get(key).cloned().unwrap_or(Value::Null),
            o.get(key).cloned().unwrap_or(Value::Null),
        );
        if gv == ov {
            continue;
        }
        let entry = ON_PURPOSE
            .iter()
            .position(|d| d.service == service && [call, "*"].contains(&d.call) && d.aspect == key);
        match entry {
            Some(i) if (ON_PURPOSE[i].same)(&gv, &ov) => used.push(i),
            Some(i) => failures.push(format!(
                "{service}/{call} {key}: SDK {gv}, tracemeter {ov} (listed as on purpose, \
                 but no longer what its reason says: {})",
                ON_PURPOSE[i].reason
            )),
            None => failures.push(format!("{service}/{call} {key}: SDK {gv}, tracemeter {ov}")),
        }
    }
    (failures, used)
}

/// Every golden call, as (service, call).
fn golden_calls() -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for service in WITNESSES.iter().flat_map(|w| w.1.iter()) {
        let dir = goldens_dir().join(service);
        for entry in std::fs::read_dir(&dir).expect("tests/goldens/<service>") {
            let path = entry.expect("entry").path();
            if let Some(call) = path.file_stem().and_then(|s| s.to_str()) {
                out.insert((service.to_string(), call.to_string()));
            }
        }
    }
    out
}

#[tokio::test]
async fn every_request_is_the_one_the_official_sdk_sends() {
    let answers = read_json(goldens_dir().join("answers.json"))["answers"].clone();
    let answers: Vec<Value> = serde_json::from_value(answers).expect("answers");
    let recorder = Recorder::start(answers).await.expect("recorder");
    let rig = Rig::new(
        read_json(goldens_dir().join("inputs.json")),
        &recorder.base_url(),
    );
    let (mut failures, mut used, mut compared) = (Vec::new(), BTreeSet::new(), BTreeSet::new());
    for step in STEPS {
        rig.drive(*step).await;
        let sent = recorder.take();
        let calls = step.calls();
        assert_eq!(sent.len(), calls.len(), "{step:?} sent {sent:#?}");
        for ((service, call), ours) in calls.iter().zip(&sent) {
            let witnesses = WITNESSES.iter().filter(|w| w.0 == *service);
            for witness in witnesses.flat_map(|w| w.1.iter()) {
                let golden = read_json(goldens_dir().join(witness).join(format!("{call}.json")));
                let (f, u) = compare(witness, call, &golden, ours);
                failures.extend(f);
                used.extend(u);
                compared.insert((witness.to_string(), call.to_string()));
            }
        }
    }
    for (service, call) in golden_calls() {
        let waived = NOT_YET.iter().any(|n| n.0 == call);
        match (compared.contains(&(service.clone(), call.clone())), waived) {
            (false, false) => failures.push(format!("{service}/{call}: a golden no step sends")),
            (true, true) => failures.push(format!("{service}/{call}: sent now: leave NOT_YET")),
            _ => {}
        }
    }
    for (i, d) in ON_PURPOSE.iter().enumerate() {
        if !used.contains(&i) {
            failures.push(format!(
                "{}/{} {}: listed as a difference on purpose, but tracemeter now sends what the SDK sends: remove the entry",
                d.service, d.call, d.aspect
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "requests that differ from the official SDK's:\n{}",
        failures.join("\n")
    );
}
