//! Named Ed25519 keys in the C2SP signed-note text formats.
//!
//! A key has a name (`example.com/host-17`) and a 4-byte key ID,
//! `SHA-256(name || 0x0A || 0x01 || 32-byte public key)[:4]` (c2sp.org/signed-note,
//! "Ed25519 signatures"). The text forms are those of `golang.org/x/mod/sumdb/note`:
//!
//! ```text
//! verifier:  <name>+<8 hex key ID>+<base64(0x01 || public key)>
//! signer:    PRIVATE+KEY+<name>+<8 hex key ID>+<base64(0x01 || 32-byte seed)>
//! ```

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Signature type byte for Ed25519 in C2SP signed notes.
const ALG_ED25519: u8 = 0x01;

const PUBLIC_FORMAT: &str = "not a runwarden public key: expected NAME+KEYID+BASE64";
const PRIVATE_FORMAT: &str = "not a runwarden private key: expected PRIVATE+KEY+NAME+KEYID+BASE64";

/// A named Ed25519 private key. Its `Debug` output never shows the secret.
#[derive(Clone)]
pub struct SigningKey {
    name: String,
    key: ed25519_dalek::SigningKey,
}

/// A named Ed25519 public key: what an auditor trusts.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    name: String,
    key: ed25519_dalek::VerifyingKey,
}

impl SigningKey {
    /// Generates a new key from operating-system randomness.
    pub fn generate(name: &str) -> Result<Self> {
        use rand::TryRng as _;
        let mut seed = [0u8; 32];
        rand::rngs::SysRng
            .try_fill_bytes(&mut seed)
            .map_err(|e| Error::Random(e.to_string()))?;
        let key = Self::from_seed(name, seed);
        seed.fill(0);
        key
    }

    /// Builds a key from its 32-byte Ed25519 seed (RFC 8032 private key).
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<Self> {
        check_name(name)?;
        Ok(SigningKey {
            name: name.to_owned(),
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
        })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The same key under the name `name` (its key id changes with the name).
    pub fn renamed(&self, name: &str) -> Result<Self> {
        check_name(name)?;
        Ok(SigningKey {
            name: name.to_owned(),
            key: self.key.clone(),
        })
    }

    /// The matching public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// Signs `msg` (RFC 8032 Ed25519, deterministic).
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer as _;
        self.key.sign(msg).to_bytes()
    }

    /// The private key text, `PRIVATE+KEY+<name>+<keyid>+<base64(0x01 || seed)>`.
    /// Whoever holds this text can sign as this key.
    pub fn to_text(&self) -> String {
        let mut raw = [0u8; 33];
        raw[0] = ALG_ED25519;
        raw[1..].copy_from_slice(self.key.as_bytes());
        let text = format!(
            "PRIVATE+KEY+{}+{}+{}",
            self.name,
            self.verifying_key().key_id_hex(),
            STANDARD.encode(raw)
        );
        raw.fill(0);
        text
    }

