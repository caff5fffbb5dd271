//! Signed checkpoints: C2SP tlog-checkpoint bodies in C2SP signed notes.
//!
//! ```text
//! <origin>
//! <tree size, decimal>
//! <root hash, base64>
//!
//! — <key name> <base64(4-byte key ID || 64-byte Ed25519 signature of the lines above)>
//! ```
//!
//! The signature covers the body including its final newline, not the blank line
//! (c2sp.org/signed-note). Signatures by keys the verifier does not know are ignored, so a
//! checkpoint can carry witness cosignatures or a rotated key's signature.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::error::{Error, Result};
use crate::keys::{SigningKey, VerifyingKey, check_name};
use crate::merkle::Hash;

/// Starts every signature line: U+2014 EM DASH, then a space.
const SIG_PREFIX: &str = "\u{2014} ";

/// More signatures than this make a note malformed (the spec asks verifiers to accept at
/// least 16; Go's implementation stops at 100).
const MAX_SIGNATURES: usize = 100;

/// A log's signed statement of its size and root hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Which log: non-empty, one line, e.g. `runwarden.example/host-17`.
    pub origin: String,
    /// Number of leaves.
    pub size: u64,
    /// RFC 6962 root hash of the first `size` leaves.
    pub root: Hash,
}

impl Checkpoint {
    /// The note text: `<origin>\n<size>\n<base64 root>\n`.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        )
    }

    /// The signed note: body, blank line, one signature line by `key`. Fails if the origin is
    /// empty or contains a newline or another control character.
    pub fn sign(&self, key: &SigningKey) -> Result<String> {
        if self.origin.is_empty() {
            return Err(Error::MalformedCheckpoint("the origin is empty".into()));
        }
        if self.origin.chars().any(char::is_control) {
            return Err(Error::MalformedCheckpoint(format!(
                "the origin {:?} contains a newline or control character",
                self.origin
            )));
        }
        sign_note(&self.body(), key)
    }

    /// Parses a signed checkpoint note, requiring a valid signature by a key in `trusted`
    /// (same name and key ID). Signatures by other keys are ignored; a trusted key's signature
    /// that does not verify rejects the note. Extension lines are refused: runwarden does not
    /// write them, and accepting them would mean accepting signed text that it ignores.
    pub fn parse(note: &str, trusted: &[VerifyingKey]) -> Result<Checkpoint> {
        let (text, _) = open_note(note, trusted)?;
        Self::parse_body(text)
    }

    /// The checkpoint a signed note states, without checking any signature: for the log's
    /// own copy, which only ever gives a reason to refuse a log, never to trust one.
    pub(crate) fn parse_unverified(note: &str) -> Result<Checkpoint> {
        check_note_chars(note)?;
        let split = note.rfind("\n\n").ok_or_else(|| {
            Error::MalformedNote("no blank line between the text and the signatures".into())
        })?;
        Self::parse_body(&note[..split + 1])
    }

    fn parse_body(text: &str) -> Result<Checkpoint> {
        let bad = |why: String| Error::MalformedCheckpoint(why);
        let mut lines = text.strip_suffix('\n').unwrap_or(text).split('\n');
        let origin = lines.next().unwrap_or_default();
        if origin.is_empty() {
            return Err(bad("the origin line is empty".into()));
        }
        let size_line = lines
            .next()
            .ok_or_else(|| bad("the tree size line is missing".into()))?;
        let size = parse_size(size_line).ok_or_else(|| {
            bad(format!(
                "tree size {size_line:?} is not a decimal number without leading zeros"
            ))
        })?;
        let root_line = lines
            .next()
            .ok_or_else(|| bad("the root hash line is missing".into()))?;
        let root = STANDARD
            .decode(root_line)
            .ok()
            .and_then(|r| Hash::try_from(r.as_slice()).ok())
            .ok_or_else(|| {
                bad(format!(
                    "root hash {root_line:?} is not a base64 32-byte hash"
                ))
            })?;
        if let Some(extra) = lines.next() {
            return Err(bad(format!("unexpected extension line {extra:?}")));
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
        })
    }
}

/// Signs `text` (which must end in a newline) as a C2SP signed note with one signature.
pub(crate) fn sign_note(text: &str, key: &SigningKey) -> Result<String> {
    if !text.ends_with('\n') {
        return Err(Error::MalformedNote(
            "the note text must end with a newline".into(),
        ));
    }
    check_note_chars(text)?;
    let mut sig = Vec::with_capacity(68);
    sig.extend_from_slice(&key.verifying_key().key_id());
    sig.extend_from_slice(&key.sign(text.as_bytes()));
    Ok(format!(
        "{text}\n{SIG_PREFIX}{} {}\n",
        key.name(),
        STANDARD.encode(sig)
    ))
}

