//! `template.yaml`, parsed, and the values of its intrinsic functions (`Ref`, `GetAtt`, `Sub`)
//! in the local stack.

use super::{ACCOUNT_ID, REGION, template_path};
use anyhow::{Context, Result, anyhow, bail};
use serde_yaml::Value;
use std::collections::BTreeMap;

/// `template.yaml`, parsed. CloudFormation short tags (`!Ref`, `!GetAtt`, `!Sub`, ...) are
/// kept as YAML tagged values; the long forms (`Ref`, `Fn::GetAtt`, `Fn::Sub`) work as well.
#[derive(Debug, Clone)]
pub struct Template {
    root: Value,
}

/// The SQS event source of a function, as the template defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqsEventSource {
    /// Logical id of the event (key under `Events`).
    pub event_id: String,
    /// Logical id of the queue (`Queue: !GetAtt <id>.Arn`).
    pub queue_logical_id: String,
    pub batch_size: i32,
    pub maximum_batching_window_seconds: i32,
    /// `FunctionResponseTypes` contains `ReportBatchItemFailures`.
    pub report_batch_item_failures: bool,
    /// `ScalingConfig.MaximumConcurrency`, if set.
    pub maximum_concurrency: Option<i32>,
}

impl Template {
    /// Reads and parses `<repo>/template.yaml`.
    pub fn load() -> Result<Template> {
        let path = template_path();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Template::parse(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Parses a template from YAML text.
    pub fn parse(yaml: &str) -> Result<Template> {
        let root: Value = serde_yaml::from_str(yaml)?;
        if root.get("Resources").and_then(Value::as_mapping).is_none() {
            bail!("the template has no Resources mapping");
        }
        Ok(Template { root })
    }

    /// `(logical id, resource)` of every resource of `type_name`, in template order.
    pub fn resources_of_type<'a>(&'a self, type_name: &'a str) -> Vec<(&'a str, &'a Value)> {
        self.resources()
            .filter(|(_, r)| r.get("Type").and_then(Value::as_str) == Some(type_name))
            .collect()
    }

    fn resources(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.root
            .get("Resources")
            .and_then(Value::as_mapping)
            .into_iter()
            .flat_map(|m| m.iter())
            .filter_map(|(k, v)| Some((k.as_str()?, v)))
    }

    fn resource(&self, logical_id: &str) -> Result<&Value> {
        self.root
            .get("Resources")
            .and_then(|r| r.get(logical_id))
            .ok_or_else(|| anyhow!("template has no resource {logical_id}"))
    }

    /// A serverless function's property, falling back to `Globals.Function`.
    fn function_property(&self, function: &str, name: &str) -> Result<Option<&Value>> {
        let own = self
            .resource(function)?
            .get("Properties")
            .and_then(|p| p.get(name));
        let global = self
            .root
            .get("Globals")
            .and_then(|g| g.get("Function"))
            .and_then(|f| f.get(name));
        Ok(own.or(global))
    }

    /// The function's memory in MB (its own or `Globals.Function.MemorySize`; Lambda's
    /// default is 128).
    pub fn function_memory_mb(&self, function: &str) -> Result<i32> {
        match self.function_property(function, "MemorySize")? {
            Some(v) => int_value(v).context("MemorySize"),
            None => Ok(128),
        }
    }

    /// The function's timeout in seconds (its own or `Globals.Function.Timeout`; Lambda's
    /// default is 3).
    pub fn function_timeout(&self, function: &str) -> Result<i32> {
        match self.function_property(function, "Timeout")? {
            Some(v) => int_value(v).context("Timeout"),
            None => Ok(3),
        }
    }

    /// The function's environment variables as written in the template (own over `Globals`),
    /// values still unresolved.
    pub fn function_env(&self, function: &str) -> Result<BTreeMap<String, Value>> {
        let mut out = BTreeMap::new();
        let global = self
            .root
            .get("Globals")
            .and_then(|g| g.get("Function"))
            .and_then(|f| f.get("Environment"))
            .and_then(|e| e.get("Variables"));
        let own = self
            .resource(function)?
            .get("Properties")
            .and_then(|p| p.get("Environment"))
            .and_then(|e| e.get("Variables"));
        for vars in [global, own].into_iter().flatten() {
            for (k, v) in vars.as_mapping().into_iter().flatten() {
                if let Some(k) = k.as_str() {
                    out.insert(k.to_string(), v.clone());
                }
            }
        }
        Ok(out)
    }

    /// The (single) SQS event source of `function`.
    pub fn sqs_event_source(&self, function: &str) -> Result<SqsEventSource> {
        let events = self
            .resource(function)?
            .get("Properties")
            .and_then(|p| p.get("Events"))
            .and_then(Value::as_mapping)
            .ok_or_else(|| anyhow!("{function} has no Events"))?;
        let mut found = events
            .iter()
            .filter(|(_, e)| e.get("Type").and_then(Value::as_str) == Some("SQS"));
        let (id, event) = found
            .next()
            .ok_or_else(|| anyhow!("{function} has no SQS event"))?;
        if found.next().is_some() {
            bail!("{function} has more than one SQS event; the local stack plays one");
        }
        let event_id = id.as_str().unwrap_or_default().to_string();
        let props = event
            .get("Properties")
            .ok_or_else(|| anyhow!("{function} event {event_id} has no Properties"))?;
        let queue = props
            .get("Queue")
            .ok_or_else(|| anyhow!("{function} event {event_id} has no Queue"))?;
        let queue_logical_id = match intrinsic(queue) {
            Some(("Fn::GetAtt", arg)) => {
                let (res, attr) = getatt_parts(arg)?;
                if attr != "Arn" {
                    bail!("{function} event {event_id}: Queue must be !GetAtt <queue>.Arn");
                }
                res
            }
            _ => bail!("{function} event {event_id}: Queue must be !GetAtt <queue>.Arn"),
        };
        let int_prop = |name: &str, default: i32| -> Result<i32> {
            props
                .get(name)
                .map(|v| {
                    self.int_or_ref(v)
                        .with_context(|| format!("{event_id}.{name}"))
                })
                .unwrap_or(Ok(default))
        };
        Ok(SqsEventSource {
            event_id: event_id.clone(),
            queue_logical_id,
            // Lambda's defaults for SQS event sources.
            batch_size: int_prop("BatchSize", 10)?,
            maximum_batching_window_seconds: int_prop("MaximumBatchingWindowInSeconds", 0)?,
            report_batch_item_failures: props
                .get("FunctionResponseTypes")
                .and_then(Value::as_sequence)
                .is_some_and(|s| {
                    s.iter()
                        .any(|t| t.as_str() == Some("ReportBatchItemFailures"))
                }),
            maximum_concurrency: props
                .get("ScalingConfig")
                .and_then(|s| s.get("MaximumConcurrency"))
                .map(int_value)
                .transpose()
                .context("ScalingConfig.MaximumConcurrency")?,
        })
    }

    /// A literal integer, or a `!Ref` to a parameter with an integer default.
    fn int_or_ref(&self, value: &Value) -> Result<i32> {
        match intrinsic(value) {
            Some(("Ref", Value::String(name))) => {
                let default = self
                    .parameter_default(name)
                    .ok_or_else(|| anyhow!("parameter {name} has no default"))?;
                int_value(&Value::String(default))
            }
            _ => int_value(value),
        }
    }

    /// A parameter's `Default`, as a string.
    pub fn parameter_default(&self, name: &str) -> Option<String> {
        let default = self
            .root
            .get("Parameters")
            .and_then(|p| p.get(name))
            .and_then(|p| p.get("Default"))?;
        scalar_string(default)
    }
}

/// Recognises an intrinsic function in short (`!Ref x`) or long (`{Ref: x}`) form and returns
/// its long name (`Ref`, `Fn::GetAtt`, `Fn::Sub`, ...) and argument.
pub fn intrinsic(value: &Value) -> Option<(&str, &Value)> {
    match value {
        Value::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let name = match tag.trim_start_matches('!') {
                "Ref" => "Ref",
                "Condition" => "Condition",
                "GetAtt" => "Fn::GetAtt",
                "Sub" => "Fn::Sub",
                "Join" => "Fn::Join",
                "If" => "Fn::If",
                "Select" => "Fn::Select",
                "Split" => "Fn::Split",
                "ImportValue" => "Fn::ImportValue",
                "FindInMap" => "Fn::FindInMap",
                "Base64" => "Fn::Base64",
                "GetAZs" => "Fn::GetAZs",
                "Equals" => "Fn::Equals",
                "Not" => "Fn::Not",
                "And" => "Fn::And",
                "Or" => "Fn::Or",
                _ => return None,
            };
            Some((name, &tagged.value))
        }
        Value::Mapping(m) if m.len() == 1 => {
            let (k, v) = m.iter().next()?;
            let k = k.as_str()?;
            (k == "Ref" || k.starts_with("Fn::")).then_some((k, v))
        }
        _ => None,
    }
}

