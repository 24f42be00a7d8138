//! Starts and stops the local stack: a moto server and a `sluice-local serve`,
//! each on a free loopback port. Tests and benchmarks hold a [`LocalStack`]
//! (stopped when dropped); `sluice-local start`/`stop` (`make dev`,
//! `make dev-down`) run the same stack detached and stop it by PID.

use anyhow::{Context, Result, anyhow, bail};
use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StackOptions {
    pub state_dir: PathBuf,
    /// A Python with `moto[server]` installed.
    pub moto_python: PathBuf,
    pub sluice_local: PathBuf,
    pub template: Option<PathBuf>,
    pub artifacts: PathBuf,
    pub stack_name: String,
    pub parameters: Vec<(String, String)>,
    pub skip_functions: Vec<String>,
    pub schedule_scale: f64,
    /// Lambda's control-plane quota, requests per second (AWS's is 15).
    pub control_plane_rps: f64,
    /// Execution environments one version may run at once (`None`:
    /// sluice-local's default).
    pub max_sandboxes_per_version: Option<usize>,
}

impl StackOptions {
    /// Options for a checkout at `root` whose binaries were built into `build_dir`
    /// (`target/debug`), with moto from the project's `.venv`.
    pub fn for_checkout(root: &Path, build_dir: &Path, state_dir: &Path) -> Self {
        let moto_python = std::env::var_os("SLUICE_MOTO_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join(".venv/bin/python3"));
        StackOptions {
            state_dir: state_dir.to_owned(),
            moto_python,
            sluice_local: build_dir.join("sluice-local"),
            template: None,
            artifacts: build_dir.to_owned(),
            stack_name: "sluice".into(),
            parameters: Vec::new(),
            skip_functions: Vec::new(),
            schedule_scale: 1.0,
            control_plane_rps: sluice_local_default_rps(),
            max_sandboxes_per_version: None,
        }
    }
}

fn sluice_local_default_rps() -> f64 {
    crate::control_plane::Rates::default().control_plane
}

/// The directory holding the running test or bench binary's sibling binaries
/// (`target/debug` for `target/debug/deps/test-...`).
pub fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("exe dir");
    if dir.ends_with("deps") {
        dir.parent().expect("build dir").to_owned()
    } else {
        dir.to_owned()
    }
}

pub struct LocalStack {
    moto: Option<Child>,
    local: Option<Child>,
    pub env: StackEnv,
    pub state_dir: PathBuf,
    opts: StackOptions,
}

/// The ports a running sluice-local serves on, read from its env file: its
/// Lambda API, and each Function URL by its `SLUICE_URL_` name's suffix. A
/// restarted sluice-local serves on the same, so no client has to move.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LocalPorts {
    pub lambda: u16,
    pub urls: Vec<(String, u16)>,
}

impl LocalPorts {
    pub fn of(env: &StackEnv) -> Result<Self> {
        let port = |url: &str| -> Result<u16> {
            url.trim_end_matches('/')
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| anyhow!("no port in {url:?}"))
        };
        let mut urls = env
            .0
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("SLUICE_URL_")?, v)))
            .map(|(name, url)| Ok((name.to_owned(), port(url)?)))
            .collect::<Result<Vec<_>>>()?;
        urls.sort();
        Ok(LocalPorts {
            lambda: port(env.var("AWS_ENDPOINT_URL_LAMBDA"))?,
            urls,
        })
    }
}

/// What a client needs of a running stack: the variables of its env file.
#[derive(Debug, Clone, Default)]
pub struct StackEnv(pub HashMap<String, String>);

impl StackEnv {
    /// The env file a stack writes (`<state dir>/env`).
    pub fn read(path: &Path) -> Result<Self> {
        read_env_file(path).map(StackEnv)
    }

    pub fn var(&self, key: &str) -> &str {
        self.0.get(key).map(String::as_str).unwrap_or_default()
    }

