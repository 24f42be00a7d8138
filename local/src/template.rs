//! Reads a SAM template so the local stack is wired from the same file that
//! `sam deploy` uses: which tables, queues and buckets exist, which functions run,
//! and which event sources feed them.
//!
//! Intrinsic functions are resolved the way CloudFormation would, for the subset
//! a Sluice template uses: `Ref`, `Fn::GetAtt`, `Fn::Sub`, `Fn::Join`, `Fn::Select`,
//! `Fn::If` and the pseudo parameters; `Conditions` decide which resources are
//! created. Anything else is an error that names where it was.

use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read template {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("template is not valid YAML: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    #[error("{at}: {message}")]
    Invalid { at: String, message: String },
}

fn invalid(at: impl Into<String>, message: impl Into<String>) -> TemplateError {
    TemplateError::Invalid {
        at: at.into(),
        message: message.into(),
    }
}

/// The stack's parameter values as CloudFormation takes them: a value given,
/// or the default; every parameter needs one, and a value must match the
/// declaration's `AllowedPattern` and `AllowedValues` (a stack with a value
/// that does not is refused before anything is created).
fn parameter_values(
    template: &Template,
    overrides: &HashMap<String, String>,
) -> Result<HashMap<String, Value>, TemplateError> {
    if let Some(unknown) = overrides
        .keys()
        .find(|k| !template.parameters.contains_key(*k))
    {
        return Err(invalid(
            format!("Parameters.{unknown}"),
            "the template declares no such parameter",
        ));
    }
    let mut values = HashMap::new();
    for (name, declaration) in &template.parameters {
        let at = format!("Parameters.{name}");
        let value = match (overrides.get(name), declaration.get("Default")) {
            (Some(given), _) => Value::String(given.clone()),
            (None, Some(default)) => default.clone(),
            (None, None) => return Err(invalid(at, "must have a value (it has no Default)")),
        };
        let text = match &value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if let Some(pattern) = declaration.get("AllowedPattern").and_then(Value::as_str) {
            let re = regex::Regex::new(pattern)
                .map_err(|e| invalid(&at, format!("AllowedPattern {pattern:?}: {e}")))?;
            // CloudFormation matches the whole value.
            if !re
                .find(&text)
                .is_some_and(|m| m.start() == 0 && m.end() == text.len())
            {
                let why = declaration
                    .get("ConstraintDescription")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                return Err(invalid(
                    at,
                    format!("{text:?} does not match {pattern:?}: {}", why.trim()),
                ));
            }
        }
        if let Some(allowed) = declaration.get("AllowedValues").and_then(Value::as_array) {
            let ok = allowed.iter().any(|a| match a {
                Value::String(s) => *s == text,
                Value::Number(n) => text.parse::<f64>().ok() == n.as_f64(),
                _ => false,
            });
            if !ok {
                return Err(invalid(at, format!("{text:?} is not one of {allowed:?}")));
            }
        }
        values.insert(name.clone(), value);
    }
    Ok(values)
}

/// A parsed template: resources with SAM's `Globals.Function` already merged in.
#[derive(Debug, Clone)]
pub struct Template {
    pub resources: BTreeMap<String, Resource>,
    /// Each parameter's declaration (`Type`, `Default`, `AllowedPattern`, ...).
    parameters: BTreeMap<String, Value>,
    /// Each condition's expression, by name.
    conditions: BTreeMap<String, Value>,
}

#[derive(Debug, Clone)]
pub struct Resource {
    pub logical_id: String,
    pub kind: String,
    pub properties: Value,
    pub metadata: Value,
    /// The condition it is created under, if any.
    pub condition: Option<String>,
}

impl Template {
    pub fn load(path: &Path) -> Result<Self, TemplateError> {
        let text = std::fs::read_to_string(path).map_err(|source| TemplateError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(text)?;
        let doc = to_json(yaml, "template")?;
        let function_globals = doc
            .pointer("/Globals/Function")
            .cloned()
            .unwrap_or_else(|| json!({}));
        let parameters = doc
            .get("Parameters")
            .and_then(Value::as_object)
            .map(|params| params.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let mut resources = BTreeMap::new();
        let raw = doc
            .get("Resources")
            .and_then(Value::as_object)
            .ok_or_else(|| invalid("Resources", "a template needs a Resources map"))?;
        for (logical_id, body) in raw {
            let at = format!("Resources.{logical_id}");
            let kind = body
                .get("Type")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(&at, "Type is missing"))?
                .to_owned();
            let mut properties = body.get("Properties").cloned().unwrap_or_else(|| json!({}));
            if kind == "AWS::Serverless::Function" {
                properties = merge_globals(&function_globals, properties);
            }
            resources.insert(
                logical_id.clone(),
                Resource {
                    logical_id: logical_id.clone(),
                    kind,
                    properties,
                    metadata: body.get("Metadata").cloned().unwrap_or_else(|| json!({})),
                    condition: body
                        .get("Condition")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                },
            );
        }
        let conditions: BTreeMap<String, Value> = doc
            .get("Conditions")
            .and_then(Value::as_object)
            .map(|c| c.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        if let Some((id, r)) = resources.iter().find(|(_, r)| {
            r.condition
                .as_ref()
                .is_some_and(|c| !conditions.contains_key(c))
        }) {
            return Err(invalid(
                format!("Resources.{id}.Condition"),
                format!("no condition {:?} is declared", r.condition),
            ));
        }
        Ok(Template {
            resources,
            parameters,
            conditions,
        })
    }

    /// A parameter's declaration (`Type`, `Default`, `AllowedPattern`, ...).
    pub fn parameter(&self, name: &str) -> Option<&Value> {
        self.parameters.get(name)
    }

    /// Logical ids in an order where every resource comes after those it refers to.
    pub fn creation_order(&self) -> Result<Vec<String>, TemplateError> {
        let deps: BTreeMap<&str, BTreeSet<String>> = self
            .resources
            .iter()
            .map(|(id, r)| {
                let mut refs = BTreeSet::new();
                references(&r.properties, &mut refs);
                refs.retain(|d| self.resources.contains_key(d) && d != id);
                (id.as_str(), refs)
            })
            .collect();
        let mut order = Vec::new();
        let mut placed = BTreeSet::new();
        while order.len() < deps.len() {
            let ready: Vec<&str> = deps
                .iter()
                .filter(|(id, d)| !placed.contains(**id) && d.iter().all(|x| placed.contains(x)))
                .map(|(id, _)| *id)
                .collect();
            if ready.is_empty() {
                let stuck: Vec<&str> = deps
                    .keys()
                    .filter(|id| !placed.contains(**id))
                    .copied()
                    .collect();
                return Err(invalid(
                    "Resources",
                    format!("circular references among {}", stuck.join(", ")),
                ));
            }
            for id in ready {
                placed.insert(id.to_owned());
                order.push(id.to_owned());
            }
        }
        Ok(order)
    }
}

/// SAM merges `Globals.Function` under each function: maps merge key by key
/// (so `Environment.Variables` combine), anything else the function sets wins.
fn merge_globals(globals: &Value, properties: Value) -> Value {
    match (globals, properties) {
        (Value::Object(g), Value::Object(mut p)) => {
            for (key, global) in g {
                let merged = match p.remove(key) {
                    Some(own) => merge_globals(global, own),
                    None => global.clone(),
                };
                p.insert(key.clone(), merged);
            }
            Value::Object(p)
        }
        (_, own) => own,
    }
}

/// Collects the logical ids a value refers to through Ref, GetAtt and Sub.
fn references(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) if map.len() == 1 => {
            let (key, arg) = map.iter().next().expect("one entry");
            match (key.as_str(), arg) {
                ("Ref", Value::String(name)) => {
                    out.insert(name.clone());
                }
                ("Fn::GetAtt", Value::Array(parts)) => {
                    if let Some(Value::String(name)) = parts.first() {
                        out.insert(name.clone());
                    }
                }
                ("Fn::Sub", sub) => {
                    let text = match sub {
                        Value::Array(parts) => parts.first().and_then(Value::as_str),
                        other => other.as_str(),
                    };
                    for var in text.map(sub_variables).unwrap_or_default() {
                        out.insert(var.split('.').next().unwrap_or_default().to_owned());
                    }
                    references(sub, out);
                }
                _ => references(arg, out),
            }
        }
        Value::Object(map) => map.values().for_each(|v| references(v, out)),
        Value::Array(items) => items.iter().for_each(|v| references(v, out)),
        _ => {}
    }
}

/// The `${...}` names in a `Fn::Sub` string (`${!Literal}` is not one).
fn sub_variables(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else { break };
        if !after.starts_with('!') {
            names.push(after[..end].trim().to_owned());
        }
        rest = &after[end + 1..];
    }
    names
}

