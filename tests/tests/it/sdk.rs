//! The official SDKs read what the fakes serve, and the Langfuse fake's answers and
//! tracemeter's Langfuse requests of one recorded run agree with the Langfuse OpenAPI spec
//! (`dev/sdk_check.py`, run with the venv's Python: `dev/venv.sh` installs stripe, langfuse
//! and openapi-core from requirements-dev.txt).

use crate::common::{now, trace};
use chrono::Duration;
use std::path::PathBuf;
use std::time::Instant;
use tracemeter::adapters::credential::Credential;
use tracemeter::adapters::langfuse::{LangfuseClient, LangfuseScanner};
use tracemeter::config::{IngestConfig, LangfuseKeys, ProcessConfig, Secret};
use tracemeter::domain::ingest::PendingScan;
use tracemeter::domain::scan::Walk;
use tracemeter::ports::{TraceLister, UsageSource};
use tracemeter_local::fakes::recorder::Recorder;
use tracemeter_local::fakes::{LangfuseFake, StripeFake};

const PK: &str = "pk-lf-sdk";
const SK: &str = "sk-lf-sdk";
const STRIPE_KEY: &str = "sk_test_sdk";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `dev/sdk_check.py args` with the venv's Python; fails with its output.
async fn sdk_check(args: &[&str], vars: &[(&str, String)]) {
    let python = repo().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run dev/venv.sh (it installs the official SDKs)",
        python.display()
    );
    let mut command = tokio::process::Command::new(python);
    command.arg(repo().join("dev/sdk_check.py")).args(args);
    for (k, v) in vars {
        command.env(format!("SDK_CHECK_{k}"), v);
    }
    let out = command.output().await.expect("python");
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    assert!(
        out.status.success(),
        "dev/sdk_check.py {args:?} failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

async fn langfuse_with_traces(ids: &[&str]) -> LangfuseFake {
    let fake = LangfuseFake::start(PK, SK).await;
    let at = now() - Duration::hours(2);
    for (i, id) in ids.iter().enumerate() {
        let t = at + Duration::minutes(i as i64);
        fake.add_trace(trace(id, "cus_sdk", 0.004, 2, t));
    }
    fake
}

#[tokio::test]
async fn the_official_sdks_read_what_the_fakes_serve() {
    let ids = ["sdk-a", "sdk-b", "sdk-c"];
    let langfuse = langfuse_with_traces(&ids).await;
    langfuse.fail_next(1, 429);
    let stripe = StripeFake::start(STRIPE_KEY).await;
    stripe.plant_unknown_customer("cus_sdk_ghost");
    // Reported as soon as the script lists the events.
    stripe.set_validation_window(Duration::milliseconds(1));
    stripe.fail_next(1, 429);
    let vars = [
        ("LANGFUSE_URL", langfuse.base_url()),
        ("LANGFUSE_PUBLIC", PK.to_string()),
        ("LANGFUSE_SECRET", SK.to_string()),
        ("LANGFUSE_TRACES", serde_json::json!(ids).to_string()),
        ("STRIPE_URL", stripe.base_url()),
        ("STRIPE_KEY", STRIPE_KEY.to_string()),
        ("STRIPE_EVENT_NAME", "llm_credits".to_string()),
        ("STRIPE_METER", "mtr_fake".to_string()),
        ("STRIPE_GHOST", "cus_sdk_ghost".to_string()),
        ("STRIPE_KNOWN", "cus_sdk_ok".to_string()),
    ];
    sdk_check(&["clients"], &vars).await;
}

/// tracemeter's Langfuse calls (the batch usage read, the v2 scan, the legacy
/// list and get, the score) through a recording proxy in front of the fake.
#[tokio::test]
async fn tracemeter_and_the_langfuse_fake_agree_with_the_openapi_spec() {
    let ids = ["oa-a", "oa-b", "oa-c"];
    let langfuse = langfuse_with_traces(&ids).await;
    let proxy = Recorder::forward(&langfuse.base_url())
        .await
        .expect("proxy");
    let env = |legacy: bool| {
        let vars = [
            ("TABLE_NAME", "openapi"),
            ("QUEUE_URL", "http://127.0.0.1:9/queue"),
            ("LANGFUSE_PUBLIC_KEY", PK),
            ("LANGFUSE_SECRET_KEY", SK),
            ("LANGFUSE_REQUESTS_PER_MINUTE", "unlimited"),
            ("LANGFUSE_SCORE_ENABLED", "true"),
            ("LANGFUSE_API", if legacy { "legacy" } else { "v2" }),
            ("STRIPE_SECRET_KEY", STRIPE_KEY),
            ("STRIPE_METER_EVENT_NAME", "llm_credits"),
        ];
        let base = proxy.base_url();
        move |k: &str| match k {
            "LANGFUSE_BASE_URL" => Some(base.clone()),
            k => vars.iter().find(|v| v.0 == k).map(|v| v.1.to_string()),
        }
    };
    let keys = Credential::fixed(
        LangfuseKeys {
            public_key: PK.into(),
            secret_key: Secret::new(SK),
        },
        "LANGFUSE_PUBLIC_KEY",
    );
    let trace_ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    let until = Instant::now() + std::time::Duration::from_secs(10);
    let range = PendingScan {
        from: now() - Duration::hours(3),
        to: now(),
        position: now(),
    };
    for legacy in [false, true] {
        let process = ProcessConfig::from_lookup(&env(legacy)).expect("config");
        let ingest = IngestConfig::from_lookup(&env(legacy)).expect("config");
        let client = LangfuseClient::new(&process.langfuse, keys.clone()).expect("client");
        let usage = client.traces_usage(&trace_ids).await.expect("usage");
        assert_eq!(usage.len(), ids.len(), "{usage:?}");
        client
            .record_billed(ids[0], "tm_oa-a_r1", 7)
            .await
            .expect("score");
        let scanner = LangfuseScanner::new(&ingest, keys.clone()).expect("scanner");
        let position = if legacy { range.from } else { range.to };
        let mut walk = Walk::new(PendingScan { position, ..range });
        scanner.next_page(&mut walk, until).await.expect("page");
    }
    let exchanges = proxy.take();
    assert!(exchanges.len() >= 7, "{exchanges:#?}");
    let file = std::env::temp_dir().join(format!("tracemeter-openapi-{}.json", std::process::id()));
    std::fs::write(&file, serde_json::to_vec(&exchanges).expect("json")).expect("write");
    sdk_check(&["openapi", &file.to_string_lossy()], &[]).await;
    let _ = std::fs::remove_file(&file);
}
