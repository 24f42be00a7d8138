//! IAM for the functions sluice-local runs: each runs with its execution
//! role's credentials, as on Lambda, and every AWS call it makes passes
//! through sluice-local, which allows it only if the role's policies (read
//! from moto's IAM) allow that action on that resource. A refusal is the
//! service's own `AccessDenied` error, with IAM's message naming the action
//! and the resource. Callers without a function's credentials (tests, the
//! CLI, the local stack itself) are administrators and are not checked.
//! <https://docs.aws.amazon.com/lambda/latest/dg/lambda-intro-execution-role.html>

pub mod policy;
pub mod requests;
pub mod sam;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use policy::{Decision, Statement};
use requests::{Access, Request, Resource};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The access key id every function's credentials carry. Which function and
/// role they stand for is in the session token, which SigV4 sends with every
/// request (`X-Amz-Security-Token`).
pub const ACCESS_KEY_ID: &str = "ASIASLUICELOCALFUNCTION";
pub const SECRET_ACCESS_KEY: &str = "sluice-local-function-secret";
const TOKEN_PREFIX: &str = "SluiceLocalFunction";

/// How long a role's policies are kept before they are read again. IAM is
/// eventually consistent, so a change to a role takes a moment to apply
/// there too.
/// <https://docs.aws.amazon.com/IAM/latest/UserGuide/troubleshoot_general.html#troubleshoot_general_eventual-consistency>
const POLICY_CACHE: Duration = Duration::from_secs(1);

/// A function calling with its execution role's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub function: String,
    pub role_arn: String,
}

impl Caller {
    /// The session token a function's process is given.
    pub fn session_token(&self) -> String {
        format!("{TOKEN_PREFIX}:{}:{}", self.function, self.role_arn)
    }

    /// The function whose credentials signed a request, if any did.
    pub fn of(headers: &HeaderMap) -> Option<Caller> {
        let token = headers.get("x-amz-security-token")?.to_str().ok()?;
        let rest = token.strip_prefix(TOKEN_PREFIX)?.strip_prefix(':')?;
        let (function, role_arn) = rest.split_once(':')?;
        Some(Caller {
            function: function.to_owned(),
            role_arn: role_arn.to_owned(),
        })
    }

    fn role_name(&self) -> &str {
        self.role_arn.rsplit('/').next().unwrap_or(&self.role_arn)
    }

    /// The principal IAM names in its messages: the role's session for the function.
    fn principal(&self, account: &str) -> String {
        format!(
            "arn:aws:sts::{account}:assumed-role/{}/{}",
            self.role_name(),
            self.function
        )
    }
}

/// The signing name of a SigV4-signed request (`Credential=<key>/<date>/<region>/<service>/aws4_request`).
pub fn signing_service(headers: &HeaderMap) -> Option<String> {
    let auth = headers.get("authorization")?.to_str().ok()?;
    let credential = auth.split("Credential=").nth(1)?;
    let scope = credential.split([',', ' ']).next()?;
    scope.split('/').nth(3).map(str::to_owned)
}

type Policies = Arc<Result<Vec<Statement>, String>>;

pub struct Authorizer {
    iam: aws_sdk_iam::Client,
    secrets: aws_sdk_secretsmanager::Client,
    region: String,
    account: String,
    roles: Mutex<HashMap<String, (Instant, Policies)>>,
}

impl Authorizer {
    pub fn new(moto: &aws_config::SdkConfig, region: String, account: String) -> Self {
        Self {
            iam: aws_sdk_iam::Client::new(moto),
            secrets: aws_sdk_secretsmanager::Client::new(moto),
            region,
            account,
            roles: Mutex::new(HashMap::new()),
        }
    }

    /// Forgets every role's policies (after `POST /moto-api/reset`).
    pub fn reset(&self) {
        self.roles.lock().expect("roles lock").clear();
    }