/// Converts YAML to JSON, turning CloudFormation's short tags (`!Ref X`,
/// `!GetAtt A.B`, `!Sub ...`) into their long forms.
fn to_json(yaml: serde_yaml_ng::Value, at: &str) -> Result<Value, TemplateError> {
    use serde_yaml_ng::Value as Y;
    Ok(match yaml {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => serde_json::to_value(&n).map_err(|e| invalid(at, e.to_string()))?,
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| to_json(v, &format!("{at}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Y::Mapping(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                let key = match k {
                    Y::String(s) => s,
                    other => serde_yaml_ng::to_string(&other)?.trim().to_owned(),
                };
                let child = to_json(v, &format!("{at}.{key}"))?;
                out.insert(key, child);
            }
            Value::Object(out)
        }
        Y::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let name = tag.trim_start_matches('!');
            let inner = to_json(tagged.value, at)?;
            let long = match name {
                "Ref" | "Condition" => name.to_owned(),
                _ => format!("Fn::{name}"),
            };
            let arg = match (name, inner) {
                ("GetAtt", Value::String(dotted)) => {
                    let (res, attr) = dotted.split_once('.').ok_or_else(|| {
                        invalid(
                            at,
                            format!("!GetAtt {dotted} needs the form Resource.Attribute"),
                        )
                    })?;
                    json!([res, attr])
                }
                (_, inner) => inner,
            };
            json!({ long: arg })
        }
    })
}

