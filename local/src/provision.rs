//! Stands a template's resources up in moto: tables, queues, buckets and
//! functions, in dependency order, so that references between them resolve
//! to real names and ARNs. moto's CloudFormation does not run the SAM
//! transform, so this is done from code. A resource that already exists (a
//! restarted sluice-local against a running moto) is taken over, not recreated.

use crate::async_config::AsyncConfig;
use crate::code::{CodeStore, bootstrap_zip};
use crate::iam;
use crate::iam::sam::{Scope, inline_policies};
use crate::sources::{EventSource, UrlAuth};
use crate::template::{Resource, StackContext, Template};
use anyhow::{Context, Result, anyhow, bail};
use aws_config::SdkConfig;
use aws_sdk_dynamodb::types as ddb;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;

/// What a template stood up locally.
#[derive(Debug, Clone, Default)]
pub struct Provisioned {
    pub functions: Vec<WiredFunction>,
    /// Logical id and `Ref` (name or URL) of every resource created in moto.
    pub resources: Vec<(String, String)>,
}

/// A function of the template, created in moto, with the sources that feed it.
#[derive(Debug, Clone)]
pub struct WiredFunction {
    pub logical_id: String,
    pub name: String,
    pub sources: Vec<EventSource>,
    pub url: Option<UrlAuth>,
    /// The SQS queue (ARN) of `DeadLetterQueue`, which moto does not keep.
    pub dead_letter: Option<String>,
    /// `EventInvokeConfig`, for `$LATEST` (the template publishes no alias).
    pub async_config: Option<AsyncConfig>,
}

/// The SAM function properties the local stack plays, and those it takes
/// knowingly without effect (where code runs, how it logs). Any other
/// (reserved concurrency, a VPC, layers, `AutoPublishAlias`, ...) is refused
/// by name: ignored, it would make the local stack kinder than AWS.
const FUNCTION_PROPERTIES_PLAYED: &[&str] = &[
    "FunctionName",
    "Timeout",
    "MemorySize",
    "Environment",
    "Policies",
    "Role",
    "Events",
    "FunctionUrlConfig",
    "DeadLetterQueue",
    "EventInvokeConfig",
];
const FUNCTION_PROPERTIES_WITHOUT_EFFECT: &[&str] = &[
    "CodeUri",
    "Handler",
    "Runtime",
    "Architectures",
    "Description",
    "LoggingConfig",
    "Tracing",
    "Tags",
];

pub struct Provisioner<'a> {
    pub moto: &'a SdkConfig,
    pub code: &'a CodeStore,
    /// Where built function binaries are found, by `BuildProperties.Binary`.
    pub artifacts: PathBuf,
    /// Functions (logical ids) to leave out, e.g. to test the engine without its worker.
    pub skip_functions: Vec<String>,
}

/// A name and ARN for a resource that is not created locally, so that what
/// refers to it still resolves.
fn placeholder(ctx: &mut StackContext, id: &str) {
    let name = ctx.generated_name(id);
    ctx.attributes.insert(
        (id.to_owned(), "Arn".into()),
        json!(format!(
            "arn:aws:local:{}:{}:{name}",
            ctx.region, ctx.account_id
        )),
    );
    ctx.refs.insert(id.to_owned(), json!(name));
}

