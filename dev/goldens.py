#!/usr/bin/env python3
"""Records the requests the official SDKs send (`make goldens`): the golden requests.

Drives stripe-python and langfuse's generated API client, once for every call tracemeter
makes and with the arguments of tests/goldens/inputs.json, against a recording HTTP server
on 127.0.0.1 (a free port). Each request is written to tests/goldens/<service>/<call>.json
as sent on the wire: method, path, raw query string, raw body and the headers that carry
meaning (the Authorization scheme only, never its credentials; a random Idempotency-Key is
written as "<random>"). tests/tests/it/goldens drives tracemeter's adapters against a
recorder answering the same way and compares (docs/conformance.md).

The recorder answers as tests/goldens/answers.json says, the same answers the Rust
recorder gives. When npm is on PATH, stripe-node (STRIPE_NODE, installed into
.venv/node) is driven through the same Stripe calls too (dev/goldens_node.js), into
tests/goldens/stripe-node/; without npm those files are left as they are.
"""

import datetime as dt
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import stripe
from langfuse.api.client import LangfuseAPI

ROOT = Path(__file__).resolve().parent.parent
GOLDENS = ROOT / "tests" / "goldens"
HEADERS = ("authorization", "content-type", "idempotency-key", "stripe-version")
STRIPE_NODE = "23.2.0"
UUID = re.compile(r"^(stripe-node-retry-)?[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)


def answer_for(answers, method, path, query):
    """The first answer whose method, path pattern and query condition match."""
    for a in answers:
        pattern = "/".join("[^/]+" if p == "{id}" else re.escape(p) for p in a["path"].split("/"))
        if a["method"] != method or not re.fullmatch(pattern, path):
            continue
        has = a.get("query_has")
        if has is not None and (f"{has}=" in query) != a.get("present", True):
            continue
        return a
    return {"status": 404, "body": {"error": {"message": f"no answer for {method} {path}"}}}


def recorded(method, target, headers, body):
    """One request as the golden files hold it."""
    path, _, query = target.partition("?")
    kept = {}
    for name in HEADERS:
        value = headers.get(name)
        if value is None:
            continue
        if name == "authorization":
            value = value.split(" ", 1)[0]
        elif name == "idempotency-key" and UUID.match(value):
            value = "<random>"
        kept[name] = value
    return {"method": method, "path": path, "query": query, "headers": kept, "body": body}


class Recorder(http.server.ThreadingHTTPServer):
    def __init__(self, answers):
        super().__init__(("127.0.0.1", 0), Handler)
        self.answers = answers
        self.requests = []

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"

    def take(self):
        out, self.requests = self.requests, []
        return out


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def handle_any(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.server.requests.append(recorded(self.command, self.path, headers, body))
        path, _, query = self.path.partition("?")
        a = answer_for(self.server.answers, self.command, path, query)
        data = json.dumps(a["body"]).encode()
        self.send_response(a["status"])
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = handle_any


def stripe_calls(url, s):
    """(call name, function) for every Stripe call tracemeter makes."""
    client = stripe.StripeClient(
        s["secret_key"],
        base_addresses={"api": url, "meter_events": url},
        max_network_retries=0,
    )
    streamer = stripe.StripeClient(
        s["session_token"],
        base_addresses={"api": url, "meter_events": url},
        max_network_retries=0,
    )
    payload = {"stripe_customer_id": s["customer"], "value": str(s["value"])}
    stamp = dt.datetime.fromtimestamp(s["timestamp"], dt.timezone.utc)
    return [
        ("v1_meter_event_create", lambda: client.v1.billing.meter_events.create(
            params={"event_name": s["event_name"], "payload": payload,
                    "identifier": s["identifier"], "timestamp": s["timestamp"]},
            options={"idempotency_key": s["identifier"]})),
        ("v2_meter_event_session_create",
         lambda: client.v2.billing.meter_event_session.create()),
        ("v2_meter_event_stream_create", lambda: streamer.v2.billing.meter_event_stream.create(
            params={"events": [{
                "event_name": s["event_name"], "identifier": s["identifier"],
                "timestamp": stamp.strftime("%Y-%m-%dT%H:%M:%S.000Z"), "payload": payload}]})),
        ("meter_event_summaries_list", lambda: client.v1.billing.meters.event_summaries.list(
            s["meter_id"], params={"customer": s["customer"], "start_time": s["summary_start"],
                                   "end_time": s["summary_end"], "limit": 100})),
        ("v2_core_events_list", lambda: client.v2.core.events.list(params={
            "types": ["v1.billing.meter.error_report_triggered",
                      "v1.billing.meter.no_meter_found"],
            "created": {"gte": s["since"]}, "limit": 20})),
        ("v2_core_events_retrieve", lambda: client.v2.core.events.retrieve(s["event_id"])),
        ("billing_meter_retrieve", lambda: client.v1.billing.meters.retrieve(s["meter_id"])),
    ]


def when(text):
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def langfuse_calls(url, lf):
    """(call name, function) for every Langfuse call tracemeter makes."""
    api = LangfuseAPI(base_url=url, username=lf["public_key"], password=lf["secret_key"])
    ids = lf["trace_ids"]
    batch_filter = json.dumps([{"type": "stringOptions", "column": "traceId",
                                "operator": "any of", "value": ids}], separators=(",", ":"))
    usage = "core,basic,time,usage,metadata,model"
    return [
        ("v2_observations_batch", lambda: api.observations.get_many(
            fields=usage, limit=1000, filter=batch_filter)),
        ("v2_observations_batch_next", lambda: api.observations.get_many(
            fields=usage, limit=1000, filter=batch_filter, cursor=lf["cursor"])),
        ("v2_observations_scan", lambda: api.observations.get_many(
            fields="core,time", limit=1000, from_start_time=when(lf["from"]),
            to_start_time=when(lf["to"]))),
        ("v2_observations_scan_next", lambda: api.observations.get_many(
            fields="core,time", limit=1000, from_start_time=when(lf["from"]),
            to_start_time=when(lf["to"]), cursor=lf["cursor"])),
        ("legacy_traces_list", lambda: api.trace.list(
            page=1, limit=100, order_by="timestamp.asc", fields="core,metrics",
            from_timestamp=when(lf["from"]), to_timestamp=when(lf["to"]))),
        ("legacy_trace_get", lambda: api.trace.get(
            lf["trace_id"], fields="core,io,observations,metrics")),
        ("score_create", lambda: api.scores.create(
            id=lf["score_id"], trace_id=lf["trace_id"], name="tracemeter_billed_credits",
            value=lf["credits"], data_type="NUMERIC",
            comment=f"billed to Stripe as {lf['score_id']}")),
    ]


def node_calls(url):
    """(call name, function) for stripe-node, or [] without npm."""
    if shutil.which("npm") is None or shutil.which("node") is None:
        print("goldens: npm not found: tests/goldens/stripe-node left as it is")
        return []
    prefix = ROOT / ".venv" / "node"
    installed = prefix / "node_modules" / "stripe" / "package.json"
    if not installed.exists() or json.loads(installed.read_text())["version"] != STRIPE_NODE:
        subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix",
                        str(prefix), f"stripe@{STRIPE_NODE}"], check=True)
    env = {**os.environ, "NODE_PATH": str(prefix / "node_modules")}
    script = [str(ROOT / "dev" / "goldens_node.js"), url]
    inputs = str(GOLDENS / "inputs.json")
    listed = subprocess.run(["node", *script, "list", inputs], env=env, check=True,
                            capture_output=True, text=True)
    return [(name, lambda name=name: subprocess.run(["node", *script, name, inputs], env=env,
                                                    check=True))
            for name in json.loads(listed.stdout)["calls"]]


def record(server, service, calls):
    out = GOLDENS / service
    out.mkdir(parents=True, exist_ok=True)
    for name, call in calls:
        call()
        requests = server.take()
        if len(requests) != 1:
            sys.exit(f"goldens: {service} {name} sent {len(requests)} requests, not 1")
        golden = {"call": name, "sdk": sdk(service), **requests[0]}
        (out / f"{name}.json").write_text(json.dumps(golden, indent=2) + "\n")
        print(f"goldens: {service}/{name}.json")


def main():
    inputs = json.loads((GOLDENS / "inputs.json").read_text())
    answers = json.loads((GOLDENS / "answers.json").read_text())["answers"]
    server = Recorder(answers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        record(server, "stripe", stripe_calls(server.url, inputs["stripe"]))
        record(server, "langfuse", langfuse_calls(server.url, inputs["langfuse"]))
        record(server, "stripe-node", node_calls(server.url))
    finally:
        server.shutdown()


def sdk(service):
    if service == "stripe":
        return f"stripe-python {stripe.VERSION}"
    if service == "stripe-node":
        return f"stripe-node {STRIPE_NODE}"
    from importlib.metadata import version
    return f"langfuse {version('langfuse')}"


if __name__ == "__main__":
    main()
