//! Just enough PEM, DER and X.509 to read a certificate's validity and subject.
//!
//! Hand-written to keep the component small: base64 of the first `CERTIFICATE` block,
//! then the `Certificate → tbsCertificate → validity` path of RFC 5280 §4.1. Every
//! length is bounds-checked; anything unexpected is an error naming what was wrong.

/// What the runbook needs from a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// notBefore, seconds since the Unix epoch.
    pub not_before: i64,
    /// notAfter, seconds since the Unix epoch.
    pub not_after: i64,
    /// The subject's common name, if it has one.
    pub subject_cn: Option<String>,
    /// Serial number in lower-case hex.
    pub serial: String,
}

/// Parse the first certificate of a PEM file (a leaf followed by its chain is fine).
pub fn parse_pem(pem: &[u8]) -> Result<CertInfo, String> {
    let text = std::str::from_utf8(pem).map_err(|_| "the file is not PEM text".to_string())?;
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let start = text
        .find(BEGIN)
        .ok_or("no `-----BEGIN CERTIFICATE-----` block in the file")?
        + BEGIN.len();
    let len = text[start..]
        .find(END)
        .ok_or("the CERTIFICATE block has no END line")?;
    let der = base64_decode(&text[start..start + len])?;
    parse_der(&der)
}

fn base64_decode(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits, mut pad) = (0u32, 0u32, 0);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => {
                pad += 1;
                continue;
            }
            b' ' | b'\t' | b'\r' | b'\n' => continue,
            _ => {
                return Err(format!(
                    "invalid base64 character {:?} in the certificate",
                    c as char
                ));
            }
        };
        if pad > 0 {
            return Err("base64 data after padding".into());
        }
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

/// A DER reader over one constructed value's contents.
struct Der<'a> {
    buf: &'a [u8],
}

impl<'a> Der<'a> {
    /// Read one TLV: (tag, contents).
    fn next(&mut self) -> Result<(u8, &'a [u8]), String> {
        let b = self.buf;
        if b.len() < 2 {
            return Err("truncated DER".into());
        }
        let tag = b[0];
        if tag & 0x1f == 0x1f {
            return Err("multi-byte DER tags are not used in certificates".into());
        }
        let (len, hdr) = match b[1] {
            l if l < 0x80 => (l as usize, 2),
            0x81..=0x84 => {
                let n = (b[1] & 0x7f) as usize;
                if b.len() < 2 + n {
                    return Err("truncated DER length".into());
                }
                let len = b[2..2 + n]
                    .iter()
                    .fold(0usize, |a, &x| (a << 8) | x as usize);
                (len, 2 + n)
            }
            _ => return Err("unsupported DER length form".into()),
        };
        let end = hdr
            .checked_add(len)
            .filter(|&e| e <= b.len())
            .ok_or("DER length runs past the data")?;
        self.buf = &b[end..];
        Ok((tag, &b[hdr..end]))
    }

    fn expect(&mut self, tag: u8, what: &str) -> Result<&'a [u8], String> {
        let (t, v) = self.next()?;
        if t != tag {
            return Err(format!(
                "expected {what} (tag 0x{tag:02x}), found tag 0x{t:02x}"
            ));
        }
        Ok(v)
    }
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const INTEGER: u8 = 0x02;
const OID: u8 = 0x06;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const VERSION: u8 = 0xa0;
/// OID 2.5.4.3 (commonName), encoded.
const CN: &[u8] = &[0x55, 0x04, 0x03];

fn parse_der(der: &[u8]) -> Result<CertInfo, String> {
    let cert = Der { buf: der }.expect(SEQUENCE, "Certificate")?;
    let mut tbs = Der {
        buf: Der { buf: cert }.expect(SEQUENCE, "tbsCertificate")?,
    };
    let (mut tag, mut v) = tbs.next()?;
    if tag == VERSION {
        (tag, v) = tbs.next()?;
    }
    if tag != INTEGER {
        return Err("expected the serial number".into());
    }
    let serial: String = v.iter().map(|b| format!("{b:02x}")).collect();
    tbs.expect(SEQUENCE, "signature algorithm")?;
    tbs.expect(SEQUENCE, "issuer")?;
    let mut validity = Der {
        buf: tbs.expect(SEQUENCE, "validity")?,
    };
    let not_before = parse_time(validity.next()?)?;
    let not_after = parse_time(validity.next()?)?;
    let subject = tbs.expect(SEQUENCE, "subject")?;
    Ok(CertInfo {
        not_before,
        not_after,
        subject_cn: common_name(subject),
        serial,
    })
}

/// The first commonName in a Name (SEQUENCE OF SET OF AttributeTypeAndValue).
fn common_name(name: &[u8]) -> Option<String> {
    let mut rdns = Der { buf: name };
    while !rdns.buf.is_empty() {
        let mut set = Der {
            buf: rdns.expect(SET, "RDN").ok()?,
        };
        while !set.buf.is_empty() {
            let mut atv = Der {
                buf: set.expect(SEQUENCE, "attribute").ok()?,
            };
            let oid = atv.expect(OID, "attribute type").ok()?;
            let (_, value) = atv.next().ok()?;
            if oid == CN {
                return Some(String::from_utf8_lossy(value).into_owned());
            }
        }
    }
    None
}

