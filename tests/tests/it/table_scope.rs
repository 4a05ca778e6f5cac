//! Least privilege on the ledger table, by item family: each role may touch only the key
//! prefixes (`dynamodb:LeadingKeys`) and actions its function uses, as recorded at the proxy
//! in front of moto while the real handlers run (`iam_calls`), exactly; and on the secrets:
//! each role may only `GetSecretValue` the secrets its function reads. Checked on
//! template.yaml as written, and on planted over-broad templates the check must refuse.

#![allow(clippy::unwrap_used)]

use serde_yaml::Value;
use std::collections::{BTreeMap, BTreeSet};
use tracemeter_local::stack::{intrinsic, template_path};

use crate::iam_calls::{Scope, recorded};

/// The "family" of a grant on the table's stream (`!GetAtt LedgerTable.StreamArn`): its
/// records, not the table's items; the stream has no `dynamodb:LeadingKeys`.
const STREAM: &str = "STREAM";
/// The actions that read a stream (and nothing of the table).
const STREAM_ACTIONS: [&str; 4] = [
    "DescribeStream",
    "GetRecords",
    "GetShardIterator",
    "ListStreams",
];

/// Whether a statement's `Resource` is the ledger table's stream, and only that.
fn is_ledger_stream(resource: &Value) -> bool {
    match resource {
        Value::Tagged(t) => {
            t.tag.to_string().trim_start_matches('!') == "GetAtt"
                && t.value.as_str() == Some("LedgerTable.StreamArn")
        }
        _ => false,
    }
}

/// What each role needs on the table, by item family (and nothing more): the functions'
/// roles as their code was seen calling DynamoDB ([`recorded`]); the two roles whose code is
/// not in this repository as declared: the gateways' read of budget state (`BUDGET#` counters
/// and `CUSTOMER#` policies, `GetItem` only) and the budget events pipe, which reads the
/// table's stream and never an item.
async fn needed() -> Scope {
    let declared = |families: &[&str], actions: &[&str]| {
        families
            .iter()
            .map(|f| {
                let set = actions.iter().map(|a| format!("dynamodb:{a}")).collect();
                (f.to_string(), set)
            })
            .collect::<BTreeMap<String, BTreeSet<String>>>()
    };
    let mut scope = recorded().await;
    scope.insert(
        "GatewayBudgetReadPolicy".to_string(),
        declared(&["BUDGET#", "CUSTOMER#"], &["GetItem"]),
    );
    scope.insert(
        "BudgetEventsPipeRole".to_string(),
        declared(&[STREAM], &STREAM_ACTIONS),
    );
    scope
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Sequence(items) => items.iter().flat_map(strings).collect(),
        Value::String(s) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// The table grants of one statement, or why it is refused.
fn statement_scope(role: &str, st: &Value) -> Result<Vec<(String, String)>, String> {
    let sid = st["Sid"].as_str().unwrap_or("?");
    let actions: Vec<String> = strings(&st["Action"])
        .into_iter()
        .filter(|a| a.starts_with("dynamodb:"))
        .collect();
    if actions.is_empty() {
        return Ok(Vec::new());
    }
    let stream_only = actions.iter().all(|a| {
        let action = a.trim_start_matches("dynamodb:");
        STREAM_ACTIONS.contains(&action)
    });
    if stream_only && is_ledger_stream(&st["Resource"]) {
        return Ok(actions
            .into_iter()
            .map(|a| (STREAM.to_string(), a))
            .collect());
    }
    let keys = strings(&st["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"]);
    if keys.is_empty() {
        return Err(format!(
            "{role}/{sid}: table access without a dynamodb:LeadingKeys condition"
        ));
    }
    let mut out = Vec::new();
    for key in keys {
        let Some(family) = key.strip_suffix('*').filter(|f| f.ends_with('#')) else {
            return Err(format!(
                "{role}/{sid}: leading key {key:?} is not one item family (PREFIX#*)"
            ));
        };
        out.extend(actions.iter().map(|a| (family.to_string(), a.clone())));
    }
    Ok(out)
}

/// Every refusal for `root` against what the roles `needed`: unscoped statements, grants
/// nobody needs, needs nobody grants.
fn violations(root: &Value, needed: &Scope) -> Vec<String> {
    let mut granted: Scope = BTreeMap::new();
    let mut refused = Vec::new();
    for (name, resource) in root["Resources"].as_mapping().unwrap() {
        let documents: Vec<&Value> = match resource["Type"].as_str() {
            Some("AWS::IAM::Role") => resource["Properties"]["Policies"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|p| &p["PolicyDocument"])
                .collect(),
            Some("AWS::IAM::ManagedPolicy") => vec![&resource["Properties"]["PolicyDocument"]],
            _ => continue,
        };
        let role = name.as_str().unwrap().to_string();
        for document in documents {
            for st in document["Statement"].as_sequence().unwrap() {
                match statement_scope(&role, st) {
                    Ok(grants) => {
                        for (family, action) in grants {
                            let r = granted.entry(role.clone()).or_default();
                            r.entry(family).or_default().insert(action);
                        }
                    }
                    Err(e) => refused.push(e),
                }
            }
        }
    }
    for (role, families) in &granted {
        for (family, actions) in families {
            let need = needed.get(role).and_then(|f| f.get(family));
            for a in actions {
                if !need.is_some_and(|n| n.contains(a)) {
                    refused.push(format!("{role}: {a} on {family} items is not needed"));
                }
            }
        }
    }
    for (role, families) in needed {
        for (family, actions) in families {
            let have = granted.get(role).and_then(|f| f.get(family));
            for a in actions {
                if !have.is_some_and(|h| h.contains(a)) {
                    refused.push(format!("{role}: {a} on {family} items is missing"));
                }
            }
        }
    }
    refused
}

fn template() -> Value {
    serde_yaml::from_str(&std::fs::read_to_string(template_path()).unwrap()).unwrap()
}

fn statement<'a>(root: &'a mut Value, role: &str, sid: &str) -> &'a mut Value {
    let statements =
        root["Resources"][role]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
            .as_sequence_mut()
            .unwrap();
    statements
        .iter_mut()
        .find(|s| s["Sid"].as_str() == Some(sid))
        .unwrap_or_else(|| panic!("{role} has no statement {sid}"))
}

