//! `sluice-local serve`: provisions the template into moto, serves the Lambda
//! API, plays the event sources, and writes the env file once all is ready.

use crate::api::{AliasRevisions, ApiState, router};
use crate::code::CodeStore;
use crate::control_plane::{Quota, Rates};
use crate::iam::Authorizer;
use crate::invoke::Invoker;
use crate::metrics::{MetricTiming, Metrics};
use crate::provision::Provisioner;
use crate::sandbox::{Pool, SandboxSettings};
use crate::sources::{self, SourceContext};
use crate::template::{StackContext, Template};
use anyhow::{Context, Result, anyhow};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub const ACCOUNT_ID: &str = "123456789012";

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub moto_endpoint: String,
    pub state_dir: PathBuf,
    pub template: Option<PathBuf>,
    pub artifacts: PathBuf,
    pub stack_name: String,
    pub parameters: HashMap<String, String>,
    pub skip_functions: Vec<String>,
    pub region: String,
    pub port: u16,
    /// Ports for Function URLs, by the suffix of their `SLUICE_URL_` name
    /// (any free one for the rest): a restart keeps the URLs it had.
    pub url_ports: HashMap<String, u16>,
    pub schedule_scale: f64,
    pub poll_interval: Duration,
    pub max_sandboxes_per_version: usize,
    pub idle_timeout: Duration,
    /// Lambda's request quotas (`control_plane::Rates`, AWS's by default).
    pub quota: Rates,
}

/// The variables a process needs to reach the local stack, as written to the env file.
pub fn stack_env(moto: &str, lambda: &str, region: &str) -> Vec<(String, String)> {
    let pairs = [
        ("AWS_ENDPOINT_URL", moto),
        ("AWS_ENDPOINT_URL_LAMBDA", lambda),
        ("AWS_REGION", region),
        ("AWS_DEFAULT_REGION", region),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
    ];
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `SourceFunction` → `SOURCE_FUNCTION`, for `SLUICE_URL_<FUNCTION>`.
pub fn screaming_snake(logical_id: &str) -> String {
    let mut out = String::new();
    for (i, c) in logical_id.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

async fn moto_config(endpoint: &str, region: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new(region.to_owned()))
        .credentials_provider(aws_sdk_lambda::config::Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "sluice-local",
        ))
        .load()
        .await
}

