//! The project's own files read as the tools read them: template.yaml's IAM (least
//! privilege) and budget events wiring, the events/ fixtures, env.local.json.

#![allow(clippy::unwrap_used)]

use serde_yaml::Value;
use tracemeter::domain::budget_event::BudgetEventKind;
use tracemeter_local::stack::{
    INGEST_FUNCTION, PROCESS_FUNCTION, Template, intrinsic, repo_root, template_path,
};

/// Least privilege: every function has its own role; every IAM statement names its
/// actions (no `*` in an action) and its resources (no `*` resource, no wildcard ARN),
/// and only the process function gets the Stripe key.
#[test]
fn iam_statements_name_their_actions_and_resources() {
    let text = std::fs::read_to_string(template_path()).unwrap();
    let root: Value = serde_yaml::from_str(&text).unwrap();
    let resources = root["Resources"].as_mapping().unwrap();
    let mut roles_used = Vec::new();
    let mut statements = 0;
    for (name, resource) in resources {
        let name = name.as_str().unwrap();
        match resource["Type"].as_str().unwrap() {
            "AWS::Serverless::Function" => {
                let role = &resource["Properties"]["Role"];
                let (kind, arg) = intrinsic(role)
                    .unwrap_or_else(|| panic!("{name} has no explicit Role (SAM would attach managed policies with * resources)"));
                assert_eq!(kind, "Fn::GetAtt", "{name}");
                let role = match arg {
                    Value::String(s) => s.split('.').next().unwrap().to_string(),
                    Value::Sequence(v) => v[0].as_str().unwrap().to_string(),
                    other => panic!("{name}: {other:?}"),
                };
                assert!(!roles_used.contains(&role), "{name} shares {role}");
                roles_used.push(role);
                assert!(
                    resource["Properties"].get("Policies").is_none(),
                    "{name}: SAM Policies add managed policies"
                );
            }
            "AWS::IAM::Role" => {
                assert!(
                    resource["Properties"].get("ManagedPolicyArns").is_none(),
                    "{name}: managed policies have * resources"
                );
                for policy in resource["Properties"]["Policies"].as_sequence().unwrap() {
                    for st in policy["PolicyDocument"]["Statement"].as_sequence().unwrap() {
                        statements += 1;
                        let sid = st["Sid"].as_str().unwrap_or("?");
                        assert_eq!(st["Effect"].as_str(), Some("Allow"), "{name}/{sid}");
                        let actions: Vec<&Value> = match &st["Action"] {
                            Value::Sequence(v) => v.iter().collect(),
                            v => vec![v],
                        };
                        for a in actions {
                            let a = a.as_str().unwrap();
                            assert!(!a.contains('*'), "{name}/{sid}: wildcard action {a}");
                            assert!(a.contains(':'), "{name}/{sid}: {a}");
                        }
                        let resources: Vec<&Value> = match &st["Resource"] {
                            Value::Sequence(v) => v.iter().collect(),
                            v => vec![v],
                        };
                        for r in resources {
                            let text = match r {
                                Value::String(s) => s.clone(),
                                other => format!("{other:?}"),
                            };
                            assert!(
                                !text.contains('*'),
                                "{name}/{sid}: wildcard resource {text}"
                            );
                            assert!(!matches!(r, Value::Null), "{name}/{sid}: no resource");
                        }
                    }
                }
            }
            _ => {}
        }
    }
    assert_eq!(roles_used.len(), 2, "both functions have their own role");
    assert!(statements >= 6, "{statements} statements read");
    let t = Template::load().unwrap();
    assert!(
        t.function_env(PROCESS_FUNCTION)
            .unwrap()
            .contains_key("STRIPE_SECRET_ARN")
    );
    assert!(
        !t.function_env(INGEST_FUNCTION)
            .unwrap()
            .contains_key("STRIPE_SECRET_ARN")
    );
}

