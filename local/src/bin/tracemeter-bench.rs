//! `make bench`: the benchmark (see `tracemeter_local::bench`). Settings from the
//! environment: TRACES (1000), LANGFUSE_LATENCY_MS (20), LANGFUSE_RPM (1000), CONCURRENCY (5),
//! TIME_LIMIT_SECONDS (1200), LANGFUSE_API (v2), STRIPE_API_MODE (both modes in turn unless
//! set), STRIPE_LATENCY_MS (100), BENCH_ENV (extra function variables).
//! `SCENARIO=day`: a simulated day of ingest ticks instead (`bench::day_bench`; DAY_TRACES,
//! LATE_EVERY).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::var("SCENARIO").is_ok_and(|s| s == "day") {
        let options = tracemeter_local::bench::day_bench::options_from_env()?;
        let report = tracemeter_local::bench::day_bench::run(options).await?;
        println!("{}", report.render());
        return Ok(());
    }
    let options = tracemeter_local::bench::options_from_env()?;
    // The main scenario runs both Stripe modes unless STRIPE_API_MODE names one.
    let modes =
        if std::env::var("STRIPE_API_MODE").is_ok() || options.backlog || options.ingest_only {
            vec![options.stripe_mode.clone()]
        } else {
            vec!["v1".to_string(), "v2_stream".to_string()]
        };
    let mut reports = Vec::new();
    for mode in modes {
        eprintln!("[bench] Stripe mode {mode}");
        let options = tracemeter_local::bench::BenchOptions {
            stripe_mode: mode,
            ..options.clone()
        };
        let report = tracemeter_local::bench::run(options).await?;
        println!("{}", report.render());
        reports.push(report);
    }
    if reports.len() > 1 {
        println!("{}", tracemeter_local::bench::side_by_side(&reports));
    }
    Ok(())
}
