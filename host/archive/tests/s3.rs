//! The S3 client against a real moto server (one per test, on loopback): moto checks our
//! SigV4 signatures with botocore when auth is on, enforces COMPLIANCE Object Lock on
//! deletes, and pages listings; a canned-answer server covers what moto never sends
//! (chunked oversized bodies, damaged bodies, non-S3 answers).
//!
//! What moto does not prove: that a retention cannot be shortened (moto accepts that), nor
//! that a damaged upload is refused (moto stores the x-amz-checksum-sha256 it is given
//! without checking it, and does not compare x-amz-content-sha256 with the body).

use base64::Engine as _;
use bytes::Bytes;
use runwarden_archive::s3::{self, Credentials, S3, S3Error, Signable};
use runwarden_testkit::Moto;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// 2032-12-07T05:30:00.000Z.
const RETAIN_UNTIL_MS: u64 = 1_986_010_200_000;
const RETAIN_UNTIL: &str = "2032-12-07T05:30:00.000Z";

fn any_credentials() -> Credentials {
    Credentials {
        access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
        secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
        session_token: None,
    }
}

fn client(moto: &Moto) -> S3 {
    S3::new(&moto.endpoint, "us-east-1", any_credentials()).unwrap()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn sha256_base64(body: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body))
}

/// The S3 error code of a [`S3Error::Service`], and its status.
fn service_code(e: &S3Error) -> (u16, &str) {
    match e {
        S3Error::Service { status, code, .. } => (*status, code.as_str()),
        other => panic!("expected an S3 service error, got {other:?}"),
    }
}

/// One IAM query-API call (POST form, signed with our signer for service "iam"): moto
/// routes it to IAM by the credential scope. Returns the XML answer.
async fn iam(moto: &Moto, action: &str, params: &[(&str, &str)]) -> String {
    let mut form = vec![("Action", action), ("Version", "2010-05-08")];
    form.extend_from_slice(params);
    // The canonical query string is valid application/x-www-form-urlencoded.
    let body = s3::canonical_query(&form);
    let payload = hex::encode(Sha256::digest(&body));
    let now = now_ms();
    let date = s3::amz_date(now);
    let host = format!("127.0.0.1:{}", moto.port);
    let content_type = "application/x-www-form-urlencoded; charset=utf-8";
    let headers = [
        ("host", host.as_str()),
        ("content-type", content_type),
        ("x-amz-date", date.as_str()),
    ];
    let signable = Signable {
        method: "POST",
        path: "/",
        query: &[],
        headers: &headers,
        payload_sha256: &payload,
    };
    let auth = s3::authorization(&signable, now, "us-east-1", "iam", &any_credentials());
    let response = reqwest::Client::new()
        .post(format!("{}/", moto.endpoint))
        .header("content-type", content_type)
        .header("x-amz-date", &date)
        .header("authorization", auth)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "IAM {action}: {status} {text}");
    text
}

/// The text of `<tag>` in an IAM answer (plain values: ids and base64-ish secrets).
fn xml_value(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let start = xml
        .find(&open)
        .unwrap_or_else(|| panic!("no {tag} in {xml}"))
        + open.len();
    let end = start + xml[start..].find('<').unwrap();
    xml[start..end].to_string()
}

/// Moto lets the first N actions through unchecked, counting every call that reaches an
/// authorisation check (moto/core/authorization.py: `request_count` is bumped while it is
/// below INITIAL_NO_AUTH_ACTION_COUNT). Here that is exactly the three IAM calls that set
/// up a user: CreateUser, CreateAccessKey, PutUserPolicy — the readiness probe uses
/// /moto-api/, which is no action. With 2, PutUserPolicy is refused (our dummy key is
/// unknown to IAM); with 4, the wrong-secret CreateBucket below would succeed. So the
/// first S3 call after setup is the one that proves the check is live.
const SETUP_ACTIONS: u32 = 3;