/// `!GetAtt Res.Attr` or `Fn::GetAtt: [Res, Attr]` -> (Res, Attr).
fn getatt_parts(arg: &Value) -> Result<(String, String)> {
    match arg {
        Value::String(s) => s
            .split_once('.')
            .map(|(r, a)| (r.to_string(), a.to_string()))
            .ok_or_else(|| anyhow!("GetAtt {s:?} is not <resource>.<attribute>")),
        Value::Sequence(seq) if seq.len() == 2 => match (seq[0].as_str(), seq[1].as_str()) {
            (Some(r), Some(a)) => Ok((r.to_string(), a.to_string())),
            _ => bail!("GetAtt {seq:?} is not [resource, attribute]"),
        },
        other => bail!("GetAtt {other:?} is not supported"),
    }
}

fn scalar_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

pub(super) fn int_value(value: &Value) -> Result<i32> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .ok_or_else(|| anyhow!("{n} is not a 32-bit integer")),
        Value::String(s) => s
            .trim()
            .parse()
            .with_context(|| format!("{s:?} is not an integer")),
        other => bail!("{other:?} is not a literal integer"),
    }
}

pub(super) fn bool_value(value: &Value) -> Result<bool> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        other => bail!("{other:?} is not a literal boolean"),
    }
}

/// What `Ref` / `GetAtt` / `${...}` resolve to in the local stack.
#[derive(Debug, Default)]
pub(super) struct Resolver {
    pub(super) prefix: String,
    /// logical id -> attribute ("Ref", "Arn", "QueueName", ...) -> value
    pub(super) attributes: BTreeMap<String, BTreeMap<String, String>>,
}

