//! The cached key: read once, re-read once per refused generation, never shown.

use super::*;
use async_trait::async_trait;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A secret store in memory that counts its reads (each read takes 20 ms, so that
/// concurrent refreshes overlap).
#[derive(Default)]
struct Store {
    value: Mutex<String>,
    reads: AtomicUsize,
}

impl Store {
    fn holding(value: &str) -> Arc<Store> {
        let store = Arc::new(Store::default());
        store.set(value);
        store
    }
    fn set(&self, value: &str) {
        *self.value.lock().expect("lock") = value.to_string();
    }
    fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl SecretSource for Store {
    async fn secret_string(&self, id: &str) -> Result<Secret> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        if id != "arn:aws:secretsmanager:us-east-1:123456789012:secret:stripe-AbCdEf" {
            return Err(Error::transient(
                "secretsmanager",
                format!("no secret {id}"),
            ));
        }
        Ok(Secret::new(self.value.lock().expect("lock").clone()))
    }
}

const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:stripe-AbCdEf";

fn stored() -> KeySource<StripeKey> {
    KeySource::Stored {
        variable: "STRIPE_SECRET_ARN",
        id: ARN.to_string(),
    }
}

fn key(raw: &str) -> StripeKey {
    StripeKey::new(raw).expect("key")
}

#[tokio::test]
async fn the_secret_is_read_once_at_load_and_once_per_rotation() {
    let store = Store::holding(r#"{"secret_key": "sk_test_A"}"#);
    let cred = Credential::load(&stored(), store.clone())
        .await
        .expect("load");
    assert_eq!(store.reads(), 1);
    assert_eq!(cred.current().key, key("sk_test_A"));
    assert_eq!(cred.current().generation, 1);
    for _ in 0..5 {
        assert_eq!(cred.current().key, key("sk_test_A"), "cached");
    }
    assert_eq!(store.reads(), 1);
    store.set(r#"{"secret_key": "sk_test_B"}"#);
    let renewed = cred.refresh(1).await.expect("refresh").expect("newer");
    assert_eq!(renewed.key, key("sk_test_B"));
    assert_eq!(renewed.generation, 2);
    assert_eq!(store.reads(), 2);
    // A caller that saw generation 1 gets the newer key without another read.
    let again = cred.refresh(1).await.expect("refresh").expect("newer");
    assert_eq!((again.key, again.generation), (key("sk_test_B"), 2));
    assert_eq!(store.reads(), 2);
}

#[tokio::test]
async fn concurrent_refusals_read_the_secret_once() {
    let store = Store::holding(r#"{"secret_key": "sk_test_A"}"#);
    let cred = Credential::load(&stored(), store.clone())
        .await
        .expect("load");
    store.set(r#"{"secret_key": "sk_test_B"}"#);
    let refreshes = (0..16).map(|_| cred.refresh(1));
    let results = futures::future::join_all(refreshes).await;
    for r in results {
        let r = r.expect("refresh").expect("newer");
        assert_eq!((r.key, r.generation), (key("sk_test_B"), 2));
    }
    assert_eq!(
        store.reads(),
        2,
        "one read at load, one for all 16 refusals"
    );
}

#[tokio::test]
async fn an_unchanged_secret_is_not_read_again_at_once() {
    let store = Store::holding(r#"{"secret_key": "sk_test_A"}"#);
    let cred = Credential::load(&stored(), store.clone())
        .await
        .expect("load");
    assert!(
        cred.refresh(1).await.expect("refresh").is_none(),
        "same key"
    );
    assert_eq!(store.reads(), 2);
    for _ in 0..10 {
        assert!(cred.refresh(1).await.expect("refresh").is_none());
    }
    assert_eq!(store.reads(), 2, "cooling down: {UNCHANGED_COOLDOWN:?}");
}

#[tokio::test]
async fn plain_keys_are_never_refreshed() {
    let cred = Credential::fixed(key("sk_test_A"), "STRIPE_SECRET_KEY");
    assert!(cred.refresh(1).await.expect("refresh").is_none());
    assert_eq!(cred.describe(), "STRIPE_SECRET_KEY");
    let loaded = Credential::load(
        &KeySource::Plain {
            variables: "STRIPE_SECRET_KEY",
            key: key("sk_test_A"),
        },
        Store::holding("unused"),
    )
    .await
    .expect("plain");
    assert_eq!(loaded.current().key, key("sk_test_A"));
}

#[tokio::test]
async fn bad_secrets_are_named_by_arn_never_shown() {
    for value in [
        r#"{"secret_key": "pk_test_leak"}"#,
        r#"{"key": "sk_test_leak"}"#,
        "sk_test_leak",
    ] {
        let store = Store::holding(value);
        let err = Credential::load(&stored(), store)
            .await
            .expect_err(value)
            .to_string();
        assert!(
            err.contains("STRIPE_SECRET_ARN") && err.contains(ARN),
            "{err}"
        );
        assert!(!err.contains("leak"), "{err}");
    }
    let missing = KeySource::<StripeKey>::Stored {
        variable: "STRIPE_SECRET_ARN",
        id: "other".into(),
    };
    let err = Credential::load(&missing, Store::holding("{}"))
        .await
        .expect_err("missing")
        .to_string();
    assert!(
        err.contains("STRIPE_SECRET_ARN") && err.contains("other"),
        "{err}"
    );
    let cred = Credential::load(&stored(), Store::holding(r#"{"secret_key": "sk_test_A"}"#))
        .await
        .expect("load");
    let shown = format!("{cred:?} {:?}", cred.current().key);
    assert!(
        !shown.contains("sk_test_A") && shown.contains(ARN),
        "{shown}"
    );
}

#[tokio::test]
async fn langfuse_secrets_hold_both_keys() {
    let keys = LangfuseKeys::parse(&Secret::new(
        r#"{"public_key": "pk-lf-1", "secret_key": "sk-lf-1"}"#,
    ))
    .expect("parse");
    assert_eq!(keys.public_key, "pk-lf-1");
    assert_eq!(keys.secret_key.expose(), "sk-lf-1");
    for bad in [
        r#"{"public_key": "pk-lf-1"}"#,
        r#"{"public_key": "", "secret_key": "s"}"#,
    ] {
        let err = LangfuseKeys::parse(&Secret::new(bad)).expect_err(bad);
        assert!(
            err.contains("public_key") && !err.contains("pk-lf-1"),
            "{err}"
        );
    }
}
