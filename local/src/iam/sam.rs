//! A SAM function's `Policies` property as the SAM transform turns it into
//! its execution role's inline policies: policy documents as written, and
//! policy templates expanded to their statements.
//! <https://docs.aws.amazon.com/serverless-application-model/latest/developerguide/serverless-policy-templates.html>

use serde_json::{Value, json};

/// What a template's resource ARNs are built from.
pub struct Scope<'a> {
    pub region: &'a str,
    pub account: &'a str,
}

/// The role's inline policies, by the names SAM gives them
/// (`<LogicalId>RolePolicy<N>`), from a resolved `Policies` value.
pub fn inline_policies(
    logical_id: &str,
    policies: &Value,
    scope: &Scope,
) -> Result<Vec<(String, Value)>, String> {
    let items: Vec<&Value> = match policies {
        Value::Null => Vec::new(),
        Value::Array(items) => items.iter().collect(),
        single => vec![single],
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let name = format!("{logical_id}RolePolicy{i}");
            let document = match item {
                Value::String(managed) => {
                    return Err(format!(
                        "Policies[{i}] is the managed policy {managed:?}: the local stack attaches no AWS managed policies; write its statements instead"
                    ));
                }
                Value::Object(o) if o.contains_key("Statement") => {
                    // IAM takes a document without Version under the 2008
                    // language rules; moto refuses it, so the current one is named.
                    let mut document = o.clone();
                    document
                        .entry("Version")
                        .or_insert_with(|| json!("2012-10-17"));
                    Value::Object(document)
                }
                Value::Object(o) if o.len() == 1 => {
                    let (template, parameters) = o.iter().next().expect("one entry");
                    json!({
                        "Version": "2012-10-17",
                        "Statement": template_statements(template, parameters, scope)
                            .map_err(|e| format!("Policies[{i}] ({template}): {e}"))?,
                    })
                }
                other => return Err(format!("Policies[{i}] is neither a policy document nor a policy template: {other}")),
            };
            Ok((name, document))
        })
        .collect()
}

/// Builds a template's statement from the scope and its parameters by name.
type TemplateBuilder = fn(&Scope, &dyn Fn(&str) -> String) -> Value;