    /// Parses the private key text written by [`SigningKey::to_text`] (or by Go's
    /// `note.GenerateKey`). The key ID must match the key derived from the seed.
    pub fn from_text(text: &str) -> Result<Self> {
        // Never echo the text: it is a secret.
        let malformed = |why: &str| Error::MalformedKey(format!("{PRIVATE_FORMAT} ({why})"));
        let rest = text
            .strip_prefix("PRIVATE+KEY+")
            .ok_or_else(|| malformed("missing PRIVATE+KEY+ prefix"))?;
        let (name, id_hex, b64) =
            split_key_text(rest).ok_or_else(|| malformed("missing fields"))?;
        check_name(name)?;
        let stated = parse_key_id(id_hex).ok_or_else(|| malformed("key ID is not 8 hex digits"))?;
        let raw = STANDARD
            .decode(b64)
            .map_err(|_| malformed("key data is not base64"))?;
        if raw.len() != 33 || raw[0] != ALG_ED25519 {
            return Err(malformed("key data is not an Ed25519 seed"));
        }
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&raw[1..]);
        let key = SigningKey::from_seed(name, seed)?;
        seed.fill(0);
        let computed = key.verifying_key().key_id();
        if stated != computed {
            return Err(Error::KeyIdMismatch {
                name: name.to_owned(),
                stated: hex::encode(stated),
                computed: hex::encode(computed),
            });
        }
        Ok(key)
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("name", &self.name)
            .field("key_id", &self.verifying_key().key_id_hex())
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    /// Names a raw 32-byte Ed25519 public key. Fails on a bad name or a point that is not on the
    /// curve.
    pub fn from_bytes(name: &str, key: &[u8; 32]) -> Result<Self> {
        check_name(name)?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(key).map_err(|_| {
            Error::MalformedKey(format!("key {name}: not a valid Ed25519 public key"))
        })?;
        Ok(VerifyingKey {
            name: name.to_owned(),
            key,
        })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The raw 32-byte public key.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The C2SP key ID: `SHA-256(name || 0x0A || 0x01 || public key)[:4]`.
    pub fn key_id(&self) -> [u8; 4] {
        key_id(&self.name, &self.key.to_bytes())
    }

    /// The key ID as 8 lower-case hex digits, as in the key text and DSSE `keyid`.
    pub fn key_id_hex(&self) -> String {
        hex::encode(self.key_id())
    }

    /// `<name>+<keyid>`: how errors and reports name this key.
    pub fn label(&self) -> String {
        format!("{}+{}", self.name, self.key_id_hex())
    }

    /// The underlying key, for batch verification.
    pub(crate) fn dalek(&self) -> &ed25519_dalek::VerifyingKey {
        &self.key
    }

    /// Whether `sig` is a valid Ed25519 signature of `msg` by this key. Uses strict
    /// verification: non-canonical signatures and small-order keys are rejected.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        let Ok(sig) = ed25519_dalek::Signature::from_slice(sig) else {
            return false;
        };
        self.key.verify_strict(msg, &sig).is_ok()
    }

    /// The public key text, `<name>+<keyid>+<base64(0x01 || public key)>`.
    pub fn to_text(&self) -> String {
        let mut raw = [0u8; 33];
        raw[0] = ALG_ED25519;
        raw[1..].copy_from_slice(self.key.as_bytes());
        format!(
            "{}+{}+{}",
            self.name,
            self.key_id_hex(),
            STANDARD.encode(raw)
        )
    }

    /// Parses the public key text written by [`VerifyingKey::to_text`] (or by Go's
    /// `note.GenerateKey`). The key ID must match the name and key.
    pub fn from_text(text: &str) -> Result<Self> {
        let malformed =
            |why: &str| Error::MalformedKey(format!("{PUBLIC_FORMAT} ({why}): {text:?}"));
        if text.starts_with("PRIVATE+KEY+") {
            return Err(Error::MalformedKey(format!(
                "{PUBLIC_FORMAT} (this is a private key: give the .pub file instead)"
            )));
        }
        let (name, id_hex, b64) =
            split_key_text(text).ok_or_else(|| malformed("missing fields"))?;
        check_name(name)?;
        let stated = parse_key_id(id_hex).ok_or_else(|| malformed("key ID is not 8 hex digits"))?;
        let raw = STANDARD
            .decode(b64)
            .map_err(|_| malformed("key data is not base64"))?;
        if raw.len() != 33 || raw[0] != ALG_ED25519 {
            return Err(malformed("key data is not an Ed25519 public key"));
        }
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&raw[1..]);
        let key = VerifyingKey::from_bytes(name, &bytes)?;
        let computed = key.key_id();
        if stated != computed {
            return Err(Error::KeyIdMismatch {
                name: name.to_owned(),
                stated: hex::encode(stated),
                computed: hex::encode(computed),
            });
        }
        Ok(key)
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

impl fmt::Display for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

/// The origin of the log a key named `key_name` signs: `runwarden/KEY_NAME` (a host's
/// log, `runwarden/HOST` or `runwarden/HOST~N`; the control plane's,
/// `runwarden/runwarden-control`).
pub fn log_origin(key_name: &str) -> String {
    format!("runwarden/{key_name}")
}

