//! The documentation kept in step with the code: the configuration reference is generated
//! from `template.yaml` and the variables the configuration loaders really read
//! (`tracemeter::config::catalog` holds their meaning); every verb of the command is in the
//! operating guide; every relative link resolves; the README stays a short first page.
//!
//! `make docs` rewrites the generated part of `docs/configuration.md`
//! (`TRACEMETER_WRITE_DOCS=1`); without it a stale reference fails here.

#![allow(clippy::unwrap_used)]

use serde_yaml::Value;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use tracemeter::config::catalog::{VARIABLES, variable};
use tracemeter::config::{AdminConfig, IngestConfig, ProcessConfig};
use tracemeter_local::stack::{INGEST_FUNCTION, PROCESS_FUNCTION, Template, intrinsic, repo_root};

const BEGIN: &str =
    "<!-- BEGIN GENERATED: make docs (template.yaml + shared/src/config/catalog.rs) -->";
const END: &str = "<!-- END GENERATED -->";

/// Variables no configuration loader reads, and who reads them instead.
const OUTSIDE_LOADERS: &[(&str, &[&str])] = &[
    // tracemeter::telemetry::init, at the start of each function's main.
    ("RUST_LOG", &["ingest", "process"]),
    // The AWS SDK's own endpoint override (local runs only).
    ("AWS_ENDPOINT_URL", &["ingest", "process", "tracemeter"]),
    // `tracemeter doctor` only (it reads its variables itself, to report each as a check).
    ("PROCESS_TIMEOUT_SECONDS", &["tracemeter"]),
];

type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The names `load` asks for under `env`; `load` must accept `env`.
fn reads(load: &dyn Fn(Lookup) -> Result<(), String>, env: &[(&str, &str)]) -> BTreeSet<String> {
    let seen = RefCell::new(BTreeSet::new());
    let lookup = |name: &str| {
        seen.borrow_mut().insert(name.to_string());
        env.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    };
    if let Err(e) = load(&lookup) {
        panic!("the loader refused the recording environment {env:?}: {e}");
    }
    seen.into_inner()
}

const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:x-AbCdEf";

fn base() -> Vec<(&'static str, &'static str)> {
    vec![
        ("LANGFUSE_BASE_URL", "https://cloud.langfuse.com"),
        ("LANGFUSE_SECRET_ARN", ARN),
        ("STRIPE_SECRET_ARN", ARN),
        ("STRIPE_METER_EVENT_NAME", "credits"),
        ("TABLE_NAME", "ledger"),
        (
            "QUEUE_URL",
            "https://sqs.us-east-1.amazonaws.com/123456789012/meter",
        ),
    ]
}

/// Reader name -> the variables its loader reads, over the variants that read conditionally
/// (the v2 stream's host, the development keys, the command's optional Stripe and DLQ).
fn recorded() -> BTreeMap<&'static str, BTreeSet<String>> {
    let with = |extra: &[(&'static str, &'static str)], drop: &[&str]| {
        let mut env: Vec<_> = base()
            .into_iter()
            .filter(|(k, _)| !drop.contains(k))
            .collect();
        env.extend_from_slice(extra);
        env
    };
    let dev_keys = with(
        &[
            ("LANGFUSE_PUBLIC_KEY", "pk-lf-1"),
            ("LANGFUSE_SECRET_KEY", "sk-lf-1"),
            ("STRIPE_SECRET_KEY", "sk_test_1"),
        ],
        &["LANGFUSE_SECRET_ARN", "STRIPE_SECRET_ARN"],
    );
    let stream = with(&[("STRIPE_API_MODE", "v2_stream")], &[]);
    let admin = with(
        &[
            (
                "DLQ_URL",
                "https://sqs.us-east-1.amazonaws.com/123456789012/dlq",
            ),
            ("STRIPE_METER_ID", "mtr_1"),
        ],
        &[],
    );
    let process = |l: Lookup| {
        ProcessConfig::from_lookup(l)
            .map(drop)
            .map_err(|e| e.to_string())
    };
    let ingest = |l: Lookup| {
        IngestConfig::from_lookup(l)
            .map(drop)
            .map_err(|e| e.to_string())
    };
    // A verb that calls Stripe reads every variable a verb reads.
    let command = |l: Lookup| {
        AdminConfig::from_lookup(l, true)
            .map(drop)
            .map_err(|e| e.to_string())
    };
    let mut out = BTreeMap::new();
    for (reader, load, envs) in [
        (
            "process",
            &process as &dyn Fn(Lookup) -> Result<(), String>,
            vec![base(), dev_keys.clone(), stream.clone()],
        ),
        ("ingest", &ingest, vec![base(), dev_keys.clone()]),
        (
            "tracemeter",
            &command,
            vec![
                base(),
                admin.clone(),
                with(&admin_dev(), &["STRIPE_SECRET_ARN"]),
            ],
        ),
    ] {
        let names: BTreeSet<String> = envs.iter().flat_map(|env| reads(load, env)).collect();
        out.insert(reader, names);
    }
    out
}

