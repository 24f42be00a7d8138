//! Identity-based policy evaluation, as IAM does it for a request made within
//! one account: an explicit `Deny` wins, then any `Allow`, and otherwise the
//! request is denied ("implicit deny").
//! <https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html>

use serde_json::Value;

/// One statement of a policy document, parsed strictly: an element IAM does
/// not define is refused, so a typo cannot widen or narrow what is allowed.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub sid: Option<String>,
    pub allow: bool,
    actions: Patterns,
    resources: Patterns,
    /// sluice-local evaluates no condition keys. An `Allow` with a condition
    /// is taken as not applying and a `Deny` with one as applying, so the
    /// local answer is never kinder than AWS's.
    conditional: bool,
}

/// `Action` or `NotAction` (`Resource` or `NotResource`): a list of patterns
/// where `*` matches any run of characters and `?` any one.
#[derive(Debug, Clone, PartialEq)]
struct Patterns {
    negated: bool,
    patterns: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// No statement allows the request.
    ImplicitDeny,
    /// A `Deny` statement matches it.
    ExplicitDeny,
}

const STATEMENT_ELEMENTS: [&str; 8] = [
    "Sid",
    "Effect",
    "Action",
    "NotAction",
    "Resource",
    "NotResource",
    "Condition",
    "Principal",
];

/// The statements of one policy document (`{"Version": ..., "Statement": ...}`).
pub fn parse_document(document: &Value) -> Result<Vec<Statement>, String> {
    let object = document
        .as_object()
        .ok_or("a policy document must be a JSON object")?;
    if let Some(unknown) = object
        .keys()
        .find(|k| !matches!(k.as_str(), "Version" | "Id" | "Statement"))
    {
        return Err(format!("unknown policy element {unknown:?}"));
    }
    match object.get("Statement") {
        Some(Value::Array(items)) => items.iter().map(parse_statement).collect(),
        Some(single @ Value::Object(_)) => Ok(vec![parse_statement(single)?]),
        _ => Err("a policy document needs a Statement (an object or a list)".into()),
    }
}

fn parse_statement(value: &Value) -> Result<Statement, String> {
    let object = value
        .as_object()
        .ok_or("a statement must be a JSON object")?;
    if let Some(unknown) = object
        .keys()
        .find(|k| !STATEMENT_ELEMENTS.contains(&k.as_str()))
    {
        return Err(format!("unknown statement element {unknown:?}"));
    }
    if object.contains_key("Principal") {
        return Err("an identity-based policy cannot name a Principal".into());
    }
    let sid = object.get("Sid").and_then(Value::as_str).map(str::to_owned);
    let allow = match object.get("Effect").and_then(Value::as_str) {
        Some("Allow") => true,
        Some("Deny") => false,
        other => return Err(format!("Effect must be Allow or Deny, not {other:?}")),
    };
    let actions = patterns(object, "Action", "NotAction")?;
    let resources = patterns(object, "Resource", "NotResource")?;
    Ok(Statement {
        sid,
        allow,
        actions,
        resources,
        conditional: object.contains_key("Condition"),
    })
}

fn patterns(
    object: &serde_json::Map<String, Value>,
    positive: &str,
    negative: &str,
) -> Result<Patterns, String> {
    let (negated, value) = match (object.get(positive), object.get(negative)) {
        (Some(v), None) => (false, v),
        (None, Some(v)) => (true, v),
        (Some(_), Some(_)) => {
            return Err(format!(
                "a statement has {positive} or {negative}, not both"
            ));
        }
        (None, None) => return Err(format!("a statement needs {positive} or {negative}")),
    };
    let patterns = match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("{positive} entries must be strings, not {v}"))
            })
            .collect::<Result<_, _>>()?,
        other => {
            return Err(format!(
                "{positive} must be a string or a list, not {other}"
            ));
        }
    };
    Ok(Patterns { negated, patterns })
}

impl Patterns {
    fn matches(&self, value: &str, ignore_case: bool) -> bool {
        let any = self
            .patterns
            .iter()
            .any(|p| wildcard_match(p, value, ignore_case));
        any != self.negated
    }
}

impl Statement {
    /// Whether the statement speaks of this action on this resource. Action
    /// names are case-insensitive in IAM; resource ARNs are not.
    fn applies(&self, action: &str, resource: &str) -> bool {
        self.actions.matches(action, true) && self.resources.matches(resource, false)
    }
}

/// IAM's decision for one action on one resource.
pub fn decide(statements: &[Statement], action: &str, resource: &str) -> Decision {
    let applying = statements.iter().filter(|s| s.applies(action, resource));
    let mut allowed = false;
    for statement in applying {
        if !statement.allow {
            return Decision::ExplicitDeny;
        }
        allowed |= !statement.conditional;
    }
    if allowed {
        Decision::Allowed
    } else {
        Decision::ImplicitDeny
    }
}

