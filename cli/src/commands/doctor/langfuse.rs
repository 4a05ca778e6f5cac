//! Langfuse: the keys authenticate, the configured API generation answers, and the
//! deployment's request budget fits the limit Langfuse announces.

use super::report::Check;
use tracemeter::adapters::credential::Credential;
use tracemeter::adapters::langfuse::{LangfuseClient, Probe};
use tracemeter::config::{LangfuseApi, LangfuseConfig, LangfuseKeys};
use tracemeter::domain::quota::RequestLimit;

/// The Langfuse checks, with the keys read from their secret.
pub(super) async fn check(cfg: &LangfuseConfig, keys: Credential<LangfuseKeys>) -> Vec<Check> {
    let describe = keys.describe();
    let probe = match LangfuseClient::new(cfg, keys) {
        Ok(client) => client.probe().await,
        Err(e) => Err(e),
    };
    let probe = match probe {
        Ok(p) => p,
        Err(e) => {
            let fix = format!(
                "check LANGFUSE_BASE_URL ({}) and that this machine reaches it",
                cfg.base_url
            );
            return vec![Check::fail("langfuse.keys", e.to_string(), fix)];
        }
    };
    let api = api_name(cfg.api);
    match probe.status {
        200..=299 => vec![
            Check::ok(
                "langfuse.keys",
                format!("the keys ({describe}) authenticate at {}", cfg.base_url),
            ),
            Check::ok(
                "langfuse.api",
                format!(
                    "LANGFUSE_API={api}: {} answered {}",
                    probe.request, probe.status
                ),
            ),
            rate_limit(cfg.requests, &probe),
        ],
        401 | 403 => vec![refused(cfg, &probe, &describe)],
        404 => vec![Check::fail(
            "langfuse.api",
            format!(
                "LANGFUSE_API={api}, but {} answered 404 at {}: {}",
                probe.request, cfg.base_url, probe.detail
            ),
            match cfg.api {
                LangfuseApi::V2 => {
                    "a self-hosted Langfuse v3 serves only the legacy API: set LANGFUSE_API=legacy (the LangfuseApi parameter); else check LANGFUSE_BASE_URL"
                }
                LangfuseApi::Legacy => "check LANGFUSE_BASE_URL (the Langfuse host, without /api)",
            },
        )],
        status => vec![Check::fail(
            "langfuse.api",
            format!("{} answered {status}: {}", probe.request, probe.detail),
            "Langfuse is failing or throttling: run doctor again in a minute",
        )],
    }
}

fn api_name(api: LangfuseApi) -> &'static str {
    match api {
        LangfuseApi::V2 => "v2",
        LangfuseApi::Legacy => "legacy",
    }
}

/// A 401/403: the keys of another project, region or host.
fn refused(cfg: &LangfuseConfig, probe: &Probe, describe: &str) -> Check {
    let check = probe.refused.as_deref().unwrap_or(describe);
    Check::fail(
        "langfuse.keys",
        format!(
            "Langfuse at {} refused the keys ({check}): {} answered {}: {}",
            cfg.base_url, probe.request, probe.status, probe.detail
        ),
        "put the key pair of the project whose traces you bill (Langfuse: Settings > API Keys, same region as LANGFUSE_BASE_URL) in the secret",
    )
}

/// `LANGFUSE_REQUESTS_PER_MINUTE` against `X-RateLimit-Limit`, when Langfuse sends it.
fn rate_limit(configured: RequestLimit, probe: &Probe) -> Check {
    const NAME: &str = "langfuse.rate_limit";
    let Some(limit) = probe.rate_limit else {
        return Check::ok(
            NAME,
            "Langfuse sent no X-RateLimit-Limit (self-hosted?): LANGFUSE_REQUESTS_PER_MINUTE is not compared",
        );
    };
    let fix = format!(
        "set LANGFUSE_REQUESTS_PER_MINUTE (the LangfuseRequestsPerMinute parameter) to at most {limit}, less when other callers share the organisation"
    );
    match configured {
        RequestLimit::PerMinute(n) if u64::from(n) <= limit => Check::ok(
            NAME,
            format!("LANGFUSE_REQUESTS_PER_MINUTE={n} fits Langfuse's {limit} per minute"),
        ),
        RequestLimit::PerMinute(n) => Check::warn(
            NAME,
            format!(
                "LANGFUSE_REQUESTS_PER_MINUTE={n} is over Langfuse's {limit} per minute (X-RateLimit-Limit): expect 429s"
            ),
            fix,
        ),
        RequestLimit::Unlimited => Check::warn(
            NAME,
            format!(
                "LANGFUSE_REQUESTS_PER_MINUTE=unlimited, but Langfuse allows {limit} per minute (X-RateLimit-Limit)"
            ),
            fix,
        ),
    }
}
