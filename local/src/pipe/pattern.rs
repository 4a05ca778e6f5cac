//! What the pipe emulator needs of EventBridge's languages: event patterns (the pipe's filter
//! criteria and the rules' patterns: exact values, `prefix`, `exists`), JSON paths
//! (`$.a.b.c`), and Pipes input templates (`<$.path>` inside or outside a JSON string).
//! Anything else is refused, so a template that grows past this subset fails loudly.

use anyhow::{Result, anyhow, bail};
use serde_json::Value;

/// Whether `event` matches the event pattern `pattern`.
pub fn matches(pattern: &Value, event: &Value) -> Result<bool> {
    field_matches(pattern, Some(event))
}

fn field_matches(pattern: &Value, value: Option<&Value>) -> Result<bool> {
    match pattern {
        Value::Object(fields) => {
            if value.is_some_and(|v| !v.is_object()) {
                return Ok(false);
            }
            for (name, sub) in fields {
                if !field_matches(sub, value.and_then(|v| v.get(name)))? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        Value::Array(leaves) => {
            for leaf in leaves {
                if leaf_matches(leaf, value)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        other => bail!("a pattern's values are objects or arrays, not {other}"),
    }
}

fn leaf_matches(leaf: &Value, value: Option<&Value>) -> Result<bool> {
    match leaf {
        Value::Object(op) if op.len() == 1 => match op.iter().next() {
            Some((name, Value::String(prefix))) if name == "prefix" => Ok(value
                .and_then(Value::as_str)
                .is_some_and(|s| s.starts_with(prefix))),
            Some((name, Value::Bool(exists))) if name == "exists" => Ok(value.is_some() == *exists),
            _ => bail!("pattern operator {leaf} is not supported by the local pipe"),
        },
        Value::Object(_) | Value::Array(_) => bail!("pattern value {leaf} is not supported"),
        scalar => Ok(match value {
            Some(Value::Array(items)) => items.contains(scalar),
            Some(v) => v == scalar,
            None => false,
        }),
    }
}

/// The value at a JSON path of dot notation (`$.dynamodb.NewImage.used.N`).
pub fn path<'a>(event: &'a Value, path: &str) -> Result<&'a Value> {
    let rest = path
        .strip_prefix('$')
        .ok_or_else(|| anyhow!("JSON path {path:?} does not start with $"))?;
    let mut at = event;
    for name in rest.split('.').skip(1) {
        if name.is_empty() || name.contains(['[', '*']) {
            bail!("JSON path {path:?}: only dot notation is supported by the local pipe");
        }
        at = at
            .get(name)
            .ok_or_else(|| anyhow!("JSON path {path:?}: no {name:?} in the event"))?;
    }
    Ok(at)
}

/// Renders a Pipes input template on `event`: each `<$.path>` inside a JSON string becomes
/// the value's text (escaped), outside one the value's JSON. The result must be JSON.
pub fn render(template: &str, event: &Value) -> Result<Value> {
    let mut out = String::with_capacity(template.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = template;
    while let Some(c) = rest.chars().next() {
        if c == '<' && rest.starts_with("<$") {
            let end = rest
                .find('>')
                .ok_or_else(|| anyhow!("unclosed <$ in the input template"))?;
            let value = path(event, &rest[1..end])?;
            out.push_str(&placeholder(value, in_string)?);
            rest = &rest[end + 1..];
            continue;
        }
        if in_string && !escaped && c == '"' {
            in_string = false;
        } else if !in_string && c == '"' {
            in_string = true;
        }
        escaped = in_string && !escaped && c == '\\';
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    serde_json::from_str(&out).map_err(|e| anyhow!("the rendered input template {out:?}: {e}"))
}

fn placeholder(value: &Value, in_string: bool) -> Result<String> {
    if !in_string {
        return Ok(value.to_string());
    }
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let quoted = serde_json::to_string(&text)?;
    Ok(quoted[1..quoted.len() - 1].to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(pk: &str, detail_type: Option<&str>, name: &str) -> Value {
        let mut image = json!({"pk": {"S": pk}, "used": {"N": "150"}, "note": {"S": "a \"b\""}});
        if let Some(d) = detail_type {
            image["detail_type"] = json!({"S": d});
        }
        json!({"eventName": name, "dynamodb": {"Keys": {"pk": {"S": pk}}, "NewImage": image}})
    }

    #[test]
    fn patterns_match_values_prefixes_and_existence() {
        let p = json!({"eventName": ["INSERT"],
            "dynamodb": {"Keys": {"pk": {"S": [{"prefix": "BUDGET#"}]}},
            "NewImage": {"detail_type": {"S": [{"prefix": "Budget "}]}}}});
        let yes = record("BUDGET#c", Some("Budget Limit Reached"), "INSERT");
        assert!(matches(&p, &yes).unwrap());
        assert!(!matches(&p, &record("BUDGET#c", Some("Budget x"), "MODIFY")).unwrap());
        assert!(!matches(&p, &record("TRACE#t", Some("Budget x"), "INSERT")).unwrap());
        assert!(!matches(&p, &record("BUDGET#c", None, "INSERT")).unwrap());
        let absent = json!({"dynamodb": {"NewImage": {"detail_type": [{"exists": false}]}}});
        assert!(matches(&absent, &record("BUDGET#c", None, "INSERT")).unwrap());
        assert!(!matches(&absent, &yes).unwrap());
        let list = json!({"source": ["tracemeter"], "detail-type": ["A", "B"]});
        assert!(matches(&list, &json!({"source": "tracemeter", "detail-type": "B"})).unwrap());
        assert!(!matches(&list, &json!({"source": "tracemeter", "detail-type": "C"})).unwrap());
        assert!(matches(&json!({"x": [{"numeric": [">", 1]}]}), &yes).is_err());
    }

    #[test]
    fn templates_quote_inside_strings_and_paths_read_dot_notation() {
        let event = record("BUDGET#c", Some("Budget Limit Reached"), "INSERT");
        let t = r#"{"used": "<$.dynamodb.NewImage.used.N>", "raw": <$.dynamodb.NewImage.used>,
            "note": "<$.dynamodb.NewImage.note.S>", "lit": "a <b> \" c"}"#;
        let out = render(t, &event).unwrap();
        assert_eq!(out["used"], "150");
        assert_eq!(out["raw"], json!({"N": "150"}));
        assert_eq!(out["note"], "a \"b\"");
        assert_eq!(out["lit"], "a <b> \" c");
        assert!(render(r#"{"x": "<$.dynamodb.Nope.S>"}"#, &event).is_err());
        assert_eq!(
            path(&event, "$.dynamodb.NewImage.detail_type.S").unwrap(),
            "Budget Limit Reached"
        );
        assert!(path(&event, "$.dynamodb.Keys[0]").is_err());
    }
}
