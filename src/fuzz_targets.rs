//! Every parser of outside input, as a fuzz target: arbitrary bytes in, no
//! panic out, and what parses keeps its meaning through a round trip. The
//! `fuzz/` crate runs them under libFuzzer (`make fuzz`, nightly);
//! `tests/fuzz.rs` runs them on mutated samples in every `make test`.

use crate::commits;
use crate::domain::config::DeploymentConfig;
use crate::domain::hooks::HookResponse;
use crate::domain::pipeline::PipelineDefinition;
use serde_json::Value;

/// A target: a name (the `fuzz/` binary's) and what it does with the bytes.
pub type Target = (&'static str, fn(&[u8]));

pub const TARGETS: [Target; 11] = [
    ("webhook", webhook),
    ("codecommit_trigger", codecommit_trigger),
    ("codecommit_state_change", codecommit_state_change),
    ("codepipeline_job", codepipeline_job),
    ("pipeline_definition", pipeline_definition),
    ("deployment_config", deployment_config),
    ("hook_response", hook_response),
    ("shifter_event", shifter_event),
    ("orchestrator_event", orchestrator_event),
    ("source_event", source_event),
    ("smoke_test_file", smoke_test_file),
];

fn json(data: &[u8]) -> Option<Value> {
    serde_json::from_slice(data).ok()
}

/// A GitHub delivery: the signature header is the first line, the body the rest.
pub fn webhook(data: &[u8]) {
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let (header, body) = data.split_at(split);
    let body = body.get(1..).unwrap_or_default();
    let header = std::str::from_utf8(header).ok();
    let secret = b"fuzzing secret".as_slice();
    let verified = commits::verify_signature(body, header, &[secret]);
    // Only the right signature verifies.
    if verified.is_ok() {
        assert_eq!(header, Some(commits::sign(body, secret).as_str()));
    }
    assert!(commits::verify_signature(body, Some(&commits::sign(body, secret)), &[secret]).is_ok());
    if let Ok(Some(push)) = commits::parse_github_push(body) {
        assert!(
            push.sha.len() >= 40 && push.sha.is_ascii(),
            "{:?}",
            push.sha
        );
    }
}

pub fn codecommit_trigger(data: &[u8]) {
    if let Ok(event) = serde_json::from_slice(data) {
        for push in commits::parse_codecommit_trigger(&event) {
            assert!(!push.repository.is_empty());
        }
    }
}

pub fn codecommit_state_change(data: &[u8]) {
    if let Some(value) = json(data) {
        let _ = commits::parse_codecommit_state_change(&value);
    }
}

/// A CodePipeline job event and the UserParameters it carries.
pub fn codepipeline_job(data: &[u8]) {
    let Ok(event) = serde_json::from_slice::<
        aws_lambda_events::event::codepipeline_job::CodePipelineJobEvent,
    >(data) else {
        return;
    };
    let parameters = event
        .code_pipeline_job
        .data
        .action_configuration
        .configuration
        .user_parameters;
    let _ = crate::codepipeline_action::UserParameters::parse(parameters.as_deref());
}

/// A definition that validates renders to JSON that validates to the same.
pub fn pipeline_definition(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(definition) = PipelineDefinition::parse(text) {
        let again = serde_json::to_string(&definition).expect("definitions serialise");
        let reparsed = PipelineDefinition::parse(&again)
            .unwrap_or_else(|e| panic!("{again} no longer parses: {:?}", e.0));
        assert_eq!(reparsed, definition);
    }
}

/// A config that parses prints as text that parses to the same.
pub fn deployment_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = text.parse::<DeploymentConfig>() {
        let printed = config.to_string();
        let reparsed: DeploymentConfig = printed
            .parse()
            .unwrap_or_else(|e| panic!("{printed:?} (from {text:?}) no longer parses: {e}"));
        assert_eq!(
            reparsed.schedule(),
            config.schedule(),
            "{text:?} → {printed:?}"
        );
    }
}

pub fn hook_response(data: &[u8]) {
    if let Ok(response) = serde_json::from_slice::<HookResponse>(data) {
        let _ = response.summary();
    }
}

pub fn shifter_event(data: &[u8]) {
    if let Some(value) = json(data) {
        let _ = crate::events::parse_shifter_event(&value);
    }
}

pub fn orchestrator_event(data: &[u8]) {
    if let Some(value) = json(data) {
        let _ = crate::events::parse_orchestrator_event(&value);
    }
}

pub fn source_event(data: &[u8]) {
    if let Some(value) = json(data) {
        let _ = crate::source::parse_source_event(&value);
    }
}

pub fn smoke_test_file(data: &[u8]) {
    let _ = crate::domain::smoke::parse_smoke_test_file(data);
}
