//! A small S3 client for the evidence archive: the handful of calls it makes, signed with
//! AWS Signature Version 4 over reqwest, path-style (`http://host:port/BUCKET/KEY`).
//!
//! Written by hand instead of using aws-sdk-s3, whose build would push CI past 30 minutes.
//! What it does:
//!
//! - [`S3::create_bucket`] (optionally with Object Lock), [`S3::object_lock_enabled`];
//! - [`S3::put_object_locked`]: a COMPLIANCE-mode retention on the new version, the body's
//!   SHA-256 both signed (`x-amz-content-sha256`) and as an S3 checksum
//!   (`x-amz-checksum-sha256`, which Object Lock requires in place of Content-MD5);
//! - [`S3::head_object`], [`S3::get_object`] (bounded, and checked against the stored
//!   checksum when the server returns one), [`S3::list`] and [`S3::list_versions`] (every
//!   page, bounded), [`S3::delete_object`].
//!
//! Nothing is retried here: [`S3Error::is_retryable`] tells the caller when it may.
//! Bucket names, keys and version ids are checked before anything is sent: keys with a
//! `.` or `..` segment (URL parsers resolve those, changing the key) or with control
//! characters are refused.

mod error;
mod sigv4;
mod xml;

use std::time::Duration;

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, HeaderMap};
use runwarden_evidence::{escape_control, is_unsafe_char, rfc3339_ms};
use sha2::{Digest, Sha256};

pub use error::S3Error;
pub use sigv4::{Signable, amz_date, authorization, canonical_query};

/// `Result` with [`S3Error`].
pub type Result<T, E = S3Error> = std::result::Result<T, E>;

/// [`S3::list`] refuses a listing with more keys than this.
pub const MAX_LISTED_KEYS: usize = 200_000;

/// [`S3::list`] refuses a listing of more pages than this (S3 sends up to 1,000 keys a
/// page; a server sending far fewer would otherwise keep the client busy indefinitely).
pub const MAX_LIST_PAGES: usize = 10_000;

/// The largest XML answer read (a listing page of 1,000 keys of 1,024 bytes, every
/// character escaped, stays under it).
const MAX_XML_BYTES: u64 = 16 << 20;
/// How much of an error answer is read.
const MAX_ERROR_BYTES: u64 = 64 << 10;
/// Server text in an error message is cut to this many characters.
const MAX_MESSAGE_CHARS: usize = 300;
/// 9999-12-31T23:59:59.999Z, the last instant with a four-digit year.
const MAX_DATE_MS: u64 = 253_402_300_799_999;

/// Access keys for S3. `Debug` shows the access key id only.
#[derive(Clone)]
pub struct Credentials {
    /// The access key id, e.g. `AKIAIOSFODNN7EXAMPLE`.
    pub access_key_id: String,
    /// The secret access key. Never printed.
    pub secret_access_key: String,
    /// The session token of temporary credentials (sent as `x-amz-security-token`).
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Credentials {
    /// Credentials from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and, when set,
    /// `AWS_SESSION_TOKEN`. An unset or empty required variable is an error naming it.
    pub fn from_env() -> Result<Credentials> {
        Self::from_lookup(|name| std::env::var(name))
    }

    fn from_lookup(
        get: impl Fn(&str) -> Result<String, std::env::VarError>,
    ) -> Result<Credentials> {
        let var = |name: &str, required: bool| -> Result<Option<String>> {
            let how = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN \
                       for temporary credentials) to the archive's S3 credentials";
            match get(name) {
                Ok(v) if !v.is_empty() => Ok(Some(v)),
                Ok(_) if required => Err(S3Error::Config(format!("{name} is empty: {how}"))),
                Ok(_) => Ok(None),
                Err(std::env::VarError::NotPresent) if required => {
                    Err(S3Error::Config(format!("{name} is not set: {how}")))
                }
                Err(std::env::VarError::NotPresent) => Ok(None),
                Err(std::env::VarError::NotUnicode(_)) => {
                    Err(S3Error::Config(format!("{name} is not valid UTF-8: {how}")))
                }
            }
        };
        let credentials = Credentials {
            access_key_id: var("AWS_ACCESS_KEY_ID", true)?.unwrap_or_default(),
            secret_access_key: var("AWS_SECRET_ACCESS_KEY", true)?.unwrap_or_default(),
            session_token: var("AWS_SESSION_TOKEN", false)?,
        };
        credentials.check()?;
        Ok(credentials)
    }

    /// Refuse credentials that cannot be sent (never quoting the secret parts).
    fn check(&self) -> Result<()> {
        let id = &self.access_key_id;
        if id.is_empty()
            || !id
                .bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'/' | b',' | b'='))
        {
            return Err(S3Error::Config(format!(
                "access key id {:?} is not valid: it must be non-empty printable ASCII \
                 without '/', ',' or '=' (check AWS_ACCESS_KEY_ID)",
                escape_control(id)
            )));
        }
        if self.secret_access_key.is_empty() {
            return Err(S3Error::Config(
                "the secret access key is empty (check AWS_SECRET_ACCESS_KEY)".into(),
            ));
        }
        if let Some(token) = &self.session_token
            && (token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(S3Error::Config(
                "the session token is not printable ASCII (check AWS_SESSION_TOKEN)".into(),
            ));
        }
        Ok(())
    }
}

