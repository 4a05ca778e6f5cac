//! `tracemeter-local`: the local runner (see `tracemeter_local::runner`).
//!
//! - `tracemeter-local` (`make run`): the whole pipeline on the local stack with a sample
//!   workload (`TRACES`, default
//!   [`tracemeter_local::runner::DEFAULT_TRACES`]), then a billing summary.
//! - `tracemeter-local serve ENV_FILE` (`make serve`): keeps the stack up for `cargo lambda
//!   watch` / `invoke`, writing the functions' environment to ENV_FILE, until stopped.

use anyhow::{Result, bail};

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] | ["run"] => {
            let traces = match std::env::var("TRACES") {
                Ok(v) => v
                    .parse()
                    .map_err(|_| anyhow::anyhow!("TRACES={v:?} is not a whole number"))?,
                Err(_) => tracemeter_local::runner::DEFAULT_TRACES,
            };
            tracemeter_local::runner::run(traces).await
        }
        ["serve", env_file] => {
            tracemeter_local::runner::serve(std::path::Path::new(env_file)).await
        }
        _ => bail!("usage: tracemeter-local [run] | tracemeter-local serve ENV_FILE"),
    }
}
