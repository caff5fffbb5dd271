//! AWS Signature Version 4 for header-signed requests (the `Authorization` header), and
//! the URI encoding it is defined over.
//!
//! Written from the AWS documentation ("Authenticating Requests: Using the Authorization
//! Header", "Signature Calculations for the Authorization Header"); the tests below are the
//! worked S3 examples of that page. S3 signs the path exactly as sent (it is not encoded a
//! second time, unlike other services), so [`Signable::path`] is the already-encoded path.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::Credentials;

/// Hex SHA-256 of the empty string: the payload hash of a request without a body.
#[cfg(test)]
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The parts of one HTTP request that a Signature Version 4 signature covers.
#[derive(Debug, Clone, Copy)]
pub struct Signable<'a> {
    /// The HTTP method, e.g. `GET`.
    pub method: &'a str,
    /// The path exactly as it is sent, already URI-encoded (S3 does not encode it a second
    /// time), e.g. `/examplebucket/photos/a%20b.jpg`; `/` when there is none.
    pub path: &'a str,
    /// The query parameters, not yet encoded; a parameter without a value (`?lifecycle`)
    /// has the value `""`. The request must send them as [`canonical_query`] writes them.
    pub query: &'a [(&'a str, &'a str)],
    /// Every header to sign, names in any case: at least `host` (with the port when it is
    /// not the scheme's default) and `x-amz-date` (the [`amz_date`] of the signing time),
    /// and for S3 `x-amz-content-sha256`. All of them are signed.
    pub headers: &'a [(&'a str, &'a str)],
    /// The lower-case hex SHA-256 of the body, or `UNSIGNED-PAYLOAD`.
    pub payload_sha256: &'a str,
}

