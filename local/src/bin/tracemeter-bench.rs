//! `make bench`: the benchmark (see `tracemeter_local::bench`). Settings from the
//! environment: TRACES (1000), LANGFUSE_LATENCY_MS (20), LANGFUSE_RPM (1000), CONCURRENCY (5),
//! TIME_LIMIT_SECONDS (1200), LANGFUSE_API (v2), BENCH_ENV (extra function variables).
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
    let report = tracemeter_local::bench::run(options).await?;
    println!("{}", report.render());
    Ok(())
}
