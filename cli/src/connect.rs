//! Where Sluice runs: the local stack (its env file) or a deployed SAM stack
//! (its CloudFormation outputs). Either way the CLI gets the same clients.

use anyhow::{Context, Result, bail};
use sluice::aws::AwsActions;
use sluice::aws::AwsCloud;
use sluice::budget::{Budget, DEFAULT_PER_SECOND, LONGEST_WAIT};
use sluice::clock::SystemClock;
use sluice::engine::Engine;
use sluice::operations::Operations;
use sluice::orchestrator::Orchestrator;
use sluice::store::Store;
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

/// What `sluice-local` writes: `export KEY='value'` lines.
pub fn read_env_file(path: &Path) -> Result<HashMap<String, String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut vars = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            bail!("{}:{}: expected KEY=VALUE", path.display(), n + 1);
        };
        let value = match value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
            Some(quoted) => quoted.replace(r"'\''", "'"),
            None => value.to_owned(),
        };
        vars.insert(key.to_owned(), value);
    }
    Ok(vars)
}

fn operations(
    config: &aws_config::SdkConfig,
    lambda: aws_sdk_lambda::Client,
    table: String,
    timer_queue_url: String,
    pipeline_timer_queue_url: String,
    artifact_bucket: String,
) -> Operations {
    let dynamodb = aws_sdk_dynamodb::Client::new(config);
    let engine = Engine {
        store: Store::new(dynamodb.clone(), table.clone(), chrono::Duration::days(90)),
        cloud: AwsCloud {
            lambda,
            cloudwatch: aws_sdk_cloudwatch::Client::new(config),
            sqs: aws_sdk_sqs::Client::new(config),
            timer_queue_url,
            // An operator's steer draws on the workers' budget.
            budget: Budget::new(dynamodb, table, DEFAULT_PER_SECOND, LONGEST_WAIT),
        },
        clock: SystemClock,
        hook_timeout: Duration::from_secs(60),
        fault: None,
    };
    let actions = AwsActions::new(&engine.cloud, config, pipeline_timer_queue_url);
    Operations {
        orchestrator: Orchestrator {
            engine,
            actions,
            artifact_bucket,
        },
    }
}

/// The local stack described by `sluice-local`'s env file.
pub async fn local(env_file: &Path) -> Result<Operations> {
    let vars = read_env_file(env_file)?;
    let var = |name: &str| {
        vars.get(name)
            .cloned()
            .with_context(|| format!("{} has no {name}", env_file.display()))
    };
    let credentials = aws_sdk_dynamodb::config::Credentials::new(
        var("AWS_ACCESS_KEY_ID")?,
        var("AWS_SECRET_ACCESS_KEY")?,
        None,
        None,
        "sluice-local",
    );
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(var("AWS_ENDPOINT_URL")?)
        .region(aws_config::Region::new(var("AWS_REGION")?))
        .credentials_provider(credentials)
        .load()
        .await;
    let lambda = aws_sdk_lambda::Client::from_conf(
        aws_sdk_lambda::config::Builder::from(&config)
            .endpoint_url(var("AWS_ENDPOINT_URL_LAMBDA")?)
            .build(),
    );
    Ok(operations(
        &config,
        lambda,
        var("SLUICE_RESOURCE_STATE_TABLE")?,
        var("SLUICE_RESOURCE_TIMER_QUEUE")?,
        var("SLUICE_RESOURCE_PIPELINE_TIMER_QUEUE")?,
        var("SLUICE_RESOURCE_ARTIFACT_BUCKET")?,
    ))
}

/// A stack deployed with `sam deploy`, found by its outputs.
pub async fn deployed(stack: &str) -> Result<Operations> {
    let config = sluice::aws::sdk_config().await;
    let described = aws_sdk_cloudformation::Client::new(&config)
        .describe_stacks()
        .stack_name(stack)
        .send()
        .await
        .with_context(|| format!("stack {stack} cannot be described"))?;
    let outputs: HashMap<String, String> = described
        .stacks()
        .first()
        .with_context(|| format!("no stack {stack}"))?
        .outputs()
        .iter()
        .filter_map(|o| Some((o.output_key()?.to_owned(), o.output_value()?.to_owned())))
        .collect();
    let output = |name: &str| {
        outputs
            .get(name)
            .cloned()
            .with_context(|| format!("stack {stack} has no output {name}: is it Sluice?"))
    };
    Ok(operations(
        &config,
        aws_sdk_lambda::Client::new(&config),
        output("StateTableName")?,
        output("TimerQueueUrl")?,
        output("PipelineTimerQueueUrl")?,
        output("ArtifactBucketName")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_files_are_read_as_sluice_local_writes_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("env");
        std::fs::write(
            &path,
            "export AWS_REGION='us-east-1'\nexport QUOTED='it'\\''s'\n\nPLAIN=x=y\n",
        )
        .unwrap();
        let vars = read_env_file(&path).unwrap();
        assert_eq!(vars["AWS_REGION"], "us-east-1");
        assert_eq!(vars["QUOTED"], "it's");
        assert_eq!(vars["PLAIN"], "x=y");
        std::fs::write(&path, "export BROKEN\n").unwrap();
        assert!(
            read_env_file(&path)
                .unwrap_err()
                .to_string()
                .contains(":1: expected KEY=VALUE")
        );
        assert!(read_env_file(&dir.path().join("missing")).is_err());
    }
}
