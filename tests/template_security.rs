//! A review of template.yaml, in code: no `Resource: '*'` where the action
//! takes a resource ARN, no asynchronously invoked function without a
//! dead-letter queue or on-failure destination, no function whose logs are
//! kept forever, no public Function URL but the webhook's; and a dashboard
//! that shows exactly the metrics Sluice emits; timeouts that fit the sweeps.

use serde_json::Value;
use sluice_local::template::Template;

/// Actions that have no resource-level permissions: `*` is the only resource they take.
const NO_RESOURCE_LEVEL: [&str; 7] = [
    "cloudwatch:GetMetricData",
    "cloudwatch:GetMetricStatistics",
    "cloudwatch:PutMetricData",
    "codepipeline:PutJobSuccessResult",
    "codepipeline:PutJobFailureResult",
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
];

/// The functions whose URLs are public: GitHub cannot sign with SigV4, so the
/// source function checks the webhook's HMAC signature itself; a CodeDeploy
/// hook's SDK signs for codedeploy, which IAM auth cannot check, so the
/// hook-reports function takes only reports bearing a gate's single-use token.
const PUBLIC_URLS: [&str; 2] = ["SourceFunction", "HookReportsFunction"];

/// Event types through which Lambda invokes a function asynchronously.
const ASYNC_EVENTS: [&str; 5] = [
    "Schedule",
    "EventBridgeRule",
    "CloudWatchEvent",
    "S3",
    "SNS",
];

fn list(value: Option<&Value>) -> Vec<Value> {
    match value {
        Some(Value::Array(items)) => items.clone(),
        Some(other) => vec![other.clone()],
        None => Vec::new(),
    }
}

/// Inline IAM statements of a function's `Policies` and of IAM resources.
fn statements(template: &Template) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (id, r) in &template.resources {
        let documents: Vec<Value> = match r.kind.as_str() {
            "AWS::Serverless::Function" => list(r.properties.get("Policies"))
                .into_iter()
                .filter(|p| p.get("Statement").is_some())
                .collect(),
            "AWS::IAM::Role" => list(r.properties.get("Policies"))
                .iter()
                .filter_map(|p| p.get("PolicyDocument").cloned())
                .collect(),
            "AWS::IAM::Policy" | "AWS::IAM::ManagedPolicy" => r
                .properties
                .get("PolicyDocument")
                .cloned()
                .into_iter()
                .collect(),
            _ => Vec::new(),
        };
        for document in documents {
            for statement in list(document.get("Statement")) {
                out.push((id.clone(), statement));
            }
        }
    }
    out
}

/// Parameters that name Lambda functions in policies (`function:${Name}`).
fn function_patterns(template: &Template) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for (_, statement) in statements(template) {
        for resource in list(statement.get("Resource")) {
            let text = resource
                .get("Fn::Sub")
                .and_then(Value::as_str)
                .unwrap_or_default();
            for part in text.split(":function:${").skip(1) {
                if let Some((name, _)) = part.split_once('}') {
                    names.insert(name.to_owned());
                }
            }
        }
    }
    names
}