#[tokio::test]
async fn moto_accepts_our_signatures_and_refuses_a_wrong_secret() {
    let moto = Moto::start_with_auth(SETUP_ACTIONS);
    iam(&moto, "CreateUser", &[("UserName", "archiver")]).await;
    let key = iam(&moto, "CreateAccessKey", &[("UserName", "archiver")]).await;
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#;
    iam(
        &moto,
        "PutUserPolicy",
        &[
            ("UserName", "archiver"),
            ("PolicyName", "archive"),
            ("PolicyDocument", policy),
        ],
    )
    .await;
    let real = Credentials {
        access_key_id: xml_value(&key, "AccessKeyId"),
        secret_access_key: xml_value(&key, "SecretAccessKey"),
        session_token: None,
    };
    let wrong_secret = "not-the-secret-key-at-all";
    let wrong = S3::new(
        &moto.endpoint,
        "us-east-1",
        Credentials {
            secret_access_key: wrong_secret.into(),
            ..real.clone()
        },
    )
    .unwrap();
    let right = S3::new(&moto.endpoint, "us-east-1", real.clone()).unwrap();

    // The first checked action: a wrong secret is refused.
    let e = wrong.create_bucket("signed", true).await.unwrap_err();
    assert_eq!(service_code(&e), (403, "SignatureDoesNotMatch"), "{e}");
    assert!(!e.is_retryable());
    for text in [e.to_string(), format!("{e:?}")] {
        assert!(!text.contains(wrong_secret), "{text}");
        assert!(!text.contains(&real.secret_access_key), "{text}");
        assert!(!text.contains("Signature="), "{text}");
        assert!(!text.contains("AWS4-HMAC-SHA256"), "{text}");
    }
    assert!(e.to_string().contains("CreateBucket of s3://signed"), "{e}");

    // The right key: every call this client makes passes moto's check, including keys
    // and prefixes that need encoding in the path and the query.
    right.create_bucket("signed", true).await.unwrap();
    assert!(right.object_lock_enabled("signed").await.unwrap());
    let keys = [
        "plain.json",
        "dir/with space/a+b=c&d$e@f:g,h;i'j(k)l!m*n~o_p-q.r",
        "unicode/é€😀/%20not-an-escape",
    ];
    for (i, key) in keys.iter().enumerate() {
        let body = Bytes::from(format!("segment {i}"));
        let put = right
            .put_object_locked("signed", key, body.clone(), RETAIN_UNTIL_MS)
            .await
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        let version = put.version_id.clone().expect("a lock bucket is versioned");
        let head = right
            .head_object("signed", key, Some(&version))
            .await
            .unwrap()
            .expect("the object is there");
        assert_eq!(head.size, body.len() as u64);
        assert_eq!(head.version_id.as_deref(), Some(version.as_str()));
        assert_eq!(
            right
                .get_object("signed", key, Some(&version), 1024)
                .await
                .unwrap(),
            body
        );
    }
    let listed = right.list("signed", "").await.unwrap();
    let mut expected: Vec<&str> = keys.to_vec();
    expected.sort();
    assert_eq!(
        listed.iter().map(|l| l.key.as_str()).collect::<Vec<_>>(),
        expected
    );
    let listed = right.list("signed", "dir/with space/a+b=").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, keys[1]);

    // The wrong secret is refused for every other call too. HEAD answers carry no body,
    // so there only the status tells (403).
    let e = wrong.object_lock_enabled("signed").await.unwrap_err();
    assert_eq!(service_code(&e), (403, "SignatureDoesNotMatch"), "{e}");
    let e = wrong
        .put_object_locked("signed", "x", Bytes::from_static(b"x"), RETAIN_UNTIL_MS)
        .await
        .unwrap_err();
    assert_eq!(service_code(&e), (403, "SignatureDoesNotMatch"), "{e}");
    let e = wrong
        .get_object("signed", keys[1], None, 1024)
        .await
        .unwrap_err();
    assert_eq!(service_code(&e), (403, "SignatureDoesNotMatch"), "{e}");
    let e = wrong.list("signed", "").await.unwrap_err();
    assert_eq!(service_code(&e), (403, "SignatureDoesNotMatch"), "{e}");
    let e = wrong
        .delete_object("signed", keys[0], None)
        .await
        .unwrap_err();
    assert_eq!(service_code(&e), (403, "SignatureDoesNotMatch"), "{e}");
    let e = wrong
        .head_object("signed", keys[0], None)
        .await
        .unwrap_err();
    assert_eq!(service_code(&e), (403, "Forbidden"), "{e}");

    // An access key moto does not know.
    let stranger = S3::new(
        &moto.endpoint,
        "us-east-1",
        Credentials {
            access_key_id: "AKIAUNKNOWNKEY000000".into(),
            ..real.clone()
        },
    )
    .unwrap();
    let e = stranger.list("signed", "").await.unwrap_err();
    assert_eq!(service_code(&e), (403, "InvalidAccessKeyId"), "{e}");
    assert!(e.to_string().contains("check AWS_ACCESS_KEY_ID"), "{e}");
}

