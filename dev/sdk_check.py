#!/usr/bin/env python3
"""The official SDKs read what the fakes serve (run by tests/tests/it/sdk.rs in make test).

    sdk_check.py clients   langfuse's typed client over every kind of page the Langfuse fake
                           answers, and stripe-python over every Stripe fake endpoint. The
                           fakes are started and seeded by the Rust test, which passes their
                           URLs and keys in the environment (SDK_CHECK_*); its first Langfuse
                           and first Stripe answer are an injected 429.
    sdk_check.py openapi FILE
                           validates every recorded exchange in FILE (tracemeter's Langfuse
                           requests and the Langfuse fake's answers, from one run) against
                           local/specs/langfuse-openapi.yml with openapi-core.

Exits non-zero, naming the call, on the first thing that does not hold.
"""

import json
import os
import sys
from pathlib import Path
from urllib.parse import parse_qsl

ROOT = Path(__file__).resolve().parent.parent


def env(name):
    return os.environ[f"SDK_CHECK_{name}"]


def expect_error(what, call, kind, status):
    try:
        call()
    except kind as e:
        got = getattr(e, "status_code", None) or getattr(e, "http_status", None)
        assert got == status, f"{what}: status {got}, expected {status}"
        return e
    raise AssertionError(f"{what}: no {kind.__name__}")


def langfuse_clients():
    from langfuse.api.client import LangfuseAPI
    from langfuse.api.commons.errors import Error, NotFoundError, UnauthorizedError
    from langfuse.api.core.api_error import ApiError

    url = env("LANGFUSE_URL")
    api = LangfuseAPI(base_url=url, username=env("LANGFUSE_PUBLIC"), password=env("LANGFUSE_SECRET"))
    once = {"max_retries": 0}
    limited = expect_error("429", lambda: api.observations.get_many(limit=1, request_options=once),
                           ApiError, 429)
    assert isinstance(limited.body, dict), f"429 body not JSON: {limited.body!r}"
    wrong = LangfuseAPI(base_url=url, username="pk-lf-wrong", password="sk-lf-wrong")
    expect_error("401", lambda: wrong.trace.list(limit=1), UnauthorizedError, 401)

    ids = json.loads(env("LANGFUSE_TRACES"))
    fields = "core,basic,time,usage,metadata,model"
    seen, cursor, pages = [], None, 0
    while True:
        page = api.observations.get_many(fields=fields, limit=1, cursor=cursor, filter=json.dumps(
            [{"type": "stringOptions", "column": "traceId", "operator": "any of", "value": ids}]))
        pages += 1
        seen += [o.trace_id for o in page.data]
        for o in page.data:
            assert o.start_time is not None and o.total_cost is not None, o
        cursor = page.meta.cursor
        if not cursor:
            break
    assert pages > 1 and sorted(set(seen)) == sorted(ids), (pages, seen)
    scan = api.observations.get_many(fields="core,time", limit=1000)
    assert len(scan.data) == len(seen) and scan.meta.cursor is None, scan.meta

    listed = api.trace.list(page=1, limit=1, order_by="timestamp.asc", fields="core,metrics")
    assert listed.meta.total_items == len(ids) and len(listed.data) == 1, listed.meta
    last = api.trace.list(page=len(ids) + 1, limit=1, fields="core,metrics")
    assert last.data == [], last
    trace = api.trace.get(ids[0], fields="core,io,observations,metrics")
    assert trace.id == ids[0] and trace.observations and trace.total_cost is not None, trace
    missing = expect_error("404", lambda: api.trace.get("no-such-trace"), NotFoundError, 404)
    assert "not found" in json.dumps(missing.body), missing.body
    expect_error("400", lambda: api.observations.get_many(limit=5000), Error, 400)
    empty = api.observations.get_many(fields="core", trace_id="no-such-trace")
    assert empty.data == [] and empty.meta.cursor is None, empty
    score = api.scores.create(id=f"tm_{ids[0]}_r1", trace_id=ids[0], name="tracemeter_billed_credits",
                              value=7, data_type="NUMERIC")
    assert score.id == f"tm_{ids[0]}_r1", score
    print(f"sdk_check: langfuse {pages} v2 pages and an empty one, legacy list and get, score, "
          "errors 400, 401, 404, 429 read")