/// Generates a key named `name` and writes `<dir>/<stem>.key` (private, mode 0600) and
/// `<dir>/<stem>.pub`, where `stem` is the name with every character other than ASCII
/// letters, digits, `.`, `_` and `-` replaced by `_` (so `example.com/host` gives
/// `example.com_host.key`). Never overwrites: if either file exists, nothing is written.
/// Returns the paths of the private and the public key file.
pub fn write_key_pair(dir: &Path, name: &str) -> Result<(PathBuf, PathBuf)> {
    let key = SigningKey::generate(name)?;
    let stem: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let private = dir.join(format!("{stem}.key"));
    let public = dir.join(format!("{stem}.pub"));
    for path in [&private, &public] {
        if path.exists() {
            return Err(Error::KeyFileExists { path: path.clone() });
        }
    }
    write_new(
        &private,
        &format!("{}\n", key.to_text()),
        0o600,
        "write private key",
    )?;
    if let Err(e) = write_new(
        &public,
        &format!("{}\n", key.verifying_key().to_text()),
        0o644,
        "write public key",
    ) {
        // Do not leave a private key behind whose public half nobody has.
        let _ = fs::remove_file(&private);
        return Err(e);
    }
    Ok((private, public))
}

/// Reads a private key file. Refuses a file that group or others may read.
pub fn read_signing_key(path: &Path) -> Result<SigningKey> {
    let io = |source| Error::Io {
        action: "read private key",
        path: path.to_owned(),
        source,
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Error::InsecureKeyFile {
                path: path.to_owned(),
                mode,
            });
        }
    }
    let text = fs::read_to_string(path).map_err(io)?;
    SigningKey::from_text(text.trim_end())
}

/// Reads a public key file written by [`write_key_pair`].
pub fn read_verifying_key(path: &Path) -> Result<VerifyingKey> {
    let text = fs::read_to_string(path).map_err(|source| Error::Io {
        action: "read public key",
        path: path.to_owned(),
        source,
    })?;
    VerifyingKey::from_text(text.trim_end())
}

pub(crate) fn key_id(name: &str, public: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ALG_ED25519]);
    h.update(public);
    let digest = h.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// Key names must be non-empty and contain no whitespace and no `+` (c2sp.org/signed-note);