/// The keys never pass through the template: the functions get the secrets' ARNs (from the
/// `*SecretArn` parameters) and read the keys at run time; no variable holds a key or a
/// `{{resolve:secretsmanager}}` reference, and no output names a secret.
#[test]
fn secrets_reach_the_functions_as_arns_only() {
    let text = std::fs::read_to_string(template_path()).unwrap();
    assert!(
        !text.contains("resolve:secretsmanager"),
        "a dynamic reference to a secret"
    );
    let t = Template::load().unwrap();
    let expect: [(&str, &[(&str, &str)]); 2] = [
        (
            PROCESS_FUNCTION,
            &[
                ("LANGFUSE_SECRET_ARN", "LangfuseSecretArn"),
                ("STRIPE_SECRET_ARN", "StripeSecretArn"),
            ],
        ),
        (
            INGEST_FUNCTION,
            &[("LANGFUSE_SECRET_ARN", "LangfuseSecretArn")],
        ),
    ];
    for (function, secrets) in expect {
        let env = t.function_env(function).unwrap();
        for (name, parameter) in secrets {
            let (kind, arg) =
                intrinsic(&env[*name]).unwrap_or_else(|| panic!("{function}: {name}"));
            assert_eq!(
                (kind, arg.as_str()),
                ("Ref", Some(*parameter)),
                "{function}: {name}"
            );
        }
        let arns: Vec<&String> = env.keys().filter(|k| k.ends_with("_SECRET_ARN")).collect();
        assert_eq!(arns.len(), secrets.len(), "{function}: {arns:?}");
        for name in env.keys() {
            assert!(!name.ends_with("_KEY"), "{function}: a key variable {name}");
        }
    }
    let root: Value = serde_yaml::from_str(&text).unwrap();
    for parameter in ["LangfuseSecretArn", "StripeSecretArn"] {
        let p = &root["Parameters"][parameter];
        assert_eq!(p["Type"].as_str(), Some("String"), "{parameter}");
        assert!(
            p.get("Default").is_none(),
            "{parameter}: the ARN is the deployer's"
        );
        assert!(
            p["AllowedPattern"]
                .as_str()
                .unwrap()
                .contains(":secretsmanager:")
        );
    }
    let outputs = serde_yaml::to_string(&root["Outputs"]).unwrap();
    assert!(
        !outputs.contains("Secret"),
        "an output names a secret: {outputs}"
    );
}

