//! One way to build AWS SDK configuration for every binary, and how Sluice
//! reads the SDK's errors and sends its queue messages.

use aws_config::environment::{
    EnvironmentVariableCredentialsProvider, EnvironmentVariableRegionProvider,
};
use aws_config::timeout::TimeoutConfig;
use aws_smithy_http_client::tls;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use std::time::Duration;

/// Loads the SDK configuration from the standard chain: credentials, region and
/// endpoints (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_<SERVICE>`) all come from the
/// environment, so the same code talks to AWS or to the local stack. HTTPS
/// trusts the system's certificate store, as a terminal's other tools do.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http_client(Trust::System))
        .timeout_config(api_timeouts())
        .load()
        .await
}

/// The SDK configuration inside a Lambda function. Lambda hands a function its
/// role's credentials and its region in environment variables, so only those
/// are read: the standard chain would also build STS, SSO and instance-metadata
/// providers at every cold start, never to use them. Endpoints come from the
/// environment as in [`sdk_config`]; HTTPS trust is [`Trust::for_lambda`].
pub async fn lambda_sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .credentials_provider(EnvironmentVariableCredentialsProvider::new())
        .region(EnvironmentVariableRegionProvider::new())
        .http_client(http_client(Trust::for_lambda(|name| {
            std::env::var_os(name)
        })))
        .timeout_config(api_timeouts())
        .load()
        .await
}

/// The certificate authorities of Amazon Trust Services: Amazon Root CA 1 to 4,
/// and the Starfield root that cross-signs them. Every AWS endpoint's
/// certificate chains to one of them (AWS documents this set as what a trust
/// store needs for its services).
const AMAZON_TRUST_SERVICES: &[u8] = include_bytes!("amazon-trust-services.pem");

/// Which certificate authorities HTTPS connections to AWS trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// Only [the CAs that sign AWS endpoints](AMAZON_TRUST_SERVICES), compiled
    /// in: a cold start decodes five certificates instead of reading and
    /// decoding the system's hundred and more, and no other CA can vouch for
    /// an AWS endpoint.
    AmazonTrustServices,
    /// The system's store: `SSL_CERT_FILE` and `SSL_CERT_DIR`, or the
    /// platform's usual files.
    System,
}

impl Trust {
    /// What a function trusts: Amazon Trust Services, unless `SSL_CERT_FILE`
    /// or `SSL_CERT_DIR` names a store. That is the way to trust another CA:
    /// a firewall that inspects TLS, or a partition (China) whose endpoints
    /// other CAs sign. `var` reads an environment variable.
    pub fn for_lambda(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> Trust {
        let named = |name| var(name).is_some_and(|value| !value.is_empty());
        if named("SSL_CERT_FILE") || named("SSL_CERT_DIR") {
            Trust::System
        } else {
            Trust::AmazonTrustServices
        }
    }

    fn store(self) -> tls::TrustStore {
        match self {
            Trust::AmazonTrustServices => tls::TrustStore::empty()
                .with_native_roots(false)
                .with_pem_certificate(AMAZON_TRUST_SERVICES),
            Trust::System => tls::TrustStore::default(),
        }
    }
}

/// A plain HTTPS client (for presigned URLs) trusting what the SDK's
/// clients trust.
pub fn https_client(trust: Trust) -> reqwest::Client {
    let builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(API_TIMEOUT);
    let builder = match trust {
        Trust::AmazonTrustServices => {
            let roots = reqwest::Certificate::from_pem_bundle(AMAZON_TRUST_SERVICES)
                .expect("the compiled-in roots are PEM");
            roots
                .into_iter()
                .fold(builder.tls_built_in_root_certs(false), |b, root| {
                    b.add_root_certificate(root)
                })
        }
        Trust::System => builder.tls_built_in_native_certs(true),
    };
    builder.build().expect("an HTTPS client builds")
}

/// [`https_client`] inside a Lambda function: trusting what its SDK clients do.
pub fn lambda_https_client() -> reqwest::Client {
    https_client(Trust::for_lambda(|name| std::env::var_os(name)))
}

/// The SDK's default connect timeout, which [`OneConnector`] applies itself.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(3100);

/// An AWS API call whose attempt takes this long is not coming back: the
/// attempt fails and is retried, and the call gives up after [`API_TIMEOUT`]
/// rather than hang until the function's own timeout while an endpoint is
/// sick. An invoke runs as long as its function, and sets its own
/// (`engine::invoke`).
pub const API_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
pub const API_TIMEOUT: Duration = Duration::from_secs(20);

/// The timeouts of every client built from [`sdk_config`] or
/// [`lambda_sdk_config`].
pub fn api_timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(API_ATTEMPT_TIMEOUT)
        .operation_timeout(API_TIMEOUT)
        .build()
}

/// The timeouts of a call that lasts as long as the work it starts (an
/// invoke, an upload), in place of [`api_timeouts`]: `limit` for the attempt
/// and the call, or none at all.
pub fn work_timeouts(limit: Option<Duration>) -> TimeoutConfig {
    let timeouts = TimeoutConfig::builder();
    match limit {
        Some(limit) => timeouts
            .operation_timeout(limit)
            .operation_attempt_timeout(limit),
        None => timeouts
            .disable_operation_timeout()
            .disable_operation_attempt_timeout(),
    }
    .build()
}