/// What [`S3::put_object_locked`] stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Put {
    /// The new version's id (every PUT into an Object Lock bucket makes a version).
    pub version_id: Option<String>,
    /// The entity tag, without its quotes.
    pub etag: String,
}

/// What [`S3::head_object`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The object's size in bytes.
    pub size: u64,
    /// The version's id, if the bucket is versioned.
    pub version_id: Option<String>,
    /// The retention mode: `COMPLIANCE` or `GOVERNANCE`.
    pub lock_mode: Option<String>,
    /// The retain-until date as the server wrote it (RFC 3339).
    pub retain_until: Option<String>,
    /// The stored SHA-256 checksum, base64, if the object was put with one.
    pub checksum_sha256: Option<String>,
}

/// One key of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The key.
    pub key: String,
    /// The size of its current version in bytes.
    pub size: u64,
}

/// A version of a key, or a delete marker, as [`S3::list_versions`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedVersion {
    /// The key.
    pub key: String,
    /// Its size in bytes (0 for a delete marker).
    pub size: u64,
    /// Its version id (`null` for one written before versioning was on; `None` only when
    /// the listing gave none).
    pub version_id: Option<String>,
    /// Whether it is the key's newest.
    pub latest: bool,
    /// Whether it is a delete marker (no object: the key reads as deleted).
    pub delete_marker: bool,
}

/// An S3 endpoint with credentials: path-style requests (`http://host:port/BUCKET/KEY`)
/// signed with Signature Version 4 for one region.
pub struct S3 {
    /// `scheme://host[:port]`, no trailing slash.
    base: String,
    /// The `host` header: the host, and the port unless it is the scheme's default.
    host: String,
    region: String,
    credentials: Credentials,
    http: reqwest::Client,
}

impl std::fmt::Debug for S3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3")
            .field("endpoint", &self.base)
            .field("region", &self.region)
            .field("access_key_id", &self.credentials.access_key_id)
            .finish_non_exhaustive()
    }
}

/// One request, before signing.
struct Call<'a> {
    request: &'static str,
    method: Method,
    bucket: &'a str,
    key: Option<&'a str>,
    query: Vec<(&'static str, String)>,
    /// Headers besides host, x-amz-date, x-amz-content-sha256 and x-amz-security-token;
    /// all signed.
    headers: Vec<(&'static str, String)>,
    body: Bytes,
    /// The body's SHA-256 when the caller already has it.
    digest: Option<[u8; 32]>,
}

impl<'a> Call<'a> {
    fn new(request: &'static str, method: Method, bucket: &'a str, key: Option<&'a str>) -> Self {
        Call {
            request,
            method,
            bucket,
            key,
            query: Vec::new(),
            headers: Vec::new(),
            body: Bytes::new(),
            digest: None,
        }
    }

    fn version(mut self, version_id: Option<&str>) -> Self {
        if let Some(v) = version_id {
            self.query.push(("versionId", v.to_string()));
        }
        self
    }

    fn target(&self) -> String {
        target(self.bucket, self.key, self.version_id())
    }

    fn version_id(&self) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| *n == "versionId")
            .map(|(_, v)| v.as_str())
    }
}

/// `s3://bucket/key (version v)`, safe to print.
fn target(bucket: &str, key: Option<&str>, version: Option<&str>) -> String {
    let mut t = format!("s3://{bucket}");
    if let Some(k) = key {
        t.push('/');
        t.push_str(k);
    }
    if let Some(v) = version {
        t.push_str(&format!(" (version {v})"));
    }
    clip(&escape_control(&t), 2 * MAX_MESSAGE_CHARS)
}