    /// SDK configuration aimed at the stack.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(self.var("AWS_ENDPOINT_URL"))
            .region(aws_config::Region::new(self.var("AWS_REGION").to_owned()))
            .credentials_provider(aws_sdk_lambda::config::Credentials::new(
                self.var("AWS_ACCESS_KEY_ID"),
                self.var("AWS_SECRET_ACCESS_KEY"),
                None,
                None,
                "local-stack",
            ))
            .load()
            .await
    }

    /// A Lambda client that goes through sluice-local.
    pub async fn lambda(&self) -> aws_sdk_lambda::Client {
        let config = self.sdk_config().await;
        aws_sdk_lambda::Client::from_conf(
            aws_sdk_lambda::config::Builder::from(&config)
                .endpoint_url(self.var("AWS_ENDPOINT_URL_LAMBDA"))
                .build(),
        )
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

/// A log of the stack's: started afresh, or, for a restart, added to.
fn log_file(state_dir: &Path, name: &str, append: bool) -> Result<std::fs::File> {
    let path = state_dir.join(name);
    std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))
}

/// The end of a log, and the error it reported if any: a failure's backtrace
/// would otherwise push its message out of the last lines.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let last = lines[lines.len().saturating_sub(20)..].join("\n");
    match lines.iter().rposition(|l| l.starts_with("Error:")) {
        Some(at) if at + 20 < lines.len() => {
            let error = lines[at..(at + 12).min(lines.len())].join("\n");
            format!("{error}\n...\n{last}")
        }
        _ => last,
    }
}

fn spawn(mut command: Command, detached: bool) -> Result<Child> {
    if detached {
        // Its own session: the stack outlives the shell that started it.
        command.process_group(0);
    } else {
        // SAFETY: prctl is async-signal-safe; the child dies with its parent,
        // so a test that panics leaves no server behind.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
    }
    Ok(command.spawn()?)
}

/// moto's server as the local stack runs it: see the script for why.
const MOTO_SERVER: &str = include_str!("moto_server.py");

fn start_moto(opts: &StackOptions, detached: bool) -> Result<(Child, String)> {
    if !opts.moto_python.exists() && opts.moto_python.components().count() > 1 {
        bail!(
            "the Python with moto was not found at {} (run `make venv`, or set SLUICE_MOTO_PYTHON)",
            opts.moto_python.display()
        );
    }
    let script = opts.state_dir.join("moto_server.py");
    std::fs::write(&script, MOTO_SERVER)
        .with_context(|| format!("writing {}", script.display()))?;
    // A port picked free can be taken before moto binds it: then moto exits and we pick again.
    for _ in 0..5 {
        let port = free_port()?;
        let mut command = Command::new(&opts.moto_python);
        command
            .arg(&script)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            // The times moto's wrapper plays (CodePipeline's) are scaled too.
            .env("SLUICE_SCHEDULE_SCALE", opts.schedule_scale.to_string())
            .stdin(Stdio::null())
            .stdout(log_file(&opts.state_dir, "moto.log", false)?)
            .stderr(log_file(&opts.state_dir, "moto.log", true)?);
        let mut child = spawn(command, detached)?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                tracing::warn!(%status, port, "moto exited while starting; trying another port");
                break;
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok((child, format!("http://127.0.0.1:{port}")));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!(
                    "moto did not listen within {READY_TIMEOUT:?}:\n{}",
                    tail(&opts.state_dir.join("moto.log"))
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    bail!(
        "moto could not start:\n{}",
        tail(&opts.state_dir.join("moto.log"))
    )
}

/// Starts `sluice-local serve` against `moto`; on `ports` when it restarts
/// one that served there.
fn start_local(
    opts: &StackOptions,
    moto: &str,
    detached: bool,
    ports: Option<&LocalPorts>,
) -> Result<(Child, HashMap<String, String>)> {
    if !opts.sluice_local.exists() {
        bail!(
            "{} not found (build the workspace first: cargo build --workspace --bins)",
            opts.sluice_local.display()
        );
    }
    let mut command = Command::new(&opts.sluice_local);
    command
        .arg("serve")
        .args(["--moto-endpoint", moto])
        .arg("--state-dir")
        .arg(&opts.state_dir)
        .arg("--artifacts")
        .arg(&opts.artifacts)
        .args(["--stack-name", &opts.stack_name])
        .args(["--schedule-scale", &opts.schedule_scale.to_string()])
        .args(["--control-plane-rps", &opts.control_plane_rps.to_string()])
        .stdin(Stdio::null())
        .stdout(log_file(
            &opts.state_dir,
            "sluice-local.log",
            ports.is_some(),
        )?)
        .stderr(log_file(&opts.state_dir, "sluice-local.log", true)?);
    if let Some(most) = opts.max_sandboxes_per_version {
        command.args(["--max-sandboxes-per-version", &most.to_string()]);
    }
    if let Some(ports) = ports {
        command.args(["--port", &ports.lambda.to_string()]);
        for (name, port) in &ports.urls {
            command.args(["--url-port", &format!("{name}={port}")]);
        }
    }
    if let Some(t) = &opts.template {
        command.arg("--template").arg(t);
    }
    for (k, v) in &opts.parameters {
        command.args(["--parameter", &format!("{k}={v}")]);
    }
    for f in &opts.skip_functions {
        command.args(["--skip-function", f]);
    }
    let env_file = opts.state_dir.join("env");
    let _ = std::fs::remove_file(&env_file);
    let mut child = spawn(command, detached)?;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "sluice-local exited ({status}) while starting:\n{}",
                tail(&opts.state_dir.join("sluice-local.log"))
            );
        }
        if env_file.exists() {
            return Ok((child, read_env_file(&env_file)?));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("sluice-local was not ready within {READY_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Reads the `export KEY='value'` lines that `serve` writes.
pub fn read_env_file(path: &Path) -> Result<HashMap<String, String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (key, value) = line
                .strip_prefix("export ")
                .and_then(|l| l.split_once('='))
                .ok_or_else(|| anyhow!("{}: unexpected line {line:?}", path.display()))?;
            let value = value
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .unwrap_or(value)
                .replace(r"'\''", "'");
            Ok((key.to_owned(), value))
        })
        .collect()
}