/// What resolution needs to know of the stack being stood up.
#[derive(Debug, Clone)]
pub struct StackContext {
    pub stack_name: String,
    pub region: String,
    pub account_id: String,
    pub parameters: HashMap<String, Value>,
    /// `Ref` of each resource created so far.
    pub refs: HashMap<String, Value>,
    /// `Fn::GetAtt` of each resource created so far, by (logical id, attribute).
    pub attributes: HashMap<(String, String), Value>,
    /// Whether each condition holds, for the parameters given.
    pub conditions: HashMap<String, bool>,
}

impl StackContext {
    pub fn new(
        template: &Template,
        stack_name: &str,
        region: &str,
        account_id: &str,
        overrides: &HashMap<String, String>,
    ) -> Result<Self, TemplateError> {
        let mut ctx = StackContext {
            stack_name: stack_name.to_owned(),
            region: region.to_owned(),
            account_id: account_id.to_owned(),
            parameters: parameter_values(template, overrides)?,
            refs: HashMap::new(),
            attributes: HashMap::new(),
            conditions: HashMap::new(),
        };
        for name in template.conditions.keys() {
            let holds = ctx.truth(
                &json!({ "Condition": name }),
                &template.conditions,
                &format!("Conditions.{name}"),
                0,
            )?;
            ctx.conditions.insert(name.clone(), holds);
        }
        Ok(ctx)
    }

