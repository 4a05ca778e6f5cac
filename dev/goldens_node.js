// One Stripe call through stripe-node, for dev/goldens.py: node goldens_node.js URL CALL INPUTS
// Every base address (api, meter_events) resolves to the instance host, 127.0.0.1; the HTTP
// client refuses any other host.
'use strict';
const fs = require('fs');
const Stripe = require('stripe');

const [url, call, inputsPath] = process.argv.slice(2);
const s = JSON.parse(fs.readFileSync(inputsPath, 'utf8')).stripe;
const { hostname, port } = new URL(url);
if (hostname !== '127.0.0.1') throw new Error(`not loopback: ${url}`);

const base = Stripe.createNodeHttpClient();
const loopback = {
  getClientName: () => base.getClientName(),
  makeRequest(host, ...rest) {
    if (host !== '127.0.0.1') throw new Error(`refused host ${host}`);
    return base.makeRequest(host, ...rest);
  },
};
const client = (key) =>
  new Stripe(key, { host: '127.0.0.1', port: Number(port), protocol: 'http', maxNetworkRetries: 0, httpClient: loopback });
const stripe = client(s.secret_key);
const payload = { stripe_customer_id: s.customer, value: String(s.value) };
const stamp = new Date(s.timestamp * 1000).toISOString();

const calls = {
  v1_meter_event_create: () => stripe.billing.meterEvents.create(
    { event_name: s.event_name, payload, identifier: s.identifier, timestamp: s.timestamp },
    { idempotencyKey: s.identifier }),
  v2_meter_event_session_create: () => stripe.v2.billing.meterEventSession.create(),
  v2_meter_event_stream_create: () => client(s.session_token).v2.billing.meterEventStream.create({
    events: [{ event_name: s.event_name, identifier: s.identifier, timestamp: stamp, payload }],
  }),
  meter_event_summaries_list: () => stripe.billing.meters.listEventSummaries(s.meter_id, {
    customer: s.customer, start_time: s.summary_start, end_time: s.summary_end, limit: 100,
  }),
  v2_core_events_list: () => stripe.v2.core.events.list({
    types: ['v1.billing.meter.error_report_triggered', 'v1.billing.meter.no_meter_found'],
    created: { gte: s.since }, limit: 20,
  }),
  v2_core_events_retrieve: () => stripe.v2.core.events.retrieve(s.event_id),
  billing_meter_retrieve: () => stripe.billing.meters.retrieve(s.meter_id),
};

if (call === 'list') {
  console.log(JSON.stringify({ calls: Object.keys(calls), version: Stripe.PACKAGE_VERSION || require('stripe/package.json').version }));
} else {
  calls[call]().catch((e) => { console.error(`${call}: ${e.message}`); process.exit(1); });
}
