//! The ingest binary's memory over many pending traces.

use super::*;

/// Runs the real ingest binary of this build once, as Lambda runs it (under the Runtime API
/// emulator), over `n` pending traces; returns its peak RSS (`VmHWM`, KB).
async fn ingest_binary_peak_rss_kb(n: usize) -> u64 {
    let stack = TestStack::start(&format!("ingmem{n}"))
        .await
        .expect("stack");
    seed(
        &stack,
        "m",
        n,
        now() - Duration::hours(5),
        Duration::hours(4),
    );
    // The sends never reach moto (its SQS slows down with the queue's depth): the proxy
    // answers them and counts the messages.
    let proxy = CountingProxy::start_absorbing_sends(&stack.endpoint)
        .await
        .expect("proxy");
    let mut env = stack.env.clone();
    env.insert("AWS_ENDPOINT_URL".into(), proxy.url());
    for (name, value) in [
        ("RESCAN_SECONDS", "0"),
        ("INGEST_START_LOOKBACK_SECONDS", "21600"),
        ("LANGFUSE_REQUESTS_PER_MINUTE", "100000"),
        ("INGEST_TIME_BUDGET_MARGIN_SECONDS", "2"),
    ] {
        env.insert(name.into(), value.into());
    }
    let mut ingest = Function::spawn("ingest", &function_binary("ingest"), &env, 128)
        .await
        .expect("spawn the ingest binary");
    let event = scheduled_event().expect("events/scheduled.json");
    let reply = ingest
        .invoke(event, 1, std::time::Duration::from_secs(300))
        .await
        .expect("the ingest binary answered");
    let (peak_kb, _) = ingest.usage().expect("/proc of the ingest process");
    let sent = proxy
        .counts()
        .get("AmazonSQS.SendMessageBatch")
        .map_or(0, |c| c.messages);
    assert_eq!(reply["outcome"], "completed", "{reply}");
    assert_eq!(reply["enqueued"], n as u64, "{reply}");
    assert_eq!(sent, n as u64, "every trace sent once");
    println!(
        "ingest binary over {n} traces: peak RSS {peak_kb} kB, {} Langfuse requests, {} pages",
        reply["requests"], reply["pages"]
    );
    peak_kb
}

/// How much more the ingest binary's peak RSS may be over 40,000 pending traces than over
/// 1,000. Measured (debug build, this machine): 23.3 MB at 1,000, 25.0 MB at 40,000, +1.8 MB.
/// 6 MB is three times that, for the allocator's noise, and far below what keeping the
/// range's traces would take: 40,000 ids alone are ~3 MB in a set, their observations as
/// parsed rows ~20 MB.
const FLAT_MARGIN_KB: u64 = 6 * 1024;
/// And its peak RSS at most this over 40,000 traces: the benchmark's target for the
/// release bootstrap (40 MB), which the larger debug build also keeps (measured 25.0 MB).
const PEAK_BOUND_KB: u64 = 40 * 1024;

#[tokio::test]
async fn memory_stays_flat_over_40k_traces() {
    let small = ingest_binary_peak_rss_kb(1_000).await;
    let large = ingest_binary_peak_rss_kb(40_000).await;
    assert!(
        large <= small + FLAT_MARGIN_KB,
        "peak RSS grew with the traces: {small} kB at 1,000, {large} kB at 40,000"
    );
    assert!(
        large < PEAK_BOUND_KB,
        "peak RSS {large} kB over 40,000 traces (bound {PEAK_BOUND_KB} kB)"
    );
}