impl Provisioner<'_> {
    pub async fn provision(
        &self,
        template: &Template,
        ctx: &mut StackContext,
    ) -> Result<Provisioned> {
        let mut out = Provisioned::default();
        for id in template.creation_order()? {
            let resource = &template.resources[&id];
            if !ctx.creates(resource) {
                tracing::info!(resource = %id, "left out: its condition does not hold");
                continue;
            }
            let props = ctx.resolve(&resource.properties, &format!("Resources.{id}.Properties"))?;
            match resource.kind.as_str() {
                "AWS::DynamoDB::Table" => self.table(ctx, &id, &props).await,
                "AWS::SQS::Queue" => self.queue(ctx, &id, &props).await,
                "AWS::S3::Bucket" => self.bucket(ctx, &id, &props).await,
                "AWS::SecretsManager::Secret" => self.secret(ctx, &id, &props).await,
                "AWS::SNS::Topic" => self.topic(ctx, &id, &props).await,
                "AWS::Serverless::Function" if self.skip_functions.contains(&id) => {
                    tracing::info!(function = %id, "left out (--skip-function)");
                    placeholder(ctx, &id);
                    continue;
                }
                "AWS::Serverless::Function" => {
                    let wired = self.function(ctx, resource, &props).await;
                    wired.map(|w| out.functions.push(w))
                }
                other => {
                    // Not needed to run locally (policies, alarms, dashboards...):
                    // its name still resolves for anything that refers to it.
                    tracing::debug!(resource = %id, kind = other, "not provisioned locally");
                    placeholder(ctx, &id);
                    continue;
                }
            }
            .with_context(|| format!("creating {id} ({})", resource.kind))?;
            if let Some(name) = ctx.refs.get(&id).and_then(|v| v.as_str()) {
                out.resources.push((id.clone(), name.to_owned()));
            }
        }
        Ok(out)
    }

    async fn table(&self, ctx: &mut StackContext, id: &str, props: &Value) -> Result<()> {
        let client = aws_sdk_dynamodb::Client::new(self.moto);
        let name = string_or(props, "TableName", || ctx.generated_name(id));
        let key_schema = |v: &Value| -> Result<Vec<ddb::KeySchemaElement>> {
            array(v, "KeySchema")?
                .iter()
                .map(|k| {
                    Ok(ddb::KeySchemaElement::builder()
                        .attribute_name(req_str(k, "AttributeName")?)
                        .key_type(ddb::KeyType::from(req_str(k, "KeyType")?))
                        .build()?)
                })
                .collect()
        };
        let attributes = array(props, "AttributeDefinitions")?
            .iter()
            .map(|a| {
                Ok(ddb::AttributeDefinition::builder()
                    .attribute_name(req_str(a, "AttributeName")?)
                    .attribute_type(ddb::ScalarAttributeType::from(req_str(a, "AttributeType")?))
                    .build()?)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut create = client
            .create_table()
            .table_name(&name)
            .set_key_schema(Some(key_schema(props)?))
            .set_attribute_definitions(Some(attributes))
            .billing_mode(ddb::BillingMode::PayPerRequest);
        if let Some(gsis) = props
            .get("GlobalSecondaryIndexes")
            .and_then(Value::as_array)
        {
            for g in gsis {
                let projection = g.get("Projection").cloned().unwrap_or(json!({}));
                let non_key: Option<Vec<String>> = projection
                    .get("NonKeyAttributes")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    });
                create = create.global_secondary_indexes(
                    ddb::GlobalSecondaryIndex::builder()
                        .index_name(req_str(g, "IndexName")?)
                        .set_key_schema(Some(key_schema(g)?))
                        .projection(
                            ddb::Projection::builder()
                                .projection_type(ddb::ProjectionType::from(
                                    projection
                                        .get("ProjectionType")
                                        .and_then(Value::as_str)
                                        .unwrap_or("ALL"),
                                ))
                                .set_non_key_attributes(non_key)
                                .build(),
                        )
                        .build()?,
                );
            }
        }
        if let Some(view) = props
            .pointer("/StreamSpecification/StreamViewType")
            .and_then(Value::as_str)
        {
            create = create.stream_specification(
                ddb::StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(ddb::StreamViewType::from(view))
                    .build()?,
            );
        }
        match create.send().await {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_resource_in_use_exception()) =>
            {
                tracing::info!(table = %name, "table exists; taking it over");
            }
            Err(e) => return Err(anyhow!("CreateTable {name}: {e:?}")),
        }
        if let Some(ttl) = props.get("TimeToLiveSpecification")
            && ttl.get("Enabled") == Some(&json!(true))
        {
            client
                .update_time_to_live()
                .table_name(&name)
                .time_to_live_specification(
                    ddb::TimeToLiveSpecification::builder()
                        .attribute_name(req_str(ttl, "AttributeName")?)
                        .enabled(true)
                        .build()?,
                )
                .send()
                .await
                .map_err(|e| anyhow!("UpdateTimeToLive {name}: {e:?}"))?;
        }
        let described = client
            .describe_table()
            .table_name(&name)
            .send()
            .await
            .map_err(|e| anyhow!("DescribeTable {name}: {e:?}"))?;
        let table = described
            .table()
            .ok_or_else(|| anyhow!("DescribeTable {name}: no table"))?;
        ctx.refs.insert(id.to_owned(), json!(name));
        ctx.attributes
            .insert((id.into(), "Arn".into()), json!(table.table_arn()));
        if let Some(stream) = table.latest_stream_arn() {
            ctx.attributes
                .insert((id.into(), "StreamArn".into()), json!(stream));
        }
        Ok(())
    }

    async fn queue(&self, ctx: &mut StackContext, id: &str, props: &Value) -> Result<()> {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let client = aws_sdk_sqs::Client::new(self.moto);
        let fifo = props.get("FifoQueue") == Some(&json!(true));
        let name = string_or(props, "QueueName", || {
            let base = ctx.generated_name(id);
            if fifo { format!("{base}.fifo") } else { base }
        });
        let mut create = client.create_queue().queue_name(&name);
        let plain = [
            ("DelaySeconds", A::DelaySeconds),
            ("MaximumMessageSize", A::MaximumMessageSize),
            ("MessageRetentionPeriod", A::MessageRetentionPeriod),
            (
                "ReceiveMessageWaitTimeSeconds",
                A::ReceiveMessageWaitTimeSeconds,
            ),
            ("VisibilityTimeout", A::VisibilityTimeout),
            ("FifoQueue", A::FifoQueue),
            ("ContentBasedDeduplication", A::ContentBasedDeduplication),
        ];
        for (key, attr) in plain {
            if let Some(v) = props.get(key) {
                create = create.attributes(attr, scalar(v));
            }
        }
        if let Some(redrive) = props.get("RedrivePolicy") {
            create = create.attributes(A::RedrivePolicy, redrive.to_string());
        }
        let url = create
            .send()
            .await
            .map_err(|e| anyhow!("CreateQueue {name}: {e:?}"))?
            .queue_url
            .ok_or_else(|| anyhow!("CreateQueue {name}: no URL"))?;
        ctx.refs.insert(id.to_owned(), json!(url));
        ctx.attributes
            .insert((id.into(), "QueueUrl".into()), json!(url));
        ctx.attributes
            .insert((id.into(), "QueueName".into()), json!(name));
        ctx.attributes.insert(
            (id.into(), "Arn".into()),
            json!(format!(
                "arn:aws:sqs:{}:{}:{name}",
                ctx.region, ctx.account_id
            )),
        );
        Ok(())
    }

    /// A topic; as CloudFormation's, its `Ref` is its ARN
    /// (<https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-sns-topic.html>).
    async fn topic(&self, ctx: &mut StackContext, id: &str, props: &Value) -> Result<()> {
        let client = aws_sdk_sns::Client::new(self.moto);
        let name = string_or(props, "TopicName", || ctx.generated_name(id));
        let arn = client
            .create_topic()
            .name(&name)
            .send()
            .await
            .map_err(|e| anyhow!("CreateTopic {name}: {e:?}"))?
            .topic_arn
            .ok_or_else(|| anyhow!("CreateTopic {name}: no ARN"))?;
        ctx.refs.insert(id.to_owned(), json!(arn));
        ctx.attributes
            .insert((id.into(), "TopicArn".into()), json!(arn));
        ctx.attributes
            .insert((id.into(), "TopicName".into()), json!(name));
        Ok(())
    }

    /// A secret with its `SecretString`, or a random one for `GenerateSecretString`.
    async fn secret(&self, ctx: &mut StackContext, id: &str, props: &Value) -> Result<()> {
        let client = aws_sdk_secretsmanager::Client::new(self.moto);
        let name = string_or(props, "Name", || ctx.generated_name(id));
        let value = match props.get("SecretString").and_then(Value::as_str) {
            Some(v) => v.to_owned(),
            None => {
                let length = props
                    .pointer("/GenerateSecretString/PasswordLength")
                    .and_then(Value::as_u64)
                    .unwrap_or(32) as usize;
                rand::distr::SampleString::sample_string(
                    &rand::distr::Alphanumeric,
                    &mut rand::rng(),
                    length,
                )
            }
        };
        let created = client
            .create_secret()
            .name(&name)
            .secret_string(value)
            .send()
            .await;
        let arn = match created {
            Ok(out) => out.arn.unwrap_or_default(),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_resource_exists_exception()) =>
            {
                client
                    .describe_secret()
                    .secret_id(&name)
                    .send()
                    .await
                    .map_err(|e| anyhow!("DescribeSecret {name}: {e:?}"))?
                    .arn
                    .unwrap_or_default()
            }
            Err(e) => return Err(anyhow!("CreateSecret {name}: {e:?}")),
        };
        // As in CloudFormation, a secret's Ref is its ARN.
        ctx.refs.insert(id.to_owned(), json!(arn));
        ctx.attributes.insert((id.into(), "Id".into()), json!(arn));
        Ok(())
    }

    async fn bucket(&self, ctx: &mut StackContext, id: &str, props: &Value) -> Result<()> {
        let client = aws_sdk_s3::Client::new(self.moto);
        let name = string_or(props, "BucketName", || {
            ctx.generated_name(id).to_lowercase()
        });
        let mut create = client.create_bucket().bucket(&name);
        if ctx.region != "us-east-1" {
            create = create.create_bucket_configuration(
                aws_sdk_s3::types::CreateBucketConfiguration::builder()
                    .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(
                        ctx.region.as_str(),
                    ))
                    .build(),
            );
        }
        match create.send().await {
            Ok(_) => {}
            Err(e)
                if e.as_service_error().is_some_and(|se| {
                    se.is_bucket_already_owned_by_you() || se.is_bucket_already_exists()
                }) => {}
            Err(e) => return Err(anyhow!("CreateBucket {name}: {e:?}")),
        }
        if props.pointer("/VersioningConfiguration/Status") == Some(&json!("Enabled")) {
            client
                .put_bucket_versioning()
                .bucket(&name)
                .versioning_configuration(
                    aws_sdk_s3::types::VersioningConfiguration::builder()
                        .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                        .build(),
                )
                .send()
                .await
                .map_err(|e| anyhow!("PutBucketVersioning {name}: {e:?}"))?;
        }
        ctx.refs.insert(id.to_owned(), json!(name));
        ctx.attributes.insert(
            (id.into(), "Arn".into()),
            json!(format!("arn:aws:s3:::{name}")),
        );
        ctx.attributes.insert(
            (id.into(), "DomainName".into()),
            json!(format!("{name}.s3.amazonaws.com")),
        );
        Ok(())
    }

    /// The function's execution role, as the SAM transform makes it: `Role`
    /// if the function names one, else a role of its own whose inline
    /// policies are its `Policies` (documents as written, templates expanded).
    async fn execution_role(&self, ctx: &StackContext, id: &str, props: &Value) -> Result<String> {
        if let Some(role) = props.get("Role") {
            if props.get("Policies").is_some() {
                bail!("{id}: Role and Policies cannot both be given (SAM refuses it too)");
            }
            return role
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("{id}.Role must be a role ARN, not {role}"));
        }
        let scope = Scope {
            region: &ctx.region,
            account: &ctx.account_id,
        };
        let policies = props.get("Policies").unwrap_or(&Value::Null);
        let policies =
            inline_policies(id, policies, &scope).map_err(|e| anyhow!("{id}.Policies: {e}"))?;
        for (name, document) in &policies {
            iam::policy::parse_document(document)
                .map_err(|e| anyhow!("{id}.Policies ({name}): {e}"))?;
        }
        let mut role_name = format!("{}-{id}Role", ctx.stack_name);
        role_name.truncate(64);
        let iam = aws_sdk_iam::Client::new(self.moto);
        let trust = json!({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]
        });
        let arn = match iam
            .create_role()
            .role_name(&role_name)
            .assume_role_policy_document(trust.to_string())
            .send()
            .await
        {
            Ok(out) => out.role().map(|r| r.arn().to_owned()).unwrap_or_default(),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_entity_already_exists_exception()) =>
            {
                let out = iam
                    .get_role()
                    .role_name(&role_name)
                    .send()
                    .await
                    .map_err(|e| anyhow!("GetRole {role_name}: {e:?}"))?;
                out.role().map(|r| r.arn().to_owned()).unwrap_or_default()
            }
            Err(e) => return Err(anyhow!("CreateRole {role_name}: {e:?}")),
        };
        for (name, document) in policies {
            iam.put_role_policy()
                .role_name(&role_name)
                .policy_name(&name)
                .policy_document(document.to_string())
                .send()
                .await
                .map_err(|e| anyhow!("PutRolePolicy {role_name}/{name}: {e:?}"))?;
        }
        Ok(arn)
    }

    async fn function(
        &self,
        ctx: &mut StackContext,
        resource: &Resource,
        props: &Value,
    ) -> Result<WiredFunction> {
        use aws_sdk_lambda::types::{DeadLetterConfig, Environment, FunctionCode, Runtime};
        let id = &resource.logical_id;
        check_function_properties(id, props)?;
        let async_config = props
            .get("EventInvokeConfig")
            .map(|config| AsyncConfig::parse(config, true))
            .transpose()
            .map_err(|e| anyhow!("{id}.EventInvokeConfig: {e}"))?;
        let name = string_or(props, "FunctionName", || ctx.generated_name(id));
        let binary = resource
            .metadata
            .pointer("/BuildProperties/Binary")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                anyhow!(
                    "Metadata.BuildProperties.Binary names the cargo binary to run; it is missing"
                )
            })?;
        let path = self.artifacts.join(binary);
        let executable = std::fs::read(&path).with_context(|| {
            format!(
                "reading the built binary {} (build the workspace first)",
                path.display()
            )
        })?;
        let zip = bootstrap_zip(&executable, &[]);
        self.code.put(&zip)?;
        let variables: HashMap<String, String> = props
            .pointer("/Environment/Variables")
            .and_then(Value::as_object)
            .map(|vars| vars.iter().map(|(k, v)| (k.clone(), scalar(v))).collect())
            .unwrap_or_default();
        let timeout = props.get("Timeout").and_then(Value::as_i64).unwrap_or(3) as i32;
        let memory = props
            .get("MemorySize")
            .and_then(Value::as_i64)
            .unwrap_or(128) as i32;
        let dead_letter = match props.get("DeadLetterQueue") {
            None => None,
            Some(dlq) if dlq.get("Type").and_then(Value::as_str) == Some("SQS") => {
                let arn = dlq.get("TargetArn").and_then(Value::as_str);
                let arn =
                    arn.ok_or_else(|| anyhow!("{id}.DeadLetterQueue: TargetArn is required"))?;
                Some(DeadLetterConfig::builder().target_arn(arn).build())
            }
            Some(other) => {
                return Err(anyhow!(
                    "{id}.DeadLetterQueue: only Type SQS is played by the local stack, not {other}"
                ));
            }
        };
        let role = self.execution_role(ctx, id, props).await?;
        let lambda = aws_sdk_lambda::Client::new(self.moto);
        let environment = Environment::builder()
            .set_variables(Some(variables))
            .build();
        let created = lambda
            .create_function()
            .function_name(&name)
            .runtime(Runtime::from("provided.al2023"))
            .handler("bootstrap")
            .role(&role)
            .code(FunctionCode::builder().zip_file(zip.clone().into()).build())
            .timeout(timeout)
            .memory_size(memory)
            .environment(environment.clone())
            .send()
            .await;
        match created {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_resource_conflict_exception()) =>
            {
                lambda
                    .update_function_code()
                    .function_name(&name)
                    .zip_file(zip.into())
                    .send()
                    .await
                    .map_err(|e| anyhow!("UpdateFunctionCode {name}: {e:?}"))?;
                lambda
                    .update_function_configuration()
                    .function_name(&name)
                    .role(&role)
                    .timeout(timeout)
                    .memory_size(memory)
                    .environment(environment)
                    .send()
                    .await
                    .map_err(|e| anyhow!("UpdateFunctionConfiguration {name}: {e:?}"))?;
            }
            Err(e) => return Err(anyhow!("CreateFunction {name}: {e:?}")),
        }
        ctx.refs.insert(id.clone(), json!(name));
        ctx.attributes.insert(
            (id.clone(), "Arn".into()),
            json!(format!(
                "arn:aws:lambda:{}:{}:function:{name}",
                ctx.region, ctx.account_id
            )),
        );
        let mut sources = Vec::new();
        if let Some(events) = props.get("Events").and_then(Value::as_object) {
            for (event_name, event) in events {
                if let Some(source) =
                    EventSource::from_sam(id, event_name, event).map_err(|e| anyhow!(e))?
                {
                    sources.push(source);
                }
            }
        }
        let url = match props
            .pointer("/FunctionUrlConfig/AuthType")
            .and_then(Value::as_str)
        {
            None => None,
            Some("NONE") => Some(UrlAuth::None),
            Some("AWS_IAM") => Some(UrlAuth::AwsIam),
            Some(other) => bail!("FunctionUrlConfig.AuthType {other:?} must be NONE or AWS_IAM"),
        };
        Ok(WiredFunction {
            logical_id: id.clone(),
            name,
            sources,
            url,
            dead_letter: dead_letter.and_then(|d| d.target_arn().map(str::to_owned)),
            async_config,
        })
    }
}