/// The template grants exactly what the roles were seen needing, and the check refuses
/// planted over-broad (and too narrow) templates.
#[tokio::test]
async fn each_role_touches_only_the_item_families_its_function_was_seen_using() {
    let needed = needed().await;
    assert_eq!(violations(&template(), &needed), Vec::<String>::new());
    over_broad_templates_are_refused(&needed);
}

fn over_broad_templates_are_refused(needed: &Scope) {
    let refuses = |plant: &dyn Fn(&mut Value), expected: &str| {
        let mut root = template();
        plant(&mut root);
        let found = violations(&root, needed);
        assert!(
            found.iter().any(|v| v.contains(expected)),
            "expected a refusal containing {expected:?}, got {found:?}"
        );
    };
    // No condition at all: the whole table.
    refuses(
        &|r| {
            let st = statement(r, "IngestFunctionRole", "LedgerLookups");
            st.as_mapping_mut().unwrap().remove("Condition");
        },
        "without a dynamodb:LeadingKeys condition",
    );
    // A wildcard leading key.
    refuses(
        &|r| {
            let st = statement(r, "ProcessFunctionRole", "LedgerEntriesCountersReceipts");
            st["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"] =
                Value::Sequence(vec![Value::String("*".into())]);
        },
        "is not one item family",
    );
    // The process function writing ingest's lease and cursor.
    refuses(
        &|r| {
            let st = statement(r, "ProcessFunctionRole", "LedgerEntriesCountersReceipts");
            let keys = &mut st["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"];
            keys.as_sequence_mut()
                .unwrap()
                .push(Value::String("INGEST#*".into()));
        },
        "on INGEST# items is not needed",
    );
    // An unused action (the process function never queries).
    refuses(
        &|r| {
            let st = statement(r, "ProcessFunctionRole", "LedgerEntriesCountersReceipts");
            let actions = st["Action"].as_sequence_mut().unwrap();
            actions.push(Value::String("dynamodb:Query".into()));
        },
        "dynamodb:Query on TRACE# items is not needed",
    );
    // Ingest writing trace entries.
    refuses(
        &|r| {
            let st = statement(r, "IngestFunctionRole", "LedgerLookups");
            let actions = st["Action"].as_sequence_mut().unwrap();
            actions.push(Value::String("dynamodb:PutItem".into()));
        },
        "dynamodb:PutItem on TRACE# items is not needed",
    );
    // The gateway's policy reaching past the budget items.
    refuses(
        &|r| {
            let st = &mut r["Resources"]["GatewayBudgetReadPolicy"]["Properties"]["PolicyDocument"]
                ["Statement"][0];
            let keys = &mut st["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"];
            keys.as_sequence_mut()
                .unwrap()
                .push(Value::String("TRACE#*".into()));
        },
        "GatewayBudgetReadPolicy: dynamodb:GetItem on TRACE# items is not needed",
    );
    // The pipe reading items of the table, not only its stream.
    refuses(
        &|r| {
            let st = statement(r, "BudgetEventsPipeRole", "LedgerStreamRead");
            let actions = st["Action"].as_sequence_mut().unwrap();
            actions.push(Value::String("dynamodb:GetItem".into()));
        },
        "BudgetEventsPipeRole/LedgerStreamRead: table access without a dynamodb:LeadingKeys",
    );
    // Stream actions on the table's ARN are table access.
    refuses(
        &|r| {
            let st = statement(r, "BudgetEventsPipeRole", "LedgerStreamRead");
            st["Resource"] = serde_yaml::from_str("!GetAtt LedgerTable.Arn").unwrap();
        },
        "BudgetEventsPipeRole/LedgerStreamRead: table access without a dynamodb:LeadingKeys",
    );
    // A role that lost what its function needs.
    refuses(
        &|r| {
            let st = statement(r, "ProcessFunctionRole", "PoliciesAndMappingsRead");
            let keys = &mut st["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"];
            *keys = Value::Sequence(vec![Value::String("CUSTOMER#*".into())]);
        },
        "dynamodb:BatchGetItem on USER# items is missing",
    );
}