#[tokio::test]
async fn a_compliance_locked_version_cannot_be_deleted_and_stays_readable() {
    let moto = Moto::start();
    let s3 = client(&moto);
    s3.create_bucket("evidence", true).await.unwrap();
    let body = Bytes::from_static(b"sealed segment 0001");
    let key = "clinic-a/log/0000000001.seg";
    let put = s3
        .put_object_locked("evidence", key, body.clone(), RETAIN_UNTIL_MS)
        .await
        .unwrap();
    let version = put.version_id.clone().expect("a version id");
    assert!(!put.etag.is_empty() && !put.etag.contains('"'), "{put:?}");

    let head = s3
        .head_object("evidence", key, Some(&version))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head.lock_mode.as_deref(), Some("COMPLIANCE"));
    assert_eq!(head.retain_until.as_deref(), Some(RETAIN_UNTIL));
    assert_eq!(head.checksum_sha256, Some(sha256_base64(&body)));
    assert_eq!(head.size, body.len() as u64);

    // The locked version cannot be deleted ...
    let e = s3
        .delete_object("evidence", key, Some(&version))
        .await
        .unwrap_err();
    assert_eq!(service_code(&e), (403, "AccessDenied"), "{e}");
    assert!(!e.is_retryable());
    assert!(
        e.to_string()
            .contains("DeleteObject of s3://evidence/clinic-a/log/0000000001.seg"),
        "{e}"
    );
    // ... and stays readable by its version id,
    assert_eq!(
        s3.get_object("evidence", key, Some(&version), 1 << 20)
            .await
            .unwrap(),
        body
    );
    // also after a delete without version id, which only hides it behind a delete marker.
    s3.delete_object("evidence", key, None).await.unwrap();
    assert_eq!(s3.head_object("evidence", key, None).await.unwrap(), None);
    assert!(s3.list("evidence", "clinic-a/").await.unwrap().is_empty());
    assert_eq!(
        s3.get_object("evidence", key, Some(&version), 1 << 20)
            .await
            .unwrap(),
        body
    );
    let e = s3
        .delete_object("evidence", key, Some(&version))
        .await
        .unwrap_err();
    assert_eq!(service_code(&e), (403, "AccessDenied"), "{e}");
    let head = s3
        .head_object("evidence", key, Some(&version))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head.lock_mode.as_deref(), Some("COMPLIANCE"));

    // What is not there is None, not an error.
    assert_eq!(
        s3.head_object("evidence", "clinic-a/none", None)
            .await
            .unwrap(),
        None
    );
    let e = s3
        .get_object("evidence", "clinic-a/none", None, 10)
        .await
        .unwrap_err();
    assert_eq!(service_code(&e), (404, "NoSuchKey"), "{e}");
}