/// An HTTPS client whose one connector, and its connection pool, serves every
/// SDK client built from the same configuration.
pub fn http_client(trust: Trust) -> SharedHttpClient {
    let tls_context = tls::TlsContext::builder()
        .with_trust_store(trust.store())
        .build()
        .expect("a trust store is a valid TLS context");
    let connector = aws_smithy_http_client::Connector::builder()
        .connector_settings(
            HttpConnectorSettings::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .build(),
        )
        .sleep_impl(aws_smithy_async::rt::sleep::TokioSleep::new())
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .tls_context(tls_context)
        .build();
    SharedHttpClient::new(OneConnector(SharedHttpConnector::new(connector)))
}

/// The SDK's default HTTP client builds a TLS connector, parsing the whole
/// root store into trust anchors again, once for each service client at its
/// construction and once more at its first request: a function with five
/// clients did that ten times per cold start. This one builds it once. The
/// connector's settings are not asked of it again: our configurations' connect
/// timeout is its own ([`CONNECT_TIMEOUT`]), and none sets a read timeout.
#[derive(Debug)]
struct OneConnector(SharedHttpConnector);

impl HttpClient for OneConnector {
    fn http_connector(
        &self,
        _settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        self.0.clone()
    }
}

/// Puts `message`, as JSON, on the queue at `queue_url`, to be delivered
/// after `delay_secs` (0 to 900, SQS's range): a worker's timers and the
/// work the workers hand each other.
pub(crate) async fn send_to_queue(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    message: &impl serde::Serialize,
    delay_secs: i32,
) -> Result<(), aws_sdk_sqs::error::SdkError<aws_sdk_sqs::operation::send_message::SendMessageError>>
{
    let body = serde_json::to_string(message).expect("queue messages serialise");
    sqs.send_message()
        .queue_url(queue_url)
        .message_body(body)
        .delay_seconds(delay_secs)
        .send()
        .await
        .map(|_| ())
}

/// Whether AWS would answer the same request the same way again: a denied
/// permission, a request it refuses, or something that does not exist.
/// Retrying cannot help; the caller fails what asked for it, with the reason.
pub fn refused_for_good<E, R>(e: &aws_sdk_lambda::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_lambda::error::ProvideErrorMetadata,
{
    e.as_service_error()
        .and_then(|se| se.code())
        .is_some_and(|code| {
            matches!(
                code,
                "AccessDenied" | "AccessDeniedException" | "ValidationException"
            ) || code.ends_with("NotFoundException")
        })
}

/// An AWS error as one line: the service's code and message, or the whole
/// error when the request did not reach the service.
pub fn service_message<E, R>(e: &aws_sdk_lambda::error::SdkError<E, R>) -> String
where
    E: aws_sdk_lambda::error::ProvideErrorMetadata + std::fmt::Debug,
    R: std::fmt::Debug,
{
    match e.as_service_error() {
        Some(se) => format!(
            "{}: {}",
            se.code().unwrap_or("error"),
            se.message().unwrap_or("no message")
        ),
        None => format!("{e:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    use sha2::{Digest, Sha256};
    use std::ffi::OsString;

    #[test]
    fn a_function_trusts_amazon_trust_services_unless_a_store_is_named() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| OsString::from(value))
            }
        };
        assert_eq!(Trust::for_lambda(env(&[])), Trust::AmazonTrustServices);
        assert_eq!(
            Trust::for_lambda(env(&[(
                "SSL_CERT_FILE",
                "/etc/pki/tls/certs/ca-bundle.crt"
            )])),
            Trust::System
        );
        assert_eq!(
            Trust::for_lambda(env(&[("SSL_CERT_DIR", "/opt/certs")])),
            Trust::System
        );
        // Set but empty names nothing, as OpenSSL reads it.
        assert_eq!(
            Trust::for_lambda(env(&[("SSL_CERT_FILE", ""), ("SSL_CERT_DIR", "")])),
            Trust::AmazonTrustServices
        );
    }

    /// The SHA-256 fingerprints Amazon Trust Services publishes for its roots:
    /// a changed byte in the compiled-in file fails here, not in a handshake.
    #[test]
    fn the_compiled_in_roots_are_the_five_amazon_trust_services_roots() {
        let certificates = CertificateDer::pem_slice_iter(AMAZON_TRUST_SERVICES)
            .collect::<Result<Vec<_>, _>>()
            .expect("the compiled-in roots are valid PEM");
        let fingerprints: Vec<String> = certificates
            .iter()
            .map(|der| hex::encode(Sha256::digest(der.as_ref())))
            .collect();
        assert_eq!(
            fingerprints,
            [
                // Amazon Root CA 1 to 4
                "8ecde6884f3d87b1125ba31ac3fcb13d7016de7f57cc904fe1cb97c6ae98196e",
                "1ba5b2aa8c65401a82960118f80bec4f62304d83cec4713a19c39c011ea46db4",
                "18ce6cfe7bf14e60b2e347b8dfe868cb31d02ebb3ada271569f50343b46db3a4",
                "e35d28419ed02025cfa69038cd623962458da5c695fbdea3c22b0bfb25897092",
                // Starfield Services Root Certificate Authority - G2
                "568d6905a2c88708a4b3025190edcfedb1974a606a13c6e5290fcb2ae63edab5",
            ]
        );
        // The SDK's connector panics on a root it cannot turn into a trust
        // anchor; every one of these must parse.
        let mut store = rustls::RootCertStore::empty();
        for certificate in certificates {
            store.add(certificate).expect("a usable trust anchor");
        }
        assert_eq!(store.len(), 5);
    }
}
