//! Commit events in: GitHub push webhooks, CodeCommit repository triggers and
//! EventBridge "CodeCommit Repository State Change" events, each read into the
//! `Push`es that pipelines match against.

use crate::domain::pipeline::{GitRef, Push};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

/// GitHub's header with the HMAC-SHA256 of the raw body.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";
pub const EVENT_HEADER: &str = "x-github-event";
pub const DELIVERY_HEADER: &str = "x-github-delivery";

/// GitHub lists at most this many commits in a push; beyond, the files are unknown.
const GITHUB_MAX_COMMITS: usize = 2048;

const NULL_SHA: &str = "0000000000000000000000000000000000000000";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitEventError {
    #[error("missing {SIGNATURE_HEADER} header")]
    MissingSignature,
    #[error("{SIGNATURE_HEADER} must be sha256=<64 hex digits>")]
    MalformedSignature,
    #[error("the signature does not match the body")]
    WrongSignature,
    #[error("malformed push event: {0}")]
    Malformed(String),
    #[error(
        "content type {0:?}: GitHub's webhooks are application/json or application/x-www-form-urlencoded"
    )]
    UnsupportedContentType(String),
}

/// The JSON of a webhook delivery, in either content type GitHub offers
/// (<https://docs.github.com/en/webhooks/using-webhooks/creating-webhooks>):
/// `application/json` is the body itself; `application/x-www-form-urlencoded`
/// (GitHub's default) carries it in the `payload` field. The signature
/// covers the raw body, so it is checked before this.
pub fn webhook_json<'a>(
    content_type: Option<&str>,
    body: &'a [u8],
) -> Result<std::borrow::Cow<'a, [u8]>, CommitEventError> {
    let media = content_type
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "application/json" => Ok(body.into()),
        "application/x-www-form-urlencoded" => form_urlencoded::parse(body)
            .find(|(name, _)| name == "payload")
            .map(|(_, payload)| payload.into_owned().into_bytes().into())
            .ok_or_else(|| {
                CommitEventError::Malformed(
                    "a form-encoded delivery carries its event in a payload field, and this has none"
                        .into(),
                )
            }),
        _ => Err(CommitEventError::UnsupportedContentType(
            content_type.unwrap_or("(none)").to_owned(),
        )),
    }
}

/// Checks GitHub's `X-Hub-Signature-256` against the raw body with each
/// candidate secret (the current one, and the previous one while a rotation
/// reaches GitHub). The comparison is constant-time.
pub fn verify_signature(
    body: &[u8],
    header: Option<&str>,
    secrets: &[&[u8]],
) -> Result<(), CommitEventError> {
    let header = header.ok_or(CommitEventError::MissingSignature)?;
    let digest = header
        .strip_prefix("sha256=")
        .filter(|hex| hex.len() == 64)
        .and_then(|h| hex::decode(h).ok())
        .ok_or(CommitEventError::MalformedSignature)?;
    for secret in secrets {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any size");
        mac.update(body);
        if mac.verify_slice(&digest).is_ok() {
            return Ok(());
        }
    }
    Err(CommitEventError::WrongSignature)
}

