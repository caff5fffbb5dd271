//! The one error body every failure answers with:
//! `{"error": {"code": "<snake_case>", "message": "<what was wrong, what to do>"}}`.
//!
//! Codes are part of the API: clients branch on them, so they never change meaning.
//! Internal failures are logged here and answered with a generic message.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use runwarden_control::ControlError;

/// An API failure: status, stable code, one-line message, and any header it needs.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    header: Option<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            header: None,
        }
    }

    fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> ApiError {
        self.header = Some((name, value));
        self
    }

    /// 401: no usable credentials. `invalid_token` when a token was given but is not live.
    pub(crate) fn unauthorized(message: impl Into<String>, invalid_token: bool) -> ApiError {
        let challenge = if invalid_token {
            r#"Bearer realm="runwarden", error="invalid_token""#
        } else {
            r#"Bearer realm="runwarden""#
        };
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).with_header(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        )
    }

    /// 403: the token's scope is too low.
    pub(crate) fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404: no such resource — or not the caller's, which must look the same.
    pub(crate) fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 405: the path exists, the method does not.
    pub(crate) fn method_not_allowed(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            message,
        )
    }

    /// 400: a malformed path segment or query parameter.
    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 400: the incident body is not a valid incident.
    pub(crate) fn invalid_incident(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_incident", message)
    }

    /// 413: the body is larger than the configured limit.
    pub(crate) fn payload_too_large(limit: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than {limit} bytes: send a smaller one"),
        )
    }

    /// 408: the request body did not arrive in time.
    pub(crate) fn body_timeout(timeout: std::time::Duration) -> ApiError {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request body did not arrive within {} s: send it at once",
                timeout.as_secs()
            ),
        )
    }

    /// 429: the token's bucket is empty; retry after `retry_after_secs`.
    pub(crate) fn rate_limited(retry_after_secs: u64) -> ApiError {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many requests with this token: retry after {retry_after_secs} s"),
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from(retry_after_secs))
    }

    /// 503: the service is stopping.
    pub(crate) fn shutting_down() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "runwarden is shutting down: retry against the restarted service",
        )
    }

    /// 500: logs `detail` (never sent) and answers generically.
    pub(crate) fn internal(context: &str, detail: &dyn std::fmt::Display) -> ApiError {
        eprintln!("runwarden-api: {context}: {detail}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error: it was logged on the server; retry later or tell the operator",
        )
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> ApiError {
        match e {
            ControlError::Invalid(e) => ApiError::invalid_incident(e.to_string()),
            e @ ControlError::WrongTenant { .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "wrong_tenant",
                e.to_string(),
            ),
            ControlError::ShuttingDown => ApiError::shutting_down(),
            ControlError::NotFound(m) => ApiError::not_found(m),
            ControlError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            ControlError::BadRequest(m) => ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m),
            e if e.is_disk_full() => {
                eprintln!("runwarden-api: control plane: {e}");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "disk_full",
                    "the disk that holds runwarden's data is full: free space on it and retry; \
                     incidents already accepted are concluded and recorded once writes succeed",
                )
            }
            e @ (ControlError::Store(_) | ControlError::Evidence(_) | ControlError::Setup(_)) => {
                ApiError::internal("control plane", &e)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": {"code": self.code, "message": self.message}
        });
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some((name, value)) = self.header {
            resp.headers_mut().insert(name, value);
        }
        resp
    }
}

/// Handler results.
pub(crate) type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(e: ApiError) -> (StatusCode, serde_json::Value) {
        let resp = e.into_response();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn control_errors_map_to_stable_codes() {
        let (s, b) = body(
            ControlError::WrongTenant {
                given: "b".into(),
                caller: "a".into(),
            }
            .into(),
        )
        .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(b["error"]["code"], "wrong_tenant");
        assert!(b["error"]["message"].as_str().unwrap().contains("\"b\""));

        let (s, b) = body(ControlError::ShuttingDown.into()).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(b["error"]["code"], "shutting_down");

        // Internals are not sent.
        let (s, b) = body(ControlError::Setup("secret path /var/x".into()).into()).await;
        assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(b["error"]["code"], "internal");
        assert!(!b["error"]["message"].as_str().unwrap().contains("/var/x"));

        // A full disk is the operator's to fix, and says so (503, retry later).
        let full = runwarden_evidence::Error::Io {
            action: "append to the log",
            path: "/var/lib/runwarden/evidence.db".into(),
            source: std::io::Error::from_raw_os_error(28),
        };
        let (s, b) = body(ControlError::Evidence(full).into()).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(b["error"]["code"], "disk_full");
        assert!(b["error"]["message"].as_str().unwrap().contains("disk"));
        assert!(!b["error"]["message"].as_str().unwrap().contains("/var/lib"));
    }
}