#[tokio::test]
async fn object_lock_is_reported_per_bucket_and_a_locked_put_needs_it() {
    let moto = Moto::start();
    let s3 = client(&moto);
    s3.create_bucket("plain-bucket", false).await.unwrap();
    s3.create_bucket("locked-bucket", true).await.unwrap();
    assert!(!s3.object_lock_enabled("plain-bucket").await.unwrap());
    assert!(s3.object_lock_enabled("locked-bucket").await.unwrap());
    let e = s3.object_lock_enabled("no-such-bucket").await.unwrap_err();
    assert_eq!(service_code(&e), (404, "NoSuchBucket"), "{e}");

    let e = s3
        .put_object_locked(
            "plain-bucket",
            "k",
            Bytes::from_static(b"x"),
            RETAIN_UNTIL_MS,
        )
        .await
        .unwrap_err();
    assert_eq!(service_code(&e), (400, "InvalidRequest"), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("PutObject of s3://plain-bucket/k refused"),
        "{text}"
    );
    assert!(
        text.contains("Bucket is missing ObjectLockConfiguration"),
        "{text}"
    );
    assert!(s3.list("plain-bucket", "").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_listing_of_more_than_1000_keys_is_read_page_by_page() {
    let moto = Moto::start();
    let s3 = std::sync::Arc::new(client(&moto));
    s3.create_bucket("many", true).await.unwrap();
    // 1,005 locked puts, eight at a time (moto answers each on a new connection).
    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let s3 = s3.clone();
        tasks.spawn(async move {
            for i in (worker..1005).step_by(8) {
                let body = Bytes::from(vec![b'x'; i % 7]);
                s3.put_object_locked("many", &format!("seg/{i:05}"), body, RETAIN_UNTIL_MS)
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(t) = tasks.join_next().await {
        t.unwrap();
    }
    s3.put_object_locked("many", "other/x", Bytes::new(), RETAIN_UNTIL_MS)
        .await
        .unwrap();
    eprintln!("1,006 puts into moto: {:?}", started.elapsed());

    let expected: Vec<(String, u64)> = (0..1005)
        .map(|i| (format!("seg/{i:05}"), (i % 7) as u64))
        .collect();
    let listed: Vec<(String, u64)> = s3
        .list("many", "seg/")
        .await
        .unwrap()
        .into_iter()
        .map(|l| (l.key, l.size))
        .collect();
    assert_eq!(listed, expected);
    assert_eq!(s3.list("many", "").await.unwrap().len(), 1006);
    assert_eq!(s3.list("many", "seg/0100").await.unwrap().len(), 5);
}

#[tokio::test]
async fn get_object_refuses_a_body_over_max_bytes() {
    let moto = Moto::start();
    let s3 = client(&moto);
    s3.create_bucket("bounded", true).await.unwrap();
    let body = Bytes::from(vec![7u8; 1000]);
    s3.put_object_locked("bounded", "k", body.clone(), RETAIN_UNTIL_MS)
        .await
        .unwrap();
    assert_eq!(
        s3.get_object("bounded", "k", None, 1000).await.unwrap(),
        body
    );
    let e = s3.get_object("bounded", "k", None, 999).await.unwrap_err();
    assert!(
        matches!(
            e,
            S3Error::TooLarge {
                limit: 999,
                size: Some(1000),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .contains("larger than the limit of 999 bytes (1000 bytes)"),
        "{e}"
    );

    // Without a Content-Length (chunked), the limit holds while reading.
    let fake = canned(vec![chunked_response(&[&[1u8; 600], &[2u8; 600]])]).await;
    let s3 = S3::new(&fake, "us-east-1", any_credentials()).unwrap();
    let e = s3.get_object("bounded", "k", None, 1000).await.unwrap_err();
    assert!(
        matches!(
            e,
            S3Error::TooLarge {
                limit: 1000,
                size: None,
                ..
            }
        ),
        "{e:?}"
    );
    let fake = canned(vec![chunked_response(&[&[1u8; 600], &[2u8; 400]])]).await;
    let s3 = S3::new(&fake, "us-east-1", any_credentials()).unwrap();
    assert_eq!(
        s3.get_object("bounded", "k", None, 1000)
            .await
            .unwrap()
            .len(),
        1000
    );
}

#[tokio::test]
async fn an_unreachable_endpoint_is_a_retryable_transport_error() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s3 = S3::new(
        &format!("http://127.0.0.1:{port}"),
        "us-east-1",
        any_credentials(),
    )
    .unwrap();
    let e = s3.head_object("evidence", "k", None).await.unwrap_err();
    assert!(matches!(e, S3Error::Transport { .. }), "{e:?}");
    assert!(e.is_retryable());
    let text = e.to_string();
    assert!(
        text.contains("HeadObject of s3://evidence/k: no answer from http://127.0.0.1"),
        "{text}"
    );
    assert!(text.to_lowercase().contains("connect"), "{text}");

    // A server that goes away between calls.
    let mut moto = Moto::start();
    let s3 = client(&moto);
    s3.create_bucket("evidence", true).await.unwrap();
    moto.kill();
    let e = s3
        .put_object_locked("evidence", "k", Bytes::from_static(b"x"), RETAIN_UNTIL_MS)
        .await
        .unwrap_err();
    assert!(matches!(e, S3Error::Transport { .. }), "{e:?}");
    assert!(e.is_retryable());
}

#[tokio::test]
async fn answers_that_are_not_s3_are_reported_as_such() {
    // A damaged body: the stored checksum does not match.
    let wrong = sha256_base64(b"something else");
    let fake = canned(vec![response(
        "200 OK",
        &[("x-amz-checksum-sha256", &wrong)],
        b"the body",
    )])
    .await;
    let s3 = S3::new(&fake, "us-east-1", any_credentials()).unwrap();
    let e = s3.get_object("b-1", "k", None, 100).await.unwrap_err();
    assert!(matches!(e, S3Error::BadResponse { .. }), "{e:?}");
    assert!(e.to_string().contains("damaged"), "{e}");
    // The same body with its own checksum is fine.
    let right = sha256_base64(b"the body");
    let fake = canned(vec![response(
        "200 OK",
        &[("x-amz-checksum-sha256", &right)],
        b"the body",
    )])
    .await;
    let s3 = S3::new(&fake, "us-east-1", any_credentials()).unwrap();
    assert_eq!(
        &s3.get_object("b-1", "k", None, 100).await.unwrap()[..],
        b"the body"
    );

    // A listing cut short, a proxy's HTML page, a throttling answer with a control
    // character in its message.
    let fake = canned(vec![
        response("200 OK", &[], b"<ListBucketResult><IsTruncated>true</IsTruncated><Contents><Key>a</Key>"),
        response("502 Bad Gateway", &[("content-type", "text/html")], b"<html><body>proxy error</body></html>"),
        response(
            "503 Slow Down",
            &[],
            b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.\x1b[2J</Message></Error>",
        ),
        response(
            "200 OK",
            &[],
            b"<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>",
        ),
    ])
    .await;
    let s3 = S3::new(&fake, "us-east-1", any_credentials()).unwrap();
    let e = s3.list("b-1", "").await.unwrap_err();
    assert!(matches!(e, S3Error::BadResponse { .. }), "{e:?}");
    assert!(e.to_string().contains("truncated"), "{e}");
    let e = s3.list("b-1", "").await.unwrap_err();
    assert_eq!(service_code(&e), (502, "BadGateway"), "{e}");
    assert!(e.is_retryable());
    assert!(e.to_string().contains("not an S3 error document"), "{e}");
    let e = s3.list("b-1", "").await.unwrap_err();
    assert_eq!(service_code(&e), (503, "SlowDown"), "{e}");
    assert!(e.is_retryable());
    assert!(e.to_string().contains("rate.\\x1b[2J"), "{e}");
    assert!(!e.to_string().contains('\x1b') && !format!("{e:?}").contains('\x1b'));
    let e = s3.list("b-1", "").await.unwrap_err();
    assert!(
        e.to_string()
            .contains("without a new NextContinuationToken"),
        "{e}"
    );

    // Versions: two pages, a version hidden behind a delete marker, read in order; then a
    // truncated page that names no next key.
    let fake = canned(vec![
        response(
            "200 OK",
            &[],
            b"<ListVersionsResult><IsTruncated>true</IsTruncated>\
<Version><Key>d/a</Key><VersionId>v2</VersionId><IsLatest>true</IsLatest><Size>7</Size></Version>\
<DeleteMarker><Key>d/b</Key><VersionId>m1</VersionId><IsLatest>true</IsLatest></DeleteMarker>\
<NextKeyMarker>d/b</NextKeyMarker><NextVersionIdMarker>m1</NextVersionIdMarker></ListVersionsResult>",
        ),
        response(
            "200 OK",
            &[],
            b"<ListVersionsResult><IsTruncated>false</IsTruncated>\
<Version><Key>d/b</Key><VersionId>v1</VersionId><IsLatest>false</IsLatest><Size>9</Size></Version></ListVersionsResult>",
        ),
        response(
            "200 OK",
            &[],
            b"<ListVersionsResult><IsTruncated>true</IsTruncated></ListVersionsResult>",
        ),
    ])
    .await;
    let s3 = S3::new(&fake, "us-east-1", any_credentials()).unwrap();
    let v = s3.list_versions("b-1", "d/").await.unwrap();
    let seen: Vec<(&str, Option<&str>, bool, bool, u64)> = v
        .iter()
        .map(|v| {
            (
                v.key.as_str(),
                v.version_id.as_deref(),
                v.latest,
                v.delete_marker,
                v.size,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("d/a", Some("v2"), true, false, 7),
            ("d/b", Some("m1"), true, true, 0),
            ("d/b", Some("v1"), false, false, 9),
        ]
    );
    let e = s3.list_versions("b-1", "d/").await.unwrap_err();
    assert!(e.to_string().contains("without a new NextKeyMarker"), "{e}");
}

/// A server answering each connection with the next canned response; its endpoint.
async fn canned(responses: Vec<Vec<u8>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        for answer in responses {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            // Read the request head (no request here has a body that matters).
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = stream.write_all(&answer).await;
            let _ = stream.shutdown().await;
        }
    });
    endpoint
}

fn response(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        r.push_str(&format!("{n}: {v}\r\n"));
    }
    r.push_str("\r\n");
    let mut r = r.into_bytes();
    r.extend_from_slice(body);
    r
}

fn chunked_response(chunks: &[&[u8]]) -> Vec<u8> {
    let mut r =
        b"HTTP/1.1 200 OK\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for c in chunks {
        r.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        r.extend_from_slice(c);
        r.extend_from_slice(b"\r\n");
    }
    r.extend_from_slice(b"0\r\n\r\n");
    r
}
