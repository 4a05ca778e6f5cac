//! Stripe's error answers.

use super::*;

/// Masks an API key like Stripe: keeps the `sk_test_`-style prefix and the last 4 characters.
pub(super) fn mask_key(key: &str) -> String {
    const PREFIXES: &[&str] = &[
        "sk_test_", "sk_live_", "rk_test_", "rk_live_", "pk_test_", "pk_live_",
    ];
    let prefix = PREFIXES
        .iter()
        .find(|prefix| key.starts_with(*prefix))
        .copied()
        .unwrap_or("");
    let rest: Vec<char> = key[prefix.len()..].chars().collect();
    if rest.len() > 4 {
        let last4: String = rest[rest.len() - 4..].iter().collect();
        format!("{prefix}****{last4}")
    } else {
        format!("{prefix}****")
    }
}

/// `{"error": {...}}` in Stripe's shape.
pub(super) fn stripe_error(status: u16, r#type: &str, code: Option<&str>, message: &str) -> Reply {
    stripe_error_with_param(status, r#type, code, None, message)
}

pub(super) fn stripe_error_with_param(
    status: u16,
    r#type: &str,
    code: Option<&str>,
    param: Option<&str>,
    message: &str,
) -> Reply {
    let mut error = Map::new();
    error.insert("type".to_owned(), json!(r#type));
    if let Some(code) = code {
        error.insert("code".to_owned(), json!(code));
        error.insert(
            "doc_url".to_owned(),
            json!(format!(
                "https://stripe.com/docs/error-codes/{}",
                code.replace('_', "-")
            )),
        );
    }
    if let Some(param) = param {
        error.insert("param".to_owned(), json!(param));
    }
    error.insert("message".to_owned(), json!(message));
    Reply::json(status, &json!({ "error": error }))
}

pub(super) fn invalid_request(code: Option<&str>, param: Option<&str>, message: &str) -> Reply {
    stripe_error_with_param(400, "invalid_request_error", code, param, message)
}

pub(super) fn missing(param: &str) -> Reply {
    invalid_request(
        Some("parameter_missing"),
        Some(param),
        &format!("Missing required param: {param}."),
    )
}

pub(super) fn api_error(status: u16) -> Reply {
    stripe_error(
        status,
        "api_error",
        None,
        "An unknown error occurred while processing your request. Please retry.",
    )
    .header("Stripe-Should-Retry", "true")
}

/// Stripe's answer to an identifier it already recorded.
pub(super) fn duplicate_identifier(identifier: &str) -> Reply {
    stripe_error(
        400,
        "invalid_request_error",
        Some("resource_already_exists"),
        &format!("An event already exists with identifier {identifier}."),
    )
    .header("Stripe-Should-Retry", "false")
}

pub(super) fn rate_limited() -> Reply {
    stripe_error(
        429,
        "invalid_request_error",
        Some("rate_limit"),
        "Request rate limit exceeded. You can learn more about rate limits here \
         https://stripe.com/docs/rate-limits.",
    )
    .header("Stripe-Should-Retry", "true")
}

pub(super) fn concurrency_limited(customer: &str) -> Reply {
    stripe_error(
        429,
        "invalid_request_error",
        Some("rate_limit"),
        &format!(
            "Too many concurrent requests: a meter event for customer {customer} is already \
             being processed. Only one concurrent meter event request per customer is allowed; \
             retry after it completes."
        ),
    )
    .header("Stripe-Should-Retry", "true")
}

pub(super) fn injected_failure(status: u16) -> Reply {
    match status {
        429 => rate_limited(),
        500..=599 => api_error(status),
        _ => stripe_error(
            status,
            "invalid_request_error",
            None,
            "Request failed (injected by StripeFake::fail_next).",
        ),
    }
}