impl LocalStack {
    /// Starts moto and sluice-local, attached: dropping the stack stops both.
    pub fn start(opts: &StackOptions) -> Result<Self> {
        std::fs::create_dir_all(&opts.state_dir)?;
        let (moto, endpoint) = start_moto(opts, false)?;
        let mut stack = LocalStack {
            moto: Some(moto),
            local: None,
            env: StackEnv::default(),
            state_dir: opts.state_dir.clone(),
            opts: opts.clone(),
        };
        let (local, env) = start_local(opts, &endpoint, false, None)?;
        stack.local = Some(local);
        stack.env = StackEnv(env);
        Ok(stack)
    }

    /// Stops sluice-local and starts it again on the same ports, against
    /// the same moto: a Lambda service that goes away and comes back, with
    /// every URL and the env file as they were.
    pub fn restart_local(&mut self) -> Result<()> {
        let ports = LocalPorts::of(&self.env)?;
        if let Some(child) = self.local.take() {
            stop_child(child);
        }
        let moto = self.env.var("AWS_ENDPOINT_URL").to_owned();
        let (local, env) = start_local(&self.opts, &moto, false, Some(&ports))?;
        self.local = Some(local);
        anyhow::ensure!(
            LocalPorts::of(&StackEnv(env.clone()))? == ports,
            "sluice-local came back on other ports"
        );
        self.env = StackEnv(env);
        Ok(())
    }

    pub fn local_pid(&self) -> u32 {
        self.local.as_ref().map(Child::id).unwrap_or_default()
    }

    pub fn moto_pid(&self) -> u32 {
        self.moto.as_ref().map(Child::id).unwrap_or_default()
    }

    pub fn var(&self, key: &str) -> &str {
        self.env.var(key)
    }

    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        self.env.sdk_config().await
    }

    pub async fn lambda(&self) -> aws_sdk_lambda::Client {
        self.env.lambda().await
    }

    /// The last lines of sluice-local's log, for a failing test's message.
    pub fn log_tail(&self) -> String {
        tail(&self.state_dir.join("sluice-local.log"))
    }
}

fn stop_pid(pid: u32) {
    // SAFETY: plain signals to processes this stack started.
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
}

fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        // SAFETY: signal 0 only asks whether the process exists.
        if unsafe { libc::kill(pid as i32, 0) } != 0 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Stops a child: SIGTERM, then SIGKILL if it has not gone within `STOP_TIMEOUT`.