/// The signature GitHub would send for `body` (for tools and tests that post webhooks).
pub fn sign(body: &[u8], secret: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any size");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[derive(Deserialize)]
struct GitHubPush {
    #[serde(rename = "ref")]
    reference: String,
    after: String,
    #[serde(default)]
    deleted: bool,
    #[serde(default)]
    forced: bool,
    #[serde(default)]
    commits: Vec<GitHubCommit>,
    head_commit: Option<GitHubCommit>,
    repository: GitHubRepository,
    pusher: Option<GitHubPerson>,
}

#[derive(Deserialize)]
struct GitHubCommit {
    #[serde(default)]
    message: String,
    #[serde(default)]
    added: Vec<String>,
    #[serde(default)]
    removed: Vec<String>,
    #[serde(default)]
    modified: Vec<String>,
}

#[derive(Deserialize)]
struct GitHubRepository {
    full_name: String,
}

#[derive(Deserialize)]
struct GitHubPerson {
    name: String,
}

/// Whether `id` is a git commit id (SHA-1 or SHA-256, in hex): ids name
/// executions and artifacts, so nothing else is taken for one.
fn is_commit_id(id: &str) -> bool {
    matches!(id.len(), 40 | 64) && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A GitHub `push` event body. `None` for a reference that is neither a branch
/// nor a tag (GitHub also reports e.g. `refs/notes/*`).
pub fn parse_github_push(body: &[u8]) -> Result<Option<Push>, CommitEventError> {
    let push: GitHubPush =
        serde_json::from_slice(body).map_err(|e| CommitEventError::Malformed(e.to_string()))?;
    let Some(reference) = GitRef::parse(&push.reference) else {
        return Ok(None);
    };
    if !is_commit_id(&push.after) {
        return Err(CommitEventError::Malformed(format!(
            "after: {:?} is not a commit id",
            crate::domain::clip(&push.after, 80)
        )));
    }
    let deleted = push.deleted || push.after == NULL_SHA;
    let changed_paths = (push.commits.len() < GITHUB_MAX_COMMITS).then(|| {
        let mut files: Vec<String> = push
            .commits
            .iter()
            .flat_map(|c| c.added.iter().chain(&c.removed).chain(&c.modified))
            .cloned()
            .collect();
        files.sort();
        files.dedup();
        files
    });
    Ok(Some(Push {
        repository: push.repository.full_name,
        reference,
        sha: push.after,
        deleted,
        forced: push.forced,
        changed_paths,
        // Only shown; a long one must not make the execution too big to save.
        message: push
            .head_commit
            .map(|c| crate::domain::limits::shortened(&c.message)),
        author: push.pusher.map(|p| p.name),
    }))
}

/// A CodeCommit repository trigger: one push per reference of each record.
/// CodeCommit does not list files, so path filters let these through.
pub fn parse_codecommit_trigger(
    event: &aws_lambda_events::event::code_commit::CodeCommitEvent,
) -> Vec<Push> {
    let mut pushes = Vec::new();
    for record in &event.records {
        // The ARN's last part is the repository name; a record without one
        // names no repository a pipeline could watch.
        let Some(repository) = record
            .event_source_arn
            .as_deref()
            .and_then(|arn| arn.rsplit(':').next())
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
        else {
            continue;
        };
        for r in &record.code_commit.references {
            let (Some(reference), Some(sha)) = (
                r.ref_.as_deref().and_then(GitRef::parse),
                r.commit.clone().filter(|c| is_commit_id(c)),
            ) else {
                continue;
            };
            pushes.push(Push {
                repository: repository.clone(),
                reference,
                sha,
                // Not in the crate's typed fields: CodeCommit sets it on deletions.
                deleted: r.other.get("deleted").and_then(|v| v.as_bool()) == Some(true),
                forced: false,
                changed_paths: None,
                message: None,
                author: record.user_identity_arn.clone(),
            });
        }
    }
    pushes
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StateChange {
    event: String,
    repository_name: String,
    reference_type: String,
    reference_name: String,
    commit_id: Option<String>,
}

/// An EventBridge "CodeCommit Repository State Change" event's detail.
/// `None` for events that start nothing (a reference deleted, not a branch or tag).
pub fn parse_codecommit_state_change(
    detail: &serde_json::Value,
) -> Result<Option<Push>, CommitEventError> {
    let change: StateChange = serde_json::from_value(detail.clone())
        .map_err(|e| CommitEventError::Malformed(e.to_string()))?;
    let reference = match change.reference_type.as_str() {
        "branch" => GitRef::Branch(change.reference_name),
        "tag" => GitRef::Tag(change.reference_name),
        _ => return Ok(None),
    };
    let deleted = change.event == "referenceDeleted";
    let Some(sha) = change.commit_id else {
        if deleted {
            return Ok(None);
        }
        return Err(CommitEventError::Malformed("no commitId".into()));
    };
    if !is_commit_id(&sha) {
        return Err(CommitEventError::Malformed(format!(
            "commitId: {:?} is not a commit id",
            crate::domain::clip(&sha, 80)
        )));
    }
    Ok(Some(Push {
        repository: change.repository_name,
        reference,
        sha,
        deleted,
        forced: false,
        changed_paths: None,
        message: None,
        author: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_commit_ids_are_taken_for_commits() {
        let push = String::from_utf8(std::fs::read("events/github-push.json").unwrap()).unwrap();
        let after = serde_json::from_str::<serde_json::Value>(&push).unwrap()["after"]
            .as_str()
            .unwrap()
            .to_owned();
        for bad in ["é😀", "main", "12345", &after[..39]] {
            let body = push.replace(&after, bad);
            assert!(
                matches!(parse_github_push(body.as_bytes()), Err(CommitEventError::Malformed(m)) if m.starts_with("after:")),
                "{bad}"
            );
        }
        assert!(is_commit_id(&"ab".repeat(32)), "SHA-256 repositories");
    }

    const PUSH: &[u8] = include_bytes!("../events/github-push.json");

    #[test]
    fn a_signed_body_verifies_and_any_change_does_not() {
        let signature = sign(PUSH, b"s3cret");
        assert_eq!(
            verify_signature(PUSH, Some(&signature), &[b"s3cret"]),
            Ok(())
        );
        // The previous secret still verifies while a rotation reaches GitHub.
        assert_eq!(
            verify_signature(PUSH, Some(&signature), &[b"new", b"s3cret"]),
            Ok(())
        );
        let mut tampered = PUSH.to_vec();
        tampered[10] ^= 1;
        assert_eq!(
            verify_signature(&tampered, Some(&signature), &[b"s3cret"]),
            Err(CommitEventError::WrongSignature)
        );
        assert_eq!(
            verify_signature(PUSH, Some(&signature), &[b"other"]),
            Err(CommitEventError::WrongSignature)
        );
        assert_eq!(
            verify_signature(PUSH, None, &[b"s3cret"]),
            Err(CommitEventError::MissingSignature)
        );
        for bad in ["sha1=abc", "sha256=xyz", &signature[..70], "sha256="] {
            assert_eq!(
                verify_signature(PUSH, Some(bad), &[b"s3cret"]),
                Err(CommitEventError::MalformedSignature),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_github_push_lists_its_branch_commit_and_files() {
        let push = parse_github_push(PUSH).unwrap().unwrap();
        assert_eq!(push.repository, "acme/greeter");
        assert_eq!(push.reference, GitRef::Branch("main".into()));
        assert_eq!(push.sha, "9a1f3c2e8b7d4a6f5e0c1b2a3d4e5f60718293a4");
        assert!(!push.deleted && !push.forced);
        assert_eq!(
            push.changed_paths,
            Some(vec![
                "README.md".into(),
                "src/lang/fr.rs".into(),
                "src/main.rs".into()
            ])
        );
        assert_eq!(
            push.message.as_deref(),
            Some("Document the French greeting")
        );
        assert_eq!(push.author.as_deref(), Some("ada"));
    }

    #[test]
    fn tags_deletions_force_pushes_and_other_refs_are_read_as_github_defines_them() {
        let mut body: serde_json::Value = serde_json::from_slice(PUSH).unwrap();
        body["ref"] = "refs/tags/v1.2.0".into();
        let push = parse_github_push(body.to_string().as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(push.reference, GitRef::Tag("v1.2.0".into()));

        body["ref"] = "refs/heads/old".into();
        body["deleted"] = true.into();
        body["after"] = NULL_SHA.into();
        body["commits"] = serde_json::json!([]);
        body["head_commit"] = serde_json::Value::Null;
        let push = parse_github_push(body.to_string().as_bytes())
            .unwrap()
            .unwrap();
        assert!(push.deleted);
        assert_eq!(push.changed_paths, Some(vec![]));

        let mut forced: serde_json::Value = serde_json::from_slice(PUSH).unwrap();
        forced["forced"] = true.into();
        assert!(
            parse_github_push(forced.to_string().as_bytes())
                .unwrap()
                .unwrap()
                .forced
        );

        forced["ref"] = "refs/notes/commits".into();
        assert_eq!(parse_github_push(forced.to_string().as_bytes()), Ok(None));
    }

    #[test]
    fn both_of_githubs_content_types_give_the_json() {
        let json = br#"{"ref": "refs/heads/main", "a": "b&c=d"}"#;
        let form = format!(
            "payload={}",
            form_urlencoded::byte_serialize(json).collect::<String>()
        );
        for (content_type, body) in [
            ("application/json", json.as_slice()),
            ("Application/JSON; charset=utf-8", json.as_slice()),
            ("application/x-www-form-urlencoded", form.as_bytes()),
        ] {
            assert_eq!(
                webhook_json(Some(content_type), body).as_deref(),
                Ok(json.as_slice()),
                "{content_type}"
            );
        }
        assert!(matches!(
            webhook_json(Some("application/x-www-form-urlencoded"), b"payloads=1"),
            Err(CommitEventError::Malformed(m)) if m.contains("payload field")
        ));
        assert_eq!(
            webhook_json(None, json),
            Err(CommitEventError::UnsupportedContentType("(none)".into()))
        );
    }

    #[test]
    fn malformed_pushes_say_what_is_wrong() {
        for body in [&b"not json"[..], b"{}", br#"{"ref": 3}"#] {
            match parse_github_push(body) {
                Err(CommitEventError::Malformed(reason)) => assert!(!reason.is_empty()),
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(
            parse_codecommit_state_change(&serde_json::json!({"event": "referenceUpdated"})),
            Err(CommitEventError::Malformed(_))
        ));
    }

    #[test]
    fn a_codecommit_trigger_gives_one_push_per_reference() {
        let event: aws_lambda_events::event::code_commit::CodeCommitEvent =
            serde_json::from_slice(include_bytes!("../events/codecommit-trigger.json")).unwrap();
        let pushes = parse_codecommit_trigger(&event);
        let summary: Vec<(String, GitRef, bool)> = pushes
            .iter()
            .map(|p| (p.repository.clone(), p.reference.clone(), p.deleted))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("greeter".into(), GitRef::Branch("main".into()), false),
                ("greeter".into(), GitRef::Tag("v1.4.0".into()), false),
                (
                    "greeter".into(),
                    GitRef::Branch("old-experiment".into()),
                    true
                ),
            ]
        );
        assert_eq!(pushes[0].sha, "5e493c6f3067653f3d04eca608b4901eb2270781");
        assert_eq!(pushes[0].changed_paths, None);
    }

    #[test]
    fn an_eventbridge_state_change_is_a_push_and_a_deletion_is_not() {
        let event: serde_json::Value =
            serde_json::from_slice(include_bytes!("../events/codecommit-state-change.json"))
                .unwrap();
        let push = parse_codecommit_state_change(&event["detail"])
            .unwrap()
            .unwrap();
        assert_eq!(push.repository, "greeter");
        assert_eq!(push.reference, GitRef::Branch("main".into()));
        assert_eq!(push.sha, "5e493c6f3067653f3d04eca608b4901eb2270781");

        let mut deleted = event["detail"].clone();
        deleted["event"] = "referenceDeleted".into();
        deleted.as_object_mut().unwrap().remove("commitId");
        assert_eq!(parse_codecommit_state_change(&deleted), Ok(None));
    }
}