/// control characters are refused too, since a note may not contain them.
pub(crate) fn check_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.chars().any(char::is_whitespace) {
        Some("it contains whitespace")
    } else if name.contains('+') {
        Some("it contains '+'")
    } else if name.chars().any(char::is_control) {
        Some("it contains a control character")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidKeyName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Splits `NAME+KEYID+BASE64` at the first two `+` (names cannot contain `+`; base64 can).
fn split_key_text(text: &str) -> Option<(&str, &str, &str)> {
    let (name, rest) = text.split_once('+')?;
    let (id, b64) = rest.split_once('+')?;
    Some((name, id, b64))
}

fn parse_key_id(hex_id: &str) -> Option<[u8; 4]> {
    if hex_id.len() != 8 {
        return None;
    }
    let mut id = [0u8; 4];
    hex::decode_to_slice(hex_id, &mut id).ok()?;
    Some(id)
}

fn write_new(path: &Path, contents: &str, mode: u32, action: &'static str) -> Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            Error::KeyFileExists {
                path: path.to_owned(),
            }
        } else {
            Error::Io {
                action,
                path: path.to_owned(),
                source,
            }
        }
    })?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|source| Error::Io {
            action,
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example keys of golang.org/x/mod/sumdb/note (package documentation in
    // github.com/golang/mod sumdb/note/note.go, read at commit 605edab4323bfdf06a0d8ac68b4b18e9e0df249b).
    const GO_SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const GO_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";

    #[test]
    fn go_example_keys_round_trip_and_match() {
        let sk = SigningKey::from_text(GO_SKEY).unwrap();
        assert_eq!(sk.to_text(), GO_SKEY);
        let vk = sk.verifying_key();
        assert_eq!(vk.to_text(), GO_VKEY);
        assert_eq!(vk.key_id_hex(), "c74f20a3");
        assert_eq!(vk.key_id(), [0xc7, 0x4f, 0x20, 0xa3]);
        assert_eq!(VerifyingKey::from_text(GO_VKEY).unwrap(), vk);
    }

    #[test]
    fn sign_and_verify() {
        let sk = SigningKey::generate("example.com/host-1").unwrap();
        let vk = sk.verifying_key();
        let sig = sk.sign(b"hello");
        assert!(vk.verify(b"hello", &sig));
        assert!(!vk.verify(b"hellO", &sig));
        assert!(!vk.verify(b"hello", &sig[..63]));
        let mut bad = sig;
        bad[10] ^= 1;
        assert!(!vk.verify(b"hello", &bad));
        let other = SigningKey::generate("example.com/host-1")
            .unwrap()
            .verifying_key();
        assert!(!other.verify(b"hello", &sig));
    }

    #[test]
    fn generated_keys_round_trip_through_text() {
        let sk = SigningKey::generate("runwarden.example/agent").unwrap();
        let back = SigningKey::from_text(&sk.to_text()).unwrap();
        assert_eq!(back.verifying_key(), sk.verifying_key());
        let vk = VerifyingKey::from_text(&sk.verifying_key().to_text()).unwrap();
        assert_eq!(vk, sk.verifying_key());
    }

    #[test]
    fn key_names_are_checked() {
        for bad in ["", "a b", "a+b", "a\nb", "a\tb", "a\u{2003}b", "a\u{7}b"] {
            assert!(
                matches!(
                    SigningKey::from_seed(bad, [1; 32]),
                    Err(Error::InvalidKeyName { .. })
                ),
                "{bad:?} accepted"
            );
        }
        SigningKey::from_seed("example.com/log42", [1; 32]).unwrap();
        SigningKey::from_seed("ünïcode.example", [1; 32]).unwrap();
    }

    #[test]
    fn malformed_public_keys_say_what_is_expected() {
        let err = VerifyingKey::from_text("garbage").unwrap_err().to_string();
        assert!(
            err.contains("not a runwarden public key: expected NAME+KEYID+BASE64"),
            "{err}"
        );
        let err = VerifyingKey::from_text(GO_SKEY).unwrap_err().to_string();
        assert!(err.contains("private key"), "{err}");
        // Every truncation and every single-byte change of the Go key is refused (as in Go's
        // TestNewVerifier).
        let b = GO_VKEY.as_bytes();
        for i in 0..b.len() {
            for j in i + 1..=b.len() {
                if (i, j) != (0, b.len()) {
                    let s = String::from_utf8_lossy(&b[i..j]);
                    assert!(VerifyingKey::from_text(&s).is_err(), "{s:?} accepted");
                }
            }
        }
        for i in 0..b.len() {
            let mut m = b.to_vec();
            m[i] = m[i].wrapping_add(1);
            let s = String::from_utf8_lossy(&m);
            assert!(VerifyingKey::from_text(&s).is_err(), "{s:?} accepted");
        }
        // Unknown algorithm byte, with a key ID adjusted to match (from Go's TestNewVerifier).
        assert!(
            VerifyingKey::from_text(
                "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
            )
            .is_err()
        );
    }

    #[test]
    fn malformed_private_keys_never_echo_the_secret() {
        let mut m = GO_SKEY.to_owned();
        m.replace_range(25..26, "0"); // change the key ID: c74f20a3 -> 074f20a3
        let err = SigningKey::from_text(&m).unwrap_err();
        assert!(matches!(err, Error::KeyIdMismatch { .. }), "{err}");
        let err = SigningKey::from_text("PRIVATE+KEY+x+00000000+AYEKFALVFGyNhPJEMzD1QIDr")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a runwarden private key"), "{err}");
        assert!(!err.contains("AYEKFALV"), "secret echoed: {err}");
        assert!(SigningKey::from_text(GO_VKEY).is_err());
        let b = GO_SKEY.as_bytes();
        for i in 0..b.len() {
            let mut m = b.to_vec();
            m[i] = m[i].wrapping_add(1);
            let s = String::from_utf8_lossy(&m);
            assert!(SigningKey::from_text(&s).is_err(), "{s:?} accepted");
        }
    }

    #[test]
    fn debug_hides_the_seed() {
        let sk = SigningKey::from_text(GO_SKEY).unwrap();
        let dbg = format!("{sk:?}");
        assert!(
            dbg.contains("PeterNeumann") && dbg.contains("c74f20a3"),
            "{dbg}"
        );
        assert!(!dbg.contains("AYEKFALV") && !dbg.contains("key:"), "{dbg}");
    }
}
