//! Function URL requests and answers, shared by the webhook (`source`) and
//! the operator API (`api`): JSON bodies, errors as `{"error": "..."}`.

use aws_lambda_events::event::lambda_function_urls::{
    LambdaFunctionUrlRequest, LambdaFunctionUrlResponse,
};
use aws_lambda_events::http::{HeaderMap, HeaderValue};
use base64::Engine as _;

pub fn response(status: i64, body: serde_json::Value) -> LambdaFunctionUrlResponse {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let mut answer = LambdaFunctionUrlResponse::default();
    answer.status_code = status;
    answer.headers = headers;
    answer.body = Some(body.to_string());
    answer
}

pub fn error_response(status: i64, message: impl std::fmt::Display) -> LambdaFunctionUrlResponse {
    response(status, serde_json::json!({ "error": message.to_string() }))
}

/// The request's method, as the URL's invoker saw it.
pub fn method(request: &LambdaFunctionUrlRequest) -> &str {
    request.request_context.http.method.as_deref().unwrap_or("")
}

/// The body's bytes, or why they cannot be read (an answer 400 gives).
pub fn body(request: &LambdaFunctionUrlRequest) -> Result<Vec<u8>, &'static str> {
    match (&request.body, request.is_base64_encoded) {
        (None, _) => Ok(Vec::new()),
        (Some(text), false) => Ok(text.as_bytes().to_vec()),
        (Some(text), true) => base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| "the body is not valid base64"),
    }
}