impl Resolver {
    fn lookup(&self, template: &Template, name: &str) -> Result<String> {
        let (res, attr) = name.split_once('.').unwrap_or((name, "Ref"));
        match name {
            "AWS::StackName" => return Ok(self.prefix.clone()),
            "AWS::Region" => return Ok(REGION.to_string()),
            "AWS::AccountId" => return Ok(ACCOUNT_ID.to_string()),
            "AWS::Partition" => return Ok("aws".to_string()),
            "AWS::URLSuffix" => return Ok("amazonaws.com".to_string()),
            _ => {}
        }
        if let Some(v) = self.attributes.get(res).and_then(|a| a.get(attr)) {
            return Ok(v.clone());
        }
        if attr == "Ref"
            && let Some(default) = template.parameter_default(res)
        {
            return Ok(default);
        }
        bail!("cannot resolve {name} in the local stack (not created yet, or unsupported)")
    }

    /// Resolves a literal, `!Ref`, `!GetAtt` or `!Sub` (string form) to a string.
    pub(super) fn string(&self, template: &Template, value: &Value) -> Result<String> {
        if let Some(s) = scalar_string(value) {
            return Ok(s);
        }
        match intrinsic(value) {
            Some(("Ref", Value::String(name))) => self.lookup(template, name),
            Some(("Fn::GetAtt", arg)) => {
                let (res, attr) = getatt_parts(arg)?;
                self.lookup(template, &format!("{res}.{attr}"))
            }
            Some(("Fn::Sub", Value::String(text))) => self.substitute(template, text),
            _ => bail!("unsupported value {value:?} in the local stack"),
        }
    }