/// UTCTime `YYMMDDHHMMSSZ` (years 1950–2049) or GeneralizedTime `YYYYMMDDHHMMSSZ`.
fn parse_time((tag, v): (u8, &[u8])) -> Result<i64, String> {
    let s = std::str::from_utf8(v).map_err(|_| "certificate time is not ASCII")?;
    let digits = |r: std::ops::Range<usize>| -> Result<i64, String> {
        let part = s
            .get(r)
            .ok_or_else(|| format!("certificate time {s:?} is too short"))?;
        if !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("certificate time {s:?} has non-digits"));
        }
        part.parse::<i64>().map_err(|e| e.to_string())
    };
    let (year, rest) = match tag {
        UTC_TIME if s.len() == 13 => {
            let yy = digits(0..2)?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, 2)
        }
        GENERALIZED_TIME if s.len() == 15 => (digits(0..4)?, 4),
        _ => {
            return Err(format!(
                "unsupported certificate time {s:?} (tag 0x{tag:02x})"
            ));
        }
    };
    if !s.ends_with('Z') {
        return Err(format!("certificate time {s:?} is not in UTC"));
    }
    let (mo, d) = (digits(rest..rest + 2)?, digits(rest + 2..rest + 4)?);
    let (h, mi, sec) = (
        digits(rest + 4..rest + 6)?,
        digits(rest + 6..rest + 8)?,
        digits(rest + 8..rest + 10)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return Err(format!("certificate time {s:?} is out of range"));
    }
    Ok(days_from_civil(year, mo, d) * 86_400 + h * 3600 + mi * 60 + sec)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `1700000000` → `2023-11-14T22:13:20Z`.
pub fn iso8601(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(days_from_civil(2000, 3, 1) * 86_400, 951_868_800);
        assert_eq!(
            parse_time((UTC_TIME, b"491231235959Z"))
                .map(iso8601)
                .unwrap(),
            "2049-12-31T23:59:59Z"
        );
        assert_eq!(
            parse_time((UTC_TIME, b"500101000000Z"))
                .map(iso8601)
                .unwrap(),
            "1950-01-01T00:00:00Z"
        );
        assert_eq!(
            parse_time((GENERALIZED_TIME, b"20991231235959Z"))
                .map(iso8601)
                .unwrap(),
            "2099-12-31T23:59:59Z"
        );
        assert!(parse_time((UTC_TIME, b"4912312359Z")).is_err());
        assert!(parse_time((UTC_TIME, b"491331235959Z")).is_err());
    }

    /// A v1 certificate (no version field) made with `openssl ca -selfsign -startdate
    /// 20240101000000Z -enddate 20991231235959Z`: UTCTime before, GeneralizedTime after.
    const V1_UNTIL_2099: &str = "-----BEGIN CERTIFICATE-----
MIIBEzCBuQICEAEwCgYIKoZIzj0EAwIwFDESMBAGA1UEAwwJbG9uZy50ZXN0MCAX
DTI0MDEwMTAwMDAwMFoYDzIwOTkxMjMxMjM1OTU5WjAUMRIwEAYDVQQDDAlsb25n
LnRlc3QwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAQpg9GcbYVt7H+F4NLkQtHj
hQ0fO/oJvv2swl04mBCEREXHaDTEsS3uLgUybRGXWD3PkOHm4kUaapmhisiqLeoY
MAoGCCqGSM49BAMCA0kAMEYCIQDIjhUV+XvSsV2cLnRu0OmLUlyVnEwIHsQrMqc/
DWTpvQIhAL9KQ0oL38Aeq+coth6lfZJPnvAqmKHAwQdGL+BHxsch
-----END CERTIFICATE-----
";

    /// A v3 certificate from `openssl req -x509 -days 1 -subj /CN=long.test`, chain-style
    /// with a second block after it (only the first counts).
    const V3: &str = "-----BEGIN CERTIFICATE-----
MIIBfDCCASOgAwIBAgIUIgmhCO3QTPwYvmuaz+g+xte7ncIwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9uZy50ZXN0MB4XDTI2MTEyMTIzNDAwNloXDTI2MTEyMjIz
NDAwNlowFDESMBAGA1UEAwwJbG9uZy50ZXN0MFkwEwYHKoZIzj0CAQYIKoZIzj0D
AQcDQgAEvIpQDm712cRk3Rb1c6cWOzMleJC5xHQOGfaNyO5H2VWcXxwS0vVokg4S
9YwCdqUC6Uv02OzPJ8llGRhBLNKf7KNTMFEwHQYDVR0OBBYEFJ0hLJ4maQKzZyZa
6pJ/R9ZU7vj6MB8GA1UdIwQYMBaAFJ0hLJ4maQKzZyZa6pJ/R9ZU7vj6MA8GA1Ud
EwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDRwAwRAIgBR3zWaDMNjuhaFi2wzHClbw8
MWmOqVAwLze7sftyj84CICTdc/ltYx/lJtiYbwX2CpXZRBP9BM2zhXJC5U4ZT7Lr
-----END CERTIFICATE-----
";

    #[test]
    fn reads_validity_subject_and_serial() {
        let c = parse_pem(V1_UNTIL_2099.as_bytes()).unwrap();
        assert_eq!(iso8601(c.not_before), "2024-01-01T00:00:00Z");
        assert_eq!(iso8601(c.not_after), "2099-12-31T23:59:59Z");
        assert_eq!(c.subject_cn.as_deref(), Some("long.test"));
        assert_eq!(c.serial, "1001");
        let chain = format!("{V3}{V1_UNTIL_2099}");
        let c = parse_pem(chain.as_bytes()).unwrap();
        assert_eq!(c.not_after - c.not_before, 86_400);
        assert_eq!(c.subject_cn.as_deref(), Some("long.test"));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_pem(b"hello").is_err());
        assert!(
            parse_pem(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----").is_err()
        );
        assert!(parse_der(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(parse_der(&[]).is_err());
    }
}
