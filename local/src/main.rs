use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sluice_local::control_plane::Rates;
use sluice_local::launcher::{self, StackOptions};
use sluice_local::server::{self, ServeOptions};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

/// The local stack for Sluice: moto for AWS state, sluice-local for running Lambda code.
#[derive(Parser)]
#[command(
    version,
    after_help = "Examples:\n  sluice-local start --template template.yaml   # what `make dev` runs\n  source .sluice-local/env && aws lambda list-functions\n  sluice-local stop                              # what `make dev-down` runs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct StackArgs {
    /// Where state, logs and the env file go.
    #[arg(long, default_value = ".sluice-local")]
    state_dir: PathBuf,
    /// The SAM template whose resources and functions to stand up.
    #[arg(long)]
    template: Option<PathBuf>,
    /// Where the functions' built binaries are (named by `BuildProperties.Binary`).
    #[arg(long, default_value = "target/debug")]
    artifacts: PathBuf,
    /// The stack name, used for generated resource names.
    #[arg(long, default_value = "sluice")]
    stack_name: String,
    /// A template parameter, as KEY=VALUE (repeatable).
    #[arg(long = "parameter", value_parser = parse_pair)]
    parameters: Vec<(String, String)>,
    /// A template function (logical id) to leave out (repeatable).
    #[arg(long = "skip-function")]
    skip_functions: Vec<String>,
    /// Multiplies schedule periods and retry delays: 0.01 plays `rate(1 minute)` every 0.6 s.
    #[arg(long, default_value_t = 1.0)]
    schedule_scale: f64,
    /// Lambda's control-plane quota for the whole stack, in requests per
    /// second: AWS's is 15 and cannot be raised.
    #[arg(long, default_value_t = 15.0, value_parser = positive_rate)]
    control_plane_rps: f64,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Lambda API and event sources against a running moto.
    Serve {
        #[command(flatten)]
        stack: StackArgs,
        /// moto's endpoint, e.g. http://127.0.0.1:5000.
        #[arg(long, env = "SLUICE_MOTO_ENDPOINT")]
        moto_endpoint: String,
        #[arg(long, default_value = "us-east-1")]
        region: String,
        /// The Lambda API port (0: any free one; the env file names it).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// A Function URL's port, as NAME=PORT with the suffix of its
        /// `SLUICE_URL_` name (the others get any free one).
        #[arg(long = "url-port", value_parser = parse_port_pair)]
        url_ports: Vec<(String, u16)>,
        /// How often an idle stream shard, and the alarms and buckets that
        /// EventBridge rules watch, are polled, in milliseconds. Lambda polls
        /// a DynamoDB stream's shards "at a base rate of 4 times per second"
        /// (https://docs.aws.amazon.com/lambda/latest/dg/with-ddb.html):
        /// polling faster would be kinder than AWS, and costs the CPU of
        /// moto and of every test that runs beside it.
        #[arg(long, default_value_t = 250)]
        poll_interval_ms: u64,
        /// Execution environments one version may run at once.
        #[arg(long, default_value_t = 64)]
        max_sandboxes_per_version: usize,
        /// Seconds an idle execution environment is kept warm.
        #[arg(long, default_value_t = 300)]
        idle_timeout_secs: u64,
    },
    /// Start moto and sluice-local in the background and write <state-dir>/env.
    Start {
        #[command(flatten)]
        stack: StackArgs,
        /// A Python with `moto[server]` installed.
        #[arg(long, env = "SLUICE_MOTO_PYTHON", default_value = ".venv/bin/python3")]
        moto_python: PathBuf,
    },
    /// Restart the sluice-local of a stack `start` started, on the same
    /// ports and against the same moto: the env file stays as it was.
    Restart {
        #[arg(long, default_value = ".sluice-local")]
        state_dir: PathBuf,
    },
    /// Stop what `start` started, by PID.
    Stop {
        #[arg(long, default_value = ".sluice-local")]
        state_dir: PathBuf,
    },
}

fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 1.0 => Ok(r),
        _ => Err(format!(
            "{s:?} must be a number of requests per second, 1 or more"
        )),
    }
}

fn parse_port_pair(s: &str) -> Result<(String, u16), String> {
    let (name, port) = parse_pair(s)?;
    let port = port
        .parse()
        .map_err(|_| format!("{s:?}: {port:?} is not a port number"))?;
    Ok((name, port))
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} must be KEY=VALUE"))
}

#[tokio::main]
async fn main() -> Result<()> {
    sluice::telemetry::init(sluice::telemetry::LogFormat::Text);
    match Cli::parse().command {
        Command::Serve {
            stack,
            moto_endpoint,
            region,
            port,
            url_ports,
            poll_interval_ms,
            max_sandboxes_per_version,
            idle_timeout_secs,
        } => {
            server::serve(ServeOptions {
                moto_endpoint,
                // Sandboxes run in directories under it: a relative path
                // would be read from theirs.
                state_dir: std::path::absolute(&stack.state_dir)
                    .context("resolving --state-dir")?,
                template: stack.template,
                artifacts: stack.artifacts,
                stack_name: stack.stack_name,
                parameters: stack.parameters.into_iter().collect::<HashMap<_, _>>(),
                skip_functions: stack.skip_functions,
                region,
                port,
                url_ports: url_ports.into_iter().collect(),
                schedule_scale: stack.schedule_scale,
                poll_interval: Duration::from_millis(poll_interval_ms),
                max_sandboxes_per_version,
                idle_timeout: Duration::from_secs(idle_timeout_secs),
                quota: Rates {
                    control_plane: stack.control_plane_rps,
                    ..Rates::default()
                },
            })
            .await
        }
        Command::Start { stack, moto_python } => {
            let opts = StackOptions {
                state_dir: stack.state_dir.clone(),
                moto_python,
                sluice_local: std::env::current_exe().context("locating sluice-local")?,
                template: stack.template,
                artifacts: stack.artifacts,
                stack_name: stack.stack_name,
                parameters: stack.parameters,
                skip_functions: stack.skip_functions,
                schedule_scale: stack.schedule_scale,
                control_plane_rps: stack.control_plane_rps,
                max_sandboxes_per_version: None,
            };
            let env =
                tokio::task::spawn_blocking(move || launcher::start_detached(&opts)).await??;
            println!(
                "local stack up: Lambda {} moto {}\nenv: source {}",
                env.get("AWS_ENDPOINT_URL_LAMBDA")
                    .map(String::as_str)
                    .unwrap_or("?"),
                env.get("AWS_ENDPOINT_URL")
                    .map(String::as_str)
                    .unwrap_or("?"),
                stack.state_dir.join("env").display()
            );
            Ok(())
        }
        Command::Restart { state_dir } => {
            let env = tokio::task::spawn_blocking(move || launcher::restart_detached(&state_dir))
                .await??;
            println!(
                "sluice-local restarted: Lambda {}",
                env.get("AWS_ENDPOINT_URL_LAMBDA")
                    .map(String::as_str)
                    .unwrap_or("?")
            );
            Ok(())
        }
        Command::Stop { state_dir } => launcher::stop_detached(&state_dir),
    }
}
