//! Where Sluice runs: the local stack (its env file) or a deployed SAM stack
//! (its CloudFormation outputs). Either way the CLI gets the same clients.

use anyhow::{Context, Result, bail};
use sluice::aws::{AwsActions, AwsCloud};
use sluice::budget::Budget;
use sluice::clock::SystemClock;
use sluice::engine::Engine;
use sluice::operations::Operations;
use sluice::orchestrator::Orchestrator;
use sluice::settings::Settings;
use sluice::store::Store;
use std::collections::HashMap;
use std::path::Path;

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

/// Operations on the stack `settings` describe. Lambda may answer at an
/// endpoint of its own (the local stack's), hence its client apart.
fn operations(
    config: &aws_config::SdkConfig,
    lambda: aws_sdk_lambda::Client,
    settings: &Settings,
) -> Operations {
    let cloud = AwsCloud {
        lambda,
        ..AwsCloud::new(
            config,
            settings.timer_queue_url.clone(),
            Budget::from_settings(config, settings),
        )
    };
    let actions = AwsActions::new(&cloud, config, settings.pipeline_timer_queue_url.clone());
    let engine = Engine::new(
        Store::from_settings(config, settings),
        cloud,
        SystemClock,
        settings.hook_timeout,
    )
    .named(settings.stack_name.clone());
    Operations::new(Orchestrator::new(
        engine,
        actions,
        settings.artifact_bucket.clone(),
    ))
}

/// Settings from what a stack says of itself, by their environment names.
fn settings(found: impl Fn(&str) -> Result<String>) -> Result<Settings> {
    let vars: HashMap<&str, String> = [
        ("SLUICE_TABLE", "StateTableName"),
        ("SLUICE_TIMER_QUEUE_URL", "TimerQueueUrl"),
        ("SLUICE_PIPELINE_TIMER_QUEUE_URL", "PipelineTimerQueueUrl"),
        ("SLUICE_ARTIFACT_BUCKET", "ArtifactBucketName"),
    ]
    .into_iter()
    .map(|(setting, output)| Ok((setting, found(output)?)))
    .collect::<Result<_>>()?;
    Ok(Settings::from_vars(|name| vars.get(name).cloned())?)
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
    let settings = settings(|output| {
        let resource = match output {
            "StateTableName" => "SLUICE_RESOURCE_STATE_TABLE",
            "TimerQueueUrl" => "SLUICE_RESOURCE_TIMER_QUEUE",
            "PipelineTimerQueueUrl" => "SLUICE_RESOURCE_PIPELINE_TIMER_QUEUE",
            _ => "SLUICE_RESOURCE_ARTIFACT_BUCKET",
        };
        var(resource)
    })?;
    Ok(operations(&config, lambda, &settings))
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
    let settings = settings(output)?;
    Ok(operations(
        &config,
        aws_sdk_lambda::Client::new(&config),
        &settings,
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