pub async fn serve(opts: ServeOptions) -> Result<()> {
    std::fs::create_dir_all(&opts.state_dir)
        .with_context(|| format!("creating {}", opts.state_dir.display()))?;
    let env_file = opts.state_dir.join("env");
    let _ = std::fs::remove_file(&env_file);
    let http = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(30))
        .build()?;
    // Lambda's Docker use must be off before any function is created.
    http.post(format!("{}/moto-api/config", opts.moto_endpoint))
        .header("content-type", "application/json")
        .body(serde_json::json!({"lambda": {"use_docker": false}}).to_string())
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| format!("configuring moto at {}", opts.moto_endpoint))?;
    let moto = moto_config(&opts.moto_endpoint, &opts.region).await;
    let code = Arc::new(CodeStore::open(&opts.state_dir.join("code"))?);

    let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, opts.port))
        .await
        .with_context(|| format!("binding 127.0.0.1:{}", opts.port))?;
    let lambda_endpoint = format!("http://{}", listener.local_addr()?);
    // Lambda's metrics come a scaled minute at a time; Sluice and the
    // stack's clients are told when they can be read.
    let metric_timing = MetricTiming::scaled(opts.schedule_scale);
    let mut base_env = stack_env(&opts.moto_endpoint, &lambda_endpoint, &opts.region);
    base_env.extend(metric_timing.env());

    // Functions reach every service through sluice-local, which checks
    // each call against their execution role before passing it to moto.
    let mut function_env = stack_env(&lambda_endpoint, &lambda_endpoint, &opts.region);
    function_env.extend(metric_timing.env());
    let pool = Pool::new(
        code.clone(),
        SandboxSettings {
            region: opts.region.clone(),
            inherited_env: function_env,
        },
        opts.max_sandboxes_per_version,
    );
    let metrics = Metrics::start(aws_sdk_cloudwatch::Client::new(&moto), metric_timing);
    let moto_lambda = aws_sdk_lambda::Client::new(&moto);
    let invoker = Arc::new(Invoker::new(
        &moto,
        pool,
        metrics,
        opts.region.clone(),
        ACCOUNT_ID.to_owned(),
        opts.schedule_scale,
    ));
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&moto)
            .force_path_style(true)
            .build(),
    );
    let state = Arc::new(ApiState {
        invoker: invoker.clone(),
        code: code.clone(),
        http,
        moto_endpoint: opts.moto_endpoint.clone(),
        moto_lambda,
        s3: s3.clone(),
        alias_revisions: AliasRevisions::open(opts.state_dir.join("alias-revisions.json"))?,
        throttle: Default::default(),
        quota: Quota::new(opts.quota),
        authorizer: Authorizer::new(&moto, opts.region.clone(), ACCOUNT_ID.to_owned()),
    });
    let api = tokio::spawn(async move { axum::serve(listener, router(state)).await });

    let mut env_lines = base_env.clone();
    if let Some(path) = &opts.template {
        let template = Template::load(path)?;
        let mut ctx = StackContext::new(
            &template,
            &opts.stack_name,
            &opts.region,
            ACCOUNT_ID,
            &opts.parameters,
        )
        .with_context(|| format!("the parameters of {}", path.display()))?;
        let provisioned = Provisioner {
            moto: &moto,
            code: &code,
            artifacts: opts.artifacts.clone(),
            skip_functions: opts.skip_functions.clone(),
        }
        .provision(&template, &mut ctx)
        .await
        .with_context(|| format!("standing up {}", path.display()))?;
        let source_ctx = Arc::new(SourceContext {
            invoker: invoker.clone(),
            cloudwatch: aws_sdk_cloudwatch::Client::new(&moto),
            streams: aws_sdk_dynamodbstreams::Client::new(&moto),
            sqs: aws_sdk_sqs::Client::new(&moto),
            s3,
            region: opts.region.clone(),
            account_id: ACCOUNT_ID.to_owned(),
            poll_interval: opts.poll_interval,
            schedule_scale: opts.schedule_scale,
        });
        for f in &provisioned.functions {
            invoker.set_dead_letter(&f.name, f.dead_letter.clone());
            invoker.set_async_config(&f.name, "$LATEST", f.async_config.clone());
            sources::start(source_ctx.clone(), &f.name, &f.sources);
            if let Some(auth) = f.url {
                let name = screaming_snake(&f.logical_id);
                let port = opts.url_ports.get(&name).copied().unwrap_or(0);
                let addr = sources::serve_url(source_ctx.clone(), f.name.clone(), auth, port)
                    .await
                    .with_context(|| format!("serving {}'s URL on port {port}", f.name))?;
                env_lines.push((format!("SLUICE_URL_{name}"), format!("http://{addr}/")));
            }
            tracing::info!(function = %f.name, sources = f.sources.len(), url = f.url.is_some(), "function wired");
        }
        // In a stable order: a restart writes the same file.
        let refs: std::collections::BTreeMap<_, _> = ctx.refs.iter().collect();
        for (id, value) in refs {
            if let Some(text) = value.as_str() {
                env_lines.push((
                    format!("SLUICE_RESOURCE_{}", screaming_snake(id)),
                    text.to_owned(),
                ));
            }
        }
    }
    env_lines.push(("SLUICE_STACK_NAME".into(), opts.stack_name.clone()));
    let text: String = env_lines
        .iter()
        .map(|(k, v)| format!("export {k}={}\n", shell_quote(v)))
        .collect();
    let partial = env_file.with_extension("partial");
    std::fs::write(&partial, text)?;
    std::fs::rename(&partial, &env_file)?;
    tracing::info!(lambda = %lambda_endpoint, moto = %opts.moto_endpoint, "sluice-local ready");

    let reaper_invoker = invoker.clone();
    let idle = opts.idle_timeout;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(10).min(idle));
        loop {
            tick.tick().await;
            let reaped = reaper_invoker.pool().reap_idle(idle);
            if reaped > 0 {
                tracing::info!(reaped, "stopped idle sandboxes");
            }
        }
    });

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = api => r?.map_err(|e| anyhow!("Lambda API server failed: {e}"))?,
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping");
    invoker.pool().shutdown();
    let _ = std::fs::remove_file(&env_file);
    Ok(())
}

fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_quotes() {
        assert_eq!(screaming_snake("SourceFunction"), "SOURCE_FUNCTION");
        assert_eq!(screaming_snake("Api"), "API");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
