//! The incident model: what monitors report, validated before anything acts on it.

use crate::Severity;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// One incident as submitted: JSON with exactly these fields.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Incident {
    /// The tenant (clinic). Over the API it must be the token's tenant; it may be omitted
    /// there.
    #[serde(default)]
    pub tenant: String,
    /// The host it happened on.
    pub host: String,
    /// What kind of incident (`disk-full`, `service-down`, `cert-expiring`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// How bad.
    pub severity: Severity,
    /// The service concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Free text from the monitor.
    #[serde(default)]
    pub message: String,
    /// The monitor's labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// When it happened (RFC 3339); the time it was received when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<String>,
}

/// Why an incident was rejected.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid incident: {field}: {message}")]
pub struct IncidentError {
    /// The offending field.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

const MAX_NAME: usize = 128;
const MAX_MESSAGE: usize = 8 * 1024;
const MAX_LABELS: usize = 32;
const MAX_LABEL_KEY: usize = 64;
const MAX_LABEL_VALUE: usize = 512;

/// Check a tenant, host, type or service name: 1 to 128 of letters, digits and `- _ . @ :`.
pub fn check_name(field: &'static str, v: &str) -> Result<(), IncidentError> {
    let bad = |message: String| Err(IncidentError { field, message });
    if v.is_empty() {
        return bad("is empty".into());
    }
    if v.len() > MAX_NAME {
        return bad(format!("is {} bytes long; at most {MAX_NAME}", v.len()));
    }
    if !v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | ':'))
    {
        return bad(format!("{v:?} may hold only letters, digits and - _ . @ :"));
    }
    Ok(())
}

impl Incident {
    /// Parse and validate JSON.
    pub fn from_json(bytes: &[u8]) -> Result<Incident, IncidentError> {
        let i: Incident = serde_json::from_slice(bytes).map_err(|e| IncidentError {
            field: "body",
            message: e.to_string(),
        })?;
        i.validate()?;
        Ok(i)
    }

    /// Check every field; the tenant may still be empty (filled from the caller).
    pub fn validate(&self) -> Result<(), IncidentError> {
        if !self.tenant.is_empty() {
            check_name("tenant", &self.tenant)?;
        }
        check_name("host", &self.host)?;
        check_name("type", &self.kind)?;
        if let Some(s) = &self.service {
            check_name("service", s)?;
        }
        if self.message.len() > MAX_MESSAGE {
            return Err(IncidentError {
                field: "message",
                message: format!(
                    "is {} bytes long; at most {MAX_MESSAGE}",
                    self.message.len()
                ),
            });
        }
        if self.labels.len() > MAX_LABELS {
            return Err(IncidentError {
                field: "labels",
                message: format!("{} labels; at most {MAX_LABELS}", self.labels.len()),
            });
        }
        for (k, v) in &self.labels {
            if k.is_empty()
                || k.len() > MAX_LABEL_KEY
                || !k
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
            {
                return Err(IncidentError {
                    field: "labels",
                    message: format!("key {k:?}: 1 to {MAX_LABEL_KEY} letters, digits, - _ . /"),
                });
            }
            if v.len() > MAX_LABEL_VALUE {
                return Err(IncidentError {
                    field: "labels",
                    message: format!("value of {k:?} is longer than {MAX_LABEL_VALUE} bytes"),
                });
            }
        }
        if let Some(t) = &self.occurred_at
            && parse_rfc3339_ms(t).is_none()
        {
            return Err(IncidentError {
                field: "occurred_at",
                message: format!(
                    "{t:?} is not an RFC 3339 time like 2026-11-22T10:00:00Z (a real date, an offset from -12:00 to +14:00)"
                ),
            });
        }
        Ok(())
    }

    /// The stable fingerprint (tenant, host, type, service) used for dedupe and repeats.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for part in [
            self.tenant.as_str(),
            self.host.as_str(),
            self.kind.as_str(),
            self.service.as_deref().unwrap_or(""),
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        hex::encode(&h.finalize()[..16])
    }
}

/// Milliseconds since the epoch of an RFC 3339 time (`Z` or a numeric offset).
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = match mo {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if !(1..=12).contains(&mo) || !(1..=month_days).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut ms = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let f = &frac[..digits];
        ms = f[..digits.min(3)].parse::<i64>().ok()? * 10_i64.pow(3 - digits.min(3) as u32);
        rest = &frac[digits..];
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) && &o[3..4] == ":" => {
            let (oh, om) = (num(s.len() - 5..s.len() - 3)?, num(s.len() - 2..s.len())?);
            let v = oh * 60 + om;
            // Offsets in use on Earth run from -12:00 to +14:00; anything else is a
            // sender's mistake that would move the incident by up to four days.
            let v = if o.starts_with('-') { -v } else { v };
            if om > 59 || !(-12 * 60..=14 * 60).contains(&v) {
                return None;
            }
            v
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let (y2, m2) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + mi - offset_min) * 60_000 + sec * 1000 + ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let i = Incident::from_json(
            br#"{"tenant":"a","host":"h1","type":"disk-full","severity":"high","labels":{"mount":"/tmp"}}"#,
        )
        .unwrap();
        assert_eq!(i.severity, Severity::High);
        let e = Incident::from_json(br#"{"host":"h1","type":"x","severity":"high","extra":1}"#)
            .unwrap_err();
        assert!(e.message.contains("unknown field `extra`"), "{e}");
        let e = Incident::from_json(br#"{"host":"h 1","type":"x","severity":"high"}"#).unwrap_err();
        assert_eq!(e.field, "host");
        let e = Incident::from_json(br#"{"host":"h","type":"x","severity":"bad"}"#).unwrap_err();
        assert!(e.message.contains("unknown variant `bad`"), "{e}");
        let e = Incident::from_json(
            br#"{"host":"h","type":"x","severity":"low","occurred_at":"yesterday"}"#,
        )
        .unwrap_err();
        assert_eq!(e.field, "occurred_at");
    }

    #[test]
    fn fingerprint_is_stable_and_separates_fields() {
        let mut a =
            Incident::from_json(br#"{"tenant":"t","host":"ab","type":"c","severity":"low"}"#)
                .unwrap();
        let fa = a.fingerprint();
        a.message = "different text".into();
        assert_eq!(
            a.fingerprint(),
            fa,
            "message is not part of the fingerprint"
        );
        let b = Incident::from_json(br#"{"tenant":"t","host":"a","type":"bc","severity":"low"}"#)
            .unwrap();
        assert_ne!(b.fingerprint(), fa);
    }

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:01.5Z"), Some(1500));
        assert_eq!(parse_rfc3339_ms("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2026-11-22T00:00:00Z"),
            Some(1_795_305_600_000)
        );
        assert_eq!(parse_rfc3339_ms("2026-13-22T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_ms("2026-11-22"), None);
        assert_eq!(
            parse_rfc3339_ms("2026-11-22T00:00:00+14:00"),
            Some(1_795_305_600_000 - 14 * 3_600_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-22T00:00:00-12:00"),
            Some(1_795_305_600_000 + 12 * 3_600_000)
        );
        for absurd in [
            "2026-11-22T00:00:00+99:00",
            "2026-11-22T00:00:00-23:59",
            "2026-11-22T00:00:00+14:01",
            "2026-11-22T00:00:00+01:60",
            "2026-02-30T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339_ms(absurd), None, "{absurd}");
        }
        assert!(parse_rfc3339_ms("2024-02-29T00:00:00Z").is_some());
    }
}
