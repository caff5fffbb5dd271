//! rotate-logs: rotate the log files of one directory, copytruncate style.
//!
//! For each regular file directly in `dir` whose name matches `pattern` (and that is not
//! empty and at least `min_size_bytes`), the runbook
//! 1. compresses the live file into `NAME.1.gz.tmp` (streaming, pure-Rust deflate),
//! 2. shifts the older generations: `NAME.{i}.gz` → `NAME.{i+1}.gz`, deleting those that
//!    would exceed `keep`,
//! 3. appends whatever the daemon wrote meanwhile, syncs, renames the temporary file to
//!    `NAME.1.gz`,
//! 4. truncates the live file in place, so the daemon keeps writing to the same handle.
//!
//! As with logrotate's `copytruncate`, lines written in the few milliseconds between the
//! last read and the truncation are lost. A run stopped half-way (deadline, fuel) leaves
//! the live file intact and at worst a stale `NAME.1.gz.tmp`, which the next run replaces.
//! WASI cannot set file modes: the `.gz` files get the host process's default mode, so
//! protect sensitive logs with the directory's permissions.

use flate2::Compression;
use flate2::write::GzEncoder;
use runbook_common::{clean_abs, glob_match, human_bytes};
use runwarden_sdk::log::Level;
use runwarden_sdk::prelude::*;
use serde::Deserialize;
use serde_json::json;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::Path;

/// Deflate level: 6 is zlib's default; logs compress ~10× at it.
const LEVEL: u32 = 1;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    dir: String,
    pattern: String,
    #[serde(default = "default_keep")]
    keep: u32,
    #[serde(default)]
    min_size_bytes: u64,
}

fn default_keep() -> u32 {
    5
}

struct RotateLogs;

impl Runbook for RotateLogs {
    type Params = Params;