    /// `Ok` if the caller's role allows everything the request does; else
    /// the service's `AccessDenied` answer.
    pub async fn check(
        &self,
        caller: &Caller,
        service: &str,
        method: &axum::http::Method,
        uri: &axum::http::Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(), Response> {
        let request = Request {
            service,
            method,
            uri,
            headers,
            body,
            region: &self.region,
            account: &self.account,
        };
        let deny = |message: String| denied(service, headers, &message);
        let principal = caller.principal(&self.account);
        let unauthorized =
            |why: &String| deny(format!("User: {principal} is not authorized: {why}"));
        let needed = requests::accesses(&request).map_err(|why| unauthorized(&why))?;
        let policies = self.policies(caller).await;
        let statements = policies.as_ref().as_ref().map_err(unauthorized)?;
        for Access { action, resource } in needed {
            let arn = match resource {
                Resource::Arn(arn) => arn,
                Resource::SecretName(name) => self.secret_arn(&name).await,
            };
            match policy::decide(statements, &action, &arn) {
                Decision::Allowed => {}
                Decision::ImplicitDeny => {
                    tracing::warn!(function = %caller.function, %action, resource = %arn, "AccessDenied");
                    return Err(deny(format!(
                        "User: {principal} is not authorized to perform: {action} on resource: {arn} because no identity-based policy allows the {action} action"
                    )));
                }
                Decision::ExplicitDeny => {
                    tracing::warn!(function = %caller.function, %action, resource = %arn, "AccessDenied (explicit deny)");
                    return Err(deny(format!(
                        "User: {principal} is not authorized to perform: {action} on resource: {arn} with an explicit deny in an identity-based policy"
                    )));
                }
            }
        }
        Ok(())
    }

    /// A secret's ARN, for a request that named it by name; the name itself
    /// in an ARN shape if there is no such secret (the call fails anyway).
    async fn secret_arn(&self, name: &str) -> String {
        match self.secrets.describe_secret().secret_id(name).send().await {
            Ok(out) => out.arn().unwrap_or_default().to_owned(),
            Err(_) => format!(
                "arn:aws:secretsmanager:{}:{}:secret:{name}",
                self.region, self.account
            ),
        }
    }

    async fn policies(&self, caller: &Caller) -> Policies {
        let role = caller.role_name().to_owned();
        if let Some((at, policies)) = self.roles.lock().expect("roles lock").get(&role)
            && at.elapsed() < POLICY_CACHE
        {
            return policies.clone();
        }
        let policies = Arc::new(self.read_role(&role).await);
        self.roles
            .lock()
            .expect("roles lock")
            .insert(role, (Instant::now(), policies.clone()));
        policies
    }

    /// Every statement of the role's inline and attached policies.
    async fn read_role(&self, role: &str) -> Result<Vec<Statement>, String> {
        let mut documents = Vec::new();
        let inline = self
            .iam
            .list_role_policies()
            .role_name(role)
            .send()
            .await
            .map_err(|e| format!("its role {role} cannot be read: {}", service_message(&e)))?;
        for name in inline.policy_names() {
            let out = self
                .iam
                .get_role_policy()
                .role_name(role)
                .policy_name(name)
                .send()
                .await
                .map_err(|e| format!("policy {name} of {role}: {}", service_message(&e)))?;
            documents.push((name.clone(), out.policy_document().to_owned()));
        }
        let attached = self
            .iam
            .list_attached_role_policies()
            .role_name(role)
            .send()
            .await
            .map_err(|e| format!("the policies attached to {role}: {}", service_message(&e)))?;
        for p in attached.attached_policies() {
            let arn = p.policy_arn().unwrap_or_default();
            let meta = self
                .iam
                .get_policy()
                .policy_arn(arn)
                .send()
                .await
                .map_err(|e| format!("policy {arn}: {}", service_message(&e)))?;
            let version = meta
                .policy()
                .and_then(|p| p.default_version_id())
                .unwrap_or("v1");
            let out = self
                .iam
                .get_policy_version()
                .policy_arn(arn)
                .version_id(version)
                .send()
                .await
                .map_err(|e| format!("policy {arn}: {}", service_message(&e)))?;
            let document = out
                .policy_version()
                .and_then(|v| v.document())
                .unwrap_or_default();
            documents.push((arn.to_owned(), document.to_owned()));
        }
        let mut statements = Vec::new();
        for (name, text) in documents {
            // IAM answers with the document URL-encoded.
            let decoded = percent_encoding::percent_decode_str(&text).decode_utf8_lossy();
            let document: Value = serde_json::from_str(&decoded)
                .map_err(|e| format!("policy {name} of {role} is not JSON: {e}"))?;
            statements.extend(
                policy::parse_document(&document)
                    .map_err(|e| format!("policy {name} of {role}: {e}"))?,
            );
        }
        Ok(statements)
    }
}

fn service_message<E: std::fmt::Debug>(e: &aws_sdk_iam::error::SdkError<E>) -> String {
    match e {
        aws_sdk_iam::error::SdkError::ServiceError(se) => format!("{:?}", se.err()),
        other => format!("{other:?}"),
    }
}

/// The service's own `AccessDenied` answer, in the protocol the request used,
/// so the SDK in the function parses it as it would on AWS.
pub fn denied(service: &str, headers: &HeaderMap, message: &str) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let json = |status: StatusCode, kind: &str, content_type: &'static str| {
        let mut resp = (
            status,
            [("content-type", content_type)],
            json!({"__type": kind, "message": message, "Message": message}).to_string(),
        )
            .into_response();
        resp.headers_mut().insert(
            "x-amzn-requestid",
            HeaderValue::from_str(&request_id).expect("a uuid is a header value"),
        );
        resp
    };
    let xml_escaped = message
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    match service {
        "lambda" => {
            let mut resp = json(StatusCode::FORBIDDEN, "AccessDeniedException", "application/json");
            resp.headers_mut().insert(
                "x-amzn-errortype",
                HeaderValue::from_static("AccessDeniedException"),
            );
            resp
        }
        "s3" => (
            StatusCode::FORBIDDEN,
            [("content-type", "application/xml")],
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code><Message>{xml_escaped}</Message><RequestId>{request_id}</RequestId></Error>"
            ),
        )
            .into_response(),
        "sqs" if headers.contains_key("x-amz-target") => {
            let mut resp = json(
                StatusCode::FORBIDDEN,
                "com.amazon.coral.service#AccessDeniedException",
                "application/x-amz-json-1.0",
            );
            resp.headers_mut().insert(
                "x-amzn-query-error",
                HeaderValue::from_static("AccessDenied;Sender"),
            );
            resp
        }
        "dynamodb" => json(
            StatusCode::BAD_REQUEST,
            "com.amazon.coral.service#AccessDeniedException",
            "application/x-amz-json-1.0",
        ),
        _ if headers.contains_key("x-amz-target") => json(
            StatusCode::BAD_REQUEST,
            "AccessDeniedException",
            "application/x-amz-json-1.1",
        ),
        // The query protocol (CloudWatch, SQS's older one).
        _ => (
            StatusCode::FORBIDDEN,
            [("content-type", "text/xml")],
            format!(
                "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>{xml_escaped}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
            ),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_token_names_its_function_and_role() {
        let caller = Caller {
            function: "sluice-shifter".into(),
            role_arn: "arn:aws:iam::123456789012:role/service/sluice-ShifterRole".into(),
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-amz-security-token",
            HeaderValue::from_str(&caller.session_token()).unwrap(),
        );
        assert_eq!(Caller::of(&headers), Some(caller.clone()));
        assert_eq!(
            caller.principal("123456789012"),
            "arn:aws:sts::123456789012:assumed-role/sluice-ShifterRole/sluice-shifter"
        );
        headers.insert(
            "x-amz-security-token",
            HeaderValue::from_static("someone-else"),
        );
        assert_eq!(Caller::of(&headers), None);
    }

    #[test]
    fn the_signing_name_is_read_from_the_credential_scope() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            HeaderValue::from_static(
                "AWS4-HMAC-SHA256 Credential=AKID/20261202/us-east-1/monitoring/aws4_request, SignedHeaders=host, Signature=00",
            ),
        );
        assert_eq!(signing_service(&headers).as_deref(), Some("monitoring"));
        assert_eq!(signing_service(&HeaderMap::new()), None);
    }
}
