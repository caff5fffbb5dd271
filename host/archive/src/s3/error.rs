//! The one error type of the S3 client.

/// Everything that can go wrong talking to S3.
///
/// Each message names the operation and the object (`s3://bucket/key`), says what went
/// wrong and what to do. None of them contains the secret key, the session token or the
/// `Authorization` header; text that came from the server has had its control characters
/// escaped ([`runwarden_evidence::escape_control`]) and is cut to a few hundred characters.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum S3Error {
    /// The client is set up wrongly: a malformed endpoint or region, missing credentials.
    /// Retrying does not help; fix the configuration.
    #[error("S3 configuration: {0}")]
    Config(String),

    /// A bucket name, key, version id or argument this client refuses to send.
    #[error("S3 {request} of {target}: {problem}")]
    InvalidInput {
        /// The operation, e.g. `PutObject`.
        request: &'static str,
        /// What it was for: `s3://bucket/key`.
        target: String,
        /// What is wrong with it and what is allowed.
        problem: String,
    },

    /// The request did not get an HTTP answer: connection refused or reset, a timeout, a
    /// TLS failure, a connection closed mid-body. Retryable.
    #[error(
        "S3 {request} of {target}: no answer from {endpoint}: {detail}; \
         check that the endpoint is right and the server is up (retrying may help)"
    )]
    Transport {
        /// The operation, e.g. `PutObject`.
        request: &'static str,
        /// What it was for: `s3://bucket/key`.
        target: String,
        /// The endpoint the request went to.
        endpoint: String,
        /// What failed, from the HTTP client and the operating system.
        detail: String,
    },

    /// The server answered with an S3 error.
    #[error(
        "S3 {request} of {target} refused: HTTP {status} {code}: {message}{}",
        service_hint(code, *status)
    )]
    Service {
        /// The HTTP status.
        status: u16,
        /// The S3 error code, e.g. `AccessDenied`, `SignatureDoesNotMatch`; for an answer
        /// without an S3 error document (HEAD has no body) the status reason without
        /// spaces, e.g. `Forbidden`.
        code: String,
        /// The server's message (escaped, shortened), or what the body began with.
        message: String,
        /// The operation, e.g. `PutObject`.
        request: &'static str,
        /// What it was for: `s3://bucket/key`.
        target: String,
    },

    /// The server answered with something an S3 server does not send: malformed XML, a
    /// missing or malformed header, a body that does not match its checksum.
    #[error(
        "S3 {request} of {target}: unexpected answer from {endpoint}: {detail}; \
         check that the endpoint is an S3 server (and not a proxy or another service)"
    )]
    BadResponse {
        /// The operation, e.g. `ListObjectsV2`.
        request: &'static str,
        /// What it was for: `s3://bucket/key`.
        target: String,
        /// The endpoint the request went to.
        endpoint: String,
        /// What was wrong with the answer.
        detail: String,
    },

    /// An object is larger than the caller allowed; it was not read (beyond the limit).
    #[error(
        "S3 {request} of {target}: the object is larger than the limit of {limit} bytes{}; \
         it was not read — check that this is the object you meant, or raise the limit",
        size.map(|s| format!(" ({s} bytes)")).unwrap_or_default()
    )]
    TooLarge {
        /// The operation, `GetObject`.
        request: &'static str,
        /// What it was for: `s3://bucket/key`.
        target: String,
        /// The caller's limit in bytes.
        limit: u64,
        /// The size the server announced, if it did.
        size: Option<u64>,
    },

    /// A listing holds more keys (or pages) than this client reads.
    #[error("S3 ListObjectsV2 of {target}: more than {limit} {what}; list a narrower prefix")]
    TooMany {
        /// The bucket and prefix: `s3://bucket/prefix*`.
        target: String,
        /// `keys` or `pages`.
        what: &'static str,
        /// The limit that was reached.
        limit: usize,
    },
}

impl S3Error {
    /// Whether trying the same request again later may succeed: transport failures, any
    /// 5xx, 429, and the S3 codes `SlowDown` and `RequestTimeout` (the server gave up
    /// waiting for the request body).
    pub fn is_retryable(&self) -> bool {
        match self {
            S3Error::Transport { .. } => true,
            S3Error::Service { status, code, .. } => {
                *status >= 500 || *status == 429 || code == "SlowDown" || code == "RequestTimeout"
            }
            _ => false,
        }
    }
}

/// What to do about a service error, for the common codes.
fn service_hint(code: &str, status: u16) -> &'static str {
    match code {
        "SignatureDoesNotMatch" => {
            "; the secret key does not match the access key id (check AWS_SECRET_ACCESS_KEY), \
             or the region is wrong"
        }
        "InvalidAccessKeyId" => {
            "; the server does not know this access key id (check AWS_ACCESS_KEY_ID)"
        }
        "ExpiredToken" | "InvalidToken" => {
            "; the session token is expired or invalid: get new credentials"
        }
        "RequestTimeTooSkewed" => "; this machine's clock is off: synchronise it (NTP)",
        "AccessDenied" => {
            "; the credentials' policy does not allow this, or (for a delete) the version is \
             under Object Lock until its retain-until date"
        }
        "NoSuchBucket" => "; create the bucket (with Object Lock) or fix its name",
        "InvalidBucketName" => "; bucket names are 3-63 lower-case letters, digits, '-' and '.'",
        "BucketAlreadyExists" | "BucketAlreadyOwnedByYou" => {
            "; choose another bucket name, or use the existing bucket"
        }
        "InvalidRequest" | "InvalidArgument" => {
            "; the request is not valid for this bucket (e.g. Object Lock is not enabled on it)"
        }
        "PermanentRedirect"
        | "AuthorizationHeaderMalformed"
        | "IllegalLocationConstraintException" => {
            "; the bucket is in another region or behind another endpoint: fix the region or endpoint"
        }
        _ if status >= 500 || status == 429 || code == "SlowDown" => {
            "; the server is busy or failing: retry later"
        }
        _ => "",
    }
}