    fn substitute(&self, template: &Template, text: &str) -> Result<String> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            if let Some(literal) = after.strip_prefix('!') {
                // `${!Literal}` stands for the text `${Literal}`.
                out.push_str("${");
                rest = literal;
                continue;
            }
            let end = after
                .find('}')
                .ok_or_else(|| anyhow!("unclosed ${{ in Sub {text:?}"))?;
            out.push_str(&self.lookup(template, &after[..end])?);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::stack::PROCESS_FUNCTION;

    #[test]
    fn template_event_source_is_read() {
        let t = Template::load().unwrap();
        let source = t.sqs_event_source(PROCESS_FUNCTION).unwrap();
        assert_eq!(source.queue_logical_id, "MeterQueue");
        assert_eq!(source.batch_size, 100, "ProcessBatchSize's default");
        assert_eq!(source.maximum_batching_window_seconds, 5);
        assert!(source.report_batch_item_failures);
        assert_eq!(source.maximum_concurrency, Some(5));
        assert_eq!(t.function_timeout(PROCESS_FUNCTION).unwrap(), 30);
        let env = t.function_env(PROCESS_FUNCTION).unwrap();
        for name in [
            "LANGFUSE_BASE_URL",
            "LANGFUSE_SECRET_ARN",
            "LANGFUSE_API",
            "STRIPE_SECRET_ARN",
            "STRIPE_METER_EVENT_NAME",
            "TABLE_NAME",
            "QUEUE_URL",
            "CREDIT_PRICE_USD",
            "MARGIN",
            "COMPUTE_USD_PER_MINUTE",
            "DEFAULT_BUDGET_LIMIT",
            "DEFAULT_BUDGET_PERIOD",
            "DEFAULT_BUDGET_MODE",
            "RUST_LOG",
        ] {
            assert!(env.contains_key(name), "template misses {name}");
        }
        assert!(
            !env.contains_key("SETTLE_SECONDS"),
            "the process function does not read SETTLE_SECONDS"
        );
        let ingest = t.function_env("IngestFunction").unwrap();
        assert!(
            ingest.contains_key("SETTLE_SECONDS"),
            "ingest settles usage"
        );
    }

    #[test]
    fn sub_and_refs_resolve() {
        let t = Template::parse(
            "Parameters:\n  P:\n    Type: String\n    Default: dflt\nResources:\n  Q:\n    Type: AWS::SQS::Queue\n",
        )
        .unwrap();
        let r = Resolver {
            prefix: "pre".into(),
            attributes: BTreeMap::from([(
                "Q".to_string(),
                BTreeMap::from([("Arn".to_string(), "arn:q".to_string())]),
            )]),
        };
        let v: Value =
            serde_yaml::from_str("!Sub \"${AWS::StackName}-x-${P}-${Q.Arn}-${!Lit}\"").unwrap();
        assert_eq!(r.string(&t, &v).unwrap(), "pre-x-dflt-arn:q-${Lit}");
        let v: Value = serde_yaml::from_str("!GetAtt Q.Arn").unwrap();
        assert_eq!(r.string(&t, &v).unwrap(), "arn:q");
        let v: Value = serde_yaml::from_str("{\"Fn::GetAtt\": [Q, Arn]}").unwrap();
        assert_eq!(r.string(&t, &v).unwrap(), "arn:q");
        let v: Value = serde_yaml::from_str("!Ref P").unwrap();
        assert_eq!(r.string(&t, &v).unwrap(), "dflt");
        let v: Value = serde_yaml::from_str("!Ref Missing").unwrap();
        assert!(r.string(&t, &v).is_err());
    }
}
