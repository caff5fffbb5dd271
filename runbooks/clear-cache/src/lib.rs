//! clear-cache: empty a cache directory, or trim it below a size.
//!
//! Without `max_bytes`, removes everything inside `dir`: regular files, symlinks (the
//! links themselves, never their targets) and the subdirectories that leaves empty.
//! With `max_bytes`, removes regular files oldest first (by modification time) until the
//! regular files under `dir` total at most `max_bytes`, then prunes emptied
//! subdirectories. `dir` itself always stays; sockets, FIFOs and devices are left alone.

use runbook_common::{FileInfo, human_bytes, unix_seconds, walk};
use runwarden_sdk::log::Level;
use runwarden_sdk::prelude::*;
use serde::Deserialize;
use serde_json::json;

const MAX_DEPTH: u32 = 64;
const MAX_ENTRIES: usize = 200_000;
/// Removed paths listed in details; the counts are always complete.
const LISTED: usize = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    dir: String,
    #[serde(default)]
    max_bytes: Option<u64>,
}

struct ClearCache;

impl Runbook for ClearCache {
    type Params = Params;

    fn manifest() -> Manifest {
        Manifest::new(
            "clear-cache",
            env!("CARGO_PKG_VERSION"),
            "Empty a cache directory, or trim it oldest-first until it is below a size",
        )
        .risk(Risk::Medium)
        .capability(Capability::WriteDir("{dir}".into()))
        .platform("linux")
        .params_schema(json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["dir"],
            "properties": {
                "dir": {"type": "string", "pattern": "^/", "minLength": 2, "maxLength": 4096,
                        "description": "absolute path of the cache directory (granted read-write); its contents are removed, the directory stays"},
                "max_bytes": {"type": "integer", "minimum": 0, "maximum": 1_125_899_906_842_624u64,
                              "description": "trim instead of emptying: remove the oldest files until the cache holds at most this many bytes"}
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
        log::log(Level::Info, "scanning cache", &[("dir", &dir_s)]);
        let tree = walk(&dir, MAX_DEPTH, MAX_ENTRIES)
            .map_err(|e| RunError::Failed(format!("cannot walk {dir_s}: {e}")))?;
        let total: u64 = tree.files.iter().map(|f| f.size).sum();
        log::log(
            Level::Info,
            "cache size",
            &[
                ("files", &tree.files.len().to_string()),
                ("bytes", &total.to_string()),
            ],
        );

        // Which files go: all of them, or the oldest until the rest fits.
        let mut files: Vec<&FileInfo> = tree.files.iter().collect();
        files.sort_by(|a, b| {
            a.modified
                .cmp(&b.modified)
                .then_with(|| a.path.cmp(&b.path))
        });
        let doomed: Vec<&FileInfo> = match p.max_bytes {
            None => files,
            Some(max) => {
                let mut left = total;
                files
                    .into_iter()
                    .take_while(|f| {
                        let go = left > max;
                        left -= if go { f.size } else { 0 };
                        go
                    })
                    .collect()
            }
        };
        let clear_all = p.max_bytes.is_none();
        if doomed.is_empty() && !(clear_all && (!tree.links.is_empty() || tree.dirs.len() > 1)) {
            let summary = match p.max_bytes {
                Some(max) => format!(
                    "{dir_s} holds {} ({total} bytes), within max_bytes {max}",
                    human_bytes(total)
                ),
                None => format!("{dir_s} is already empty"),
            };
            return Ok(Outcome::no_op(summary).details(json!({
                "dir": dir_s, "max_bytes": p.max_bytes, "bytes_before": total, "files_before": tree.files.len(),
                "files_removed": 0, "bytes_freed": 0, "bytes_after": total,
            })));
        }

        let mut counts = tree.removal_counts();
        let (mut removed, mut freed, mut listed, mut errors) = (0u64, 0u64, Vec::new(), Vec::new());
        for f in doomed {
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
        let mut links_removed = 0u64;
        if clear_all {
            for l in &tree.links {
                // remove_file unlinks the link itself; its target is never touched.
                match std::fs::remove_file(&l.path) {
                    Ok(()) => {
                        links_removed += 1;
                        counts[l.parent] += 1;
                    }
                    Err(e) => errors.push(format!("{}: {e}", l.path.display())),
                }
            }
        }
        let pruned = tree.prune(&mut counts, |_| true, |path| std::fs::remove_dir(path));
        errors.extend(pruned.errors.iter().cloned());
        errors.extend(tree.errors.iter().cloned());
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

        let after = total - freed;
        let details = json!({
            "dir": dir_s,
            "max_bytes": p.max_bytes,
            "bytes_before": total,
            "files_before": tree.files.len(),
            "files_removed": removed,
            "bytes_freed": freed,
            "bytes_after": after,
            "links_removed": links_removed,
            "dirs_removed": pruned.removed.len(),
            "others_left": tree.others,
            "walk_truncated": tree.truncated,
            "removed": listed,
            "errors": errors,
        });
        let what = format!(
            "removed {removed} file(s) ({}) from {dir_s}",
            human_bytes(freed)
        );
        let outcome = if !errors.is_empty() {
            Outcome::failed(format!(
                "{what}; {} error(s) (first: {})",
                errors.len(),
                errors[0]
            ))
        } else if let Some(max) = p.max_bytes.filter(|&m| after > m) {
            Outcome::failed(format!(
                "{what}, but it still holds {after} bytes, above max_bytes {max}"
            ))
        } else {
            Outcome::healed(match p.max_bytes {
                Some(max) => format!(
                    "{what}: {} → {} (max_bytes {max})",
                    human_bytes(total),
                    human_bytes(after)
                ),
                None => format!("{what}: cache emptied"),
            })
        };
        Ok(outcome.details(details))
    }
}

runwarden_sdk::export_runbook!(ClearCache);
