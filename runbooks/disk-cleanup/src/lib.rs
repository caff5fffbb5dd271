//! disk-cleanup: free space on a filesystem by deleting the largest old files in one
//! directory until a free-space target is met.
//!
//! Reads the filesystem's usage with `probe::disk_usage(dir)`; when less than
//! `target_free_percent` of it is available, walks `dir` recursively (symlinks are never
//! followed nor removed), and deletes regular files last modified at least
//! `min_age_hours` ago (optionally only those whose name matches `pattern`), largest
//! first, until the space they free would bring the available space to the target.
//! It then measures again: healed only when the filesystem really reports the target.
//!
//! Space is projected from file sizes, so files still held open by a process, hard links,
//! sparse files and snapshots free less than projected; the second measurement catches
//! that and the run ends failed with both figures. A dry run deletes nothing, so its
//! second measurement is unchanged: it ends failed too, listing the files it would have
//! removed. Directories are left in place.

use runbook_common::{
    FileInfo, clean_abs, glob_match, human_bytes, older_than_hours, unix_seconds, walk,
};
use runwarden_sdk::log::Level;
use runwarden_sdk::prelude::*;
use serde::Deserialize;
use serde_json::json;
use std::time::SystemTime;

const MAX_DEPTH: u32 = 64;
const MAX_ENTRIES: usize = 200_000;
/// Removed paths listed in details; the counts are always complete.
const LISTED: usize = 200;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    dir: String,
    target_free_percent: f64,
    #[serde(default = "default_min_age")]
    min_age_hours: u64,
    #[serde(default)]
    pattern: Option<String>,
}

fn default_min_age() -> u64 {
    24
}

struct DiskCleanup;

impl Runbook for DiskCleanup {
    type Params = Params;