    /// Whether a resource is created: it has no condition, or its condition holds.
    pub fn creates(&self, resource: &Resource) -> bool {
        resource
            .condition
            .as_ref()
            .is_none_or(|c| self.conditions.get(c).copied().unwrap_or(false))
    }

    /// A condition's value: `Fn::Equals`, `Fn::Not`, `Fn::And`, `Fn::Or`
    /// and `Condition`, as CloudFormation evaluates them
    /// (<https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/intrinsic-function-reference-conditions.html>).
    fn truth(
        &self,
        expression: &Value,
        conditions: &BTreeMap<String, Value>,
        at: &str,
        depth: usize,
    ) -> Result<bool, TemplateError> {
        // `depth` counts the conditions named on the way here.
        if depth > conditions.len() {
            return Err(invalid(at, "conditions refer to each other in a circle"));
        }
        let Some((key, arg)) = expression
            .as_object()
            .filter(|m| m.len() == 1)
            .and_then(|m| m.iter().next())
        else {
            return Err(invalid(
                at,
                "a condition is one of Fn::Equals, Fn::Not, Fn::And, Fn::Or, Condition",
            ));
        };
        let each = |items: &Value| -> Result<Vec<bool>, TemplateError> {
            items
                .as_array()
                .ok_or_else(|| invalid(at, format!("{key} takes a list")))?
                .iter()
                .map(|c| self.truth(c, conditions, at, depth))
                .collect()
        };
        match key.as_str() {
            "Condition" => {
                let name = arg.as_str().unwrap_or_default();
                let inner = conditions
                    .get(name)
                    .ok_or_else(|| invalid(at, format!("no condition {name:?} is declared")))?;
                self.truth(inner, conditions, &format!("Conditions.{name}"), depth + 1)
            }
            "Fn::Equals" => match arg.as_array().map(Vec::as_slice) {
                Some([a, b]) => Ok(scalar_text(&self.resolve(a, at)?, at)?
                    == scalar_text(&self.resolve(b, at)?, at)?),
                _ => Err(invalid(at, "Fn::Equals takes [value, value]")),
            },
            "Fn::Not" => match each(arg)?.as_slice() {
                [one] => Ok(!one),
                _ => Err(invalid(at, "Fn::Not takes [condition]")),
            },
            "Fn::And" => Ok(each(arg)?.iter().all(|c| *c)),
            "Fn::Or" => Ok(each(arg)?.iter().any(|c| *c)),
            other => Err(invalid(at, format!("{other} is not a condition function"))),
        }
    }

    /// The name CloudFormation would generate, without the random suffix so
    /// that local names are stable across runs.
    pub fn generated_name(&self, logical_id: &str) -> String {
        format!("{}-{logical_id}", self.stack_name)
    }

