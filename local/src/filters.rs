//! Event filtering of an event source mapping (`FilterCriteria`), as
//! <https://docs.aws.amazon.com/lambda/latest/dg/invocation-eventfiltering.html>
//! defines it: a record is delivered if any filter's pattern matches it; a
//! pattern matches if every field it names matches, a field's list of
//! conditions matches if any one does, and a field holding a list matches if
//! any of its elements does. The conditions played: exact values, `prefix`,
//! `suffix`, `anything-but` and `exists`. Any other is refused when the stack
//! starts, never passed over.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub struct FilterPattern(Value);

impl FilterPattern {
    /// Parses one filter's `Pattern` (a JSON string in the template).
    pub fn parse(text: &str) -> Result<Self, String> {
        let pattern: Value =
            serde_json::from_str(text).map_err(|e| format!("filter pattern is not JSON: {e}"))?;
        check(&pattern, "")?;
        Ok(FilterPattern(pattern))
    }

    pub fn matches(&self, record: &Value) -> bool {
        matches_object(&self.0, record)
    }

    /// The top-level keys the pattern names.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0
            .as_object()
            .into_iter()
            .flat_map(|o| o.keys().map(String::as_str))
    }
}

fn check(pattern: &Value, at: &str) -> Result<(), String> {
    let Value::Object(fields) = pattern else {
        return Err(format!("filter pattern{at} must be an object"));
    };
    for (key, value) in fields {
        let at = format!("{at}.{key}");
        match value {
            Value::Object(_) => check(value, &at)?,
            Value::Array(conditions) => {
                for condition in conditions {
                    check_condition(condition, &at)?;
                }
            }
            _ => return Err(format!("filter pattern{at}: expected an object or a list")),
        }
    }
    Ok(())
}

fn check_condition(condition: &Value, at: &str) -> Result<(), String> {
    match condition {
        Value::String(_) | Value::Number(_) | Value::Bool(_) | Value::Null => Ok(()),
        Value::Object(op) if op.len() == 1 => {
            let (name, arg) = op.iter().next().expect("one entry");
            match (name.as_str(), arg) {
                ("prefix" | "suffix", Value::String(_)) | ("exists", Value::Bool(_)) => Ok(()),
                ("anything-but", Value::String(_) | Value::Number(_) | Value::Array(_)) => Ok(()),
                _ => Err(format!(
                    "filter pattern{at}: the condition {condition} is not played by the local stack (values, prefix, suffix, anything-but and exists are)"
                )),
            }
        }
        other => Err(format!("filter pattern{at}: {other} is not a condition")),
    }
}

fn matches_object(pattern: &Value, record: &Value) -> bool {
    let Value::Object(fields) = pattern else {
        return false;
    };
    fields.iter().all(|(key, expected)| {
        let actual = record.get(key);
        match expected {
            Value::Object(_) => actual.is_some_and(|a| matches_object(expected, a)),
            Value::Array(conditions) => conditions.iter().any(|c| matches_condition(c, actual)),
            _ => false,
        }
    })
}

fn matches_condition(condition: &Value, actual: Option<&Value>) -> bool {
    if let Value::Object(op) = condition
        && let Some(Value::Bool(wanted)) = op.get("exists")
    {
        return actual.is_some() == *wanted;
    }
    let Some(actual) = actual else {
        return false;
    };
    // A list in the record matches if any element does.
    if let Value::Array(elements) = actual {
        return elements
            .iter()
            .any(|e| matches_condition(condition, Some(e)));
    }
    match condition {
        Value::Object(op) => match op.iter().next() {
            Some((name, Value::String(s))) if name == "prefix" => {
                actual.as_str().is_some_and(|a| a.starts_with(s.as_str()))
            }
            Some((name, Value::String(s))) if name == "suffix" => {
                actual.as_str().is_some_and(|a| a.ends_with(s.as_str()))
            }
            Some((name, excluded)) if name == "anything-but" => match excluded {
                Value::Array(values) => !values.contains(actual),
                value => value != actual,
            },
            _ => false,
        },
        value => value == actual,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_templates_stream_filter_picks_new_deployment_states() {
        let filter = FilterPattern::parse(r#"{"eventName": ["INSERT"], "dynamodb": {"Keys": {"pk": {"S": [{"prefix": "DEPLOY#"}]}, "sk": {"S": ["STATE"]}}}}"#).unwrap();
        let record = |event: &str, pk: &str, sk: &str| json!({"eventName": event, "dynamodb": {"Keys": {"pk": {"S": pk}, "sk": {"S": sk}}}});
        assert!(filter.matches(&record("INSERT", "DEPLOY#d-1", "STATE")));
        assert!(!filter.matches(&record("MODIFY", "DEPLOY#d-1", "STATE")));
        assert!(!filter.matches(&record("INSERT", "EXEC#e-1", "STATE")));
        assert!(!filter.matches(&record("INSERT", "DEPLOY#d-1", "EVENT#1")));
        assert!(
            !filter.matches(&json!({"eventName": "INSERT"})),
            "a field the record lacks"
        );
    }

    #[test]
    fn conditions_follow_lambdas_rules() {
        let f = |p: &str| FilterPattern::parse(p).unwrap();
        assert!(f(r#"{"a": [{"suffix": ".zip"}]}"#).matches(&json!({"a": "x.zip"})));
        assert!(f(r#"{"a": [{"anything-but": ["x", "y"]}]}"#).matches(&json!({"a": "z"})));
        assert!(!f(r#"{"a": [{"anything-but": "x"}]}"#).matches(&json!({"a": "x"})));
        assert!(f(r#"{"a": [{"exists": false}]}"#).matches(&json!({"b": 1})));
        assert!(!f(r#"{"a": [{"exists": true}]}"#).matches(&json!({"b": 1})));
        assert!(
            f(r#"{"a": [1, 2]}"#).matches(&json!({"a": [3, 2]})),
            "any element of a list"
        );
        for refused in [
            r#"{"a": [{"numeric": [">", 1]}]}"#,
            r#"{"a": "x"}"#,
            r#"["a"]"#,
            "not json",
        ] {
            assert!(FilterPattern::parse(refused).is_err(), "{refused}");
        }
    }
}
