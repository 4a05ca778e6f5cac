//! Stripe's asynchronous validation of meter events and its error reports, read through the
//! v2 events API as Stripe documents them (`local/specs/stripe-meter-fixtures.json`,
//! `v2.core.event`).
//!
//! A meter event (v1 or the v2 stream) whose customer Stripe does not know, or whose
//! `event_name` has no meter, is accepted with 200 as on Stripe, recorded, and then dropped
//! by the validation: it does not count in the summaries. Errors are reported per validation
//! window (windows of [`StripeFake::set_validation_window`], 10 s by default as in Stripe's
//! example report, one after another from the fake's start), once the window has closed on the fake's clock: one thin event
//! per window and type (`v1.billing.meter.error_report_triggered` with
//! `meter_event_customer_not_found`, `v1.billing.meter.no_meter_found` with `no_meter`) with
//! `validation_start`/`validation_end`, every error counted in `error_count` and at most
//! [`StripeFake::set_error_sample_limit`] sample identifiers per error code (samples, as on
//! Stripe, not the whole list: the rest cannot be mapped back).
//!
//! - `GET /v2/core/events`: `types` as the official SDKs encode an array (`types[0]=..&
//!   types[1]=..`; a repeated `types=` is refused with 400), `created[gte]` (RFC 3339),
//!   `limit` (default 20), `page` (from `next_page_url`); newest first. The filters need a
//!   `Stripe-Version` of `2025-10-29` or later (before it Stripe required `object_id`).
//! - `GET /v2/core/events/{id}`: one event, or 404.

use super::errors::{invalid_request, stripe_error};
use super::stream::rfc3339;
use super::{RecordedMeterEvent, Shared, StripeFake, StripeState, lock};
use crate::fakes::{Incoming, Reply, next_sequence, parse_urlencoded};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};

const ERROR_REPORT: &str = "v1.billing.meter.error_report_triggered";
const NO_METER: &str = "v1.billing.meter.no_meter_found";
/// The API version whose events list has the `types` and `created` filters (`2025-10-29.clover`).
const FILTERS_GA: &str = "2025-10-29";
/// The default length of a validation window (the documented example report spans 10 s).
pub const VALIDATION_WINDOW: chrono::Duration = chrono::Duration::seconds(10);
/// The meter every report names (the fake has one).
const METER: &str = "mtr_fake";

/// Which customers and meter exist, the errors waiting for a report, the reports so far.
#[derive(Debug)]
pub(super) struct Validation {
    /// Only these customers exist (`None`: every customer but `unknown`).
    known: Option<HashSet<String>>,
    /// Customers that do not exist.
    unknown: HashSet<String>,
    /// The only event name with a meter (`None`: every name).
    meter_event_name: Option<String>,
    /// Errors not reported yet (their window is still open).
    pending: Vec<Pending>,
    /// The length of a validation window, and where the first one starts.
    window: chrono::Duration,
    origin: DateTime<Utc>,
    /// The thin events created so far, oldest first.
    events: Vec<Value>,
    sample_limit: usize,
}

impl Default for Validation {
    fn default() -> Self {
        Validation {
            known: None,
            unknown: HashSet::new(),
            meter_event_name: None,
            pending: Vec::new(),
            window: VALIDATION_WINDOW,
            origin: Utc::now(),
            events: Vec::new(),
            sample_limit: 20,
        }
    }
}

impl StripeFake {
    /// Plants a customer Stripe does not know: its meter events are accepted (200) and then
    /// dropped, and reported in the next error report.
    pub fn plant_unknown_customer(&self, customer: &str) {
        let mut st = lock(&self.state);
        st.validation.unknown.insert(customer.to_string());
        if let Some(known) = st.validation.known.as_mut() {
            known.remove(customer);
        }
    }

    /// Creates a customer: its later events count (a planted unknown one becomes known).
    pub fn create_customer(&self, customer: &str) {
        let mut st = lock(&self.state);
        st.validation.unknown.remove(customer);
        if let Some(known) = st.validation.known.as_mut() {
            known.insert(customer.to_string());
        }
    }

    /// Only these customers exist (`None`: every customer not planted unknown, the default).
    pub fn set_known_customers(&self, customers: Option<&[&str]>) {
        lock(&self.state).validation.known =
            customers.map(|c| c.iter().map(|s| s.to_string()).collect());
    }