    /// Resolves every intrinsic function in `value`. `at` names the place for errors.
    pub fn resolve(&self, value: &Value, at: &str) -> Result<Value, TemplateError> {
        match value {
            Value::Object(map) if map.len() == 1 => {
                let (key, arg) = map.iter().next().expect("one entry");
                match key.as_str() {
                    "Ref" => self.resolve_ref(arg, at),
                    "Fn::GetAtt" => self.resolve_get_att(arg, at),
                    "Fn::Sub" => self.resolve_sub(arg, at),
                    "Fn::If" => match arg.as_array().map(Vec::as_slice) {
                        Some([Value::String(name), then, otherwise]) => {
                            let holds = self.conditions.get(name).copied().ok_or_else(|| {
                                invalid(at, format!("Fn::If names no declared condition {name:?}"))
                            })?;
                            self.resolve(if holds { then } else { otherwise }, at)
                        }
                        _ => Err(invalid(at, "Fn::If takes [condition, value, value]")),
                    },
                    "Fn::Join" => {
                        let parts = self.resolve(arg, at)?;
                        match parts.as_array().map(Vec::as_slice) {
                            Some([Value::String(sep), Value::Array(items)]) => {
                                let texts: Result<Vec<String>, _> =
                                    items.iter().map(|v| scalar_text(v, at)).collect();
                                Ok(Value::String(texts?.join(sep)))
                            }
                            _ => Err(invalid(at, "Fn::Join takes [separator, [values]]")),
                        }
                    }
                    "Fn::Select" => {
                        let parts = self.resolve(arg, at)?;
                        match parts.as_array().map(Vec::as_slice) {
                            Some([index, Value::Array(items)]) => {
                                let i = scalar_text(index, at)?.parse::<usize>().map_err(|_| {
                                    invalid(at, "Fn::Select index must be a number")
                                })?;
                                items
                                    .get(i)
                                    .cloned()
                                    .ok_or_else(|| invalid(at, "Fn::Select index out of range"))
                            }
                            _ => Err(invalid(at, "Fn::Select takes [index, [values]]")),
                        }
                    }
                    other if other.starts_with("Fn::") || other == "Condition" => Err(invalid(
                        at,
                        format!("{other} is not supported by the local stack"),
                    )),
                    _ => self.resolve_map(map, at),
                }
            }
            Value::Object(map) => self.resolve_map(map, at),
            Value::Array(items) => Ok(Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| self.resolve(v, &format!("{at}[{i}]")))
                    .collect::<Result<_, _>>()?,
            )),
            other => Ok(other.clone()),
        }
    }

    fn resolve_map(&self, map: &Map<String, Value>, at: &str) -> Result<Value, TemplateError> {
        let mut out = Map::new();
        for (k, v) in map {
            let resolved = self.resolve(v, &format!("{at}.{k}"))?;
            // `!Ref AWS::NoValue` removes the property, as in CloudFormation.
            if resolved != no_value() {
                out.insert(k.clone(), resolved);
            }
        }
        Ok(Value::Object(out))
    }

    fn resolve_ref(&self, arg: &Value, at: &str) -> Result<Value, TemplateError> {
        let name = arg
            .as_str()
            .ok_or_else(|| invalid(at, "Ref takes a name"))?;
        self.lookup(name, None, at)
    }

    fn resolve_get_att(&self, arg: &Value, at: &str) -> Result<Value, TemplateError> {
        let parts = self.resolve(arg, at)?;
        match parts.as_array().map(Vec::as_slice) {
            Some([Value::String(res), Value::String(attr)]) => self.lookup(res, Some(attr), at),
            _ => Err(invalid(at, "Fn::GetAtt takes [Resource, Attribute]")),
        }
    }

    fn resolve_sub(&self, arg: &Value, at: &str) -> Result<Value, TemplateError> {
        let (text, vars) = match arg {
            Value::String(text) => (text.as_str(), Map::new()),
            Value::Array(parts) => match parts.as_slice() {
                [Value::String(text), Value::Object(vars)] => (text.as_str(), vars.clone()),
                _ => {
                    return Err(invalid(
                        at,
                        "Fn::Sub takes a string or [string, {variables}]",
                    ));
                }
            },
            _ => {
                return Err(invalid(
                    at,
                    "Fn::Sub takes a string or [string, {variables}]",
                ));
            }
        };
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| invalid(at, format!("unclosed ${{ in {text:?}")))?;
            let name = after[..end].trim();
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
            } else if let Some(local) = vars.get(name) {
                out.push_str(&scalar_text(&self.resolve(local, at)?, at)?);
            } else {
                let value = match name.split_once('.') {
                    Some((res, attr)) => self.lookup(res, Some(attr), at)?,
                    None => self.lookup(name, None, at)?,
                };
                out.push_str(&scalar_text(&value, at)?);
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(Value::String(out))
    }

    fn lookup(&self, name: &str, attr: Option<&str>, at: &str) -> Result<Value, TemplateError> {
        if attr.is_none() {
            let pseudo = match name {
                "AWS::StackName" => Some(json!(self.stack_name)),
                "AWS::Region" => Some(json!(self.region)),
                "AWS::AccountId" => Some(json!(self.account_id)),
                "AWS::Partition" => Some(json!("aws")),
                "AWS::URLSuffix" => Some(json!("amazonaws.com")),
                "AWS::StackId" => Some(json!(format!(
                    "arn:aws:cloudformation:{}:{}:stack/{}/local",
                    self.region, self.account_id, self.stack_name
                ))),
                "AWS::NoValue" => Some(no_value()),
                _ => None,
            };
            if let Some(v) = pseudo {
                return Ok(v);
            }
            if let Some(v) = self.parameters.get(name) {
                return Ok(v.clone());
            }
            if let Some(v) = self.refs.get(name) {
                return Ok(v.clone());
            }
            return Err(invalid(
                at,
                format!("Ref {name}: no such parameter, or a resource not created yet"),
            ));
        }
        let attr = attr.unwrap_or_default();
        self.attributes
            .get(&(name.to_owned(), attr.to_owned()))
            .cloned()
            .ok_or_else(|| {
                invalid(
                    at,
                    format!("GetAtt {name}.{attr}: the local stack does not know this attribute"),
                )
            })
    }
}