/// The `Authorization` header value that signs `request` at `time_ms` (milliseconds since
/// the Unix epoch) for `service` (e.g. `s3`, `iam`) in `region`:
/// `AWS4-HMAC-SHA256 Credential=…/DATE/REGION/SERVICE/aws4_request, SignedHeaders=…,
/// Signature=…`.
pub fn authorization(
    request: &Signable<'_>,
    time_ms: u64,
    region: &str,
    service: &str,
    credentials: &Credentials,
) -> String {
    let stamp = amz_date(time_ms);
    let date = &stamp[..8];
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let (canonical, signed_headers) = canonical_request(request);
    let string_to_sign = format!(
        "{ALGORITHM}\n{stamp}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let key = signing_key(&credentials.secret_access_key, date, region, service);
    let signature = hex::encode(hmac(&key, string_to_sign.as_bytes()));
    format!(
        "{ALGORITHM} Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
        credentials.access_key_id
    )
}

/// The SigV4 timestamp `YYYYMMDDTHHMMSSZ` of `time_ms` (milliseconds since the Unix epoch),
/// the value of the `x-amz-date` header.
pub fn amz_date(time_ms: u64) -> String {
    // "2026-11-21T23:17:41.123Z" -> "20261121T231741Z".
    let rfc = runwarden_evidence::rfc3339_ms(time_ms);
    let (date, time) = rfc.split_once('T').expect("rfc3339_ms writes a T");
    let mut out: String = date.chars().filter(|c| *c != '-').collect();
    out.push('T');
    out.extend(time[..8].chars().filter(|c| *c != ':'));
    out.push('Z');
    out
}

/// The query string as it is signed and must be sent: each name and value percent-encoded
/// (all but `A-Z a-z 0-9 - . _ ~`, slashes too, as `%XX`), sorted by name then value,
/// `name=value` joined by `&`. Also valid as an `application/x-www-form-urlencoded` body.
pub fn canonical_query(query: &[(&str, &str)]) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (uri_encode(k, true), uri_encode(v, true)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-encoding as SigV4 defines it: the unreserved characters `A-Z a-z 0-9 - . _ ~`
/// are kept, every other byte of the UTF-8 becomes `%XX` (upper-case hex); `/` is kept
/// unless `encode_slash` (object keys keep theirs, query values do not).
pub(crate) fn uri_encode(text: &str, encode_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (b == b'/' && !encode_slash)
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The canonical request and the `SignedHeaders` list.
fn canonical_request(request: &Signable<'_>) -> (String, String) {
    let mut headers: Vec<(String, String)> = Vec::with_capacity(request.headers.len());
    for (name, value) in request.headers {
        let name = name.to_ascii_lowercase();
        let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
        match headers.iter_mut().find(|(n, _)| *n == name) {
            // A repeated header is signed once, its values joined by commas.
            Some((_, v)) => {
                v.push(',');
                v.push_str(&value);
            }
            None => headers.push((name, value)),
        }
    }
    headers.sort();
    let signed_headers = headers
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let mut canonical = format!(
        "{}\n{}\n{}\n",
        request.method,
        request.path,
        canonical_query(request.query)
    );
    for (name, value) in &headers {
        canonical.push_str(name);
        canonical.push(':');
        canonical.push_str(value);
        canonical.push('\n');
    }
    canonical.push('\n');
    canonical.push_str(&signed_headers);
    canonical.push('\n');
    canonical.push_str(request.payload_sha256);
    (canonical, signed_headers)
}

fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The credentials of the S3 examples in the AWS documentation.
    fn example_credentials() -> Credentials {
        Credentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        }
    }

    /// 2013-05-24T00:00:00Z, the examples' time.
    const EXAMPLE_TIME_MS: u64 = 1_369_353_600_000;
    const HOST: &str = "examplebucket.s3.amazonaws.com";

    fn signature(request: &Signable<'_>) -> String {
        let auth = authorization(
            request,
            EXAMPLE_TIME_MS,
            "us-east-1",
            "s3",
            &example_credentials(),
        );
        auth.rsplit_once("Signature=").unwrap().1.to_string()
    }

    fn bucket_headers() -> [(&'static str, &'static str); 3] {
        [
            ("Host", HOST),
            ("x-amz-content-sha256", EMPTY_SHA256),
            ("x-amz-date", "20130524T000000Z"),
        ]
    }

    #[test]
    fn the_example_time_is_the_example_date() {
        assert_eq!(amz_date(EXAMPLE_TIME_MS), "20130524T000000Z");
        assert_eq!(amz_date(1_795_303_061_123), "20261121T231741Z");
    }

    /// "Example: GET Object": a Range header, signed like any other.
    #[test]
    fn get_object_example() {
        let request = Signable {
            method: "GET",
            path: "/test.txt",
            query: &[],
            headers: &[
                ("Host", HOST),
                ("Range", "bytes=0-9"),
                ("x-amz-content-sha256", EMPTY_SHA256),
                ("x-amz-date", "20130524T000000Z"),
            ],
            payload_sha256: EMPTY_SHA256,
        };
        let auth = authorization(
            &request,
            EXAMPLE_TIME_MS,
            "us-east-1",
            "s3",
            &example_credentials(),
        );
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    /// "Example: PUT Object": a key with `$` (encoded once), a Date header, a storage class
    /// and a signed payload.
    #[test]
    fn put_object_example() {
        let body = "Welcome to Amazon S3.";
        let hash = hex::encode(Sha256::digest(body));
        assert_eq!(
            hash,
            "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
        );
        let path = format!("/{}", uri_encode("test$file.text", false));
        assert_eq!(path, "/test%24file.text");
        let request = Signable {
            method: "PUT",
            path: &path,
            query: &[],
            headers: &[
                ("Date", "Fri, 24 May 2013 00:00:00 GMT"),
                ("Host", HOST),
                ("x-amz-content-sha256", &hash),
                ("x-amz-date", "20130524T000000Z"),
                ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
            ],
            payload_sha256: &hash,
        };
        let (_, signed) = canonical_request(&request);
        assert_eq!(
            signed,
            "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class"
        );
        assert_eq!(
            signature(&request),
            "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
        );
    }

    /// "Example: GET Bucket Lifecycle": a query parameter without a value.
    #[test]
    fn get_bucket_lifecycle_example() {
        let request = Signable {
            method: "GET",
            path: "/",
            query: &[("lifecycle", "")],
            headers: &bucket_headers(),
            payload_sha256: EMPTY_SHA256,
        };
        assert_eq!(
            signature(&request),
            "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"
        );
    }

    /// "Example: Get Bucket (List Objects)": two parameters, given out of order here.
    #[test]
    fn list_objects_example() {
        let request = Signable {
            method: "GET",
            path: "/",
            query: &[("prefix", "J"), ("max-keys", "2")],
            headers: &bucket_headers(),
            payload_sha256: EMPTY_SHA256,
        };
        assert_eq!(canonical_query(request.query), "max-keys=2&prefix=J");
        assert_eq!(
            signature(&request),
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
        );
    }

    /// Header names are case-insensitive and values are trimmed with inner runs of
    /// spaces collapsed; a different secret, region or service changes the signature.
    #[test]
    fn canonical_headers_and_scope() {
        let plain = Signable {
            method: "GET",
            path: "/",
            query: &[("lifecycle", "")],
            headers: &bucket_headers(),
            payload_sha256: EMPTY_SHA256,
        };
        let messy_headers = [
            ("HOST", "  examplebucket.s3.amazonaws.com "),
            ("X-Amz-Content-Sha256", EMPTY_SHA256),
            ("X-AMZ-DATE", "20130524T000000Z"),
        ];
        let messy = Signable {
            headers: &messy_headers,
            ..plain
        };
        assert_eq!(signature(&messy), signature(&plain));
        let (canonical, _) = canonical_request(&Signable {
            headers: &[("x-amz-meta-a", "  one   two  "), ("X-Amz-Meta-A", "three")],
            ..plain
        });
        assert!(
            canonical.contains("\nx-amz-meta-a:one two,three\n"),
            "{canonical}"
        );

        let credentials = example_credentials();
        let base = authorization(&plain, EXAMPLE_TIME_MS, "us-east-1", "s3", &credentials);
        let other_secret = Credentials {
            secret_access_key: "another".into(),
            ..credentials.clone()
        };
        for other in [
            authorization(&plain, EXAMPLE_TIME_MS, "us-east-1", "s3", &other_secret),
            authorization(&plain, EXAMPLE_TIME_MS, "eu-west-1", "s3", &credentials),
            authorization(&plain, EXAMPLE_TIME_MS, "us-east-1", "iam", &credentials),
            authorization(
                &plain,
                EXAMPLE_TIME_MS + 1000,
                "us-east-1",
                "s3",
                &credentials,
            ),
        ] {
            assert_ne!(
                other.rsplit_once('=').unwrap().1,
                base.rsplit_once('=').unwrap().1
            );
        }
        assert!(
            authorization(&plain, EXAMPLE_TIME_MS, "us-east-1", "iam", &credentials)
                .contains("/20130524/us-east-1/iam/aws4_request, ")
        );
    }

    #[test]
    fn uri_encoding_keeps_only_unreserved_characters() {
        assert_eq!(uri_encode("AZaz09-._~", true), "AZaz09-._~");
        assert_eq!(
            uri_encode("a b+c=d&e/f%g$h*i'j(k)!l", true),
            "a%20b%2Bc%3Dd%26e%2Ff%25g%24h%2Ai%27j%28k%29%21l"
        );
        assert_eq!(
            uri_encode("logs/2026/a b.json", false),
            "logs/2026/a%20b.json"
        );
        assert_eq!(uri_encode("é€😀", true), "%C3%A9%E2%82%AC%F0%9F%98%80");
        // Already-encoded text is encoded again: the caller gives raw keys.
        assert_eq!(uri_encode("%20", true), "%2520");
        assert_eq!(uri_encode("", true), "");
    }

    #[test]
    fn canonical_query_sorts_by_encoded_name_then_value() {
        assert_eq!(
            canonical_query(&[
                ("prefix", "a/b c"),
                ("list-type", "2"),
                ("a", "2"),
                ("a", "1")
            ]),
            "a=1&a=2&list-type=2&prefix=a%2Fb%20c"
        );
        // Sorted by the encoded bytes: "%" (0x25) sorts before letters.
        assert_eq!(canonical_query(&[("b", ""), ("!", "x")]), "%21=x&b=");
        assert_eq!(canonical_query(&[]), "");
    }
}