def stripe_clients():
    import stripe

    base = {"api": env("STRIPE_URL"), "meter_events": env("STRIPE_URL")}
    client = stripe.StripeClient(env("STRIPE_KEY"), base_addresses=base, max_network_retries=0)
    params = {"event_name": env("STRIPE_EVENT_NAME"), "identifier": "sdk-1",
              "payload": {"stripe_customer_id": env("STRIPE_GHOST"), "value": "5"}}
    create = client.v1.billing.meter_events.create
    expect_error("429", lambda: create(params=params), stripe.RateLimitError, 429)
    event = create(params=params, options={"idempotency_key": "sdk-1"})
    assert event.identifier == "sdk-1" and event.payload["value"] == "5", event
    duplicate = expect_error("duplicate", lambda: create(params=params), stripe.InvalidRequestError, 400)
    assert duplicate.code == "resource_already_exists", duplicate.code
    wrong = stripe.StripeClient("sk_test_wrong", base_addresses=base, max_network_retries=0)
    expect_error("401", lambda: wrong.v1.billing.meter_events.create(params=params),
                 stripe.AuthenticationError, 401)

    session = client.v2.billing.meter_event_session.create()
    assert session.authentication_token and session.expires_at, session
    streamer = stripe.StripeClient(session.authentication_token, base_addresses=base,
                                   max_network_retries=0)
    streamer.v2.billing.meter_event_stream.create(params={"events": [{
        "event_name": env("STRIPE_EVENT_NAME"), "identifier": "sdk-2",
        "payload": {"stripe_customer_id": env("STRIPE_KNOWN"), "value": "3"}}]})

    now = int(event.timestamp) // 60 * 60
    summaries = client.v1.billing.meters.event_summaries.list(env("STRIPE_METER"), params={
        "customer": env("STRIPE_KNOWN"), "start_time": now - 3600, "end_time": now + 60})
    assert sum(s.aggregated_value for s in summaries.data) == 3, summaries

    meter = client.v1.billing.meters.retrieve(env("STRIPE_METER"))
    assert meter.id == env("STRIPE_METER") and meter.event_name == env("STRIPE_EVENT_NAME"), meter
    assert meter.customer_mapping.event_payload_key == "stripe_customer_id", meter
    assert meter.default_aggregation.formula == "sum" and meter.status == "active", meter

    listed = client.v2.core.events.list(params={
        "types": ["v1.billing.meter.error_report_triggered", "v1.billing.meter.no_meter_found"],
        "created": {"gte": "2000-01-01T00:00:00.000Z"}, "limit": 20})
    assert listed.data, listed
    report = client.v2.core.events.retrieve(listed.data[0].id)
    kind = report.data["reason"]["error_types"][0]
    assert kind["sample_errors"][0]["request"]["identifier"] == "sdk-1", report
    print("sdk_check: stripe v1 create (429, duplicate, 401), session, stream, summaries, billing meter, events list and retrieve read")


def openapi(path):
    from openapi_core import Config, OpenAPI
    from openapi_core.testing import MockRequest, MockResponse

    # The published spec is not itself valid OpenAPI 3.0.1 (PricingTierAttributeCondition
    # uses the 3.1 keyword `const`), so the check of the spec document is off; requests and
    # responses are still validated against it.
    spec = OpenAPI.from_file_path(str(ROOT / "local" / "specs" / "langfuse-openapi.yml"),
                                  config=Config(spec_validator_cls=None))
    exchanges = json.loads(Path(path).read_text())
    assert exchanges, "no exchanges recorded"
    for x in exchanges:
        args = dict(parse_qsl(x["query"], keep_blank_values=True))
        data = x["body"].encode() if x["body"] else None
        request = MockRequest("https://cloud.langfuse.com", x["method"].lower(), x["path"],
                              args=args, data=data, content_type="application/json",
                              headers={"Authorization": "Basic cGs6c2s="})
        response = MockResponse(json.dumps(x["response"]["body"]).encode(),
                                status_code=x["response"]["status"], content_type="application/json")
        what = f"{x['method']} {x['path']}?{x['query']} -> {x['response']['status']}"
        try:
            spec.validate_request(request)
            spec.validate_response(request, response)
        except Exception as e:  # openapi-core raises many kinds; each names what failed
            details = getattr(e, "schema_errors", None) or getattr(e, "__cause__", None)
            sys.exit(f"sdk_check openapi: {what}: {e!r} {details!r}")
    print(f"sdk_check: {len(exchanges)} Langfuse exchanges valid against the OpenAPI spec")


def main():
    match sys.argv[1:]:
        case ["clients"]:
            langfuse_clients()
            stripe_clients()
        case ["openapi", path]:
            openapi(path)
        case _:
            sys.exit("usage: sdk_check.py clients | sdk_check.py openapi FILE")


if __name__ == "__main__":
    main()