fn admin_dev() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "DLQ_URL",
            "https://sqs.us-east-1.amazonaws.com/123456789012/dlq",
        ),
        ("STRIPE_METER_ID", "mtr_1"),
        ("STRIPE_SECRET_KEY", "sk_test_1"),
        ("STRIPE_API_MODE", "v2_stream"),
    ]
}

/// Who reads `name`: the loaders that asked for it, or the readers outside them.
fn readers(recorded: &BTreeMap<&'static str, BTreeSet<String>>, name: &str) -> Vec<&'static str> {
    if let Some((_, who)) = OUTSIDE_LOADERS.iter().find(|(n, _)| *n == name) {
        return who.to_vec();
    }
    recorded
        .iter()
        .filter(|(_, names)| names.contains(name))
        .map(|(reader, _)| *reader)
        .collect()
}

fn short(v: &Value) -> String {
    match intrinsic(v) {
        Some(("Ref", arg)) => format!("`{}`", arg.as_str().unwrap_or("?")),
        Some(("Fn::If", arg)) => {
            let branch = &arg.as_sequence().unwrap()[1];
            format!("{} (when set)", short(branch))
        }
        Some((kind, _)) => format!("`{kind}`"),
        None => match v {
            Value::String(s) => format!("`{s}`"),
            Value::Number(n) => format!("`{n}`"),
            other => format!("`{other:?}`"),
        },
    }
}

fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// The generated block of `docs/configuration.md`.
fn generate() -> String {
    let template = Template::load().unwrap();
    let recorded = recorded();
    let functions = [("ingest", INGEST_FUNCTION), ("process", PROCESS_FUNCTION)];
    let envs: Vec<(&str, BTreeMap<String, Value>)> = functions
        .iter()
        .map(|(short, logical)| (*short, template.function_env(logical).unwrap()))
        .collect();
    let mut out = String::new();
    out.push_str("### Variables\n\n");
    out.push_str("| variable | read by | default | set by the template from | meaning |\n|---|---|---|---|---|\n");
    for v in VARIABLES {
        let from: Vec<String> = envs
            .iter()
            .filter_map(|(f, env)| env.get(v.name).map(|val| format!("{f}: {}", short(val))))
            .collect();
        let from = if from.is_empty() {
            "not set (default)".to_string()
        } else {
            from.join("; ")
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            v.name,
            readers(&recorded, v.name).join(", "),
            v.default,
            from,
            v.meaning
        ));
    }
    out.push_str("\n### Template parameters\n\n");
    out.push_str("| parameter | default | allowed | becomes | meaning |\n|---|---|---|---|---|\n");
    let root: Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo_root().join("template.yaml")).unwrap())
            .unwrap();
    for (name, p) in root["Parameters"].as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        let default = match p.get("Default") {
            None => "required".to_string(),
            Some(Value::String(s)) if s.is_empty() => "empty".to_string(),
            Some(d) => short(d),
        };
        let allowed = match (p.get("AllowedValues"), p.get("MinValue"), p.get("MaxValue")) {
            (Some(Value::Sequence(vals)), _, _) => {
                vals.iter().map(short).collect::<Vec<_>>().join(", ")
            }
            (None, min, max) if min.is_some() || max.is_some() => format!(
                "{}..{}",
                min.map(short).unwrap_or_default(),
                max.map(short).unwrap_or_default()
            ),
            _ => String::new(),
        };
        let feeds: BTreeSet<String> = envs
            .iter()
            .flat_map(|(_, env)| env.iter())
            .filter(|(_, val)| short(val).contains(&format!("`{name}`")))
            .map(|(k, _)| format!("`{k}`"))
            .collect();
        let feeds = if feeds.is_empty() {
            "resources".to_string()
        } else {
            feeds.into_iter().collect::<Vec<_>>().join(", ")
        };
        let meaning = p.get("Description").and_then(Value::as_str).unwrap_or("");
        out.push_str(&format!(
            "| `{name}` | {default} | {allowed} | {feeds} | {} |\n",
            cell(meaning)
        ));
    }
    out
}

