//! Every vendored transparency-dev/merkle proof vector (tests/data/transparency-dev, see its
//! SOURCE.md): valid proofs must verify, each corrupted one must be rejected.
//!
//! The vectors deliberately contain values that are not 32 bytes long ("WrongLeaf", "", "don't
//! care 1"). This crate's `Hash` is `[u8; 32]`: in real use such a value never reaches a
//! verifier, because `hash_from_slice` refuses it first, and that refusal is how those
//! corrupted cases are rejected here. One valid case has such values too: consistency between
//! equal sizes with equal placeholder roots ("don't care 2"), a rule that does not depend on
//! what the roots are; it runs with each placeholder replaced by a stand-in hash.

use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use runwarden_evidence::{Hash, hash_from_slice, verify_consistency, verify_inclusion};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Corrupted cases whose values are all 32-byte hashes, so the verifier itself must reject them
/// (the rest are refused by `hash_from_slice`).
const INCLUSION_BY_VERIFIER: usize = 66;
const CONSISTENCY_BY_VERIFIER: usize = 66;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct InclusionCase {
    leaf_idx: u64,
    tree_size: u64,
    root: String,
    leaf_hash: String,
    proof: Option<Vec<String>>,
    desc: String,
    want_err: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsistencyCase {
    size1: u64,
    size2: u64,
    root1: String,
    root2: String,
    proof: Option<Vec<String>>,
    desc: String,
    #[serde(rename = "wantErr")]
    want_err: bool,
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/transparency-dev")
}

fn json_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            json_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
    out.sort();
}

/// A vector value as a `Hash`, or `None` when `hash_from_slice` refuses it.
fn hash(b64: &str) -> Option<Hash> {
    let bytes = STANDARD
        .decode(b64)
        .unwrap_or_else(|e| panic!("vector value {b64:?}: {e}"));
    hash_from_slice("vector value", &bytes).ok()
}

/// A stand-in for a placeholder that is not a hash: equal placeholders give equal stand-ins.
fn stand_in(b64: &str) -> Hash {
    let mut h = Sha256::new();
    h.update(b"runwarden-evidence test stand-in\n");
    h.update(b64.as_bytes());
    h.finalize().into()
}

#[derive(Default)]
struct Tally {
    valid: usize,
    by_verifier: usize,
    by_length: usize,
    wrong: Vec<String>,
}

impl Tally {
    /// Records one case. `hashes` is `None` when some value is not a 32-byte hash.
    fn check<T>(
        &mut self,
        path: &Path,
        desc: &str,
        want_err: bool,
        hashes: Option<T>,
        verify: impl Fn(T) -> runwarden_evidence::Result<()>,
        stand_ins: impl Fn() -> T,
    ) {
        let name = format!("{} ({desc})", path.display());
        match (want_err, hashes) {
            (true, None) => self.by_length += 1,
            (true, Some(h)) => match verify(h) {
                Err(_) => self.by_verifier += 1,
                Ok(()) => self.wrong.push(format!("{name}: corrupted proof accepted")),
            },
            (false, h) => {
                self.valid += 1;
                if let Err(e) = verify(h.unwrap_or_else(stand_ins)) {
                    self.wrong
                        .push(format!("{name}: valid proof rejected: {e}"));
                }
            }
        }
    }
}

#[test]
fn transparency_dev_inclusion_vectors() {
    let mut files = Vec::new();
    json_files(&data_dir().join("inclusion"), &mut files);
    let mut t = Tally::default();
    for path in &files {
        let text = fs::read_to_string(path).unwrap();
        let c: InclusionCase =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let proof = c.proof.unwrap_or_default();
        let hashes = (|| {
            Some((
                hash(&c.leaf_hash)?,
                hash(&c.root)?,
                proof.iter().map(|p| hash(p)).collect::<Option<Vec<_>>>()?,
            ))
        })();
        let stand_ins = || {
            (
                stand_in(&c.leaf_hash),
                stand_in(&c.root),
                proof.iter().map(|p| stand_in(p)).collect(),
            )
        };
        let verify = |(leaf, root, proof): (Hash, Hash, Vec<Hash>)| {
            verify_inclusion(&leaf, c.leaf_idx, c.tree_size, &proof, &root)
        };
        t.check(path, &c.desc, c.want_err, hashes, verify, stand_ins);
    }
    assert!(
        t.wrong.is_empty(),
        "{} of {} cases wrong:\n{}",
        t.wrong.len(),
        files.len(),
        t.wrong.join("\n")
    );
    // Counts from SOURCE.md: a test that finds no vectors must not pass.
    assert_eq!(
        (t.valid, t.by_verifier + t.by_length),
        (6, 92),
        "inclusion vectors (valid, corrupted)"
    );
    assert_eq!(
        (t.by_verifier, t.by_length),
        (INCLUSION_BY_VERIFIER, 92 - INCLUSION_BY_VERIFIER)
    );
}