/// Refuses a function property the local stack neither plays nor may
/// ignore.
fn check_function_properties(id: &str, props: &Value) -> Result<()> {
    let unplayed = props
        .as_object()
        .into_iter()
        .flat_map(|o| o.keys())
        .find(|k| {
            !FUNCTION_PROPERTIES_PLAYED.contains(&k.as_str())
                && !FUNCTION_PROPERTIES_WITHOUT_EFFECT.contains(&k.as_str())
        });
    match unplayed {
        Some(unplayed) => bail!(
            "{id}.{unplayed} is not played by the local stack (it plays {FUNCTION_PROPERTIES_PLAYED:?} and takes {FUNCTION_PROPERTIES_WITHOUT_EFFECT:?} without effect)"
        ),
        None => Ok(()),
    }
}

fn string_or(props: &Value, key: &str, default: impl FnOnce() -> String) -> String {
    props
        .get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(default)
}

fn array<'v>(v: &'v Value, key: &str) -> Result<&'v Vec<Value>> {
    v.get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("{key} must be a list"))
}

fn req_str<'v>(v: &'v Value, key: &str) -> Result<&'v str> {
    v.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("{key} is required"))
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_properties_not_played_are_refused_by_name() {
        let played = json!({
            "CodeUri": "x", "Handler": "bootstrap", "Runtime": "provided.al2023",
            "Architectures": ["arm64"], "Timeout": 3, "EventInvokeConfig": {},
        });
        check_function_properties("Fn", &played).unwrap();
        for unplayed in [
            "ReservedConcurrentExecutions",
            "AutoPublishAlias",
            "VpcConfig",
            "Layers",
            "Timout",
        ] {
            let mut props = played.clone();
            props[unplayed] = json!(1);
            let e = check_function_properties("Fn", &props)
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(&format!("Fn.{unplayed} is not played")),
                "{e}"
            );
        }
    }
}
