//! One way to build AWS SDK configuration for every binary.

/// Loads the SDK configuration from the standard chain: credentials, region and
/// endpoints (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_<SERVICE>`) all come from the
/// environment, so the same code talks to AWS or to the local stack.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}