/// Everything the review finds wrong, one line each.
fn problems(template: &Template) -> Vec<String> {
    let mut found = Vec::new();
    for (id, statement) in statements(template) {
        if statement.get("Effect").and_then(Value::as_str) == Some("Deny") {
            continue;
        }
        let any_resource = list(statement.get("Resource"))
            .iter()
            .any(|r| r.as_str() == Some("*"));
        if any_resource {
            for action in list(statement.get("Action")) {
                let action = action.as_str().unwrap_or_default();
                if !NO_RESOURCE_LEVEL.contains(&action) {
                    found.push(format!(
                        "{id}: {action} on Resource '*' (it takes a resource ARN)"
                    ));
                }
            }
        }
    }
    for parameter in function_patterns(template) {
        let declaration = template.parameter(&parameter).cloned().unwrap_or_default();
        if declaration.get("Default").is_some() {
            found.push(format!(
                "{parameter}: names the functions policies cover, so it must have no Default"
            ));
        }
        let refuses_any = declaration
            .get("AllowedPattern")
            .and_then(Value::as_str)
            .and_then(|p| regex::Regex::new(p).ok())
            .is_some_and(|re| !re.is_match("*") && re.is_match("shop-*"));
        if !refuses_any {
            found.push(format!(
                "{parameter}: its AllowedPattern must refuse \"*\" (every function) and take a prefix"
            ));
        }
    }
    for (id, r) in &template.resources {
        if r.kind != "AWS::Serverless::Function" {
            continue;
        }
        let p = &r.properties;
        let has_dlq = p.get("DeadLetterQueue").is_some()
            || p.pointer("/EventInvokeConfig/DestinationConfig/OnFailure")
                .is_some();
        let events = p
            .get("Events")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for (name, event) in &events {
            let kind = event
                .get("Type")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if ASYNC_EVENTS.contains(&kind) && !has_dlq {
                found.push(format!(
                    "{id}: invoked asynchronously by {name} ({kind}) without a dead-letter queue or on-failure destination"
                ));
            }
            if matches!(kind, "DynamoDB" | "Kinesis") {
                let props = event.get("Properties").cloned().unwrap_or_default();
                if props.pointer("/DestinationConfig/OnFailure").is_none() {
                    found.push(format!(
                        "{id}: stream source {name} has no on-failure destination"
                    ));
                }
                // Without both, one bad record holds back its whole shard.
                let reports = list(props.get("FunctionResponseTypes"))
                    .iter()
                    .any(|t| t == "ReportBatchItemFailures");
                if !reports || props.get("BisectBatchOnFunctionError") != Some(&Value::Bool(true)) {
                    found.push(format!(
                        "{id}: stream source {name} neither reports item failures nor bisects failed batches"
                    ));
                }
            }
            if kind == "SQS" {
                // The queue's redrive policy keeps what keeps failing.
                let queue = event
                    .pointer("/Properties/Queue/Fn::GetAtt")
                    .and_then(|g| g.get(0).or(Some(g)))
                    .and_then(Value::as_str)
                    .map(|q| q.split('.').next().unwrap_or(q).to_owned());
                let redrive = queue
                    .as_ref()
                    .and_then(|q| template.resources.get(q))
                    .is_some_and(|q| q.properties.get("RedrivePolicy").is_some());
                if !redrive {
                    found.push(format!("{id}: the queue of {name} has no redrive policy"));
                }
            }
        }
        let kept = p
            .pointer("/LoggingConfig/LogGroup/Ref")
            .and_then(Value::as_str)
            .and_then(|group| template.resources.get(group))
            .is_some_and(|g| {
                g.kind == "AWS::Logs::LogGroup" && g.properties.get("RetentionInDays").is_some()
            });
        if !kept {
            found.push(format!(
                "{id}: logs to no group of the stack with a retention"
            ));
        }
        if p.pointer("/FunctionUrlConfig/AuthType")
            .and_then(Value::as_str)
            == Some("NONE")
            && !PUBLIC_URLS.contains(&id.as_str())
        {
            found.push(format!("{id}: a public Function URL (AuthType NONE)"));
        }
    }
    found
}