fn no_value() -> Value {
    json!({"__sluice_local_no_value": true})
}

fn scalar_text(value: &Value, at: &str) -> Result<String, TemplateError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(invalid(at, format!("expected a scalar, got {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = r#"
Parameters:
  Stage: {Type: String, Default: dev}
Globals:
  Function:
    Timeout: 10
    Environment:
      Variables:
        STAGE: !Ref Stage
Resources:
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Environment:
        Variables:
          TABLE: !Ref Table
          STREAM: !GetAtt Table.StreamArn
          WHERE: !Sub "${AWS::Region}/${Table}/${!Literal}"
          JOINED: !Join [":", [a, !Ref Stage]]
          GONE: !Ref AWS::NoValue
  Table:
    Type: AWS::DynamoDB::Table
    Properties:
      TableName: !Sub "${AWS::StackName}-state"
"#;

    #[test]
    fn globals_merge_and_dependencies_order_creation() {
        let t = Template::parse(TEMPLATE).unwrap();
        assert_eq!(t.creation_order().unwrap(), vec!["Table", "Fn"]);
        let f = &t.resources["Fn"].properties;
        assert_eq!(f["Timeout"], 10);
        assert_eq!(
            f["Environment"]["Variables"]["STAGE"],
            json!({"Ref": "Stage"})
        );
        assert_eq!(
            f["Environment"]["Variables"]["TABLE"],
            json!({"Ref": "Table"})
        );
    }

    #[test]
    fn intrinsics_resolve_like_cloudformation() {
        let t = Template::parse(TEMPLATE).unwrap();
        let overrides = HashMap::from([("Stage".to_owned(), "prod".to_owned())]);
        let mut ctx = StackContext::new(&t, "s", "eu-west-1", "123456789012", &overrides).unwrap();
        let table = ctx
            .resolve(&t.resources["Table"].properties, "Table")
            .unwrap();
        assert_eq!(table["TableName"], "s-state");
        ctx.refs.insert("Table".into(), json!("s-state"));
        ctx.attributes
            .insert(("Table".into(), "StreamArn".into()), json!("arn:stream"));
        let f = ctx.resolve(&t.resources["Fn"].properties, "Fn").unwrap();
        let vars = &f["Environment"]["Variables"];
        assert_eq!(vars["STAGE"], "prod");
        assert_eq!(vars["STREAM"], "arn:stream");
        assert_eq!(vars["WHERE"], "eu-west-1/s-state/${Literal}");
        assert_eq!(vars["JOINED"], "a:prod");
        assert!(vars.get("GONE").is_none());
    }

    #[test]
    fn conditions_decide_what_is_created_and_what_fn_if_gives() {
        let t = Template::parse(
            r#"
Parameters:
  Email: {Type: String, Default: ""}
Conditions:
  HasEmail: !Not [!Equals [!Ref Email, ""]]
  NoEmail: !Not [!Condition HasEmail]
  Both: !And [!Condition HasEmail, !Condition NoEmail]
Resources:
  Topic: {Type: AWS::SNS::Topic, Properties: {DisplayName: !If [HasEmail, mailed, quiet]}}
  Mail: {Type: AWS::SNS::Subscription, Condition: HasEmail, Properties: {Endpoint: !Ref Email}}
"#,
        )
        .unwrap();
        let stack = |email: &str| {
            let overrides = HashMap::from([("Email".to_owned(), email.to_owned())]);
            StackContext::new(&t, "s", "eu-west-1", "123456789012", &overrides).unwrap()
        };
        let quiet = stack("");
        assert!(!quiet.creates(&t.resources["Mail"]));
        assert!(quiet.creates(&t.resources["Topic"]));
        assert!(!quiet.conditions["Both"]);
        let topic = quiet
            .resolve(&t.resources["Topic"].properties, "Topic")
            .unwrap();
        assert_eq!(topic["DisplayName"], "quiet");
        let mailed = stack("ops@example.com");
        assert!(mailed.creates(&t.resources["Mail"]));
        let topic = mailed
            .resolve(&t.resources["Topic"].properties, "Topic")
            .unwrap();
        assert_eq!(topic["DisplayName"], "mailed");
        let undeclared = Template::parse(
            "Resources:\n  Mail: {Type: AWS::SNS::Subscription, Condition: Nope}\n",
        );
        assert!(
            undeclared
                .unwrap_err()
                .to_string()
                .contains("Resources.Mail.Condition")
        );
    }

    #[test]
    fn parameters_are_checked_as_cloudformation_checks_them() {
        let t = Template::parse(
            r#"
Parameters:
  Functions: {Type: String, AllowedPattern: "^[a-z-]+[*]?$", ConstraintDescription: a name or a prefix}
  Arch: {Type: String, Default: arm64, AllowedValues: [arm64, x86_64]}
Resources: {}
"#,
        )
        .unwrap();
        let given = |pairs: &[(&str, &str)]| {
            let overrides = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            StackContext::new(&t, "s", "r", "1", &overrides).map(|c| c.parameters)
        };
        let values = given(&[("Functions", "shop-*")]).unwrap();
        assert_eq!(
            (values["Functions"].as_str(), values["Arch"].as_str()),
            (Some("shop-*"), Some("arm64"))
        );
        let refused = |pairs: &[(&str, &str)], expected: &str| {
            let err = given(pairs).unwrap_err().to_string();
            assert!(err.contains(expected), "{pairs:?}: {err}");
        };
        refused(&[], "Parameters.Functions: must have a value");
        refused(&[("Functions", "*")], "a name or a prefix");
        refused(&[("Functions", "shop-*x")], "does not match");
        refused(
            &[("Functions", "shop"), ("Arch", "sparc")],
            "Parameters.Arch",
        );
        refused(
            &[("Functions", "shop"), ("Stage", "prod")],
            "no such parameter",
        );
    }

    #[test]
    fn errors_name_the_place() {
        let t = Template::parse(
            "Resources:\n  A:\n    Type: X\n    Properties:\n      P: !If [c, 1, 2]\n",
        )
        .unwrap();
        let ctx = StackContext::new(&t, "s", "r", "1", &HashMap::new()).unwrap();
        let err = ctx
            .resolve(&t.resources["A"].properties, "A")
            .unwrap_err()
            .to_string();
        assert!(err.contains("A.P") && err.contains("Fn::If"), "{err}");
        let err = Template::parse("Resources:\n  A: {Type: X, Properties: {P: !Ref B}}\n  B: {Type: X, Properties: {P: !Ref A}}\n")
            .unwrap()
            .creation_order()
            .unwrap_err()
            .to_string();
        assert!(err.contains("circular"), "{err}");
        assert!(Template::parse("Resources: [").is_err());
    }
}
