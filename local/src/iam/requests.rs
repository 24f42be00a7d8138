//! Which IAM action, on which resource, an AWS API request is: the part of
//! IAM that reads the request. Each service's table follows its "Actions,
//! resources, and condition keys" page in the Service Authorization Reference
//! (<https://docs.aws.amazon.com/service-authorization/latest/reference/reference_policies_actions-resources-contextkeys.html>);
//! Lambda's follows <https://docs.aws.amazon.com/lambda/latest/dg/lambda-api-permissions-ref.html>.
//! A request this module cannot name is refused, never let through.

use axum::http::{HeaderMap, Method, Uri};
use percent_encoding::percent_decode_str;
use serde_json::Value;

/// One action on one resource that a request needs to be allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub action: String,
    pub resource: Resource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    Arn(String),
    /// A secret named without its ARN: IAM evaluates the secret's full ARN
    /// (with its random suffix), which only Secrets Manager knows.
    SecretName(String),
}

/// The parts of a request that say what it does.
pub struct Request<'a> {
    /// The signing name from the credential scope (`dynamodb`, `monitoring`, ...).
    pub service: &'a str,
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    pub region: &'a str,
    pub account: &'a str,
}

fn access(action: impl Into<String>, arn: impl Into<String>) -> Access {
    Access {
        action: action.into(),
        resource: Resource::Arn(arn.into()),
    }
}

/// The accesses a request needs; all of them must be allowed.
pub fn accesses(request: &Request) -> Result<Vec<Access>, String> {
    match request.service {
        "dynamodb" => dynamodb(request),
        "sqs" => sqs(request),
        "s3" => s3(request),
        "monitoring" => cloudwatch(request),
        "secretsmanager" => secrets_manager(request),
        "lambda" => lambda(request),
        "codepipeline" => codepipeline(request),
        "sns" => sns(request),
        "events" => eventbridge(request),
        other => Err(format!(
            "sluice-local does not know the IAM actions of service {other:?}"
        )),
    }
}

/// The `X-Amz-Target` of a JSON-protocol request: `(prefix, operation)`.
fn target<'a>(request: &'a Request) -> Result<(&'a str, &'a str), String> {
    request
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.split_once('.'))
        .ok_or_else(|| format!("a {} request without X-Amz-Target", request.service))
}

fn json_body(request: &Request) -> Result<Value, String> {
    if request.body.is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_slice(request.body).map_err(|e| format!("the request body is not JSON: {e}"))
}

fn str_field<'a>(body: &'a Value, field: &str) -> Option<&'a str> {
    body.get(field).and_then(Value::as_str)
}

fn dynamodb(request: &Request) -> Result<Vec<Access>, String> {
    let (_, operation) = target(request)?;
    let body = json_body(request)?;
    let table = |name: &str| {
        format!(
            "arn:aws:dynamodb:{}:{}:table/{name}",
            request.region, request.account
        )
    };
    let action = |op: &str| format!("dynamodb:{op}");
    match operation {
        "BatchGetItem" | "BatchWriteItem" => {
            let tables = body
                .get("RequestItems")
                .and_then(Value::as_object)
                .ok_or("RequestItems is missing")?;
            Ok(tables
                .keys()
                .map(|t| access(action(operation), table(t)))
                .collect())
        }
        // A transaction is authorized item by item, as the action each item is.
        "TransactWriteItems" | "TransactGetItems" => {
            let items = body
                .get("TransactItems")
                .and_then(Value::as_array)
                .ok_or("TransactItems is missing")?;
            items
                .iter()
                .map(|item| {
                    let (kind, inner) = item
                        .as_object()
                        .and_then(|o| o.iter().next())
                        .ok_or("an empty transaction item")?;
                    let op = match kind.as_str() {
                        "Put" => "PutItem",
                        "Update" => "UpdateItem",
                        "Delete" => "DeleteItem",
                        "ConditionCheck" => "ConditionCheckItem",
                        "Get" => "GetItem",
                        other => return Err(format!("unknown transaction item {other:?}")),
                    };
                    let name = str_field(inner, "TableName").ok_or("an item without TableName")?;
                    Ok(access(action(op), table(name)))
                })
                .collect()
        }
        "ListTables" | "DescribeLimits" | "DescribeEndpoints" => {
            Ok(vec![access(action(operation), "*")])
        }
        _ => {
            let name = str_field(&body, "TableName")
                .ok_or_else(|| format!("dynamodb:{operation} without TableName"))?;
            let resource = match str_field(&body, "IndexName") {
                Some(index) => format!("{}/index/{index}", table(name)),
                None => table(name),
            };
            Ok(vec![access(action(operation), resource)])
        }
    }
}

