//! What the engine and fleet benches share: the template's stack without its
//! functions (the engine runs in the bench itself), and a role for the
//! functions a bench creates.

use anyhow::{Context, Result};
use sluice_local::launcher::{LocalStack, StackOptions, build_dir};
use std::path::Path;

/// The template's resources on a local stack of its own under `work`.
pub fn template_stack(root: &Path, work: &Path) -> Result<LocalStack> {
    let mut opts = StackOptions::for_checkout(root, &build_dir(), &work.join("stack"));
    opts.template = Some(root.join("template.yaml"));
    let template = sluice_local::template::Template::load(&root.join("template.yaml"))?;
    opts.skip_functions = template
        .resources
        .iter()
        .filter(|(_, r)| r.kind == "AWS::Serverless::Function")
        .map(|(id, _)| id.clone())
        .collect();
    LocalStack::start(&opts)
}

/// A role for the bench's functions (the local stack checks none).
pub async fn role(sdk: &aws_config::SdkConfig, name: &str) -> Result<String> {
    Ok(aws_sdk_iam::Client::new(sdk)
        .create_role()
        .role_name(name)
        .assume_role_policy_document("{}")
        .send()
        .await?
        .role
        .context("role")?
        .arn)
}