/// Every variable a loader reads is documented; every documented variable is read; every
/// variable the template sets on a function is read by that function.
#[test]
fn the_catalog_is_exactly_what_the_loaders_read_and_the_template_sets() {
    let recorded = recorded();
    let mut names = BTreeSet::new();
    for v in VARIABLES {
        assert!(
            names.insert(v.name),
            "{} is listed twice in the catalog",
            v.name
        );
    }
    for (reader, read) in &recorded {
        for name in read {
            assert!(
                variable(name).is_some(),
                "{reader} reads {name}, which shared/src/config/catalog.rs does not document"
            );
        }
    }
    for v in VARIABLES {
        assert!(
            !readers(&recorded, v.name).is_empty(),
            "{} is documented in the catalog but no loader reads it",
            v.name
        );
    }
    let template = Template::load().unwrap();
    for (reader, logical) in [("ingest", INGEST_FUNCTION), ("process", PROCESS_FUNCTION)] {
        for name in template.function_env(logical).unwrap().keys() {
            assert!(
                readers(&recorded, name).contains(&reader),
                "template.yaml sets {name} on {logical}, but the {reader} function never reads it"
            );
        }
    }
}

fn generated_block(doc: &str) -> Option<(usize, usize)> {
    let start = doc.find(BEGIN)? + BEGIN.len();
    let end = doc[start..].find(END)? + start;
    Some((start, end))
}

/// `docs/configuration.md` holds what `generate` makes now (`make docs` rewrites it).
#[test]
fn the_configuration_reference_is_generated_from_the_code_and_the_template() {
    let path = repo_root().join("docs/configuration.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let (start, end) = generated_block(&doc).expect("docs/configuration.md has no generated block");
    let fresh = format!("\n{}", generate());
    if std::env::var("TRACEMETER_WRITE_DOCS").as_deref() == Ok("1") {
        let updated = format!("{}{fresh}{}", &doc[..start], &doc[end..]);
        std::fs::write(&path, updated).unwrap();
        return;
    }
    assert!(
        doc[start..end] == fresh,
        "docs/configuration.md is stale: run `make docs` (the variables or template.yaml changed)"
    );
}

/// Every verb of `tracemeter` (each leaf of its clap tree) appears in the operating guide.
#[test]
fn every_verb_is_in_the_operating_guide() {
    use clap::CommandFactory;
    fn leaves(cmd: &clap::Command, path: String, out: &mut Vec<String>) {
        let subs: Vec<_> = cmd
            .get_subcommands()
            .filter(|c| c.get_name() != "help")
            .collect();
        for sub in &subs {
            leaves(sub, format!("{path} {}", sub.get_name()), out);
        }
        if subs.is_empty() {
            out.push(path);
        }
    }
    let mut verbs = Vec::new();
    leaves(
        &tracemeter_cli::Cli::command(),
        "tracemeter".into(),
        &mut verbs,
    );
    let guide = std::fs::read_to_string(repo_root().join("docs/operating.md")).unwrap();
    let missing: Vec<_> = verbs
        .iter()
        .filter(|v| !guide.contains(v.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/operating.md does not show {missing:?}"
    );
    assert!(verbs.len() >= 15, "{verbs:?}");
}

/// GitHub's anchor of a heading.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            out.insert(slug(line.trim_start_matches('#')));
        }
    }
    out
}

/// Every relative link of the README and docs/ names a file that exists (and a heading of it,
/// when it has an anchor); the README is a first page, at most 300 lines.
#[test]
fn links_resolve_and_the_readme_is_a_first_page() {
    let root = repo_root();
    let mut pages = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
    let mut broken = Vec::new();
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        for (i, _) in text.match_indices("](") {
            let rest = &text[i + 2..];
            let Some(close) = rest.find(')') else {
                continue;
            };
            let target = &rest[..close];
            if target.contains("://") || target.starts_with("mailto:") || target.contains(' ') {
                continue;
            }
            let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
            let file_path = if file.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap().join(file)
            };
            if !file_path.exists() {
                broken.push(format!("{}: {target}", page.display()));
                continue;
            }
            if !anchor.is_empty() && file_path.extension().is_some_and(|e| e == "md") {
                let linked = std::fs::read_to_string(&file_path).unwrap();
                if !anchors(&linked).contains(anchor) {
                    broken.push(format!("{}: {target} (no such heading)", page.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links: {broken:#?}");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(
        lines <= 300,
        "README.md has {lines} lines; the manual belongs in docs/"
    );
}