/// IAM's wildcards: `*` any run of characters (`:` and `/` included), `?` one.
fn wildcard_match(pattern: &str, value: &str, ignore_case: bool) -> bool {
    let fold = |s: &str| -> Vec<char> {
        if ignore_case {
            s.to_lowercase().chars().collect()
        } else {
            s.chars().collect()
        }
    };
    let (p, v) = (fold(pattern), fold(value));
    // Iterative matching with backtracking to the last `*`: linear for the
    // patterns policies use, with no recursion.
    let (mut pi, mut vi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while vi < v.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == v[vi]) {
            pi += 1;
            vi += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, vi));
            pi += 1;
        } else if let Some((star_p, star_v)) = star {
            pi = star_p + 1;
            vi = star_v + 1;
            star = Some((star_p, star_v + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn statements(doc: Value) -> Vec<Statement> {
        parse_document(&doc).expect("valid policy")
    }

    #[test]
    fn wildcards_are_iams() {
        assert!(wildcard_match(
            "arn:aws:s3:::b/*",
            "arn:aws:s3:::b/a/b/c",
            false
        ));
        assert!(wildcard_match(
            "sqs:SendMessage*",
            "sqs:sendmessagebatch",
            true
        ));
        assert!(!wildcard_match(
            "sqs:SendMessage*",
            "sqs:sendmessagebatch",
            false
        ));
        assert!(wildcard_match("function:app?", "function:app1", false));
        assert!(!wildcard_match("function:app?", "function:app", false));
        assert!(wildcard_match("*", "", false));
        assert!(!wildcard_match("function:app", "function:app:live", false));
        assert!(wildcard_match("a*b*c", "a-b-b-c", false));
        assert!(!wildcard_match("a*b*c", "a-b-b-d", false));
    }

    #[test]
    fn an_unqualified_function_arn_does_not_cover_its_aliases() {
        let s = statements(json!({"Statement": [{
            "Effect": "Allow", "Action": "lambda:InvokeFunction",
            "Resource": "arn:aws:lambda:us-east-1:123456789012:function:app"
        }]}));
        let f = "arn:aws:lambda:us-east-1:123456789012:function:app";
        assert_eq!(decide(&s, "lambda:InvokeFunction", f), Decision::Allowed);
        assert_eq!(
            decide(&s, "lambda:InvokeFunction", &format!("{f}:live")),
            Decision::ImplicitDeny
        );
        assert_eq!(decide(&s, "lambda:UpdateAlias", f), Decision::ImplicitDeny);
    }

    #[test]
    fn an_explicit_deny_wins_and_not_elements_invert() {
        let s = statements(json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "dynamodb:*", "Resource": "*"},
            {"Effect": "Deny", "NotAction": ["dynamodb:GetItem", "dynamodb:Query"],
             "Resource": "arn:aws:dynamodb:us-east-1:123456789012:table/Audit"}
        ]}));
        let audit = "arn:aws:dynamodb:us-east-1:123456789012:table/Audit";
        assert_eq!(decide(&s, "dynamodb:GetItem", audit), Decision::Allowed);
        assert_eq!(
            decide(&s, "dynamodb:PutItem", audit),
            Decision::ExplicitDeny
        );
        assert_eq!(
            decide(
                &s,
                "dynamodb:PutItem",
                "arn:aws:dynamodb:us-east-1:123456789012:table/T"
            ),
            Decision::Allowed
        );
        let only_elsewhere = statements(json!({"Statement": {
            "Effect": "Allow", "Action": "s3:GetObject", "NotResource": "arn:aws:s3:::secret/*"
        }}));
        assert_eq!(
            decide(&only_elsewhere, "s3:GetObject", "arn:aws:s3:::secret/k"),
            Decision::ImplicitDeny
        );
        assert_eq!(
            decide(&only_elsewhere, "S3:getobject", "arn:aws:s3:::public/k"),
            Decision::Allowed
        );
    }

    #[test]
    fn conditions_never_make_the_answer_kinder() {
        let s = statements(json!({"Statement": [
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*",
             "Condition": {"Bool": {"aws:SecureTransport": "true"}}}
        ]}));
        assert_eq!(
            decide(&s, "s3:GetObject", "arn:aws:s3:::b/k"),
            Decision::ImplicitDeny
        );
        let s = statements(json!({"Statement": [
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"},
            {"Effect": "Deny", "Action": "s3:GetObject", "Resource": "*",
             "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
        ]}));
        assert_eq!(
            decide(&s, "s3:GetObject", "arn:aws:s3:::b/k"),
            Decision::ExplicitDeny
        );
    }

    #[test]
    fn malformed_statements_are_refused_by_name() {
        let err = |doc: Value| parse_document(&doc).unwrap_err();
        assert!(
            err(json!({"Statement": [{"Effect": "Allow", "Actions": "s3:*", "Resource": "*"}]}))
                .contains("\"Actions\"")
        );
        assert!(
            err(json!({"Statement": [{"Effect": "allow", "Action": "s3:*", "Resource": "*"}]}))
                .contains("Effect")
        );
        assert!(
            err(json!({"Statement": [{"Effect": "Allow", "Action": "s3:*"}]})).contains("Resource")
        );
        assert!(err(json!({"Statement": [{"Effect": "Allow", "Action": "s3:*", "NotAction": "s3:Get*", "Resource": "*"}]})).contains("not both"));
        assert!(err(json!({"Statment": []})).contains("\"Statment\""));
    }
}