/// `application/x-www-form-urlencoded` parameters (the query protocol).
fn form(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

fn sqs(request: &Request) -> Result<Vec<Access>, String> {
    let (operation, queue_url, queue_name) = if request.headers.contains_key("x-amz-target") {
        let (_, operation) = target(request)?;
        let body = json_body(request)?;
        (
            operation.to_owned(),
            str_field(&body, "QueueUrl").map(str::to_owned),
            str_field(&body, "QueueName").map(str::to_owned),
        )
    } else {
        let params = form(request.body);
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        (
            get("Action").ok_or("an SQS request without Action")?,
            get("QueueUrl"),
            get("QueueName"),
        )
    };
    // The batch actions are authorized as their single counterparts.
    let action = match operation.strip_suffix("Batch") {
        Some(single) => format!("sqs:{single}"),
        None => format!("sqs:{operation}"),
    };
    let name = match (queue_url, queue_name) {
        (Some(url), _) => url.rsplit('/').next().unwrap_or_default().to_owned(),
        (None, Some(name)) => name,
        (None, None) if operation == "ListQueues" => return Ok(vec![access(action, "*")]),
        (None, None) => return Err(format!("sqs:{operation} names no queue")),
    };
    Ok(vec![access(
        action,
        format!("arn:aws:sqs:{}:{}:{name}", request.region, request.account),
    )])
}

/// S3 with path-style addresses (`/bucket/key`), as the SDKs send them to an
/// IP-address endpoint.
fn s3(request: &Request) -> Result<Vec<Access>, String> {
    let path = percent_decode_str(request.uri.path())
        .decode_utf8()
        .map_err(|e| format!("the S3 path is not UTF-8: {e}"))?;
    let path = path.trim_start_matches('/');
    let (bucket, key) = match path.split_once('/') {
        Some((b, k)) if !k.is_empty() => (b, Some(k)),
        Some((b, _)) => (b, None),
        None => (path, None),
    };
    let query: Vec<(String, String)> =
        form_urlencoded::parse(request.uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let has = |k: &str| query.iter().any(|(n, _)| n == k);
    let m = request.method;
    let action = |a: &str| format!("s3:{a}");
    if bucket.is_empty() {
        return match *m {
            Method::GET => Ok(vec![access(action("ListAllMyBuckets"), "*")]),
            _ => Err(format!("S3 {m} / is not an operation sluice-local knows")),
        };
    }
    let bucket_arn = format!("arn:aws:s3:::{bucket}");
    let Some(key) = key else {
        let name = match *m {
            Method::GET if has("versions") => "ListBucketVersions",
            Method::GET if has("location") => "GetBucketLocation",
            Method::GET if has("versioning") => "GetBucketVersioning",
            Method::GET if has("notification") => "GetBucketNotification",
            Method::GET | Method::HEAD if query.iter().all(|(n, _)| is_list_parameter(n)) => {
                "ListBucket"
            }
            Method::PUT if query.is_empty() => "CreateBucket",
            Method::DELETE if query.is_empty() => "DeleteBucket",
            _ => {
                return Err(format!(
                    "S3 {m} on bucket {bucket} with {query:?} is not an operation sluice-local knows"
                ));
            }
        };
        return Ok(vec![access(action(name), bucket_arn)]);
    };
    let object_arn = format!("{bucket_arn}/{key}");
    let versioned = has("versionId");
    let name = match *m {
        Method::GET | Method::HEAD if has("tagging") => "GetObjectTagging",
        Method::GET | Method::HEAD if has("acl") => "GetObjectAcl",
        Method::GET | Method::HEAD if versioned => "GetObjectVersion",
        Method::GET | Method::HEAD => "GetObject",
        Method::PUT if has("tagging") => "PutObjectTagging",
        Method::PUT if has("acl") => "PutObjectAcl",
        Method::PUT | Method::POST => "PutObject",
        Method::DELETE if has("uploadId") => "AbortMultipartUpload",
        Method::DELETE if versioned => "DeleteObjectVersion",
        Method::DELETE => "DeleteObject",
        _ => {
            return Err(format!(
                "S3 {m} on an object is not an operation sluice-local knows"
            ));
        }
    };
    let mut needed = vec![access(action(name), object_arn)];
    // CopyObject (and UploadPartCopy) also reads the source object.
    if let Some(source) = request
        .headers
        .get("x-amz-copy-source")
        .and_then(|v| v.to_str().ok())
    {
        let source = percent_decode_str(source).decode_utf8_lossy();
        let (source, read) = match source.split_once("?versionId=") {
            Some((s, _)) => (s.to_owned(), "GetObjectVersion"),
            None => (source.into_owned(), "GetObject"),
        };
        needed.push(access(
            action(read),
            format!("arn:aws:s3:::{}", source.trim_start_matches('/')),
        ));
    }
    Ok(needed)
}

fn is_list_parameter(name: &str) -> bool {
    matches!(
        name,
        "list-type"
            | "prefix"
            | "delimiter"
            | "max-keys"
            | "continuation-token"
            | "start-after"
            | "encoding-type"
            | "marker"
            | "fetch-owner"
    )
}

/// CloudWatch, over the query protocol (`Action=...` in a form body) or JSON.
fn cloudwatch(request: &Request) -> Result<Vec<Access>, String> {
    let alarm = |name: &str| {
        format!(
            "arn:aws:cloudwatch:{}:{}:alarm:{name}",
            request.region, request.account
        )
    };
    let (operation, names): (String, Vec<String>) = if request.headers.contains_key("x-amz-target")
    {
        let (_, operation) = target(request)?;
        let body = json_body(request)?;
        let mut names: Vec<String> = body
            .get("AlarmNames")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        names.extend(str_field(&body, "AlarmName").map(str::to_owned));
        (operation.to_owned(), names)
    } else {
        let params = form(request.body);
        let operation = params
            .iter()
            .find(|(k, _)| k == "Action")
            .map(|(_, v)| v.clone())
            .ok_or("a CloudWatch request without Action")?;
        let names = params
            .into_iter()
            .filter(|(k, _)| k.starts_with("AlarmNames.member.") || k == "AlarmName")
            .map(|(_, v)| v)
            .collect();
        (operation, names)
    };
    let action = format!("cloudwatch:{operation}");
    let alarm_scoped = matches!(
        operation.as_str(),
        "DescribeAlarms"
            | "DescribeAlarmHistory"
            | "PutMetricAlarm"
            | "DeleteAlarms"
            | "SetAlarmState"
            | "EnableAlarmActions"
            | "DisableAlarmActions"
    );
    if !alarm_scoped {
        // Metric reads and writes have no resource-level permissions.
        return Ok(vec![access(action, "*")]);
    }
    if names.is_empty() {
        return Ok(vec![access(action, alarm("*"))]);
    }
    Ok(names.iter().map(|n| access(&action, alarm(n))).collect())
}

fn secrets_manager(request: &Request) -> Result<Vec<Access>, String> {
    let (_, operation) = target(request)?;
    let body = json_body(request)?;
    let action = format!("secretsmanager:{operation}");
    match str_field(&body, "SecretId").or_else(|| str_field(&body, "Name")) {
        Some(arn) if arn.starts_with("arn:") => Ok(vec![access(action, arn)]),
        Some(name) => Ok(vec![Access {
            action,
            resource: Resource::SecretName(name.to_owned()),
        }]),
        None => Ok(vec![access(action, "*")]),
    }
}

/// SNS's query protocol: a topic's actions act on the topic
/// (<https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonsns.html>).
fn sns(request: &Request) -> Result<Vec<Access>, String> {
    let params = form(request.body);
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let operation = get("Action").ok_or("an SNS request without Action")?;
    let action = format!("sns:{operation}");
    match get("TopicArn").or_else(|| get("TargetArn")) {
        Some(topic) => Ok(vec![access(action, topic)]),
        None if matches!(operation.as_str(), "ListTopics" | "CreateTopic") => {
            Ok(vec![access(action, "*")])
        }
        None => Err(format!("sns:{operation} names no topic")),
    }
}

/// EventBridge: `PutEvents` acts on each entry's bus, the account's
/// default one when an entry names none
/// (<https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazoneventbridge.html>).
fn eventbridge(request: &Request) -> Result<Vec<Access>, String> {
    let (_, operation) = target(request)?;
    let body = json_body(request)?;
    let action = format!("events:{operation}");
    let bus = |name: Option<&str>| {
        let name = name.unwrap_or("default");
        if name.starts_with("arn:") {
            name.to_owned()
        } else {
            format!(
                "arn:aws:events:{}:{}:event-bus/{name}",
                request.region, request.account
            )
        }
    };
    match operation {
        "PutEvents" => {
            let entries = body
                .get("Entries")
                .and_then(Value::as_array)
                .ok_or("Entries is missing")?;
            Ok(entries
                .iter()
                .map(|e| access(&action, bus(str_field(e, "EventBusName"))))
                .collect())
        }
        _ => Ok(vec![access(action, "*")]),
    }
}

/// Pipeline operations act on the pipeline; job results and listings have no
/// resource-level permissions.
fn codepipeline(request: &Request) -> Result<Vec<Access>, String> {
    let (_, operation) = target(request)?;
    let body = json_body(request)?;
    let action = format!("codepipeline:{operation}");
    let pipeline = match operation {
        "StartPipelineExecution"
        | "GetPipeline"
        | "GetPipelineState"
        | "UpdatePipeline"
        | "DeletePipeline" => str_field(&body, "name"),
        "GetPipelineExecution"
        | "StopPipelineExecution"
        | "ListPipelineExecutions"
        | "RetryStageExecution" => str_field(&body, "pipelineName"),
        _ => return Ok(vec![access(action, "*")]),
    };
    let pipeline = pipeline.ok_or_else(|| format!("{action} names no pipeline"))?;
    Ok(vec![access(
        action,
        format!(
            "arn:aws:codepipeline:{}:{}:{pipeline}",
            request.region, request.account
        ),
    )])
}

/// A function as a request names it (a name, `name:qualifier`, a partial or a
/// full ARN): its name and qualifier.
fn function_parts(named: &str) -> (String, Option<String>) {
    let named = percent_decode_str(named).decode_utf8_lossy();
    let tail = match named.split_once("function:") {
        Some((_, tail)) => tail.to_owned(),
        None => named.into_owned(),
    };
    match tail.split_once(':') {
        Some((name, q)) => (name.to_owned(), Some(q.to_owned())),
        None => (tail, None),
    }
}

fn lambda(request: &Request) -> Result<Vec<Access>, String> {
    let segments: Vec<&str> = request.uri.path().trim_matches('/').split('/').collect();
    let query_qualifier =
        form_urlencoded::parse(request.uri.query().unwrap_or_default().as_bytes())
            .find(|(k, _)| k == "Qualifier")
            .map(|(_, v)| v.into_owned());
    let function_arn = |name: &str| {
        format!(
            "arn:aws:lambda:{}:{}:function:{name}",
            request.region, request.account
        )
    };
    // Invoke and the reads that take a qualifier are evaluated on the
    // qualified ARN when one is named; the rest on the function's own ARN.
    let qualified = |named: &str| {
        let (name, qualifier) = function_parts(named);
        match qualifier.or_else(|| query_qualifier.clone()) {
            Some(q) => format!("{}:{q}", function_arn(&name)),
            None => function_arn(&name),
        }
    };
    let unqualified = |named: &str| function_arn(&function_parts(named).0);
    let m = request.method;
    let action = |a: &str| format!("lambda:{a}");
    let one = |a: &str, arn: String| Ok(vec![access(action(a), arn)]);
    match (m, segments.as_slice()) {
        (&Method::POST, [_, "functions", f, "invocations"]) => one("InvokeFunction", qualified(f)),
        (&Method::POST, [_, "functions", f, "invoke-async"]) => one("InvokeAsync", unqualified(f)),
        (&Method::GET, [_, "functions", f]) => one("GetFunction", qualified(f)),
        (&Method::DELETE, [_, "functions", f]) => one("DeleteFunction", qualified(f)),
        (&Method::GET, [_, "functions", f, "configuration"]) => {
            one("GetFunctionConfiguration", qualified(f))
        }
        (&Method::PUT, [_, "functions", f, "configuration"]) => {
            one("UpdateFunctionConfiguration", unqualified(f))
        }
        (&Method::PUT, [_, "functions", f, "code"]) => one("UpdateFunctionCode", unqualified(f)),
        (&Method::POST, [_, "functions", f, "versions"]) => one("PublishVersion", unqualified(f)),
        (&Method::GET, [_, "functions", f, "versions"]) => {
            one("ListVersionsByFunction", unqualified(f))
        }
        (&Method::POST, [_, "functions", f, "aliases"]) => one("CreateAlias", unqualified(f)),
        (&Method::GET, [_, "functions", f, "aliases"]) => one("ListAliases", unqualified(f)),
        (&Method::GET, [_, "functions", f, "aliases", _]) => one("GetAlias", unqualified(f)),
        (&Method::PUT, [_, "functions", f, "aliases", _]) => one("UpdateAlias", unqualified(f)),
        (&Method::DELETE, [_, "functions", f, "aliases", _]) => one("DeleteAlias", unqualified(f)),
        (&Method::GET, [_, "functions", f, "policy"]) => one("GetPolicy", qualified(f)),
        (&Method::POST, [_, "functions", f, "policy"]) => one("AddPermission", qualified(f)),
        (&Method::DELETE, [_, "functions", f, "policy", _]) => {
            one("RemovePermission", qualified(f))
        }
        (&Method::PUT, [_, "functions", f, "concurrency"]) => {
            one("PutFunctionConcurrency", unqualified(f))
        }
        (&Method::DELETE, [_, "functions", f, "concurrency"]) => {
            one("DeleteFunctionConcurrency", unqualified(f))
        }
        (&Method::GET, [_, "functions"]) => one("ListFunctions", "*".into()),
        (&Method::POST, [_, "functions"]) => {
            let body = json_body(request)?;
            let name =
                str_field(&body, "FunctionName").ok_or("CreateFunction without FunctionName")?;
            one("CreateFunction", unqualified(name))
        }
        (&Method::POST, [_, "event-source-mappings"]) => {
            one("CreateEventSourceMapping", "*".into())
        }
        (&Method::GET, [_, "event-source-mappings", ..]) => {
            let a = if segments.len() > 2 {
                "GetEventSourceMapping"
            } else {
                "ListEventSourceMappings"
            };
            one(a, "*".into())
        }
        (&Method::PUT | &Method::DELETE, [_, "event-source-mappings", id]) => {
            let a = if m == Method::PUT {
                "UpdateEventSourceMapping"
            } else {
                "DeleteEventSourceMapping"
            };
            one(
                a,
                format!(
                    "arn:aws:lambda:{}:{}:event-source-mapping:{id}",
                    request.region, request.account
                ),
            )
        }
        _ => Err(format!(
            "Lambda {m} {} is not an operation sluice-local knows",
            request.uri.path()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn classify(
        service: &str,
        method: Method,
        uri: &str,
        headers: &[(&'static str, &str)],
        body: &str,
    ) -> Result<Vec<Access>, String> {
        let uri: Uri = uri.parse().unwrap();
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        accesses(&Request {
            service,
            method: &method,
            uri: &uri,
            headers: &map,
            body: body.as_bytes(),
            region: "us-east-1",
            account: "123456789012",
        })
    }

    fn arns(accesses: Vec<Access>) -> Vec<(String, String)> {
        accesses
            .into_iter()
            .map(|a| match a.resource {
                Resource::Arn(arn) => (a.action, arn),
                Resource::SecretName(n) => (a.action, format!("name:{n}")),
            })
            .collect()
    }

    fn pair(a: &str, r: &str) -> (String, String) {
        (a.to_owned(), r.to_owned())
    }

    #[test]
    fn sns_publishes_to_its_topic_and_eventbridge_to_each_entrys_bus() {
        let topic = "arn:aws:sns:us-east-1:123456789012:notices";
        let got = classify(
            "sns",
            Method::POST,
            "/",
            &[],
            &format!("Action=Publish&Version=2010-03-31&TopicArn={topic}&Message=hi"),
        )
        .unwrap();
        assert_eq!(arns(got), vec![pair("sns:Publish", topic)]);
        assert!(classify("sns", Method::POST, "/", &[], "Action=Publish&Message=hi").is_err());
        let got = classify(
            "events",
            Method::POST,
            "/",
            &[("x-amz-target", "AWSEvents.PutEvents")],
            r#"{"Entries":[{"Source":"sluice"},{"Source":"sluice","EventBusName":"ops"}]}"#,
        )
        .unwrap();
        let bus = "arn:aws:events:us-east-1:123456789012:event-bus/";
        assert_eq!(
            arns(got),
            vec![
                pair("events:PutEvents", &format!("{bus}default")),
                pair("events:PutEvents", &format!("{bus}ops")),
            ]
        );
    }

    #[test]
    fn dynamodb_items_tables_indexes_and_transactions() {
        let t = "arn:aws:dynamodb:us-east-1:123456789012:table/";
        let got = classify(
            "dynamodb",
            Method::POST,
            "/",
            &[("x-amz-target", "DynamoDB_20120810.Query")],
            r#"{"TableName":"T","IndexName":"active"}"#,
        )
        .unwrap();
        assert_eq!(
            arns(got),
            vec![pair("dynamodb:Query", &format!("{t}T/index/active"))]
        );
        let got = classify(
            "dynamodb",
            Method::POST,
            "/",
            &[("x-amz-target", "DynamoDB_20120810.TransactWriteItems")],
            r#"{"TransactItems":[{"Put":{"TableName":"A"}},{"ConditionCheck":{"TableName":"B"}}]}"#,
        )
        .unwrap();
        assert_eq!(
            arns(got),
            vec![
                pair("dynamodb:PutItem", &format!("{t}A")),
                pair("dynamodb:ConditionCheckItem", &format!("{t}B")),
            ]
        );
        assert!(classify("dynamodb", Method::POST, "/", &[], "{}").is_err());
    }

    #[test]
    fn sqs_json_and_query_protocols_and_batches() {
        let q = "arn:aws:sqs:us-east-1:123456789012:timers";
        let got = classify(
            "sqs",
            Method::POST,
            "/",
            &[("x-amz-target", "AmazonSQS.SendMessageBatch")],
            r#"{"QueueUrl":"http://127.0.0.1:1/123456789012/timers"}"#,
        )
        .unwrap();
        assert_eq!(arns(got), vec![pair("sqs:SendMessage", q)]);
        let got = classify(
            "sqs",
            Method::POST,
            "/",
            &[],
            "Action=GetQueueUrl&QueueName=timers",
        )
        .unwrap();
        assert_eq!(arns(got), vec![pair("sqs:GetQueueUrl", q)]);
    }

    #[test]
    fn s3_objects_versions_copies_and_lists() {
        let got = classify("s3", Method::GET, "/art/a%20b/c.zip?versionId=3", &[], "").unwrap();
        assert_eq!(
            arns(got),
            vec![pair("s3:GetObjectVersion", "arn:aws:s3:::art/a b/c.zip")]
        );
        let got = classify(
            "s3",
            Method::PUT,
            "/art/copy",
            &[("x-amz-copy-source", "/src/k")],
            "",
        )
        .unwrap();
        assert_eq!(
            arns(got),
            vec![
                pair("s3:PutObject", "arn:aws:s3:::art/copy"),
                pair("s3:GetObject", "arn:aws:s3:::src/k"),
            ]
        );
        let got = classify("s3", Method::GET, "/art?list-type=2&prefix=x", &[], "").unwrap();
        assert_eq!(arns(got), vec![pair("s3:ListBucket", "arn:aws:s3:::art")]);
        assert!(classify("s3", Method::GET, "/art?policy", &[], "").is_err());
    }

    #[test]
    fn cloudwatch_alarms_are_scoped_and_metrics_are_not() {
        let got = classify(
            "monitoring",
            Method::POST,
            "/",
            &[],
            "Action=DescribeAlarms&Version=2010-08-01&AlarmNames.member.1=errors",
        )
        .unwrap();
        assert_eq!(
            arns(got),
            vec![pair(
                "cloudwatch:DescribeAlarms",
                "arn:aws:cloudwatch:us-east-1:123456789012:alarm:errors"
            )]
        );
        let got = classify(
            "monitoring",
            Method::POST,
            "/",
            &[],
            "Action=GetMetricStatistics",
        )
        .unwrap();
        assert_eq!(arns(got), vec![pair("cloudwatch:GetMetricStatistics", "*")]);
    }

    #[test]
    fn lambda_qualified_and_unqualified_resources() {
        let f = "arn:aws:lambda:us-east-1:123456789012:function:app";
        let got = classify(
            "lambda",
            Method::POST,
            "/2015-03-31/functions/app/invocations?Qualifier=live",
            &[],
            "",
        )
        .unwrap();
        assert_eq!(
            arns(got),
            vec![pair("lambda:InvokeFunction", &format!("{f}:live"))]
        );
        let got = classify(
            "lambda",
            Method::POST,
            &format!("/2015-03-31/functions/{}/invocations", "app%3A7"),
            &[],
            "",
        )
        .unwrap();
        assert_eq!(
            arns(got),
            vec![pair("lambda:InvokeFunction", &format!("{f}:7"))]
        );
        let got = classify(
            "lambda",
            Method::PUT,
            "/2015-03-31/functions/app/aliases/live",
            &[],
            "",
        )
        .unwrap();
        assert_eq!(arns(got), vec![pair("lambda:UpdateAlias", f)]);
        let got = classify(
            "lambda",
            Method::GET,
            "/2015-03-31/functions/app?Qualifier=4",
            &[],
            "",
        )
        .unwrap();
        assert_eq!(
            arns(got),
            vec![pair("lambda:GetFunction", &format!("{f}:4"))]
        );
        assert!(
            classify(
                "lambda",
                Method::PATCH,
                "/2015-03-31/functions/app",
                &[],
                ""
            )
            .is_err()
        );
    }

    #[test]
    fn codepipeline_executions_are_scoped_to_their_pipeline() {
        let got = classify(
            "codepipeline",
            Method::POST,
            "/",
            &[("x-amz-target", "CodePipeline_20150709.GetPipelineExecution")],
            r#"{"pipelineName":"release","pipelineExecutionId":"e"}"#,
        )
        .unwrap();
        assert_eq!(
            arns(got),
            vec![pair(
                "codepipeline:GetPipelineExecution",
                "arn:aws:codepipeline:us-east-1:123456789012:release"
            )]
        );
        let got = classify(
            "codepipeline",
            Method::POST,
            "/",
            &[("x-amz-target", "CodePipeline_20150709.PutJobSuccessResult")],
            r#"{"jobId":"j"}"#,
        )
        .unwrap();
        assert_eq!(
            arns(got),
            vec![pair("codepipeline:PutJobSuccessResult", "*")]
        );
    }

    #[test]
    fn secrets_by_name_are_left_to_resolve() {
        let got = classify(
            "secretsmanager",
            Method::POST,
            "/",
            &[("x-amz-target", "secretsmanager.GetSecretValue")],
            r#"{"SecretId":"webhook"}"#,
        )
        .unwrap();
        assert_eq!(
            arns(got),
            vec![pair("secretsmanager:GetSecretValue", "name:webhook")]
        );
        assert!(classify("kinesis", Method::POST, "/", &[], "").is_err());
    }
}