/// The statements of one policy template, with its parameters checked: a
/// missing or unknown parameter is refused by name, as `sam validate` does.
fn template_statements(template: &str, parameters: &Value, scope: &Scope) -> Result<Value, String> {
    let (wanted, build): (&[&str], TemplateBuilder) = match template {
        "DynamoDBCrudPolicy" => (&["TableName"], |s, p| {
            let table = table_arn(s, &p("TableName"));
            statement(
                &[
                    "dynamodb:GetItem",
                    "dynamodb:DeleteItem",
                    "dynamodb:PutItem",
                    "dynamodb:Scan",
                    "dynamodb:Query",
                    "dynamodb:UpdateItem",
                    "dynamodb:BatchWriteItem",
                    "dynamodb:BatchGetItem",
                    "dynamodb:DescribeTable",
                    "dynamodb:ConditionCheckItem",
                ],
                json!([table, format!("{table}/index/*")]),
            )
        }),
        "DynamoDBReadPolicy" => (&["TableName"], |s, p| {
            let table = table_arn(s, &p("TableName"));
            statement(
                &[
                    "dynamodb:GetItem",
                    "dynamodb:Scan",
                    "dynamodb:Query",
                    "dynamodb:BatchGetItem",
                    "dynamodb:DescribeTable",
                ],
                json!([table, format!("{table}/index/*")]),
            )
        }),
        "SQSSendMessagePolicy" => (&["QueueName"], |s, p| {
            statement(&["sqs:SendMessage*"], json!(queue_arn(s, &p("QueueName"))))
        }),
        "SQSPollerPolicy" => (&["QueueName"], |s, p| {
            statement(
                &[
                    "sqs:ChangeMessageVisibility",
                    "sqs:ChangeMessageVisibilityBatch",
                    "sqs:DeleteMessage",
                    "sqs:DeleteMessageBatch",
                    "sqs:GetQueueAttributes",
                    "sqs:ReceiveMessage",
                ],
                json!(queue_arn(s, &p("QueueName"))),
            )
        }),
        "LambdaInvokePolicy" => (&["FunctionName"], |s, p| {
            statement(
                &["lambda:InvokeFunction"],
                json!(format!(
                    "arn:aws:lambda:{}:{}:function:{}*",
                    s.region,
                    s.account,
                    p("FunctionName")
                )),
            )
        }),
        "S3ReadPolicy" => (&["BucketName"], |_, p| {
            let bucket = format!("arn:aws:s3:::{}", p("BucketName"));
            statement(
                &[
                    "s3:GetObject",
                    "s3:ListBucket",
                    "s3:GetBucketLocation",
                    "s3:GetObjectVersion",
                    "s3:GetLifecycleConfiguration",
                ],
                json!([bucket.clone(), format!("{bucket}/*")]),
            )
        }),
        "S3CrudPolicy" => (&["BucketName"], |_, p| {
            let bucket = format!("arn:aws:s3:::{}", p("BucketName"));
            statement(
                &[
                    "s3:GetObject",
                    "s3:ListBucket",
                    "s3:GetBucketLocation",
                    "s3:GetObjectVersion",
                    "s3:PutObject",
                    "s3:PutObjectAcl",
                    "s3:GetLifecycleConfiguration",
                    "s3:PutLifecycleConfiguration",
                    "s3:DeleteObject",
                ],
                json!([bucket.clone(), format!("{bucket}/*")]),
            )
        }),
        "CloudWatchPutMetricPolicy" => (&[], |_, _| {
            statement(&["cloudwatch:PutMetricData"], json!("*"))
        }),
        other => {
            return Err(format!(
                "the local stack does not know the policy template {other:?}"
            ));
        }
    };
    let given = match parameters {
        Value::Object(o) => o.clone(),
        Value::Null => Default::default(),
        other => return Err(format!("its parameters must be an object, not {other}")),
    };
    if let Some(unknown) = given.keys().find(|k| !wanted.contains(&k.as_str())) {
        return Err(format!(
            "unknown parameter {unknown:?} (it takes {wanted:?})"
        ));
    }
    let mut values = Vec::new();
    for name in wanted {
        match given.get(*name) {
            Some(Value::String(v)) => values.push((*name, v.clone())),
            Some(other) => return Err(format!("parameter {name} must be a string, not {other}")),
            None => return Err(format!("parameter {name} is missing")),
        }
    }
    let lookup = |name: &str| -> String {
        values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    Ok(json!([build(scope, &lookup)]))
}

fn statement(actions: &[&str], resource: Value) -> Value {
    json!({"Effect": "Allow", "Action": actions, "Resource": resource})
}

fn table_arn(s: &Scope, table: &str) -> String {
    format!("arn:aws:dynamodb:{}:{}:table/{table}", s.region, s.account)
}

fn queue_arn(s: &Scope, queue: &str) -> String {
    format!("arn:aws:sqs:{}:{}:{queue}", s.region, s.account)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCOPE: Scope = Scope {
        region: "us-east-1",
        account: "123456789012",
    };

    #[test]
    fn templates_expand_and_documents_pass_through() {
        let policies = json!([
            {"DynamoDBCrudPolicy": {"TableName": "state"}},
            {"Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}
        ]);
        let out = inline_policies("Shifter", &policies, &SCOPE).unwrap();
        assert_eq!(out[0].0, "ShifterRolePolicy0");
        assert_eq!(
            out[0].1["Statement"][0]["Resource"][1],
            "arn:aws:dynamodb:us-east-1:123456789012:table/state/index/*"
        );
        assert_eq!(out[1].0, "ShifterRolePolicy1");
        assert_eq!(out[1].1["Statement"], policies[1]["Statement"]);
        assert_eq!(out[1].1["Version"], "2012-10-17");
    }

    #[test]
    fn typos_and_unknown_templates_are_refused_by_name() {
        let err = |p: Value| inline_policies("F", &p, &SCOPE).unwrap_err();
        assert!(err(json!([{"DynamoDBCrudPolicy": {"Table": "t"}}])).contains("\"Table\""));
        assert!(err(json!([{"SQSSendMessagePolicy": {}}])).contains("QueueName is missing"));
        assert!(
            err(json!([{"DynamoDBCrudPolicyy": {"TableName": "t"}}]))
                .contains("DynamoDBCrudPolicyy")
        );
        assert!(err(json!(["AmazonS3FullAccess"])).contains("AmazonS3FullAccess"));
    }
}