impl S3 {
    /// A client for `endpoint` (`http://host:port` or `https://host[:port]`, no path, query
    /// or user) and `region` (e.g. `us-east-1`), with 10 s to connect, 60 s of silence and
    /// 10 minutes per request at most. Redirects are not followed (S3 redirects to other
    /// regions, and a signature is only good for one).
    pub fn new(endpoint: &str, region: &str, credentials: Credentials) -> Result<S3> {
        let bad = |why: &str| {
            Err(S3Error::Config(format!(
                "endpoint {:?} {why}: give it as http://host:port or https://host[:port] \
                 (buckets are addressed path-style, http://host:port/BUCKET/KEY)",
                clip(
                    &escape_control(&without_userinfo(endpoint)),
                    MAX_MESSAGE_CHARS
                )
            )))
        };
        let lower = endpoint.to_ascii_lowercase();
        if !lower.starts_with("http://") && !lower.starts_with("https://") {
            return bad("does not start with http:// or https://");
        }
        let url = match reqwest::Url::parse(endpoint) {
            Ok(url) => url,
            Err(e) => return bad(&format!("is not a URL ({e})")),
        };
        let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
            return bad("has no host");
        };
        if !url.username().is_empty() || url.password().is_some() {
            return bad("has a user name or password in it (give credentials separately)");
        }
        if url.path() != "/" && !url.path().is_empty() {
            return bad("has a path");
        }
        if url.query().is_some() || url.fragment().is_some() {
            return bad("has a query or fragment");
        }
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let loopback = bare.eq_ignore_ascii_case("localhost")
            || bare
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if url.scheme() == "http" && !loopback {
            return bad(
                "is http:// to another machine: evidence and a session token would cross the network in clear; use https://",
            );
        }
        if region.is_empty()
            || region.len() > 64
            || !region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(S3Error::Config(format!(
                "region {:?} is not valid: use the bucket's region, e.g. us-east-1",
                clip(&escape_control(region), MAX_MESSAGE_CHARS)
            )));
        }
        credentials.check()?;
        let host = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .timeout(Duration::from_secs(600))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| S3Error::Config(format!("cannot create the HTTP client: {e}")))?;
        Ok(S3 {
            base: format!("{}://{host}", url.scheme()),
            host,
            region: region.to_string(),
            credentials,
            http,
        })
    }

    /// Create `bucket`, with Object Lock enabled (and so versioning) when `object_lock`.
    /// Outside us-east-1 the bucket is created in this client's region.
    ///
    /// In us-east-1, creating a bucket you already own succeeds: AWS changes nothing (an
    /// existing bucket does not get Object Lock this way), moto 5.2.5 turns Object Lock on.
    /// Check with [`S3::object_lock_enabled`] rather than relying on either.
    pub async fn create_bucket(&self, bucket: &str, object_lock: bool) -> Result<()> {
        let mut call = Call::new("CreateBucket", Method::PUT, bucket, None);
        check_bucket(&call)?;
        if object_lock {
            call.headers
                .push(("x-amz-bucket-object-lock-enabled", "true".into()));
        }
        if self.region != "us-east-1" {
            call.headers
                .push(("content-type", "application/xml".into()));
            call.body = Bytes::from(format!(
                "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
                 <LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                self.region
            ));
        }
        self.send(&call).await?;
        Ok(())
    }

    /// Whether `bucket` has Object Lock enabled (GetObjectLockConfiguration). A bucket
    /// without it is `Ok(false)`; a missing bucket is an error (`NoSuchBucket`).
    pub async fn object_lock_enabled(&self, bucket: &str) -> Result<bool> {
        let mut call = Call::new("GetObjectLockConfiguration", Method::GET, bucket, None);
        call.query.push(("object-lock", String::new()));
        check_bucket(&call)?;
        let response = match self.send(&call).await {
            Ok(response) => response,
            Err(S3Error::Service { code, .. })
                if code == "ObjectLockConfigurationNotFoundError" =>
            {
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        let root = self
            .read_xml(&call, response, "ObjectLockConfiguration")
            .await?;
        Ok(root.child_text("ObjectLockEnabled").map(str::trim) == Some("Enabled"))
    }

    /// Store `body` as a new version of `key`, under COMPLIANCE-mode Object Lock until
    /// `retain_until_ms` (milliseconds since the Unix epoch): until then nobody, the root
    /// account included, can delete that version or shorten its retention (on AWS).
    ///
    /// The body's SHA-256 is signed and sent as its S3 checksum, so the server refuses a
    /// body damaged on the way; the bucket must have Object Lock enabled.
    pub async fn put_object_locked(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        retain_until_ms: u64,
    ) -> Result<Put> {
        let mut call = Call::new("PutObject", Method::PUT, bucket, Some(key));
        check_bucket(&call)?;
        check_key(&call)?;
        if retain_until_ms > MAX_DATE_MS {
            return Err(S3Error::InvalidInput {
                request: call.request,
                target: call.target(),
                problem: format!(
                    "retain-until {retain_until_ms} ms is after the year 9999: give \
                     milliseconds since the Unix epoch"
                ),
            });
        }
        let digest: [u8; 32] = Sha256::digest(&body).into();
        let checksum = base64::engine::general_purpose::STANDARD.encode(digest);
        call.headers = vec![
            ("x-amz-checksum-sha256", checksum.clone()),
            ("x-amz-object-lock-mode", "COMPLIANCE".into()),
            (
                "x-amz-object-lock-retain-until-date",
                rfc3339_ms(retain_until_ms),
            ),
            ("x-amz-sdk-checksum-algorithm", "SHA256".into()),
        ];
        call.body = body;
        call.digest = Some(digest);
        let response = self.send(&call).await?;
        let headers = response.headers();
        if let Some(echoed) = self.header(&call, headers, "x-amz-checksum-sha256")?
            && echoed != checksum
        {
            return Err(self.bad_response(
                &call,
                format!(
                    "the server stored checksum {} for a body whose SHA-256 is {checksum}",
                    clip(&escape_control(&echoed), MAX_MESSAGE_CHARS)
                ),
            ));
        }
        let Some(etag) = self.header(&call, headers, "etag")? else {
            return Err(self.bad_response(&call, "no ETag header in the answer".into()));
        };
        Ok(Put {
            version_id: self.header(&call, headers, "x-amz-version-id")?,
            etag: etag.trim_matches('"').to_string(),
        })
    }

    /// The object's size, version, retention and checksum, or `None` when the server says
    /// 404 (no such key or version — or no such bucket: a HEAD answer has no body to tell
    /// them apart; use [`S3::object_lock_enabled`] to check the bucket).
    pub async fn head_object(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<Option<Head>> {
        let mut call = Call::new("HeadObject", Method::HEAD, bucket, Some(key)).version(version_id);
        call.headers.push(("x-amz-checksum-mode", "ENABLED".into()));
        check_bucket(&call)?;
        check_key(&call)?;
        let response = match self.send(&call).await {
            Ok(response) => response,
            Err(S3Error::Service { status: 404, .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let headers = response.headers();
        // HEAD announces the size of the body a GET would have: read the header itself
        // (the HTTP client reports a HEAD body's length as 0).
        let size = self
            .header(&call, headers, "content-length")?
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| {
                self.bad_response(&call, "no valid Content-Length in the answer".into())
            })?;
        Ok(Some(Head {
            size,
            version_id: self.header(&call, headers, "x-amz-version-id")?,
            lock_mode: self.header(&call, headers, "x-amz-object-lock-mode")?,
            retain_until: self.header(&call, headers, "x-amz-object-lock-retain-until-date")?,
            checksum_sha256: self.header(&call, headers, "x-amz-checksum-sha256")?,
        }))
    }

    /// The object's bytes. A body larger than `max_bytes` is refused
    /// ([`S3Error::TooLarge`]) by its Content-Length before reading, and while reading
    /// whatever the header said. When the server returns the object's full SHA-256
    /// checksum, the body must match it.
    pub async fn get_object(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        max_bytes: u64,
    ) -> Result<Bytes> {
        let mut call = Call::new("GetObject", Method::GET, bucket, Some(key)).version(version_id);
        call.headers.push(("x-amz-checksum-mode", "ENABLED".into()));
        check_bucket(&call)?;
        check_key(&call)?;
        let response = self.send(&call).await?;
        let stored = self.header(&call, response.headers(), "x-amz-checksum-sha256")?;
        let composite = self
            .header(&call, response.headers(), "x-amz-checksum-type")?
            .is_some_and(|t| t.eq_ignore_ascii_case("COMPOSITE"));
        let body = match read_body(response, max_bytes).await {
            Ok(body) => body,
            Err(ReadError::TooLarge(size)) => {
                return Err(S3Error::TooLarge {
                    request: call.request,
                    target: call.target(),
                    limit: max_bytes,
                    size,
                });
            }
            Err(ReadError::Transport(e)) => return Err(self.transport(&call, e)),
        };
        // A multipart object's checksum is of its parts' checksums ("…-N"): not comparable.
        if let Some(stored) = stored.filter(|s| !composite && !s.contains('-')) {
            let actual = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&body));
            if stored != actual {
                return Err(self.bad_response(
                    &call,
                    format!(
                        "the body's SHA-256 is {actual} but the stored checksum is {}: \
                         the object was damaged in transit or in storage",
                        clip(&escape_control(&stored), MAX_MESSAGE_CHARS)
                    ),
                ));
            }
        }
        Ok(body)
    }

    /// Every key under `prefix` (`""` for all) with its size, in the server's (UTF-8
    /// binary) order, reading page after page (ListObjectsV2). More than
    /// [`MAX_LISTED_KEYS`] keys or [`MAX_LIST_PAGES`] pages is an error.
    pub async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<Listed>> {
        Ok(self
            .list_any(bucket, prefix, false)
            .await?
            .into_iter()
            .map(|v| Listed {
                key: v.key,
                size: v.size,
            })
            .collect())
    }

    /// Every version and delete marker of every key under `prefix`
    /// (ListObjectVersions): keys in the server's order, each key's newest first. A key
    /// whose newest entry is a delete marker is hidden from [`S3::list`], but its versions
    /// are still there, readable by their ids (and, under Object Lock, undeletable). The
    /// same limits as [`S3::list`], counting versions and markers.
    pub async fn list_versions(&self, bucket: &str, prefix: &str) -> Result<Vec<ListedVersion>> {
        self.list_any(bucket, prefix, true).await
    }

    /// [`S3::list`] (`versions` false: current objects) or [`S3::list_versions`].
    async fn list_any(
        &self,
        bucket: &str,
        prefix: &str,
        versions: bool,
    ) -> Result<Vec<ListedVersion>> {
        let (request, root_name) = match versions {
            false => ("ListObjectsV2", "ListBucketResult"),
            true => ("ListObjectVersions", "ListVersionsResult"),
        };
        let list_target = || format!("{}*", target(bucket, Some(prefix), None));
        check_bucket(&Call::new(request, Method::GET, bucket, None))?;
        if prefix.len() > 1024 || prefix.chars().any(is_unsafe_char) {
            return Err(S3Error::InvalidInput {
                request,
                target: format!("s3://{bucket}"),
                problem: format!(
                    "prefix {:?} is longer than 1,024 bytes or has control characters",
                    clip(&escape_control(prefix), MAX_MESSAGE_CHARS)
                ),
            });
        }
        let mut listed = Vec::new();
        // Where the next page starts: a continuation token (ListObjectsV2), or a key and
        // version id marker (ListObjectVersions).
        let mut next: Vec<(&'static str, String)> = Vec::new();
        for _page in 0..MAX_LIST_PAGES {
            let mut call = Call::new(request, Method::GET, bucket, None);
            match versions {
                false => call.query.push(("list-type", "2".into())),
                true => call.query.push(("versions", String::new())),
            }
            call.query.push(("prefix", prefix.into()));
            call.query.extend(next.iter().cloned());
            let response = self.send(&call).await?;
            let root = self.read_xml(&call, response, root_name).await?;
            for item in root.children.iter() {
                let marker = match item.name.as_str() {
                    "Contents" if !versions => false,
                    "Version" if versions => false,
                    "DeleteMarker" if versions => true,
                    _ => continue,
                };
                let size = match marker {
                    true => Some(0),
                    false => item
                        .child_text("Size")
                        .and_then(|s| s.trim().parse::<u64>().ok()),
                };
                let (Some(key), Some(size)) = (item.child_text("Key"), size) else {
                    return Err(self.bad_response(
                        &call,
                        "a listed object without a Key or a valid Size".into(),
                    ));
                };
                if !key.starts_with(prefix) {
                    return Err(self.bad_response(
                        &call,
                        format!(
                            "listed key {:?} is not under the prefix asked for",
                            clip(&escape_control(key), MAX_MESSAGE_CHARS)
                        ),
                    ));
                }
                if listed.len() == MAX_LISTED_KEYS {
                    return Err(S3Error::TooMany {
                        target: list_target(),
                        what: "keys",
                        limit: MAX_LISTED_KEYS,
                    });
                }
                listed.push(ListedVersion {
                    key: key.to_string(),
                    size,
                    version_id: item
                        .child_text("VersionId")
                        // `null` is a real id: the version written before versioning
                        // (Object Lock) was turned on, read as `versionId=null`.
                        .filter(|v| versions && !v.is_empty())
                        .map(str::to_string),
                    latest: !versions || item.child_text("IsLatest").map(str::trim) == Some("true"),
                    delete_marker: marker,
                });
            }
            match root.child_text("IsTruncated").map(str::trim) {
                Some("false") | None => return Ok(listed),
                Some("true") => {}
                Some(other) => {
                    return Err(self.bad_response(
                        &call,
                        format!(
                            "IsTruncated is {:?}, not true or false",
                            clip(&escape_control(other), MAX_MESSAGE_CHARS)
                        ),
                    ));
                }
            }
            let following: Vec<(&'static str, String)> = match versions {
                false => root
                    .child_text("NextContinuationToken")
                    .filter(|t| !t.is_empty())
                    .map(|t| vec![("continuation-token", t.to_string())])
                    .unwrap_or_default(),
                true => root
                    .child_text("NextKeyMarker")
                    .filter(|t| !t.is_empty())
                    .map(|k| {
                        let mut m = vec![("key-marker", k.to_string())];
                        if let Some(v) = root
                            .child_text("NextVersionIdMarker")
                            .filter(|v| !v.is_empty())
                        {
                            m.push(("version-id-marker", v.to_string()));
                        }
                        m
                    })
                    .unwrap_or_default(),
            };
            if following.is_empty() || following == next {
                let marker = match versions {
                    false => "NextContinuationToken",
                    true => "NextKeyMarker",
                };
                return Err(
                    self.bad_response(&call, format!("a truncated listing without a new {marker}"))
                );
            }
            next = following;
        }
        Err(S3Error::TooMany {
            target: list_target(),
            what: "pages",
            limit: MAX_LIST_PAGES,
        })
    }

    /// Delete `key` — with `version_id`, that version (refused with 403 `AccessDenied` while
    /// it is under Object Lock); without, the current version is hidden behind a delete
    /// marker and stays readable by its version id.
    pub async fn delete_object(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<()> {
        let call = Call::new("DeleteObject", Method::DELETE, bucket, Some(key)).version(version_id);
        check_bucket(&call)?;
        check_key(&call)?;
        self.send(&call).await?;
        Ok(())
    }

    /// Sign and send `call`; an answer other than 2xx becomes [`S3Error::Service`].
    async fn send(&self, call: &Call<'_>) -> Result<reqwest::Response> {
        if let Some(v) = call.version_id()
            && (v.is_empty() || v.len() > 1024 || v.chars().any(is_unsafe_char))
        {
            return Err(S3Error::InvalidInput {
                request: call.request,
                target: target(call.bucket, call.key, None),
                problem: "the version id is empty, longer than 1,024 bytes or has control \
                          characters"
                    .into(),
            });
        }
        let path = match call.key {
            Some(key) => format!("/{}/{}", call.bucket, sigv4::uri_encode(key, false)),
            None => format!("/{}", call.bucket),
        };
        let query: Vec<(&str, &str)> = call.query.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let canonical = canonical_query(&query);
        let url = if canonical.is_empty() {
            format!("{}{path}", self.base)
        } else {
            format!("{}{path}?{canonical}", self.base)
        };
        // The signature covers the path and query as sent: make sure the URL parser
        // changes neither (it would resolve "." segments, for one).
        let url = match reqwest::Url::parse(&url) {
            Ok(u) if u.path() == path && u.query().unwrap_or("") == canonical => u,
            _ => {
                return Err(S3Error::InvalidInput {
                    request: call.request,
                    target: call.target(),
                    problem: "the key cannot be sent unchanged in a URL".into(),
                });
            }
        };
        let digest = call
            .digest
            .unwrap_or_else(|| Sha256::digest(&call.body).into());
        let payload = hex::encode(digest);
        let now = now_ms();
        let date = amz_date(now);
        let mut headers: Vec<(&str, &str)> = vec![
            ("host", &self.host),
            ("x-amz-content-sha256", &payload),
            ("x-amz-date", &date),
        ];
        if let Some(token) = &self.credentials.session_token {
            headers.push(("x-amz-security-token", token));
        }
        headers.extend(call.headers.iter().map(|(n, v)| (*n, v.as_str())));
        let signable = Signable {
            method: call.method.as_str(),
            path: &path,
            query: &query,
            headers: &headers,
            payload_sha256: &payload,
        };
        let auth = authorization(&signable, now, &self.region, "s3", &self.credentials);
        // reqwest writes the same host header from the URL.
        let mut request = self.http.request(call.method.clone(), url);
        for (name, value) in &headers[1..] {
            request = request.header(*name, *value);
        }
        request = request.header(AUTHORIZATION, auth);
        if matches!(call.method, Method::PUT | Method::POST) {
            request = request.body(call.body.clone());
        }
        let response = request.send().await.map_err(|e| self.transport(call, e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(self.service_error(call, response).await)
    }

    /// The [`S3Error::Service`] an answer other than 2xx stands for.
    async fn service_error(&self, call: &Call<'_>, response: reqwest::Response) -> S3Error {
        let status = response.status();
        let fallback_code: String = status
            .canonical_reason()
            .unwrap_or("Unknown")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect();
        // The status is the answer; the body only explains it, so a body that cannot be
        // read is not an error of its own.
        let body = match read_body(response, MAX_ERROR_BYTES).await {
            Ok(body) => body,
            Err(_) => Bytes::new(),
        };
        let text = String::from_utf8_lossy(&body);
        let (code, message) = match xml::parse(&text) {
            Ok(root) if root.name == "Error" => (
                root.child_text("Code")
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map_or(fallback_code, str::to_string),
                root.child_text("Message")
                    .unwrap_or("(no message)")
                    .to_string(),
            ),
            _ if text.trim().is_empty() => (fallback_code, "(no error document)".to_string()),
            _ => (
                fallback_code,
                format!(
                    "(not an S3 error document) the answer begins {:?}",
                    clip(&text, 120)
                ),
            ),
        };
        S3Error::Service {
            status: status.as_u16(),
            code: clip(&escape_control(&code), 64),
            message: clip(&escape_control(&message), MAX_MESSAGE_CHARS),
            request: call.request,
            target: call.target(),
        }
    }

    /// The XML body of a 2xx answer, whose root must be `root`.
    async fn read_xml(
        &self,
        call: &Call<'_>,
        response: reqwest::Response,
        root: &str,
    ) -> Result<xml::Element> {
        let body = match read_body(response, MAX_XML_BYTES).await {
            Ok(body) => body,
            Err(ReadError::TooLarge(_)) => {
                return Err(self.bad_response(
                    call,
                    format!("the XML answer is larger than {MAX_XML_BYTES} bytes"),
                ));
            }
            Err(ReadError::Transport(e)) => return Err(self.transport(call, e)),
        };
        let text = std::str::from_utf8(&body)
            .map_err(|_| self.bad_response(call, "the XML answer is not UTF-8".into()))?;
        let element = xml::parse(text).map_err(|e| self.bad_response(call, e.to_string()))?;
        if element.name != root {
            return Err(self.bad_response(
                call,
                format!(
                    "the XML answer is a {:?}, not a {root}",
                    clip(&escape_control(&element.name), 64)
                ),
            ));
        }
        Ok(element)
    }

    fn transport(&self, call: &Call<'_>, e: reqwest::Error) -> S3Error {
        let builder = e.is_builder();
        let detail = clip(
            &escape_control(&error_chain(&e.without_url())),
            2 * MAX_MESSAGE_CHARS,
        );
        if builder {
            return S3Error::InvalidInput {
                request: call.request,
                target: call.target(),
                problem: format!("the request cannot be made: {detail}"),
            };
        }
        S3Error::Transport {
            request: call.request,
            target: call.target(),
            endpoint: self.base.clone(),
            detail,
        }
    }

    /// A response header as text; a header that is not visible ASCII is a bad answer.
    fn header(&self, call: &Call<'_>, headers: &HeaderMap, name: &str) -> Result<Option<String>> {
        match headers.get(name).map(|v| v.to_str()) {
            None => Ok(None),
            Some(Ok(s)) => Ok(Some(s.to_string())),
            Some(Err(_)) => {
                Err(self.bad_response(call, format!("the {name} header is not printable ASCII")))
            }
        }
    }

    fn bad_response(&self, call: &Call<'_>, detail: String) -> S3Error {
        S3Error::BadResponse {
            request: call.request,
            target: call.target(),
            endpoint: self.base.clone(),
            detail,
        }
    }
}

/// `endpoint` with any `user:password@` replaced, for messages.
fn without_userinfo(endpoint: &str) -> String {
    let Some(start) = endpoint.find("://").map(|i| i + 3) else {
        return endpoint.to_string();
    };
    let end = endpoint[start..]
        .find(['/', '?', '#'])
        .map_or(endpoint.len(), |i| start + i);
    match endpoint[start..end].rfind('@') {
        Some(at) => format!(
            "{}<redacted>@{}",
            &endpoint[..start],
            &endpoint[start + at + 1..]
        ),
        None => endpoint.to_string(),
    }
}

/// Bucket names as S3 allows them today: 3–63 characters of `a-z 0-9 . -`, starting and
/// ending with a letter or digit.
fn check_bucket(call: &Call<'_>) -> Result<()> {
    let b = call.bucket.as_bytes();
    let ok = (3..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'-'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && !call.bucket.contains("..");
    if ok {
        return Ok(());
    }
    Err(S3Error::InvalidInput {
        request: call.request,
        target: format!("bucket {:?}", clip(&escape_control(call.bucket), 80)),
        problem: "bucket names are 3-63 lower-case letters, digits, '.' and '-', starting and \
                  ending with a letter or digit"
            .into(),
    })
}

/// Keys of 1–1,024 bytes without control or bidi characters and without `.` or `..`
/// segments (a URL parser would resolve those, changing the key).
fn check_key(call: &Call<'_>) -> Result<()> {
    let key = call.key.unwrap_or_default();
    let problem = if key.is_empty() || key.len() > 1024 {
        "a key is 1 to 1,024 bytes long"
    } else if key.chars().any(is_unsafe_char) {
        "the key has control or bidi characters: choose a printable key"
    } else if key.split('/').any(|s| s == "." || s == "..") {
        "the key has a '.' or '..' segment, which URLs cannot carry unchanged: choose another key"
    } else {
        return Ok(());
    };
    Err(S3Error::InvalidInput {
        request: call.request,
        target: call.target(),
        problem: problem.into(),
    })
}

enum ReadError {
    TooLarge(Option<u64>),
    Transport(reqwest::Error),
}

/// The body, refused when it is (or announces itself) larger than `limit`.
async fn read_body(mut response: reqwest::Response, limit: u64) -> Result<Bytes, ReadError> {
    let announced = response.content_length();
    if announced.is_some_and(|n| n > limit) {
        return Err(ReadError::TooLarge(announced));
    }
    // What the server announced, up to 64 MiB, is reserved at once: a segment read back
    // is not copied over and over as it grows.
    let mut body = BytesMut::with_capacity(announced.unwrap_or(0).min(64 << 20) as usize);
    while let Some(chunk) = response.chunk().await.map_err(ReadError::Transport)? {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(ReadError::TooLarge(announced));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// An error and its sources, `: `-separated.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// `text` cut to `max` characters, with `…` when cut.
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::env::VarError;

    fn lookup<'a>(
        vars: &'a [(&'a str, &'a str)],
    ) -> impl Fn(&str) -> Result<String, VarError> + 'a {
        move |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
                .ok_or(VarError::NotPresent)
        }
    }

    #[test]
    fn credentials_from_the_environment_name_what_is_missing() {
        let c = Credentials::from_lookup(lookup(&[
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t/+x"),
        ]))
        .unwrap();
        assert_eq!(c.access_key_id, "AKIDEXAMPLE");
        assert_eq!(c.secret_access_key, "s3cr3t/+x");
        assert_eq!(c.session_token, None);

        let c = Credentials::from_lookup(lookup(&[
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t"),
            ("AWS_SESSION_TOKEN", "tok3n"),
        ]))
        .unwrap();
        assert_eq!(c.session_token.as_deref(), Some("tok3n"));

        let e = Credentials::from_lookup(lookup(&[("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("AWS_SECRET_ACCESS_KEY is not set"), "{e}");
        let e = Credentials::from_lookup(lookup(&[("AWS_SECRET_ACCESS_KEY", "s")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("AWS_ACCESS_KEY_ID is not set"), "{e}");
        let e = Credentials::from_lookup(lookup(&[
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", ""),
        ]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("AWS_SECRET_ACCESS_KEY is empty"), "{e}");
        let e = Credentials::from_lookup(lookup(&[
            ("AWS_ACCESS_KEY_ID", "AKID/EXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("check AWS_ACCESS_KEY_ID"), "{e}");
    }

    #[test]
    fn secrets_never_appear_in_debug_output() {
        let credentials = Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "the-secret-key".into(),
            session_token: Some("the-session-token".into()),
        };
        let s3 = S3::new("http://127.0.0.1:9000", "us-east-1", credentials.clone()).unwrap();
        for text in [
            format!("{credentials:?}"),
            format!("{s3:?}"),
            format!("{s3:#?}"),
        ] {
            assert!(text.contains("AKIDEXAMPLE"), "{text}");
            assert!(!text.contains("the-secret-key"), "{text}");
            assert!(!text.contains("the-session-token"), "{text}");
        }
    }

    fn credentials() -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "secret".into(),
            session_token: None,
        }
    }

    #[test]
    fn endpoints_are_checked() {
        for good in [
            "http://127.0.0.1:9000",
            "http://127.0.0.1:9000/",
            "https://s3.eu-west-1.amazonaws.com",
            "http://[::1]:5000",
        ] {
            S3::new(good, "us-east-1", credentials()).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        let s3 = S3::new("http://localhost:80", "us-east-1", credentials()).unwrap();
        assert_eq!(s3.host, "localhost");
        assert_eq!(s3.base, "http://localhost");
        let s3 = S3::new("https://minio.local:443", "us-east-1", credentials()).unwrap();
        assert_eq!(s3.host, "minio.local");
        let s3 = S3::new("https://Example.COM:8443", "us-east-1", credentials()).unwrap();
        assert_eq!(s3.host, "example.com:8443");
        for (bad, why) in [
            ("127.0.0.1:9000", "does not start with http"),
            ("ftp://host", "does not start with http"),
            ("http://", "not a URL"),
            ("http://host:9000/bucket", "has a path"),
            ("http://host:9000/?x=1", "has a query"),
            ("http://user:pw@host:9000", "user name or password"),
            ("http://minio.local:9000", "use https://"),
            ("http://10.0.0.5:9000", "use https://"),
            ("not a url", "does not start with http"),
            ("http://exa mple.com", "not a URL"),
        ] {
            let e = S3::new(bad, "us-east-1", credentials()).unwrap_err();
            assert!(matches!(e, S3Error::Config(_)), "{bad}");
            let e = e.to_string();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(!e.contains("pw"), "{e}");
        }
        for region in ["", "US-EAST-1", "us east", "eu-west-1\n"] {
            assert!(matches!(
                S3::new("http://h:1", region, credentials()),
                Err(S3Error::Config(_))
            ));
        }
    }

    #[test]
    fn bucket_names_and_keys_are_checked_before_sending() {
        let call = |bucket: &'static str, key: &'static str| {
            Call::new("PutObject", Method::PUT, bucket, Some(key))
        };
        for b in ["abc", "a.b-c", "evidence-2026", &"a".repeat(63)] {
            let b: &str = b;
            check_bucket(&Call::new("X", Method::GET, b, None)).unwrap();
        }
        for b in [
            "ab",
            "Abc",
            "a_b",
            "-ab",
            "ab-",
            "a..b",
            "a/b",
            &"a".repeat(64),
        ] {
            let b: &str = b;
            assert!(
                check_bucket(&Call::new("X", Method::GET, b, None)).is_err(),
                "{b}"
            );
        }
        for k in [
            "a",
            "logs/2026/a b+c$.json",
            "é/€",
            ".hidden/x.",
            "a//b",
            "...",
        ] {
            check_key(&call("abc", k)).unwrap();
        }
        let long = "k".repeat(1025);
        for k in [
            "",
            "a/./b",
            "../a",
            "a/..",
            ".",
            "a\nb",
            "a\u{202e}b",
            long.as_str(),
        ] {
            let k: &str = k;
            let e = check_key(&Call::new("PutObject", Method::PUT, "abc", Some(k))).unwrap_err();
            assert!(matches!(e, S3Error::InvalidInput { .. }), "{k:?}");
            assert!(!e.to_string().contains('\n'), "{e}");
        }
    }

    #[test]
    fn retryable_errors_are_transport_5xx_429_and_slow_down() {
        let service = |status, code: &str| S3Error::Service {
            status,
            code: code.into(),
            message: String::new(),
            request: "GetObject",
            target: "s3://b/k".into(),
        };
        assert!(
            S3Error::Transport {
                request: "GetObject",
                target: "s3://b/k".into(),
                endpoint: "http://h".into(),
                detail: "connection refused".into(),
            }
            .is_retryable()
        );
        assert!(service(500, "InternalError").is_retryable());
        assert!(service(503, "SlowDown").is_retryable());
        assert!(service(429, "TooManyRequests").is_retryable());
        assert!(service(400, "RequestTimeout").is_retryable());
        assert!(!service(403, "AccessDenied").is_retryable());
        assert!(!service(404, "NoSuchKey").is_retryable());
        assert!(!service(403, "SignatureDoesNotMatch").is_retryable());
        assert!(!S3Error::Config("x".into()).is_retryable());
        let e = service(403, "SignatureDoesNotMatch").to_string();
        assert!(
            e.contains("GetObject of s3://b/k refused: HTTP 403 SignatureDoesNotMatch"),
            "{e}"
        );
        assert!(e.contains("check AWS_SECRET_ACCESS_KEY"), "{e}");
    }

    #[test]
    fn user_info_is_kept_out_of_messages() {
        assert_eq!(
            without_userinfo("http://u:p@h:1/x@y"),
            "http://<redacted>@h:1/x@y"
        );
        assert_eq!(without_userinfo("http://h:1"), "http://h:1");
        assert_eq!(without_userinfo("h@x"), "h@x");
    }

    #[test]
    fn clipping_keeps_whole_characters() {
        assert_eq!(clip("héllo", 2), "hé…");
        assert_eq!(clip("héllo", 5), "héllo");
        assert_eq!(clip("", 0), "");
    }
}