fn stop_child(mut child: Child) {
    stop_pid(child.id());
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for LocalStack {
    fn drop(&mut self) {
        for child in [self.local.take(), self.moto.take()].into_iter().flatten() {
            stop_child(child);
        }
    }
}

/// Starts the stack detached (for `make dev`) and records the PIDs.
pub fn start_detached(opts: &StackOptions) -> Result<HashMap<String, String>> {
    std::fs::create_dir_all(&opts.state_dir)?;
    let pids = opts.state_dir.join("pids");
    if pids.exists() {
        bail!(
            "{} exists: a local stack may be running (sluice-local stop --state-dir {})",
            pids.display(),
            opts.state_dir.display()
        );
    }
    let (mut moto, endpoint) = start_moto(opts, true)?;
    let (local, env) = match start_local(opts, &endpoint, true, None) {
        Ok(ok) => ok,
        Err(e) => {
            let _ = moto.kill();
            let _ = moto.wait();
            return Err(e);
        }
    };
    std::fs::write(&pids, format!("{}\n{}\n", local.id(), moto.id()))?;
    let kept = serde_json::to_vec_pretty(opts).expect("options serialise");
    std::fs::write(opts.state_dir.join(STACK_OPTIONS_FILE), kept)?;
    Ok(env)
}

/// Where a detached stack keeps the options it was started with.
const STACK_OPTIONS_FILE: &str = "stack.json";

/// Restarts the sluice-local of a detached stack on the same ports, against
/// the same moto, with the options it was started with.
pub fn restart_detached(state_dir: &Path) -> Result<HashMap<String, String>> {
    let read = |name: &str| {
        let path = state_dir.join(name);
        std::fs::read_to_string(&path).with_context(|| {
            format!(
                "{}: no local stack runs there (sluice-local start)",
                path.display()
            )
        })
    };
    let opts: StackOptions = serde_json::from_str(&read(STACK_OPTIONS_FILE)?)?;
    let pids: Vec<u32> = read("pids")?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let [local_pid, moto_pid] = pids[..] else {
        bail!("{}: expected two PIDs", state_dir.join("pids").display());
    };
    let env = StackEnv::read(&state_dir.join("env"))?;
    let ports = LocalPorts::of(&env)?;
    stop_pid_within(local_pid);
    let (local, env) = start_local(&opts, env.var("AWS_ENDPOINT_URL"), true, Some(&ports))?;
    std::fs::write(
        state_dir.join("pids"),
        format!("{}\n{moto_pid}\n", local.id()),
    )?;
    Ok(env)
}

/// SIGTERM, then SIGKILL if `pid` has not gone within `STOP_TIMEOUT`.
fn stop_pid_within(pid: u32) {
    stop_pid(pid);
    if !wait_gone(pid, STOP_TIMEOUT) {
        // SAFETY: as in `stop_pid`; it ignored SIGTERM for STOP_TIMEOUT.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }
}

/// Stops a detached stack by the PIDs it recorded.
pub fn stop_detached(state_dir: &Path) -> Result<()> {
    let pids_file = state_dir.join("pids");
    let text = match std::fs::read_to_string(&pids_file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for pid in text.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
        stop_pid_within(pid);
    }
    std::fs::remove_file(&pids_file)?;
    let _ = std::fs::remove_file(state_dir.join("env"));
    let _ = std::fs::remove_file(state_dir.join(STACK_OPTIONS_FILE));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_start_shows_its_error_above_the_backtrace() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("sluice-local.log");
        let backtrace: Vec<String> = (0..40).map(|n| format!("  {n}: frame")).collect();
        std::fs::write(
            &log,
            format!(
                "starting\nError: port 4566 is taken\n{}",
                backtrace.join("\n")
            ),
        )
        .unwrap();
        let shown = tail(&log);
        assert!(shown.starts_with("Error: port 4566 is taken"), "{shown}");
        assert!(shown.ends_with("  39: frame"), "{shown}");
        std::fs::write(&log, "one\ntwo\n").unwrap();
        assert_eq!(tail(&log), "one\ntwo");
    }
}
