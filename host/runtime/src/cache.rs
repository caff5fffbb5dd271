//! The compiled-artifact cache: part of the trust boundary.
//!
//! A serialized component is native code, and `Component::deserialize` runs whatever it
//! is given. So the cache directory is private (0700), and every artifact carries an
//! HMAC-SHA-256 over the engine configuration, the component's SHA-256 and the artifact
//! bytes, keyed with a host secret kept outside the cache directory (0600). An artifact
//! whose tag does not verify — tampered, truncated, copied from another host, or built
//! by another engine configuration — is deleted and recompiled, never loaded.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

const TAG_LEN: usize = 32;

pub(crate) struct ArtifactCache {
    dir: PathBuf,
    key: [u8; 32],
    engine_tag: String,
}

/// What happened when an artifact was looked up; tests and the CLI can see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheStatus {
    /// A verified artifact was loaded.
    Hit,
    /// There was none; the component was compiled and stored.
    Miss,
    /// There was one but it failed authentication; it was discarded and recompiled.
    Rejected,
}

fn private_dir(p: &Path) -> std::io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(p)?;
    fs::set_permissions(p, fs::Permissions::from_mode(0o700))
}

struct ShaHasher(Sha256);
impl std::hash::Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl ArtifactCache {
    /// Open (creating if needed) the cache under `data_dir/cache`, keyed by `data_dir/keys/cache.key`.
    pub fn open(data_dir: &Path, engine: &Engine) -> std::io::Result<ArtifactCache> {
        let dir = data_dir.join("cache");
        let keys = data_dir.join("keys");
        private_dir(&dir)?;
        private_dir(&keys)?;
        let key_path = keys.join("cache.key");
        let key = match fs::read(&key_path) {
            Ok(k) if k.len() == 32 => k.try_into().expect("length checked"),
            Ok(_) => {
                return Err(std::io::Error::other(format!(
                    "{} is not a 32-byte key; delete it to make a new one",
                    key_path.display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = rand::random();
                let tmp = keys.join(format!(".cache.key.{}", std::process::id()));
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)?;
                f.write_all(&key)?;
                f.sync_all()?;
                // Two processes racing here: the first rename wins, the loser reads it back.
                if fs::hard_link(&tmp, &key_path).is_err() {
                    fs::remove_file(&tmp)?;
                    let k = fs::read(&key_path)?;
                    return Self::with_key(
                        dir,
                        k.try_into()
                            .map_err(|_| std::io::Error::other("bad cache key"))?,
                        engine,
                    );
                }
                fs::remove_file(&tmp)?;
                key
            }
            Err(e) => return Err(e),
        };
        Self::with_key(dir, key, engine)
    }

    fn with_key(dir: PathBuf, key: [u8; 32], engine: &Engine) -> std::io::Result<ArtifactCache> {
        let mut h = ShaHasher(Sha256::new());
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut h);
        let engine_tag = hex::encode(&h.0.finalize()[..8]);
        Ok(ArtifactCache {
            dir,
            key,
            engine_tag,
        })
    }

    fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}-{}.cwasm", self.engine_tag))
    }

    fn mac(&self, sha256: &str, artifact: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(b"runwarden-artifact-v1\0");
        mac.update(self.engine_tag.as_bytes());
        mac.update(b"\0");
        mac.update(sha256.as_bytes());
        mac.update(b"\0");
        mac.update(artifact);
        mac
    }

    /// Load the artifact for `sha256` if it authenticates; otherwise compile `wasm`,
    /// store the artifact, and return the fresh component.
    pub fn get_or_compile(
        &self,
        engine: &Engine,
        sha256: &str,
        wasm: &[u8],
    ) -> wasmtime::Result<(Component, CacheStatus)> {
        let path = self.path(sha256);
        let mut status = CacheStatus::Miss;
        if let Ok(bytes) = fs::read(&path) {
            status = CacheStatus::Rejected;
            if bytes.len() > TAG_LEN {
                let (tag, artifact) = bytes.split_at(TAG_LEN);
                if self.mac(sha256, artifact).verify_slice(tag).is_ok() {
                    // SAFETY: the artifact was produced by `Component::serialize` on this host
                    // under the same engine configuration: its HMAC, keyed with a secret only
                    // this runtime can read, covers the engine tag, the source hash and
                    // every byte.
                    if let Ok(c) = unsafe { Component::deserialize(engine, artifact) } {
                        return Ok((c, CacheStatus::Hit));
                    }
                }
            }
            let _ = fs::remove_file(&path);
        }
        // Compiled by an engine of its own, dropped right after: cranelift keeps its
        // scratch buffers in the engine that compiled (tens of MiB after the standard
        // runbooks), which a long-running agent would otherwise hold for good.
        let artifact = Engine::new(&crate::runtime::engine_config())?.precompile_component(wasm)?;
        let _ = self.write(&path, sha256, &artifact);
        // SAFETY: the artifact was produced just now by `precompile_component` under the
        // same engine configuration, and has not left this process's memory.
        let component = unsafe { Component::deserialize(engine, &artifact) }?;
        Ok((component, status))
    }

    fn write(&self, path: &Path, sha256: &str, artifact: &[u8]) -> std::io::Result<()> {
        let tmp = self
            .dir
            .join(format!(".{}.{}.tmp", sha256, uuid::Uuid::new_v4()));
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&self.mac(sha256, artifact).finalize().into_bytes())?;
        f.write_all(artifact)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    }
}
