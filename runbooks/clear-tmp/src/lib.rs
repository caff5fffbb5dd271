//! clear-tmp: delete old files from a temporary directory.
//!
//! Walks `dir` recursively without following symlinks (symlinks are skipped entirely,
//! neither followed nor removed), deletes regular files last modified more than
//! `older_than_hours` ago, oldest first and at most `max_files` of them, then removes
//! the subdirectories this emptied when they are old enough themselves (their
//! modification time as it was before the cleanup). `dir` itself is never removed.
//! Sockets, FIFOs and devices are left alone.

use runbook_common::{DirInfo, human_bytes, older_than_hours, unix_seconds, walk};
use runwarden_sdk::log::Level;
use runwarden_sdk::prelude::*;
use serde::Deserialize;
use serde_json::json;
use std::time::SystemTime;

/// Depth and entry caps of the walk: bound memory and fuel on pathological trees.
const MAX_DEPTH: u32 = 64;
const MAX_ENTRIES: usize = 200_000;
/// Deleted paths listed in details; the counts are always complete.
const LISTED: usize = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    dir: String,
    older_than_hours: u64,
    #[serde(default)]
    max_files: Option<u64>,
}

struct ClearTmp;

impl Runbook for ClearTmp {
    type Params = Params;

    fn manifest() -> Manifest {
        Manifest::new(
            "clear-tmp",
            env!("CARGO_PKG_VERSION"),
            "Delete files older than an age from a temporary directory and prune the subdirectories it empties",
        )
        .risk(Risk::Medium)
        .capability(Capability::WriteDir("{dir}".into()))
        .platform("linux")
        .params_schema(json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["dir", "older_than_hours"],
            "properties": {
                "dir": {"type": "string", "pattern": "^/", "minLength": 2, "maxLength": 4096,
                        "description": "absolute path of the temporary directory (granted read-write); it is walked recursively and never removed itself"},
                "older_than_hours": {"type": "integer", "minimum": 1, "maximum": 87600,
                                     "description": "delete regular files last modified at least this many hours ago"},
                "max_files": {"type": "integer", "minimum": 1, "maximum": 1_000_000,
                              "description": "delete at most this many files, oldest first (default: no limit)"}
            }
        }))
    }

    fn run(p: Params) -> Result<Outcome, RunError> {
        let dir = runbook_common::clean_abs(&p.dir).ok_or_else(|| {
            RunError::InvalidParams(format!(
                "dir {:?} must be absolute without `.` or `..`",
                p.dir
            ))
        })?;
        let dir_s = dir.display().to_string();
        let now = SystemTime::now();
        log::log(
            Level::Info,
            "scanning",
            &[
                ("dir", &dir_s),
                ("older_than_hours", &p.older_than_hours.to_string()),
            ],
        );
        let tree = walk(&dir, MAX_DEPTH, MAX_ENTRIES)
            .map_err(|e| RunError::Failed(format!("cannot walk {dir_s}: {e}")))?;

        let mut old: Vec<&runbook_common::FileInfo> = tree
            .files
            .iter()
            .filter(|f| older_than_hours(now, f.modified, p.older_than_hours))
            .collect();
        old.sort_by(|a, b| {
            a.modified
                .cmp(&b.modified)
                .then_with(|| a.path.cmp(&b.path))
        });
        let eligible = old.len();
        let limit = p.max_files.map_or(usize::MAX, |m| m as usize);
        log::log(
            Level::Info,
            "found old files",
            &[
                ("files", &tree.files.len().to_string()),
                ("old", &eligible.to_string()),
            ],
        );

        let mut counts = tree.removal_counts();
        let (mut removed, mut freed, mut listed, mut errors) = (0u64, 0u64, Vec::new(), Vec::new());
        for f in old.iter().take(limit) {
            match std::fs::remove_file(&f.path) {
                Ok(()) => {
                    removed += 1;
                    freed += f.size;
                    counts[f.parent] += 1;
                    if listed.len() < LISTED {
                        listed.push(json!({"path": f.path.display().to_string(), "bytes": f.size, "mtime": unix_seconds(f.modified)}));
                    }
                }
                Err(e) => errors.push(format!("{}: {e}", f.path.display())),
            }
        }
        let old_enough = |d: &DirInfo| older_than_hours(now, d.modified, p.older_than_hours);
        let pruned = tree.prune(&mut counts, old_enough, |path| std::fs::remove_dir(path));
        errors.extend(pruned.errors.iter().cloned());
        errors.extend(tree.errors.iter().cloned());
        let limited = eligible > limit;
        if limited {
            log::log(
                Level::Warn,
                "max_files reached",
                &[("left", &(eligible - limit).to_string())],
            );
        }
        for e in errors.iter().take(10) {
            log::log(Level::Warn, "could not remove or read", &[("error", e)]);
        }
        log::log(
            Level::Info,
            "done",
            &[
                ("files_removed", &removed.to_string()),
                ("bytes_freed", &freed.to_string()),
                ("dirs_removed", &pruned.removed.len().to_string()),
            ],
        );

        let details = json!({
            "dir": dir_s,
            "older_than_hours": p.older_than_hours,
            "max_files": p.max_files,
            "files_seen": tree.files.len(),
            "files_eligible": eligible,
            "files_removed": removed,
            "bytes_freed": freed,
            "dirs_removed": pruned.removed.iter().map(|d| d.display().to_string()).collect::<Vec<_>>(),
            "symlinks_skipped": tree.links.len(),
            "others_skipped": tree.others,
            "limit_reached": limited,
            "walk_truncated": tree.truncated,
            "removed": listed,
            "errors": errors,
        });
        let what = format!(
            "{removed} file(s), {} and {} empty dir(s) from {dir_s}",
            human_bytes(freed),
            pruned.removed.len()
        );
        let outcome = if !errors.is_empty() {
            Outcome::failed(format!(
                "removed {what}; {} error(s) (first: {})",
                errors.len(),
                errors[0]
            ))
        } else if removed == 0 && pruned.removed.is_empty() {
            Outcome::no_op(format!(
                "nothing in {dir_s} is older than {} h ({} file(s) seen)",
                p.older_than_hours,
                tree.files.len()
            ))
        } else if limited {
            Outcome::healed(format!(
                "removed {what}; max_files reached, {} old file(s) left",
                eligible - limit
            ))
        } else {
            Outcome::healed(format!("removed {what}"))
        };
        Ok(outcome.details(details))
    }
}

runwarden_sdk::export_runbook!(ClearTmp);