#[test]
fn the_template_passes_the_review() {
    let template = sluice_template();
    assert_eq!(problems(&template), Vec::<String>::new());
    // The review looked at something.
    assert!(statements(&template).len() >= 10);
    assert!(function_patterns(&template).contains("ManagedFunctions"));
    let granted = |function: &str| -> Vec<Value> {
        statements(&template)
            .into_iter()
            .filter(|(id, _)| id == function)
            .map(|(_, s)| s)
            .collect()
    };
    let may = |function: &str, action: &str, resource: &str| {
        granted(function).iter().any(|s| {
            list(s.get("Action")).iter().any(|a| a == action)
                && list(s.get("Resource"))
                    .iter()
                    .any(|r| r.to_string().contains(resource))
        })
    };
    // The shifter runs the gates: it may invoke the stack's own hooks,
    // whatever ManagedFunctions names, and wait on GetFunction (not the
    // 15/s quota).
    for hook in ["PreTrafficFunction", "PostTrafficFunction"] {
        assert!(
            may("ShifterFunction", "lambda:InvokeFunction", hook),
            "the shifter cannot invoke {hook}"
        );
    }
    assert!(may(
        "ShifterFunction",
        "lambda:GetFunction",
        "ManagedFunctions"
    ));
    // The API decides and saves; the workers run what it asks. It checks a
    // request's functions and hooks, and may change or run none of them.
    for checked in [
        "ManagedFunctions",
        "PreTrafficFunction",
        "PostTrafficFunction",
    ] {
        assert!(
            may("ApiFunction", "lambda:GetFunction", checked),
            "the API cannot check {checked}"
        );
    }
    for action in [
        "lambda:InvokeFunction",
        "lambda:UpdateAlias",
        "lambda:PublishVersion",
        "lambda:UpdateFunctionCode",
        "codepipeline:StartPipelineExecution",
    ] {
        assert!(
            !granted("ApiFunction")
                .iter()
                .any(|s| list(s.get("Action")).iter().any(|a| a == action)),
            "the API may {action}"
        );
    }
    for hook in ["PreTrafficFunction", "PostTrafficFunction"] {
        assert!(
            template.resources[hook]
                .properties
                .get("FunctionName")
                .is_some(),
            "{hook} has a fixed name"
        );
    }
    // The operator API takes SigV4-signed requests only.
    let api = &template.resources["ApiFunction"].properties;
    assert_eq!(
        api.pointer("/FunctionUrlConfig/AuthType")
            .and_then(Value::as_str),
        Some("AWS_IAM")
    );
}

#[test]
fn the_review_finds_each_kind_of_problem() {
    let template = Template::parse(
        r#"
Parameters:
  Apps: {Type: String, Default: "*"}
Resources:
  Jobs:
    Type: AWS::SQS::Queue
  Worker:
    Type: AWS::Serverless::Function
    Properties:
      FunctionUrlConfig: { AuthType: NONE }
      Events:
        Nightly: { Type: Schedule, Properties: { Schedule: rate(1 day) } }
        Changes: { Type: DynamoDB, Properties: { Stream: arn, StartingPosition: LATEST } }
        Work: { Type: SQS, Properties: { Queue: !GetAtt Jobs.Arn } }
      Policies:
        - Statement:
            - { Effect: Allow, Action: [s3:GetObject, cloudwatch:GetMetricStatistics], Resource: "*" }
            - { Effect: Deny, Action: s3:DeleteObject, Resource: "*" }
            - { Effect: Allow, Action: s3:PutObject, Resource: !Sub "arn:aws:s3:::bucket/*" }
            - { Effect: Allow, Action: lambda:UpdateAlias, Resource: !Sub "arn:aws:lambda:r:1:function:${Apps}" }
"#,
    )
    .expect("parses");
    assert_eq!(
        problems(&template),
        vec![
            "Worker: s3:GetObject on Resource '*' (it takes a resource ARN)".to_owned(),
            "Apps: names the functions policies cover, so it must have no Default".to_owned(),
            "Apps: its AllowedPattern must refuse \"*\" (every function) and take a prefix".to_owned(),
            "Worker: stream source Changes has no on-failure destination".to_owned(),
            "Worker: stream source Changes neither reports item failures nor bisects failed batches".to_owned(),
            "Worker: invoked asynchronously by Nightly (Schedule) without a dead-letter queue or on-failure destination".to_owned(),
            "Worker: the queue of Work has no redrive policy".to_owned(),
            "Worker: logs to no group of the stack with a retention".to_owned(),
            "Worker: a public Function URL (AuthType NONE)".to_owned(),
        ]
    );
}