    /// Only this event name has a meter (`None`: every name, the default).
    pub fn set_meter_event_name(&self, name: Option<&str>) {
        lock(&self.state).validation.meter_event_name = name.map(str::to_string);
    }

    /// At most this many sample errors per error type in a report (20 by default).
    pub fn set_error_sample_limit(&self, limit: usize) {
        lock(&self.state).validation.sample_limit = limit;
    }

    /// How long a validation window lasts ([`VALIDATION_WINDOW`] by default): the errors of
    /// a window are reported once it has closed, on the fake's clock ([`StripeFake::advance`]).
    pub fn set_validation_window(&self, window: chrono::Duration) {
        lock(&self.state).validation.window = window;
    }

    /// The error report events created so far, oldest first (creating those of the windows
    /// closed by now).
    pub fn error_reports(&self) -> Vec<Value> {
        let mut st = lock(&self.state);
        let now = st.now();
        st.validation.report(now);
        st.validation.events.clone()
    }
}

impl StripeState {
    /// The asynchronous validation of a recorded event: an unknown customer or meter drops it
    /// (no longer counted) and queues an error for the next report.
    pub(super) fn validate_later(&mut self, e: &RecordedMeterEvent) {
        let now = self.now();
        let v = &mut self.validation;
        let error = if v
            .meter_event_name
            .as_ref()
            .is_some_and(|n| *n != e.event_name)
        {
            let message = format!("No active meter was found for event_name {}.", e.event_name);
            (NO_METER, "no_meter", message)
        } else if v.unknown.contains(&e.customer)
            || v.known.as_ref().is_some_and(|k| !k.contains(&e.customer))
        {
            let message = format!("No customer with id {} was found.", e.customer);
            (ERROR_REPORT, "meter_event_customer_not_found", message)
        } else {
            return;
        };
        v.pending
            .push((error.0, error.1, e.identifier.clone(), error.2, now));
        self.dropped.insert(e.identifier.clone());
    }
}

/// A pending error: event type, code, identifier, message, when.
type Pending = (&'static str, &'static str, String, String, DateTime<Utc>);

impl Validation {
    /// The start of the validation window `at` falls in (windows follow one another from
    /// the fake's start, so a test knows which errors share one).
    fn window_of(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        let len = self.window.num_milliseconds().max(1);
        let since = (at - self.origin).num_milliseconds();
        self.origin + chrono::Duration::milliseconds(since - since.rem_euclid(len))
    }

    /// Reports every window that has closed by `now`: one thin event per window and event
    /// type. Errors of the window still open wait for it to close.
    fn report(&mut self, now: DateTime<Utc>) {
        let mut windows: BTreeMap<DateTime<Utc>, Vec<Pending>> = BTreeMap::new();
        for p in std::mem::take(&mut self.pending) {
            let start = self.window_of(p.4);
            match start + self.window <= now {
                true => windows.entry(start).or_default().push(p),
                false => self.pending.push(p),
            }
        }
        for (start, errors) in windows {
            for kind in [ERROR_REPORT, NO_METER] {
                let of_kind: Vec<&Pending> = errors.iter().filter(|p| p.0 == kind).collect();
                if !of_kind.is_empty() {
                    let event = self.window_report(kind, start, start + self.window, &of_kind);
                    self.events.push(event);
                }
            }
        }
    }

    /// The thin event of one window's errors of one type: every error counted, at most
    /// `sample_limit` samples per error code.
    fn window_report(
        &self,
        kind: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        errors: &[&Pending],
    ) -> Value {
        let mut by_code: BTreeMap<&str, Vec<&Pending>> = BTreeMap::new();
        for p in errors {
            by_code.entry(p.1).or_default().push(p);
        }
        let types: Vec<Value> = by_code
            .iter()
            .map(|(code, errors)| {
                let samples: Vec<Value> = errors
                    .iter()
                    .take(self.sample_limit)
                    .map(|p| json!({"error_message": p.3, "request": {"identifier": p.2}}))
                    .collect();
                json!({"code": code, "error_count": errors.len(), "sample_errors": samples})
            })
            .collect();
        let count = errors.len();
        let related = (kind == ERROR_REPORT).then(|| {
            json!({"id": METER, "type": "billing.meter",
                   "url": format!("/v1/billing/meters/{METER}")})
        });
        let summary = match count {
            1 => "There is 1 invalid event".to_string(),
            n => format!("There are {n} invalid events"),
        };
        json!({
            "id": format!("evt_test_fake{:020x}", next_sequence()),
            "object": "v2.core.event",
            "context": null,
            "created": rfc3339(end),
            "data": {
                "developer_message_summary": summary,
                "reason": {"error_count": count, "error_types": types},
                "validation_start": rfc3339(start),
                "validation_end": rfc3339(end),
            },
            "livemode": false,
            "reason": null,
            "related_object": related,
            "type": kind,
        })
    }
}