    fn manifest() -> Manifest {
        Manifest::new(
            "disk-cleanup",
            env!("CARGO_PKG_VERSION"),
            "Free disk space by deleting the largest old files under a directory until a free-space target is met",
        )
        .risk(Risk::High)
        .capability(Capability::Probe)
        .capability(Capability::WriteDir("{dir}".into()))
        .platform("linux")
        .params_schema(json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["dir", "target_free_percent"],
            "properties": {
                "dir": {"type": "string", "pattern": "^/", "minLength": 2, "maxLength": 4096,
                        "description": "absolute path of the directory whose files may be deleted (granted read-write), walked recursively"},
                "target_free_percent": {"type": "number", "exclusiveMinimum": 0, "maximum": 99,
                                        "description": "stop once this percentage of the filesystem is available; no-op when it already is"},
                "min_age_hours": {"type": "integer", "minimum": 0, "maximum": 87600, "default": 24,
                                  "description": "only delete files last modified at least this many hours ago"},
                "pattern": {"type": "string", "pattern": "^[^/]+$", "minLength": 1, "maxLength": 255,
                            "description": "only delete files whose name matches this glob (`*` any run, `?` one character), e.g. `*.log.gz`"}
            }
        }))
    }

    fn run(p: Params) -> Result<Outcome, RunError> {
        let dir = clean_abs(&p.dir).ok_or_else(|| {
            RunError::InvalidParams(format!(
                "dir {:?} must be absolute without `.` or `..`",
                p.dir
            ))
        })?;
        if !(p.target_free_percent > 0.0 && p.target_free_percent < 100.0) {
            return Err(RunError::InvalidParams(
                "target_free_percent must be between 0 and 100".into(),
            ));
        }
        let dir_s = dir.display().to_string();
        let target = p.target_free_percent;

        let before = probe::disk_usage(&dir_s)?;
        if before.total_bytes == 0 {
            return Err(RunError::Failed(format!(
                "the filesystem holding {dir_s} reports a size of 0"
            )));
        }
        let pct = |avail: u64| avail as f64 * 100.0 / before.total_bytes as f64;
        let before_pct = pct(before.available_bytes);
        log::log(
            Level::Info,
            "disk usage",
            &[
                ("dir", &dir_s),
                ("free_percent", &format!("{before_pct:.2}")),
                ("target", &format!("{target}")),
            ],
        );
        let usage = |avail: u64| json!({"total_bytes": before.total_bytes, "available_bytes": avail, "free_percent": round2(pct(avail))});
        if before_pct >= target {
            return Ok(Outcome::no_op(format!("{dir_s}: {before_pct:.1}% free, target {target}%: nothing to delete"))
                .details(json!({"dir": dir_s, "target_free_percent": target, "before": usage(before.available_bytes)})));
        }
        // Bytes to free so that available / total reaches the target.
        let target_avail = (target / 100.0 * before.total_bytes as f64).ceil() as u64;
        let need = target_avail.saturating_sub(before.available_bytes);

        let tree = walk(&dir, MAX_DEPTH, MAX_ENTRIES)
            .map_err(|e| RunError::Failed(format!("cannot walk {dir_s}: {e}")))?;
        let now = SystemTime::now();
        let matching: Vec<&FileInfo> = tree
            .files
            .iter()
            .filter(|f| f.size > 0)
            .filter(|f| match (&p.pattern, f.path.file_name()) {
                (Some(pat), Some(n)) => glob_match(pat, &n.to_string_lossy()),
                (Some(_), None) => false,
                (None, _) => true,
            })
            .collect();
        let mut candidates: Vec<&FileInfo> = matching
            .iter()
            .copied()
            .filter(|f| older_than_hours(now, f.modified, p.min_age_hours))
            .collect();
        let too_young = matching.len() - candidates.len();
        candidates.sort_by(|a, b| {
            b.size
                .cmp(&a.size)
                .then_with(|| a.modified.cmp(&b.modified))
                .then_with(|| a.path.cmp(&b.path))
        });
        log::log(
            Level::Info,
            "candidates",
            &[
                ("need_bytes", &need.to_string()),
                ("candidates", &candidates.len().to_string()),
                ("too_young", &too_young.to_string()),
            ],
        );

        let (mut freed, mut removed, mut removed_count, mut errors) =
            (0u64, Vec::new(), 0u64, Vec::new());
        for f in &candidates {
            if freed >= need {
                break;
            }
            match std::fs::remove_file(&f.path) {
                Ok(()) => {
                    freed += f.size;
                    removed_count += 1;
                    log::log(
                        Level::Info,
                        "removed",
                        &[
                            ("path", &f.path.display().to_string()),
                            ("bytes", &f.size.to_string()),
                        ],
                    );
                    if removed.len() < LISTED {
                        removed.push(json!({"path": f.path.display().to_string(), "bytes": f.size, "mtime": unix_seconds(f.modified)}));
                    }
                }
                Err(e) => {
                    log::log(
                        Level::Warn,
                        "could not remove",
                        &[
                            ("path", &f.path.display().to_string()),
                            ("error", &e.to_string()),
                        ],
                    );
                    errors.push(format!("{}: {e}", f.path.display()));
                }
            }
        }
        errors.extend(tree.errors.iter().cloned());

        let after = probe::disk_usage(&dir_s)?;
        let after_pct = after.available_bytes as f64 * 100.0 / after.total_bytes.max(1) as f64;
        let projected_pct = pct(before.available_bytes.saturating_add(freed));
        log::log(
            Level::Info,
            "done",
            &[
                ("removed", &removed_count.to_string()),
                ("freed_bytes", &freed.to_string()),
                ("free_percent", &format!("{after_pct:.2}")),
            ],
        );
        let details = json!({
            "dir": dir_s,
            "target_free_percent": target,
            "min_age_hours": p.min_age_hours,
            "pattern": p.pattern,
            "before": usage(before.available_bytes),
            "after": {"total_bytes": after.total_bytes, "available_bytes": after.available_bytes, "free_percent": round2(after_pct)},
            "need_bytes": need,
            "projected_free_percent": round2(projected_pct),
            "candidates": candidates.len(),
            "too_young": too_young,
            "files_removed": removed_count,
            "freed_bytes": freed,
            "removed": removed,
            "symlinks_skipped": tree.links.len(),
            "walk_truncated": tree.truncated,
            "errors": errors,
        });
        let what = format!(
            "removed {removed_count} file(s), {}, from {dir_s}",
            human_bytes(freed)
        );
        let outcome = if after_pct >= target {
            Outcome::healed(format!(
                "{what}: free space {before_pct:.1}% → {after_pct:.1}% (target {target}%)"
            ))
        } else if removed_count == 0 && errors.is_empty() {
            Outcome::failed(format!(
                "{dir_s}: {before_pct:.1}% free, below the target of {target}%, and no file older than {} h{} to delete ({too_young} too young)",
                p.min_age_hours,
                p.pattern
                    .as_ref()
                    .map(|pt| format!(" matching {pt}"))
                    .unwrap_or_default()
            ))
        } else if projected_pct >= target {
            Outcome::failed(format!(
                "{what}, which should reach {projected_pct:.1}% free, but the filesystem reports {after_pct:.1}% (target {target}%): \
                 space may be held by open files, or this was a dry run{}",
                error_note(&errors)
            ))
        } else {
            Outcome::failed(format!(
                "{what}; every eligible file is gone but free space is {after_pct:.1}%, below the target of {target}%{}",
                error_note(&errors)
            ))
        };
        Ok(outcome.details(details))
    }
}

fn error_note(errors: &[String]) -> String {
    match errors.first() {
        None => String::new(),
        Some(first) => format!(" ({} error(s), first: {first})", errors.len()),
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

runwarden_sdk::export_runbook!(DiskCleanup);