    fn manifest() -> Manifest {
        Manifest::new(
            "rotate-logs",
            env!("CARGO_PKG_VERSION"),
            "Rotate log files that grew too big: gzip them into numbered generations and truncate them in place",
        )
        .risk(Risk::Medium)
        .capability(Capability::WriteDir("{dir}".into()))
        .platform("linux")
        .params_schema(json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["dir", "pattern"],
            "properties": {
                "dir": {"type": "string", "pattern": "^/", "minLength": 2, "maxLength": 4096,
                        "description": "absolute path of the log directory (granted read-write); only files directly in it are rotated"},
                "pattern": {"type": "string", "pattern": "^[^/]+$", "minLength": 1, "maxLength": 255,
                            "description": "file-name glob (`*` any run, `?` one character), e.g. `*.log`; rotated generations `NAME.N.gz` never match"},
                "keep": {"type": "integer", "minimum": 1, "maximum": 100, "default": 5,
                         "description": "number of compressed generations kept per file (NAME.1.gz … NAME.keep.gz)"},
                "min_size_bytes": {"type": "integer", "minimum": 0, "maximum": 1_099_511_627_776u64, "default": 0,
                                   "description": "rotate only files at least this big; empty files are never rotated"}
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
        if p.pattern.contains('/') || p.keep == 0 {
            return Err(RunError::InvalidParams(
                "pattern must be a file name glob and keep at least 1".into(),
            ));
        }
        let dir_s = dir.display().to_string();
        log::log(
            Level::Info,
            "scanning log directory",
            &[("dir", &dir_s), ("pattern", &p.pattern)],
        );

        // One listing serves both: the live files to rotate and their existing generations.
        let mut names: Vec<(String, u64)> = Vec::new();
        let rd = std::fs::read_dir(&dir)
            .map_err(|e| RunError::Failed(format!("cannot list {dir_s}: {e}")))?;
        for entry in rd {
            let entry = entry.map_err(|e| RunError::Failed(format!("cannot list {dir_s}: {e}")))?;
            // A name that is not UTF-8 cannot be matched or rebuilt reliably: leave it alone.
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            // Never follow a symlink: rotating its target could reach outside the grant's intent.
            let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
                continue;
            };
            if meta.file_type().is_file() {
                names.push((name, meta.len()));
            }
        }
        names.sort();

        let mut matched = 0u64;
        let (mut rotated, mut skipped, mut errors) = (Vec::new(), Vec::new(), Vec::new());
        let (mut bytes_in, mut bytes_out) = (0u64, 0u64);
        for (name, size) in &names {
            if generation_of(name).is_some()
                || name.ends_with(".gz.tmp")
                || !glob_match(&p.pattern, name)
            {
                continue;
            }
            matched += 1;
            let reason = if *size == 0 {
                Some("empty")
            } else if *size < p.min_size_bytes {
                Some("below min_size_bytes")
            } else {
                None
            };
            if let Some(reason) = reason {
                skipped.push(json!({"file": name, "bytes": size, "reason": reason}));
                continue;
            }
            let generations: Vec<u32> = names
                .iter()
                .filter_map(|(n, _)| {
                    generation_of(n)
                        .filter(|(base, _)| base == name)
                        .map(|(_, i)| i)
                })
                .collect();
            log::log(
                Level::Info,
                "rotating",
                &[("file", name), ("bytes", &size.to_string())],
            );
            match rotate(&dir, name, &generations, p.keep) {
                Ok(r) => {
                    log::log(
                        Level::Info,
                        "rotated",
                        &[
                            ("file", name),
                            ("bytes", &r.bytes.to_string()),
                            ("compressed_bytes", &r.compressed.to_string()),
                        ],
                    );
                    bytes_in += r.bytes;
                    bytes_out += r.compressed;
                    rotated.push(json!({
                        "file": name,
                        "bytes": r.bytes,
                        "compressed_bytes": r.compressed,
                        "archive": format!("{name}.1.gz"),
                        "shifted": r.shifted,
                        "deleted": r.deleted,
                    }));
                }
                Err(e) => {
                    log::log(
                        Level::Error,
                        "rotation failed",
                        &[("file", name), ("error", &e.to_string())],
                    );
                    errors.push(json!({"file": name, "error": e.to_string()}));
                }
            }
        }

        let details = json!({
            "dir": dir_s,
            "pattern": p.pattern,
            "keep": p.keep,
            "min_size_bytes": p.min_size_bytes,
            "matched": matched,
            "rotated": rotated,
            "skipped": skipped,
            "errors": errors,
            "bytes_rotated": bytes_in,
            "bytes_compressed": bytes_out,
        });
        let outcome = if !errors.is_empty() {
            Outcome::failed(format!(
                "rotated {} of {} file(s) in {dir_s}; {} failed (first: {})",
                rotated.len(),
                rotated.len() + errors.len(),
                errors.len(),
                errors[0]["error"].as_str().unwrap_or("?"),
            ))
        } else if !rotated.is_empty() {
            Outcome::healed(format!(
                "rotated {} file(s) in {dir_s}: {} compressed to {}, live files truncated",
                rotated.len(),
                human_bytes(bytes_in),
                human_bytes(bytes_out)
            ))
        } else if matched == 0 {
            Outcome::no_op(format!("no file in {dir_s} matches {}", p.pattern))
        } else {
            Outcome::no_op(format!(
                "{matched} file(s) in {dir_s} match {}, none needs rotating (empty or below {} bytes)",
                p.pattern, p.min_size_bytes
            ))
        };
        Ok(outcome.details(details))
    }
}

/// `app.log.3.gz` → `("app.log", 3)`.
fn generation_of(name: &str) -> Option<(&str, u32)> {
    let stem = name.strip_suffix(".gz")?;
    let (base, n) = stem.rsplit_once('.')?;
    if base.is_empty()
        || n.is_empty()
        || !n.bytes().all(|b| b.is_ascii_digit())
        || n.starts_with('0')
    {
        return None;
    }
    Some((base, n.parse().ok()?))
}

struct Rotation {
    bytes: u64,
    compressed: u64,
    shifted: Vec<String>,
    deleted: Vec<String>,
}

fn rotate(dir: &Path, name: &str, generations: &[u32], keep: u32) -> io::Result<Rotation> {
    let live = dir.join(name);
    let gz = |i: u32| format!("{name}.{i}.gz");
    let tmp = dir.join(format!("{name}.1.gz.tmp"));

    // 1. Compress the live contents; nothing else has changed if this fails.
    let mut src = File::open(&live)?;
    let mut enc = GzEncoder::new(BufWriter::new(File::create(&tmp)?), Compression::new(LEVEL));
    let mut bytes = io::copy(&mut src, &mut enc)?;

    // 2. Make room for generation 1, oldest first so no rename overwrites a kept file.
    let mut gens = generations.to_vec();
    gens.sort_unstable_by(|a, b| b.cmp(a));
    let (mut shifted, mut deleted) = (Vec::new(), Vec::new());
    for i in gens {
        if i >= keep {
            std::fs::remove_file(dir.join(gz(i)))?;
            deleted.push(gz(i));
        } else {
            std::fs::rename(dir.join(gz(i)), dir.join(gz(i + 1)))?;
            shifted.push(format!("{} -> {}", gz(i), gz(i + 1)));
        }
    }

    // 3. Catch what the daemon appended meanwhile, then make the archive durable.
    let live_rw = OpenOptions::new().read(true).write(true).open(&live)?;
    bytes += io::copy(&mut src, &mut enc)?;
    let mut out = enc.finish()?;
    out.flush()?;
    let out = out.into_inner().map_err(|e| e.into_error())?;
    out.sync_all()?;
    let compressed = out.metadata()?.len();
    drop(out);
    std::fs::rename(&tmp, dir.join(gz(1)))?;

    // 4. Truncate in place: the daemon's file handle stays valid.
    live_rw.set_len(0)?;
    live_rw.sync_all()?;
    Ok(Rotation {
        bytes,
        compressed,
        shifted,
        deleted,
    })
}

runwarden_sdk::export_runbook!(RotateLogs);