/// Checks a signed note against `trusted` keys; returns its text (with the final newline) and
/// the first trusted key whose signature verified.
pub(crate) fn open_note<'n, 'k>(
    note: &'n str,
    trusted: &'k [VerifyingKey],
) -> Result<(&'n str, &'k VerifyingKey)> {
    let bad = |why: String| Error::MalformedNote(why);
    check_note_chars(note)?;
    let split = note
        .rfind("\n\n")
        .ok_or_else(|| bad("no blank line between the text and the signatures".into()))?;
    let (text, sigs) = (&note[..split + 1], &note[split + 2..]);
    if sigs.is_empty() {
        return Err(bad("no signature lines".into()));
    }
    if !sigs.ends_with('\n') {
        return Err(bad(
            "the last signature line does not end with a newline".into()
        ));
    }

    let mut verified = None;
    let mut signers = Vec::new();
    for (n, line) in sigs[..sigs.len() - 1].split('\n').enumerate() {
        if n >= MAX_SIGNATURES {
            return Err(bad(format!("more than {MAX_SIGNATURES} signatures")));
        }
        let rest = line.strip_prefix(SIG_PREFIX).ok_or_else(|| {
            bad(format!(
                "signature line {line:?} does not start with an em dash (U+2014) and a space"
            ))
        })?;
        let (name, b64) = rest.split_once(' ').ok_or_else(|| {
            bad(format!(
                "signature line {line:?} has no space between key name and signature"
            ))
        })?;
        check_name(name).map_err(|e| bad(format!("signature line {line:?}: {e}")))?;
        let raw = STANDARD
            .decode(b64)
            .map_err(|e| bad(format!("signature by {name} is not base64: {e}")))?;
        if raw.len() < 5 {
            return Err(bad(format!(
                "signature by {name} is too short ({} bytes)",
                raw.len()
            )));
        }
        let (id, sig) = raw.split_at(4);
        signers.push(format!("{name}+{}", hex::encode(id)));
        // Only a key with both this name and this key ID is the signer (signed-note: ignore
        // signatures from unknown keys even if they share a name or an ID).
        for key in trusted
            .iter()
            .filter(|k| k.name() == name && k.key_id() == id)
        {
            if !key.verify(text.as_bytes(), sig) {
                return Err(Error::BadSignature {
                    what: "note",
                    key: key.label(),
                });
            }
            verified.get_or_insert(key);
        }
    }
    match verified {
        Some(key) => Ok((text, key)),
        None => Err(Error::NoTrustedSignature {
            what: "note",
            signers,
        }),
    }
}

/// Notes are UTF-8 (guaranteed by `&str`) without ASCII control characters other than newline.
fn check_note_chars(s: &str) -> Result<()> {
    match s.char_indices().find(|&(_, c)| c < ' ' && c != '\n') {
        Some((at, c)) => Err(Error::MalformedNote(format!(
            "control character U+{:04X} at byte {at}",
            u32::from(c)
        ))),
        None => Ok(()),
    }
}