fn sluice_template() -> Template {
    Template::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("template.yaml"))
        .expect("template.yaml parses")
}

/// The dashboard's body, before its `${...}` substitutions.
fn dashboard_body(template: &Template) -> String {
    template.resources["Dashboard"]
        .properties
        .pointer("/DashboardBody/Fn::Sub")
        .and_then(Value::as_str)
        .expect("a dashboard body")
        .to_owned()
}

/// The `Sluice` metric names a dashboard body's SEARCH expressions ask for.
fn dashboard_metrics(body: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for part in body.split("SEARCH('{Sluice,").skip(1) {
        if let Some(name) = part
            .split_once(r#"MetricName=\""#)
            .and_then(|(_, rest)| rest.split_once(r#"\""#))
            .map(|(name, _)| name)
        {
            names.insert(name.to_owned());
        }
    }
    names
}

#[test]
fn the_dashboard_shows_exactly_the_metrics_sluice_emits() {
    use sluice::metrics::Metric;
    let template = sluice_template();
    let body = dashboard_body(&template);
    let body = body.as_str();
    let shown = dashboard_metrics(body);
    let emitted: std::collections::BTreeSet<String> =
        Metric::ALL.iter().map(|m| m.name().to_owned()).collect();
    assert_eq!(shown, emitted);
    // Each is searched by the dimension it is emitted with.
    for m in Metric::ALL {
        let search = format!(
            "SEARCH('{{Sluice,{}}} MetricName=\\\"{}\\\"",
            m.dimension(),
            m.name()
        );
        assert!(body.contains(&search), "{search}");
    }
    // Alarms on Sluice's metrics name them as they are emitted.
    let mut alarmed = 0;
    for (id, alarm) in &template.resources {
        if alarm.kind != "AWS::CloudWatch::Alarm"
            || alarm.properties.get("Namespace").and_then(Value::as_str) != Some("Sluice")
        {
            continue;
        }
        let name = alarm.properties["MetricName"].as_str().unwrap_or_default();
        let metric = Metric::ALL
            .into_iter()
            .find(|m| m.name() == name)
            .unwrap_or_else(|| panic!("{id} alarms on {name}, which Sluice does not emit"));
        assert_eq!(
            alarm.properties.pointer("/Dimensions/0/Name"),
            Some(&Value::from(metric.dimension())),
            "{id}"
        );
        alarmed += 1;
    }
    assert!(alarmed >= 1, "an alarm on stuck deployments");
    // The body is JSON once its `${...}` substitutions are made.
    let mut filled = String::new();
    let mut rest = body;
    while let Some(start) = rest.find("${") {
        filled.push_str(&rest[..start]);
        filled.push_str("substituted");
        let end = rest[start..].find('}').expect("closed substitution");
        rest = &rest[start + end + 1..];
    }
    filled.push_str(rest);
    let parsed: Value = serde_json::from_str(&filled).expect("the dashboard body is JSON");
    assert_eq!(parsed["widgets"].as_array().map(Vec::len), Some(11));
}

/// The pipeline sweep leaves an execution whose invoke action is under way
/// for `INVOKE_ACTION_GRACE_SECS`: longer than any function that runs one
/// (the orchestrator, and the API when an operator's steer drives it) can
/// live, or a suite still running would be started again beside itself.
#[test]
fn the_sweep_waits_out_the_longest_a_worker_running_an_action_lives() {
    use sluice::store::pipelines::INVOKE_ACTION_GRACE_SECS;
    let template = sluice_template();
    for id in ["OrchestratorFunction", "ApiFunction"] {
        let timeout = template.resources[id]
            .properties
            .get("Timeout")
            .and_then(Value::as_i64)
            .unwrap_or_else(|| panic!("{id} has a Timeout"));
        assert!(
            timeout < INVOKE_ACTION_GRACE_SECS,
            "{id}'s Timeout ({timeout} s) must stay under the sweep's grace ({INVOKE_ACTION_GRACE_SECS} s)"
        );
    }
}

/// Lines the functions log, as they write them (JSON, one event a line).
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The fields the dashboard's Logs Insights queries name are fields the
/// functions log: a deployment's and an execution's timeline lines, through
/// the functions' own JSON format.
#[test]
fn the_dashboards_log_queries_name_fields_the_functions_log() {
    use sluice::domain::deployment::{Deployment, Event, EventKind};
    use sluice::domain::execution::{Execution, ExecutionEvent};
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = sluice::telemetry::json_subscriber(
        move || writer.clone(),
        tracing_subscriber::EnvFilter::new("info"),
    );
    let spec = serde_json::from_value(serde_json::json!({
        "function": "greeter", "alias": "live", "source": {"version": "2"}, "config": "AllAtOnce"
    }))
    .unwrap();
    let now = chrono::Utc::now();
    let (d, _) = Deployment::create("d-1", spec, now);
    let definition = sluice::domain::pipeline::PipelineDefinition::parse(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/pipelines/greeter.yaml"
        ))
        .unwrap(),
    )
    .unwrap();
    let push = sluice::domain::pipeline::Push {
        repository: "acme/greeter".into(),
        reference: sluice::domain::pipeline::GitRef::parse("refs/heads/main").unwrap(),
        sha: "9a1f3c2e8b7d4a6f5e0c1b2a3d4e5f60718293a4".into(),
        deleted: false,
        forced: false,
        changed_paths: None,
        message: None,
        author: None,
    };
    let (e, _) = Execution::create("e-1", definition, push, now);
    tracing::subscriber::with_default(subscriber, || {
        let event = Event {
            at: now,
            kind: EventKind::Shifted,
            message: "10% on version 2".into(),
        };
        sluice::engine::log_event(&d, &event);
        let event = ExecutionEvent {
            at: now,
            message: "a push to main".into(),
        };
        sluice::orchestrator::log_execution_event(&e, &event);
    });
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let logged: std::collections::BTreeSet<String> = text
        .lines()
        .flat_map(|line| {
            let object: serde_json::Map<String, Value> =
                serde_json::from_str(line).expect("a JSON line");
            object.keys().cloned().collect::<Vec<_>>()
        })
        .collect();
    for field in ["deployment_id", "kind", "weight", "execution_id", "message"] {
        assert!(logged.contains(field), "{field} not in {logged:?}");
    }

    let body = dashboard_body(&sluice_template());
    let queries: Vec<&str> = body
        .split(r#""query": ""#)
        .skip(1)
        .map(|rest| rest.split_once('"').expect("a closed query").0)
        .collect();
    assert_eq!(queries.len(), 3, "{queries:?}");
    const LANGUAGE: [&str; 17] = [
        "SOURCE",
        "fields",
        "filter",
        "sort",
        "desc",
        "limit",
        "stats",
        "by",
        "max",
        "bin",
        "in",
        "and",
        "or",
        "not",
        "ispresent",
        "like",
        "count",
    ];
    for query in queries {
        for command in query.split(" | ").filter(|c| !c.starts_with("SOURCE")) {
            // Quoted text is a value, `@` fields are Logs Insights' own.
            let unquoted: String = command.split('\'').step_by(2).collect::<Vec<_>>().join(" ");
            for word in unquoted
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '@'))
                .filter(|w| !w.is_empty() && !w.starts_with('@'))
                .filter(|w| !w.starts_with(|c: char| c.is_ascii_digit()))
            {
                assert!(
                    LANGUAGE.contains(&word) || logged.contains(word),
                    "the dashboard's query names {word:?}, which no function logs ({logged:?}): {command}"
                );
            }
        }
    }
}