/// Role -> the secret parameters (`!Ref <Name>SecretArn`) it may read.
type SecretScope = BTreeMap<String, BTreeSet<String>>;

/// The secrets each function reads: process both, ingest Langfuse's only, nobody else any.
fn secrets_needed() -> SecretScope {
    let set = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
    BTreeMap::from([
        (
            "ProcessFunctionRole".to_string(),
            set(&["LangfuseSecretArn", "StripeSecretArn"]),
        ),
        (
            "IngestFunctionRole".to_string(),
            set(&["LangfuseSecretArn"]),
        ),
    ])
}

/// Every refusal of the Secrets Manager grants in `root`: actions other than GetSecretValue,
/// resources other than a `!Ref` to a secret parameter, and grants unlike [`secrets_needed`].
fn secret_violations(root: &Value) -> Vec<String> {
    let mut granted: SecretScope = BTreeMap::new();
    let mut refused = Vec::new();
    for (name, resource) in root["Resources"].as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        let documents: Vec<&Value> = match resource["Type"].as_str() {
            Some("AWS::IAM::Role") => resource["Properties"]["Policies"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|p| &p["PolicyDocument"])
                .collect(),
            Some("AWS::IAM::ManagedPolicy") => vec![&resource["Properties"]["PolicyDocument"]],
            _ => continue,
        };
        for st in documents
            .iter()
            .flat_map(|d| d["Statement"].as_sequence().unwrap())
        {
            let sid = st["Sid"].as_str().unwrap_or("?");
            let actions = strings(&st["Action"]);
            if !actions.iter().any(|a| a.starts_with("secretsmanager:")) {
                continue;
            }
            if actions != ["secretsmanager:GetSecretValue"] {
                refused.push(format!(
                    "{name}/{sid}: {actions:?}: only secretsmanager:GetSecretValue, alone"
                ));
            }
            let resources: Vec<&Value> = match &st["Resource"] {
                Value::Sequence(v) => v.iter().collect(),
                v => vec![v],
            };
            for r in resources {
                match intrinsic(r) {
                    Some(("Ref", Value::String(p))) if p.ends_with("SecretArn") => {
                        granted
                            .entry(name.to_string())
                            .or_default()
                            .insert(p.clone());
                    }
                    _ => refused.push(format!(
                        "{name}/{sid}: resource {r:?} is not one secret's ARN parameter"
                    )),
                }
            }
        }
    }
    let needed = secrets_needed();
    for role in needed.keys().chain(granted.keys()).collect::<BTreeSet<_>>() {
        let (want, have) = (needed.get(role), granted.get(role));
        if want != have {
            refused.push(format!("{role}: reads secrets {have:?}, needs {want:?}"));
        }
    }
    refused
}

#[test]
fn each_role_reads_only_its_own_secrets() {
    assert_eq!(secret_violations(&template()), Vec::<String>::new());
}

#[test]
fn over_broad_secret_grants_are_refused() {
    let refuses = |plant: &dyn Fn(&mut Value), expected: &str| {
        let mut root = template();
        plant(&mut root);
        let found = secret_violations(&root);
        assert!(
            found.iter().any(|v| v.contains(expected)),
            "expected a refusal containing {expected:?}, got {found:?}"
        );
    };
    // Any secret of the account.
    refuses(
        &|r| {
            let st = statement(r, "IngestFunctionRole", "ReadLangfuseSecret");
            st["Resource"] = Value::String("arn:aws:secretsmanager:*:*:secret:*".into());
        },
        "is not one secret's ARN parameter",
    );
    // Ingest reading the Stripe key.
    refuses(
        &|r| {
            let st = statement(r, "IngestFunctionRole", "ReadLangfuseSecret");
            st["Resource"] =
                serde_yaml::from_str("[!Ref LangfuseSecretArn, !Ref StripeSecretArn]").unwrap();
        },
        "IngestFunctionRole: reads secrets",
    );
    // More than reading.
    refuses(
        &|r| {
            let st = statement(r, "ProcessFunctionRole", "ReadOwnSecrets");
            let actions = st["Action"].as_sequence_mut().unwrap();
            actions.push(Value::String("secretsmanager:PutSecretValue".into()));
        },
        "only secretsmanager:GetSecretValue",
    );
    // The process function without the Stripe secret.
    refuses(
        &|r| {
            let st = statement(r, "ProcessFunctionRole", "ReadOwnSecrets");
            st["Resource"] = serde_yaml::from_str("!Ref LangfuseSecretArn").unwrap();
        },
        "ProcessFunctionRole: reads secrets",
    );
}
