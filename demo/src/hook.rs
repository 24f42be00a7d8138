//! The demo repository's `post-receive` hook: for each pushed branch, what
//! GitHub and a CI would do. It posts a signed GitHub `push` webhook to the
//! local `source` function, then builds the commit (the greeter binary with
//! the commit's `greeter.env`) and uploads the zip where the pipeline's
//! artifact action waits for it.

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use sluice::commits::{DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, sign};
use sluice_local::code::bootstrap_zip;
use sluice_local::launcher::StackEnv;
use std::io::BufRead;
use std::path::Path;
use std::process::Command;

const NO_COMMIT: &str = "0000000000000000000000000000000000000000";

/// Where the demo pipeline's artifact action waits for a commit's build.
fn artifact_key(repository: &str, sha: &str) -> String {
    format!("builds/{repository}/{sha}/greeter.zip")
}

fn git(args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .args(args)
        .output()
        .context("running git")?;
    if !out.status.success() {
        bail!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A GitHub `push` event body for `old..new` on `reference`, as GitHub sends it.
fn push_body(repository: &str, reference: &str, old: &str, new: &str) -> Result<Value> {
    let range = if old == NO_COMMIT {
        new.to_owned()
    } else {
        format!("{old}..{new}")
    };
    let mut commits = Vec::new();
    for sha in git(&["rev-list", "--reverse", &range])?.lines() {
        let message = git(&["log", "-1", "--format=%B", sha])?;
        let (mut added, mut modified, mut removed) = (Vec::new(), Vec::new(), Vec::new());
        for line in git(&["show", "--name-status", "--format=", "--root", sha])?.lines() {
            let Some((status, path)) = line.split_once('\t') else {
                continue;
            };
            match status.chars().next() {
                Some('A') => added.push(path.to_owned()),
                Some('D') => removed.push(path.to_owned()),
                _ => modified.push(path.to_owned()),
            }
        }
        commits.push(json!({
            "id": sha,
            "message": message.trim(),
            "timestamp": git(&["log", "-1", "--format=%cI", sha])?.trim(),
            "added": added, "removed": removed, "modified": modified,
        }));
    }
    Ok(json!({
        "ref": reference,
        "before": old,
        "after": new,
        "created": old == NO_COMMIT,
        "deleted": false,
        "forced": false,
        "repository": {
            "full_name": repository,
            "name": repository.rsplit('/').next().unwrap_or(repository),
        },
        "pusher": {"name": "demo"},
        "head_commit": commits.last().cloned(),
        "commits": commits,
    }))
}

/// Runs the hook on the `old new ref` lines git gives it on stdin.
pub async fn post_receive(env_file: &Path, repository: &str, greeter: &Path) -> Result<()> {
    let env = StackEnv::read(env_file)?;
    let config = env.sdk_config().await;
    let secret = aws_sdk_secretsmanager::Client::new(&config)
        .get_secret_value()
        .secret_id(env.var("SLUICE_RESOURCE_WEBHOOK_SECRET"))
        .send()
        .await
        .context("reading the webhook secret")?
        .secret_string
        .context("the webhook secret has no string")?;
    let s3 = aws_sdk_s3::Client::new(&config);
    let binary =
        std::fs::read(greeter).with_context(|| format!("reading {}", greeter.display()))?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let mut parts = line.split_whitespace();
        let (Some(old), Some(new), Some(reference)) = (parts.next(), parts.next(), parts.next())
        else {
            bail!("post-receive: unexpected line {line:?}");
        };
        if new == NO_COMMIT {
            continue;
        }
        let body = serde_json::to_vec(&push_body(repository, reference, old, new)?)?;
        let answer = reqwest::Client::new()
            .post(env.var("SLUICE_URL_SOURCE_FUNCTION"))
            .header("content-type", "application/json")
            .header(EVENT_HEADER, "push")
            .header(DELIVERY_HEADER, uuid::Uuid::new_v4().to_string())
            .header(SIGNATURE_HEADER, sign(&body, secret.as_bytes()))
            .body(body)
            .send()
            .await
            .context("posting the webhook")?;
        let status = answer.status();
        let text = answer.text().await?;
        println!("webhook {status}: {text}");
        if !status.is_success() {
            bail!("the source function refused the push: {status} {text}");
        }

        // The build: the same binary, with the settings the commit holds.
        let settings = git(&["show", &format!("{new}:greeter.env")]).unwrap_or_default();
        let subject = git(&["log", "-1", "--format=%s", new])?;
        let release = format!("{} {}", &new[..7], subject.trim());
        let zip = bootstrap_zip(
            &binary,
            &[
                ("release", release.as_bytes()),
                ("greeter.env", settings.as_bytes()),
            ],
        );
        let key = artifact_key(repository, new);
        s3.put_object()
            .bucket(env.var("SLUICE_RESOURCE_ARTIFACT_BUCKET"))
            .key(&key)
            .body(zip.into())
            .send()
            .await
            .context("uploading the build")?;
        println!("built {} and uploaded it as {key}", &new[..7]);
    }
    Ok(())
}