/// ASCII decimal without leading zeros ("0" for the empty tree).
fn parse_size(s: &str) -> Option<u64> {
    let digits_only = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits_only || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{CompactTree, leaf_hash};

    // golang.org/x/mod/sumdb/note package documentation (github.com/golang/mod,
    // sumdb/note/note.go at commit 605edab4323bfdf06a0d8ac68b4b18e9e0df249b): a signer key, its
    // verifier key, a text and the exact signed note Go's note.Sign produces for them.
    const GO_SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const GO_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
    const GO_NOTE: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
    // The same documentation's doubly-signed note; EnochRoot's key is not published there.
    const GO_ENOCH_LINE: &str = "\u{2014} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

    // A real checkpoint of the Go checksum database, quoted in
    // github.com/transparency-dev/trillian-tessera internal/parse/parse_test.go (commit
    // e2588c3b72cfc1cf3798430db5457867c43e6aab; the final newline, which that benchmark
    // string omits, is restored), and the database's public key as pinned in
    // github.com/golang/go src/cmd/go/internal/modfetch/key.go (commit
    // c674ce87c2e47699bb51e02885fb80519ecbfb27).
    const SUMDB_VKEY: &str = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8";
    const SUMDB_CHECKPOINT: &str = "go.sum database tree\n31700353\nqINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs=\n\n\u{2014} sum.golang.org Az3grnmrIUEDFqHzAElIQCPNoRFRAAdFo47fooyWKMHb89k11GJh5zHIfNCOBmwn/C3YI8oW9/C8DJ87F61QqspBYwM=\n";

    #[test]
    fn signing_reproduces_the_go_example_note() {
        let sk = SigningKey::from_text(GO_SKEY).unwrap();
        assert_eq!(sign_note(GO_TEXT, &sk).unwrap(), GO_NOTE);
    }

    #[test]
    fn the_go_example_note_verifies() {
        let vk = VerifyingKey::from_text(GO_VKEY).unwrap();
        let (text, key) = open_note(GO_NOTE, std::slice::from_ref(&vk)).unwrap();
        assert_eq!(text, GO_TEXT);
        assert_eq!(key, &vk);
        // The doubly-signed version: EnochRoot is unknown here, so its signature is ignored.
        let double = format!("{GO_NOTE}{GO_ENOCH_LINE}");
        assert_eq!(
            open_note(&double, std::slice::from_ref(&vk)).unwrap().0,
            GO_TEXT
        );
        let err = open_note(&double, &[]).unwrap_err();
        assert!(
            matches!(&err, Error::NoTrustedSignature { what: "note", signers } if signers.len() == 2),
            "{err}"
        );
    }

    #[test]
    fn a_real_sumdb_checkpoint_verifies() {
        let vk = VerifyingKey::from_text(SUMDB_VKEY).unwrap();
        let cp = Checkpoint::parse(SUMDB_CHECKPOINT, &[vk]).unwrap();
        assert_eq!(cp.origin, "go.sum database tree");
        assert_eq!(cp.size, 31_700_353);
        assert_eq!(
            STANDARD.encode(cp.root),
            "qINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs="
        );
        assert_eq!(
            cp.body(),
            SUMDB_CHECKPOINT.split("\n\n").next().unwrap().to_owned() + "\n"
        );
        // One changed digit of the size breaks the signature.
        let forged = SUMDB_CHECKPOINT.replace("31700353", "31700354");
        let vk = VerifyingKey::from_text(SUMDB_VKEY).unwrap();
        assert!(matches!(
            Checkpoint::parse(&forged, &[vk]),
            Err(Error::BadSignature { .. })
        ));
    }

    fn sample() -> (SigningKey, Checkpoint) {
        let sk = SigningKey::generate("runwarden.example/host-17").unwrap();
        let mut tree = CompactTree::new();
        for i in 0..5u8 {
            tree.append(leaf_hash(&[i]));
        }
        let cp = Checkpoint {
            origin: "runwarden.example/host-17".into(),
            size: tree.size(),
            root: tree.root(),
        };
        (sk, cp)
    }

    #[test]
    fn sign_then_parse() {
        let (sk, cp) = sample();
        let note = cp.sign(&sk).unwrap();
        assert!(note.starts_with(&cp.body()));
        assert!(note.contains("\n\n\u{2014} runwarden.example/host-17 "));
        assert_eq!(Checkpoint::parse(&note, &[sk.verifying_key()]).unwrap(), cp);
        let empty = Checkpoint {
            origin: "o".into(),
            size: 0,
            root: crate::merkle::EMPTY_ROOT,
        };
        assert_eq!(
            Checkpoint::parse(&empty.sign(&sk).unwrap(), &[sk.verifying_key()]).unwrap(),
            empty
        );
    }

    #[test]
    fn altered_checkpoints_are_rejected() {
        let (sk, cp) = sample();
        let trusted = [sk.verifying_key()];
        let note = cp.sign(&sk).unwrap();
        for forged in [
            note.replacen("\n5\n", "\n6\n", 1),
            note.replacen(
                "runwarden.example/host-17\n",
                "runwarden.example/host-18\n",
                1,
            ),
            note.replacen(&STANDARD.encode(cp.root), &STANDARD.encode([0u8; 32]), 1),
        ] {
            assert_ne!(forged, note);
            let err = Checkpoint::parse(&forged, &trusted).unwrap_err();
            assert!(
                matches!(err, Error::BadSignature { what: "note", .. }),
                "{err}"
            );
        }
    }

    #[test]
    fn only_name_and_key_id_together_identify_a_signer() {
        let (sk, cp) = sample();
        let note = cp.sign(&sk).unwrap();
        // Same name, different key: its ID differs, so the signature is ignored, not "bad".
        let other = SigningKey::generate(sk.name()).unwrap().verifying_key();
        assert!(matches!(
            Checkpoint::parse(&note, &[other]),
            Err(Error::NoTrustedSignature { .. })
        ));
        // Same key under another name: the ID differs too.
        let renamed =
            VerifyingKey::from_bytes("another.example", &sk.verifying_key().to_bytes()).unwrap();
        assert!(matches!(
            Checkpoint::parse(&note, &[renamed]),
            Err(Error::NoTrustedSignature { .. })
        ));
        // A second, unknown signature next to the trusted one is fine.
        let witness = SigningKey::generate("witness.example").unwrap();
        let line = sign_note(&cp.body(), &witness).unwrap();
        let cosigned = format!("{note}{}", line.rsplit("\n\n").next().unwrap());
        assert_eq!(
            Checkpoint::parse(&cosigned, &[sk.verifying_key()]).unwrap(),
            cp
        );
        assert_eq!(
            Checkpoint::parse(&cosigned, &[witness.verifying_key()]).unwrap(),
            cp
        );
    }

    #[test]
    fn malformed_notes_are_rejected_with_a_reason() {
        let (sk, cp) = sample();
        let trusted = [sk.verifying_key()];
        let note = cp.sign(&sk).unwrap();
        let cases: Vec<(String, &str)> = vec![
            (
                note.trim_end_matches('\n').to_owned(),
                "does not end with a newline",
            ),
            (note.replace("\n\n", "\n"), "no blank line"),
            (note.replace('\u{2014}', "-"), "em dash"),
            (
                note.replacen("host-17\n", "host-17\r\n", 1),
                "control character",
            ),
            (format!("{}\n\n", cp.body()), "no signature lines"),
            (format!("{}\n\u{2014} k\n", cp.body()), "no space"),
            (note.replace(&format!("{} ", sk.name()), "bad+name "), "'+'"),
            (format!("{}\n\u{2014} k !!!!\n", cp.body()), "not base64"),
            (format!("{}\n\u{2014} k AAAA\n", cp.body()), "too short"),
            (
                format!("{}\n{}", cp.body(), "\u{2014} k AAAAAAAA\n".repeat(101)),
                "more than 100",
            ),
        ];
        for (bad, why) in cases {
            let err = Checkpoint::parse(&bad, &trusted).unwrap_err();
            assert!(matches!(err, Error::MalformedNote(_)), "{bad:?}: {err}");
            assert!(
                err.to_string().contains(why),
                "{bad:?}: {err} (wanted {why:?})"
            );
        }
    }

    #[test]
    fn malformed_bodies_are_rejected_with_a_reason() {
        let sk = SigningKey::generate("k").unwrap();
        let trusted = [sk.verifying_key()];
        let root = STANDARD.encode([1u8; 32]);
        for (body, why) in [
            (format!("o\n007\n{root}\n"), "leading zeros"),
            (format!("o\n-1\n{root}\n"), "decimal"),
            (format!("o\n1e3\n{root}\n"), "decimal"),
            (format!("o\n18446744073709551616\n{root}\n"), "decimal"),
            ("o\n5\nAAAA\n".to_owned(), "32-byte hash"),
            ("o\n5\n".to_owned(), "root hash line is missing"),
            ("o\n".to_owned(), "tree size line is missing"),
            (format!("o\n5\n{root}\next\n"), "extension line"),
            (format!("\n5\n{root}\n"), "origin line is empty"),
        ] {
            let note = sign_note(&body, &sk).unwrap();
            let err = Checkpoint::parse(&note, &trusted).unwrap_err();
            assert!(
                matches!(err, Error::MalformedCheckpoint(_)),
                "{body:?}: {err}"
            );
            assert!(
                err.to_string().contains(why),
                "{body:?}: {err} (wanted {why:?})"
            );
        }
        let bad_origin = Checkpoint {
            origin: "a\nb".into(),
            size: 1,
            root: [0; 32],
        };
        assert!(matches!(
            bad_origin.sign(&sk),
            Err(Error::MalformedCheckpoint(_))
        ));
        let no_origin = Checkpoint {
            origin: String::new(),
            size: 1,
            root: [0; 32],
        };
        assert!(matches!(
            no_origin.sign(&sk),
            Err(Error::MalformedCheckpoint(_))
        ));
    }
}