/// `GET /v2/core/events` and `GET /v2/core/events/{id}`.
pub(super) fn events(state: &Shared, incoming: &Incoming) -> (Reply, bool) {
    let mut st = lock(state);
    if let Err(reply) = st.authenticate(incoming) {
        return (reply, false);
    }
    let now = st.now();
    st.validation.report(now);
    if let Some(id) = incoming.path.strip_prefix("/v2/core/events/") {
        return match st.validation.events.iter().find(|e| e["id"] == id) {
            Some(e) => (Reply::json(200, e), true),
            None => {
                let message = format!("No such event: '{id}'");
                let reply = stripe_error(
                    404,
                    "invalid_request_error",
                    Some("resource_missing"),
                    &message,
                );
                (reply, true)
            }
        };
    }
    let version = incoming.header("stripe-version").unwrap_or_default();
    if version.get(..10).is_none_or(|date| date < FILTERS_GA) {
        let message = format!(
            "object_id is required: the types and created filters need Stripe-Version {FILTERS_GA} or later (sent: {version:?})"
        );
        return (
            invalid_request(Some("parameter_missing"), Some("object_id"), &message),
            true,
        );
    }
    match list(
        &st.validation.events,
        incoming.query.as_deref().unwrap_or_default(),
    ) {
        Ok(page) => (Reply::json(200, &page), true),
        Err(reply) => (reply, true),
    }
}

/// One page of the events the query asks for, newest first.
fn list(events: &[Value], query: &str) -> Result<Value, Reply> {
    let params = parse_urlencoded(query).map_err(|e| invalid_request(None, None, &e))?;
    let mut types = Vec::new();
    let (mut since, mut limit, mut offset) = (None, 20usize, 0usize);
    let bad =
        |name: &str, v: &str| invalid_request(None, Some(name), &format!("Invalid {name}: {v}"));
    for (k, v) in &params {
        match k.as_str() {
            // What the official SDKs send; a repeated `types=` (or `types[]=`) is not an
            // array to Stripe, and refused here so a client sending it is seen to fail.
            k if k.starts_with("types[")
                && k.ends_with(']')
                && k[6..k.len() - 1].parse::<usize>().is_ok() =>
            {
                types.push(v.clone())
            }
            "types" | "types[]" => {
                let message =
                    format!("Invalid array: send types as types[0]=..&types[1]=.., not {k}=..");
                return Err(invalid_request(None, Some("types"), &message));
            }
            "created[gte]" => {
                let t = DateTime::parse_from_rfc3339(v).map_err(|_| bad(k, v))?;
                since = Some(t.with_timezone(&Utc));
            }
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|l| (1..=100).contains(l))
                    .ok_or_else(|| bad(k, v))?
            }
            "page" => offset = v.parse().map_err(|_| bad(k, v))?,
            _ => return Err(bad("parameter", k)),
        }
    }
    let created = |e: &Value| {
        e["created"]
            .as_str()
            .and_then(|c| DateTime::parse_from_rfc3339(c).ok())
            .map(|c| c.with_timezone(&Utc))
    };
    let matching: Vec<&Value> = events
        .iter()
        .rev()
        .filter(|e| types.is_empty() || types.iter().any(|t| e["type"] == t.as_str()))
        .filter(|e| since.is_none_or(|s| created(e).is_some_and(|c| c >= s)))
        .collect();
    let page: Vec<&Value> = matching.iter().skip(offset).take(limit).copied().collect();
    let next = (offset + limit < matching.len()).then(|| {
        let kept: Vec<String> = query
            .split('&')
            .filter(|p| !p.starts_with("page=") && !p.is_empty())
            .map(str::to_string)
            .collect();
        format!("/v2/core/events?{}&page={}", kept.join("&"), offset + limit)
    });
    Ok(json!({"data": page, "next_page_url": next, "previous_page_url": null}))
}
