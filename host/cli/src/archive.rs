//! `runwarden evidence archive --to s3://…`, `evidence verify s3://…`, and the periodic
//! archive of `up` and `server`: the WORM archive of the evidence log.

use anyhow::Context;
use clap::Args;
use runwarden_archive::{self as archive, s3};
use runwarden_evidence as ev;
use std::process::ExitCode;

/// The S3 service (credentials come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
/// AWS_SESSION_TOKEN, as every S3 tool reads them).
#[derive(Args, Clone, Debug, Default)]
pub struct S3Args {
    /// The S3 endpoint, e.g. https://s3.eu-central-1.amazonaws.com or a local S3 server.
    /// Default: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, else AWS S3 of the region.
    #[arg(long, env = "AWS_ENDPOINT_URL_S3")]
    pub s3_endpoint: Option<String>,
    /// The region that signs requests. Default: AWS_REGION, else us-east-1.
    #[arg(long, env = "AWS_REGION")]
    pub s3_region: Option<String>,
}

impl S3Args {
    /// The client: endpoint, region and the credentials from the environment.
    pub fn client(&self) -> anyhow::Result<s3::S3> {
        let region = self.s3_region.clone().unwrap_or_else(|| "us-east-1".into());
        let endpoint = self
            .s3_endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
            .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        let credentials = s3::Credentials::from_env()?;
        Ok(s3::S3::new(&endpoint, &region, credentials)?)
    }
}

/// How long archived segments stay locked: `6y`, `2190d` (days by default).
pub fn parse_retention(text: &str) -> anyhow::Result<u64> {
    let bad = || {
        anyhow::anyhow!(
            "{:?} is not a retention: give days (2190 or 2190d) or years (6y)",
            ev::escape_control(text)
        )
    };
    let (n, unit) = match text.strip_suffix('y') {
        Some(n) => (n, 365u64),
        None => (text.strip_suffix('d').unwrap_or(text), 1),
    };
    let n: u64 = n.parse().map_err(|_| bad())?;
    let days = n
        .checked_mul(unit)
        .filter(|d| (1..=36_500).contains(d))
        .ok_or_else(|| {
            anyhow::anyhow!("a retention is between 1 day and 100 years, not {text:?}")
        })?;
    // Leap days: six years are 2,192 days at most.
    Ok(if unit == 365 {
        days + n.div_ceil(4)
    } else {
        days
    })
}

/// How often: `30s`, `15m`, `1h`, `1d` — from 5 seconds to a week.
pub fn parse_every(text: &str) -> anyhow::Result<std::time::Duration> {
    let unit = |u: char| match u {
        's' => Some(1),
        'm' => Some(60),
        'h' => Some(3600),
        'd' => Some(86_400),
        _ => None,
    };
    let secs = text
        .char_indices()
        .last()
        .and_then(|(at, u)| Some((text[..at].parse::<u64>().ok()?, unit(u)?)))
        .and_then(|(n, per)| n.checked_mul(per))
        .filter(|s| (5..=7 * 86_400).contains(s))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{:?} is not a period from 5 s to a week: give a number and a unit, e.g. 30s, 15m, 1h, 1d",
                ev::escape_control(text)
            )
        })?;
    Ok(std::time::Duration::from_secs(secs))
}