#[test]
fn transparency_dev_consistency_vectors() {
    let mut files = Vec::new();
    json_files(&data_dir().join("consistency"), &mut files);
    let mut t = Tally::default();
    for path in &files {
        let text = fs::read_to_string(path).unwrap();
        let c: ConsistencyCase =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let proof = c.proof.unwrap_or_default();
        let hashes = (|| {
            Some((
                hash(&c.root1)?,
                hash(&c.root2)?,
                proof.iter().map(|p| hash(p)).collect::<Option<Vec<_>>>()?,
            ))
        })();
        let stand_ins = || {
            (
                stand_in(&c.root1),
                stand_in(&c.root2),
                proof.iter().map(|p| stand_in(p)).collect(),
            )
        };
        let verify = |(root1, root2, proof): (Hash, Hash, Vec<Hash>)| {
            verify_consistency(c.size1, c.size2, &root1, &root2, &proof)
        };
        t.check(path, &c.desc, c.want_err, hashes, verify, stand_ins);
    }
    assert!(
        t.wrong.is_empty(),
        "{} of {} cases wrong:\n{}",
        t.wrong.len(),
        files.len(),
        t.wrong.join("\n")
    );
    assert_eq!(
        (t.valid, t.by_verifier + t.by_length),
        (6, 92),
        "consistency vectors (valid, corrupted)"
    );
    assert_eq!(
        (t.by_verifier, t.by_length),
        (CONSISTENCY_BY_VERIFIER, 92 - CONSISTENCY_BY_VERIFIER)
    );
}

/// The valid vectors are RFC 6962's reference tree; this crate's proof generation must
/// produce exactly the published proofs. Leaves and roots from transparency-dev/merkle
/// proof/verify_test.go (commit 02194e9afb6c1d95b5381350007963aa70fff472).
#[test]
fn generated_proofs_equal_the_published_ones() {
    let leaves: Vec<Hash> = RFC6962_LEAVES
        .iter()
        .map(|h| runwarden_evidence::leaf_hash(&hex::decode(h).unwrap()))
        .collect();
    let decode = |v: &[String]| -> Vec<Hash> {
        v.iter()
            .map(|p| STANDARD.decode(p).unwrap().try_into().unwrap())
            .collect()
    };
    let mut compared = 0;
    for dir in ["0", "1", "2", "3", "4"] {
        let path = data_dir()
            .join("inclusion")
            .join(dir)
            .join("happy-path.json");
        let c: InclusionCase = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        let tree = &leaves[..c.tree_size as usize];
        let got = runwarden_evidence::inclusion_proof(tree, c.leaf_idx).unwrap();
        assert_eq!(
            got,
            decode(&c.proof.unwrap_or_default()),
            "{}",
            path.display()
        );
        assert_eq!(
            STANDARD.encode(runwarden_evidence::root(tree)),
            c.root,
            "{}",
            path.display()
        );

        let path = data_dir()
            .join("consistency")
            .join(dir)
            .join("happy-path.json");
        let c: ConsistencyCase = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        let tree = &leaves[..c.size2 as usize];
        let got = runwarden_evidence::consistency_proof(tree, c.size1).unwrap();
        assert_eq!(
            got,
            decode(&c.proof.unwrap_or_default()),
            "{}",
            path.display()
        );
        compared += 2;
    }
    assert_eq!(compared, 10);
}

/// RFC 6962 reference leaves (hex) and the roots of their first 1..=8 leaves.
pub(crate) const RFC6962_LEAVES: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];
pub(crate) const RFC6962_ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];
