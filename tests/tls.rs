//! What a function's HTTPS connections trust. One local endpoint, with a
//! certificate from a test CA: refused with the compiled-in Amazon Trust
//! Services roots, answered once `SSL_CERT_FILE` names the test CA.

use aws_config::{BehaviorVersion, Region};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_types::retry::RetryConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sluice::aws::{Trust, http_client};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const SERVER_CERTIFICATE: &[u8] = include_bytes!("fixtures/tls/server.pem");
const SERVER_KEY: &[u8] = include_bytes!("fixtures/tls/server.key");
const TEST_CA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls/ca.pem");
/// The test the child process runs, with `SSL_CERT_FILE` naming the test CA.
const CHILD_TEST: &str = "through_the_store_ssl_cert_file_names";

/// A DynamoDB endpoint on 127.0.0.1 that speaks TLS with a certificate the
/// test CA signed, and answers every request with an empty ListTables. It
/// counts the connections clients open; it stops with the test's runtime.
async fn endpoint() -> (String, Arc<AtomicUsize>) {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("default protocol versions")
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from_pem_slice(SERVER_CERTIFICATE).expect("certificate")],
        PrivateKeyDer::from_pem_slice(SERVER_KEY).expect("key"),
    )
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
    let url = format!("https://{}", listener.local_addr().expect("address"));
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let Ok(mut stream) = acceptor.accept(stream).await else {
                continue;
            };
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let body = br#"{"TableNames":[]}"#;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body).await;
            let _ = stream.shutdown().await;
        }
    });
    (url, connections)
}

fn dynamodb(url: &str, trust: Trust) -> aws_sdk_dynamodb::Client {
    let config = aws_config::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "test", "test", None, None, "test",
        )))
        .retry_config(RetryConfig::disabled())
        .endpoint_url(url)
        .http_client(http_client(trust))
        .build();
    aws_sdk_dynamodb::Client::new(&config)
}

#[tokio::test]
async fn a_function_refuses_an_endpoint_no_amazon_root_vouches_for() {
    let (url, connections) = endpoint().await;
    let error = dynamodb(&url, Trust::AmazonTrustServices)
        .list_tables()
        .send()
        .await
        .expect_err("an endpoint of the test CA must be refused");
    let chain = format!("{error:?}");
    assert!(
        chain.contains("UnknownIssuer"),
        "refused for another reason than the certificate's issuer: {chain}"
    );
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

/// The other half runs in a child process: the system store is read once per
/// process, from the environment, and a test must not change its own.
#[test]
fn a_function_trusts_the_store_ssl_cert_file_names() {
    assert!(Path::new(TEST_CA).is_file());
    let child = Command::new(std::env::current_exe().expect("this test binary"))
        .args([CHILD_TEST, "--exact", "--ignored", "--nocapture"])
        .env("SSL_CERT_FILE", TEST_CA)
        .output()
        .expect("run the child test");
    let output = String::from_utf8_lossy(&child.stdout);
    assert!(
        child.status.success() && output.contains("1 passed"),
        "{output}{}",
        String::from_utf8_lossy(&child.stderr)
    );
}

#[tokio::test]
#[ignore = "run by a_function_trusts_the_store_ssl_cert_file_names, with SSL_CERT_FILE set"]
async fn through_the_store_ssl_cert_file_names() {
    let trust = Trust::for_lambda(|name| std::env::var_os(name));
    assert_eq!(trust, Trust::System, "SSL_CERT_FILE is not set");
    let (url, connections) = endpoint().await;
    let tables = dynamodb(&url, trust)
        .list_tables()
        .send()
        .await
        .expect("the endpoint is trusted through SSL_CERT_FILE");
    assert_eq!(tables.table_names(), [] as [String; 0]);
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}