/// `evidence archive`: archive the database's own log.
pub async fn archive_once(
    store: &ev::Store,
    key: &ev::SigningKey,
    keys: Vec<ev::VerifyingKey>,
    to: &str,
    s3: &S3Args,
    retention_days: u64,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let target: archive::Target = to.parse()?;
    let client = s3.client()?;
    let origin = ev::log_origin(key.name());
    let mut progress = crate::term::Progress::new("archiving", 0);
    if json {
        progress.off();
    }
    let tell = |done: u64, total: u64| progress.at_of(done, total);
    let archiver = archive::Archiver {
        s3: &client,
        target: &target,
        retention_days,
        segment_records: archive::SEGMENT_RECORDS,
        backoff: archive::BACKOFF,
    };
    let done = archiver.archive_log(store, key, &origin, keys, &tell).await;
    progress.done();
    let done = done?;
    if json {
        println!("{}", crate::term::json_line(&serde_json::to_value(&done)?));
    } else if done.written == 0 {
        outln!(
            "the archive at {} is up to date: {} record(s) of {}",
            done.location,
            done.archived,
            done.origin
        );
    } else {
        outln!(
            "archived {} record(s) of {} in {} sealed segment(s) to {}, under COMPLIANCE Object Lock until {}; {} record(s) archived in all",
            done.records_written,
            done.origin,
            done.written,
            done.location,
            done.retain_until.as_deref().unwrap_or("?"),
            done.archived
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `evidence verify s3://BUCKET/PREFIX`: a log straight from its archive (`--origin`), or
/// every log archived there, each on its own (a fleet's hosts side by side).
pub fn verify(
    to: &str,
    origin: Option<&str>,
    s3: &S3Args,
    trusted: &[ev::VerifyingKey],
    json: bool,
) -> anyhow::Result<ExitCode> {
    let target: archive::Target = to.parse()?;
    let client = s3.client()?;
    let mut progress = crate::term::Progress::new("verifying", 0);
    if json {
        progress.off();
    }
    let tell = |records: u64, total: u64| progress.at_of(records, total);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let origins = match origin {
        Some(o) => Ok(vec![o.to_string()]),
        None => rt.block_on(archive::archived_logs(&client, &target)),
    };
    let verdicts: Vec<(
        String,
        Result<archive::ArchiveVerified, archive::ArchiveError>,
    )> = match origins {
        Ok(origins) => origins
            .into_iter()
            .map(|o| {
                let v = rt.block_on(archive::verify_archive(
                    &client, &target, &o, trusted, &tell,
                ));
                (o, v)
            })
            .collect(),
        Err(e) => vec![(String::new(), Err(e))],
    };
    progress.done();
    let ok = verdicts.iter().all(|(_, v)| v.is_ok());
    if json {
        let each = |(o, v): &(
            String,
            Result<archive::ArchiveVerified, archive::ArchiveError>,
        )| {
            match v {
                Ok(v) => {
                    let mut out = serde_json::to_value(v).unwrap_or_default();
                    out["verified"] = true.into();
                    out["complete"] = true.into();
                    out
                }
                Err(e) => {
                    serde_json::json!({"verified": false, "origin": o, "error": e.to_string()})
                }
            }
        };
        let out = match verdicts.as_slice() {
            [one] => each(one),
            many => serde_json::json!({
                "verified": ok,
                "logs": many.iter().map(each).collect::<Vec<_>>(),
            }),
        };
        println!("{}", crate::term::json_line(&out));
    } else {
        for (o, v) in &verdicts {
            match v {
                Ok(v) => {
                    outln!(
                        "verified {} records of {} from the archive at {} ({} sealed segments, complete from record 0 to the last one listed), tree size {}, root {}; locked (COMPLIANCE) until at least {}",
                        v.records,
                        v.origin,
                        target,
                        v.segments,
                        v.tree_size,
                        v.root,
                        v.retained_until.as_deref().unwrap_or("?")
                    );
                    if v.hidden > 0 {
                        errln!(
                            "{} segment(s) of {} were deleted without a version id (a delete marker hides them): read and verified from their locked versions; find out who deleted them",
                            v.hidden,
                            v.origin
                        );
                    }
                    if v.off_path > 0 {
                        errln!(
                            "{} other object(s) in the directory of {} are not on the chain from record 0: not read, not relied on",
                            v.off_path,
                            v.origin
                        );
                    }
                }
                Err(e) if o.is_empty() => errln!("verification FAILED: {e}"),
                Err(e) => errln!("verification FAILED: {o}: {e}"),
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The periodic archive of `up` and `server`: every `every`, the log's new records.
/// Failures are reported and retried at the next period; nothing is lost meanwhile (the
/// log keeps every record until it is archived, and after).
pub fn spawn_periodic(
    store: ev::Store,
    key: ev::SigningKey,
    keys: Vec<ev::VerifyingKey>,
    target: archive::Target,
    client: s3::S3,
    retention_days: u64,
    every: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let origin = ev::log_origin(key.name());
        let mut last_error: Option<String> = None;
        loop {
            let archiver = archive::Archiver {
                s3: &client,
                target: &target,
                retention_days,
                segment_records: archive::SEGMENT_RECORDS,
                backoff: archive::BACKOFF,
            };
            match archiver
                .archive_log(&store, &key, &origin, keys.clone(), &|_, _| {})
                .await
            {
                Ok(done) => {
                    if done.written > 0 || last_error.is_some() {
                        errln!(
                            "evidence archive: {} record(s) of {} archived to {} ({} in all)",
                            done.records_written,
                            done.origin,
                            done.location,
                            done.archived
                        );
                    }
                    last_error = None;
                }
                Err(e) => {
                    let text = e.to_string();
                    if last_error.as_deref() != Some(&text) {
                        errln!(
                            "evidence archive to {target} failed (retried every {} s): {text}",
                            every.as_secs()
                        );
                    }
                    last_error = Some(text);
                }
            }
            tokio::time::sleep(every).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_parse_with_their_unit() {
        let secs = |t| parse_every(t).unwrap().as_secs();
        assert_eq!(
            (secs("5s"), secs("15m"), secs("1h"), secs("7d")),
            (5, 900, 3600, 604_800)
        );
        for bad in ["", "4s", "8d", "1", "h", "1w", "-1h", "1.5h", "\u{1b}[2J1h"] {
            let e = parse_every(bad).unwrap_err().to_string();
            assert!(e.contains("e.g. 30s"), "{bad:?}: {e}");
            assert!(!e.contains('\u{1b}'), "{e}");
        }
    }

    #[test]
    fn retentions_parse_in_days_and_years() {
        assert_eq!(parse_retention("30").unwrap(), 30);
        assert_eq!(parse_retention("30d").unwrap(), 30);
        assert_eq!(parse_retention("6y").unwrap(), 6 * 365 + 2);
        assert_eq!(parse_retention("1y").unwrap(), 366);
        for bad in ["", "0", "6x", "-1d", "101y", "y", "\u{1b}[2J"] {
            let e = parse_retention(bad).unwrap_err().to_string();
            assert!(e.contains("retention"), "{bad:?}: {e}");
            assert!(!e.contains('\u{1b}'), "{e}");
        }
    }
}
