//! One way to build AWS SDK configuration for every binary.

/// Loads the SDK configuration from the standard chain: credentials, region and
/// endpoints (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_<SERVICE>`) all come from the
/// environment, so the same code talks to AWS or to the local stack.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
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