#[test]
fn sample_events_parse_as_lambda_events() {
    use aws_lambda_events::event::eventbridge::EventBridgeEvent;
    use aws_lambda_events::event::sqs::SqsEvent;
    let read = |name: &str| std::fs::read_to_string(repo_root().join("events").join(name)).unwrap();
    let bodies = |name: &str| -> Vec<String> {
        let event: SqsEvent = serde_json::from_str(&read(name)).unwrap();
        event
            .records
            .iter()
            .map(|r| {
                assert_eq!(r.event_source.as_deref(), Some("aws:sqs"));
                assert!(r.receipt_handle.is_some() && r.message_id.is_some());
                assert!(r.attributes.contains_key("ApproximateReceiveCount"));
                r.body.clone().unwrap()
            })
            .collect()
    };
    assert_eq!(
        bodies("sqs-batch.json"),
        [r#"{"traceId":"trace-001"}"#, r#"{"traceId":"trace-002"}"#]
    );
    let dup = bodies("sqs-duplicate.json");
    assert_eq!(dup.len(), 2);
    assert_eq!(dup[0], dup[1]);
    for body in bodies("sqs-poison.json") {
        let parsed: Option<serde_json::Value> = serde_json::from_str(&body).ok();
        assert!(parsed.is_none_or(|v| v.get("traceId").is_none()), "{body}");
    }
    let scheduled: EventBridgeEvent = serde_json::from_str(&read("scheduled.json")).unwrap();
    assert_eq!(scheduled.detail_type, "Scheduled Event");
    assert_eq!(scheduled.source, "aws.events");
}

#[test]
fn local_env_file_covers_the_template_variables() {
    let text = std::fs::read_to_string(repo_root().join("env.local.json")).unwrap();
    let file: serde_json::Value = serde_json::from_str(&text).unwrap();
    let template = Template::load().unwrap();
    for function in [PROCESS_FUNCTION, INGEST_FUNCTION] {
        let vars = file[function]
            .as_object()
            .unwrap_or_else(|| panic!("env.local.json has no {function} section"));
        let env = template.function_env(function).unwrap();
        // `sam local invoke --env-vars` only overrides variables the template declares.
        for name in vars.keys() {
            assert!(
                env.contains_key(name),
                "{function}: {name} is not declared in template.yaml"
            );
        }
        for name in env.keys() {
            assert!(
                vars.contains_key(name),
                "env.local.json's {function} misses {name}"
            );
        }
        for (name, value) in vars {
            let value = value.as_str().unwrap();
            if value.starts_with("http") {
                assert!(value.starts_with("http://127.0.0.1:"), "{name}={value}");
            }
        }
    }
    // Only the process function holds the Stripe key.
    let ingest = template.function_env(INGEST_FUNCTION).unwrap();
    assert!(
        !ingest.keys().any(|k| k.starts_with("STRIPE_")),
        "{ingest:?}"
    );
}

/// Budget events: the table streams new images to the pipe; the example rule matches every
/// budget detail-type and publishes to the topic, which lets only that rule publish; the email
/// subscription exists only with an address; and the pipe's detail-types are the rule's.
#[test]
fn budget_events_flow_from_the_table_to_the_topic() {
    let text = std::fs::read_to_string(template_path()).unwrap();
    let root: Value = serde_yaml::from_str(&text).unwrap();
    let res = &root["Resources"];
    assert_eq!(
        res["LedgerTable"]["Properties"]["StreamSpecification"]["StreamViewType"],
        "NEW_IMAGE"
    );
    let pipe = &res["BudgetEventsPipe"]["Properties"];
    assert_eq!(
        pipe["TargetParameters"]["EventBridgeEventBusParameters"]["Source"],
        "tracemeter"
    );
    let rule = &res["BudgetEventsRule"]["Properties"];
    let pattern: serde_json::Value = serde_json::to_value(&rule["EventPattern"]).unwrap();
    assert_eq!(pattern["source"], serde_json::json!(["tracemeter"]));
    let kinds = [
        "Budget Threshold Crossed",
        "Budget Limit Reached",
        "Budget Limit Cleared",
    ];
    assert_eq!(pattern["detail-type"], serde_json::json!(kinds));
    let target = &rule["Targets"][0]["Arn"];
    assert_eq!(
        intrinsic(target),
        Some(("Ref", &Value::from("BudgetEventsTopic")))
    );
    let st = &res["BudgetEventsTopicPolicy"]["Properties"]["PolicyDocument"]["Statement"][0];
    assert_eq!(st["Principal"]["Service"], "events.amazonaws.com");
    assert_eq!(st["Action"], "sns:Publish");
    let source = &st["Condition"]["ArnEquals"]["aws:SourceArn"];
    assert_eq!(intrinsic(source).map(|(k, _)| k), Some("Fn::GetAtt"));
    let subscription = &res["BudgetEventsEmailSubscription"];
    assert_eq!(subscription["Condition"], "HasBudgetEventsEmail");
    assert_eq!(root["Parameters"]["BudgetEventsEmail"]["Default"], "");
    // Every detail-type the code writes is one the rule lets through.
    for kind in [
        BudgetEventKind::ThresholdCrossed { percent: 50 },
        BudgetEventKind::LimitReached,
        BudgetEventKind::LimitCleared,
    ] {
        assert!(kinds.contains(&kind.detail_type()), "{kind:?}");
    }
}
