//! RFC 6962 / RFC 9162 Merkle tree hashing, proofs and their verification.
//!
//! Proof generation follows RFC 6962 §2.1.1 (PATH) and §2.1.2 (SUBPROOF) over a slice of leaf
//! hashes, hashing each node once: O(n) per proof. Verification follows RFC 9162 §2.1.3.2 and
//! §2.1.4.2 and, where the RFC is silent (equal sizes, size 0), the behaviour of
//! github.com/transparency-dev/merkle, whose published test vectors this module passes.

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// A SHA-256 hash: a leaf hash, node hash or tree root.
pub type Hash = [u8; 32];

/// The root of the empty tree: SHA-256 of the empty string.
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// `SHA-256(0x00 || data)`: the hash of a leaf.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`: the hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    // One contiguous input: the hottest function of the log, and cheaper as a single update.
    let mut input = [0u8; 65];
    input[0] = 0x01;
    input[1..33].copy_from_slice(left);
    input[33..].copy_from_slice(right);
    Sha256::digest(input).into()
}

/// Converts bytes read from elsewhere (a bundle, a JSON field) into a [`Hash`](type@Hash),
/// naming `what` in the error if they are not exactly 32 bytes.
pub fn hash_from_slice(what: &str, bytes: &[u8]) -> Result<Hash> {
    Hash::try_from(bytes).map_err(|_| Error::HashLength {
        what: what.to_owned(),
        len: bytes.len(),
    })
}

/// The Merkle tree hash (RFC 6962 §2.1) of the tree whose leaves have these hashes.
pub fn root(leaf_hashes: &[Hash]) -> Hash {
    if leaf_hashes.is_empty() {
        EMPTY_ROOT
    } else {
        subtree_root(leaf_hashes)
    }
}

/// The audit path of leaf `index` (RFC 6962 §2.1.1 PATH), ordered from the leaf up.
pub fn inclusion_proof(leaf_hashes: &[Hash], index: u64) -> Result<Vec<Hash>> {
    let size = leaf_hashes.len() as u64;
    if index >= size {
        return Err(Error::IndexOutOfRange { index, size });
    }
    // Walk down from the root; each step records the sibling subtree on the other side.
    let mut path = Vec::new();
    let (mut lo, mut hi, mut m) = (0usize, leaf_hashes.len(), index as usize);
    while hi - lo > 1 {
        let k = split(hi - lo);
        if m < k {
            path.push(subtree_root(&leaf_hashes[lo + k..hi]));
            hi = lo + k;
        } else {
            path.push(subtree_root(&leaf_hashes[lo..lo + k]));
            lo += k;
            m -= k;
        }
    }
    path.reverse();
    Ok(path)
}

/// The consistency proof (RFC 6962 §2.1.2 PROOF) that the first `old_size` leaves form a
/// prefix of the tree of all `leaf_hashes`. Empty when `old_size` is the whole tree; an error
/// for `old_size` 0 (there is nothing to prove) or larger than the tree.
pub fn consistency_proof(leaf_hashes: &[Hash], old_size: u64) -> Result<Vec<Hash>> {
    Ok(consistency_ranges(old_size, leaf_hashes.len() as u64)?
        .into_iter()
        .map(|(lo, hi)| subtree_root(&leaf_hashes[lo as usize..hi as usize]))
        .collect())
}

/// The leaf ranges `[lo, hi)` whose subtree roots, in this order, are the consistency
/// proof from `old_size` to `new_size` (see [`consistency_proof`]): a store can hash each
/// range as it reads it, without holding every leaf.
pub fn consistency_ranges(old_size: u64, new_size: u64) -> Result<Vec<(u64, u64)>> {
    if old_size == 0 {
        return Err(Error::InvalidTreeSizes {
            old_size,
            new_size,
            reason: "the old tree is empty",
        });
    }
    if old_size > new_size {
        return Err(Error::InvalidTreeSizes {
            old_size,
            new_size,
            reason: "the old tree is larger",
        });
    }
    // SUBPROOF(m, D[lo:hi], b), unrolled: descend while m differs from the subtree size.
    let mut ranges = Vec::new();
    let (mut lo, mut hi, mut m, mut complete) = (0u64, new_size, old_size, true);
    loop {
        let n = hi - lo;
        if m == n {
            if !complete {
                ranges.push((lo, hi));
            }
            break;
        }
        let k = split(n as usize) as u64;
        if m <= k {
            ranges.push((lo + k, hi));
            hi = lo + k;
        } else {
            ranges.push((lo, lo + k));
            lo += k;
            m -= k;
            complete = false;
        }
    }
    ranges.reverse();
    Ok(ranges)
}

/// Verifies that `leaf_hash` is leaf `index` of the tree of `size` leaves with root `root`
/// (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<()> {
    if index >= size {
        return Err(Error::IndexOutOfRange { index, size });
    }
    let want = inclusion_proof_len(index, size);
    if proof.len() != want {
        return Err(Error::ProofLength {
            what: "inclusion proof",
            got: proof.len(),
            want,
        });
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf_hash;
    for p in proof {
        if sn == 0 {
            return Err(Error::ProofLength {
                what: "inclusion proof",
                got: proof.len(),
                want,
            });
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(Error::ProofLength {
            what: "inclusion proof",
            got: proof.len(),
            want,
        });
    }
    matches("inclusion proof root", &r, root)
}

/// Verifies that the tree of `old_size` leaves with root `old_root` is a prefix of the tree of
/// `new_size` leaves with root `new_root` (RFC 9162 §2.1.4.2).
///
/// Equal sizes need equal roots and an empty proof. As in transparency-dev/merkle, `old_size`
/// 0 is refused: a consistency proof from the empty tree is meaningless, and callers that
/// start from an empty log should not ask for one.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<()> {
    let sizes = |reason| Error::InvalidTreeSizes {
        old_size,
        new_size,
        reason,
    };
    if new_size < old_size {
        return Err(sizes("the old tree is larger"));
    }
    if old_size == 0 {
        return Err(sizes("the old tree is empty"));
    }
    if old_size == new_size {
        if !proof.is_empty() {
            return Err(Error::ProofLength {
                what: "consistency proof",
                got: proof.len(),
                want: 0,
            });
        }
        return matches("root of equal-size tree", old_root, new_root);
    }
    let want = consistency_proof_len(old_size, new_size);
    if proof.len() != want {
        return Err(Error::ProofLength {
            what: "consistency proof",
            got: proof.len(),
            want,
        });
    }
    // RFC 9162 §2.1.4.2, steps 2 to 7. `path` is the proof with old_root prepended when
    // old_size is a power of two.
    let prefix = old_size.is_power_of_two().then_some(old_root);
    let mut path = prefix.into_iter().chain(proof.iter());
    let (mut fn_, mut sn) = (old_size - 1, new_size - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let first = path.next().expect("proof length was checked");
    let (mut fr, mut sr) = (*first, *first);
    for c in path {
        if sn == 0 {
            return Err(Error::ProofLength {
                what: "consistency proof",
                got: proof.len(),
                want,
            });
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(Error::ProofLength {
            what: "consistency proof",
            got: proof.len(),
            want,
        });
    }
    matches("old root from consistency proof", &fr, old_root)?;
    matches("new root from consistency proof", &sr, new_root)
}

/// A whole tree held in memory, level by level (2n hashes), so each inclusion proof
/// costs O(log n): what exporting many records at once needs.
///
/// Level 0 holds the leaf hashes; each next level pairs neighbours, carrying an unpaired
/// last node up unchanged — which yields exactly RFC 6962's tree for any size.
pub struct MerkleTree {
    levels: Vec<Vec<Hash>>,
}

impl MerkleTree {
    /// Build the tree over `leaf_hashes`.
    pub fn new(leaf_hashes: Vec<Hash>) -> MerkleTree {
        let mut levels = vec![leaf_hashes];
        while levels.last().is_some_and(|l| l.len() > 1) {
            let below = levels.last().expect("non-empty");
            let up = below
                .chunks(2)
                .map(|pair| match pair {
                    [l, r] => node_hash(l, r),
                    [single] => *single,
                    _ => unreachable!("chunks of two"),
                })
                .collect();
            levels.push(up);
        }
        MerkleTree { levels }
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.levels[0].len() as u64
    }

    /// The root (SHA-256 of the empty string for an empty tree).
    pub fn root(&self) -> Hash {
        match self.levels.last() {
            Some(top) if top.len() == 1 => top[0],
            _ => EMPTY_ROOT,
        }
    }

    /// The inclusion proof of leaf `index`, in O(log n).
    pub fn inclusion_proof(&self, index: u64) -> Result<Vec<Hash>> {
        if index >= self.size() {
            return Err(Error::IndexOutOfRange {
                index,
                size: self.size(),
            });
        }
        let mut proof = Vec::new();
        let mut i = index as usize;
        for level in &self.levels[..self.levels.len() - 1] {
            let sibling = i ^ 1;
            if sibling < level.len() {
                proof.push(level[sibling]);
            }
            i /= 2;
        }
        Ok(proof)
    }
}

/// An append-only Merkle tree that keeps only the roots of its perfect subtrees (one per set
/// bit of the size): O(log n) memory, amortized O(1) hashes per append, O(log n) for the root.
/// A log of millions of records computes its root without holding its leaves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactTree {
    size: u64,
    /// Roots of the perfect subtrees, largest (leftmost) first.
    frontier: Vec<Hash>,
}

impl CompactTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Resumes a tree from its size and [`CompactTree::frontier`], e.g. after a restart.
    pub fn from_frontier(size: u64, frontier: Vec<Hash>) -> Result<Self> {
        let want = size.count_ones() as usize;
        if frontier.len() != want {
            return Err(Error::ProofLength {
                what: "compact tree frontier",
                got: frontier.len(),
                want,
            });
        }
        Ok(CompactTree { size, frontier })
    }

    /// Appends a leaf hash (see [`leaf_hash`]); returns its index.
    pub fn append(&mut self, leaf_hash: Hash) -> u64 {
        let index = self.size;
        let mut node = leaf_hash;
        // Each trailing 1 bit of the old size is a perfect subtree that the new leaf completes.
        let mut carry = index;
        while carry & 1 == 1 {
            let left = self
                .frontier
                .pop()
                .expect("one frontier entry per set bit of the size");
            node = node_hash(&left, &node);
            carry >>= 1;
        }
        self.frontier.push(node);
        self.size += 1;
        index
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The tree root (RFC 6962 §2.1); [`EMPTY_ROOT`] when empty.
    pub fn root(&self) -> Hash {
        let mut entries = self.frontier.iter().rev();
        let Some(last) = entries.next() else {
            return EMPTY_ROOT;
        };
        entries.fold(*last, |right, left| node_hash(left, &right))
    }

    /// The perfect-subtree roots, largest first: with [`CompactTree::size`], all that is
    /// needed to resume appending.
    pub fn frontier(&self) -> &[Hash] {
        &self.frontier
    }
}

/// The largest power of two smaller than `n` (n > 1): the RFC 6962 split point.
fn split(n: usize) -> usize {
    debug_assert!(n > 1);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// MTH over a non-empty slice; hashes each node of the subtree exactly once.
fn subtree_root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => EMPTY_ROOT,
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&subtree_root(&leaves[..k]), &subtree_root(&leaves[k..]))
        }
    }
}

/// Length of the audit path for `index` in a tree of `size` (index < size): the levels below
/// where the paths to `index` and `size - 1` part, plus the left siblings above.
fn inclusion_proof_len(index: u64, size: u64) -> usize {
    let inner = u64::BITS - (index ^ (size - 1)).leading_zeros();
    let border = (index >> inner).count_ones();
    (inner + border) as usize
}

/// Length of the consistency proof from `old_size` to `new_size` (0 < old < new).
fn consistency_proof_len(old_size: u64, new_size: u64) -> usize {
    let index = old_size - 1;
    let inner = u64::BITS - (index ^ (new_size - 1)).leading_zeros();
    let border = (index >> inner).count_ones();
    let shift = old_size.trailing_zeros();
    let seed = usize::from(!old_size.is_power_of_two());
    seed + (inner - shift + border) as usize
}

fn matches(what: &'static str, computed: &Hash, expected: &Hash) -> Result<()> {
    if computed == expected {
        Ok(())
    } else {
        Err(Error::RootMismatch {
            what,
            computed: hex::encode(computed),
            expected: hex::encode(expected),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_level_tree_gives_the_same_roots_and_proofs() {
        for n in 0..=70u64 {
            let leaves: Vec<Hash> = (0..n).map(|i| leaf_hash(&i.to_le_bytes())).collect();
            let t = MerkleTree::new(leaves.clone());
            assert_eq!(t.root(), root(&leaves), "size {n}");
            for i in 0..n {
                assert_eq!(
                    t.inclusion_proof(i).unwrap(),
                    inclusion_proof(&leaves, i).unwrap(),
                    "size {n} index {i}"
                );
            }
            assert!(t.inclusion_proof(n).is_err());
        }
    }

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(&(i as u64).to_be_bytes()))
            .collect()
    }

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        assert_eq!(EMPTY_ROOT, <[u8; 32]>::from(Sha256::digest(b"")));
        assert_eq!(root(&[]), EMPTY_ROOT);
        assert_eq!(CompactTree::new().root(), EMPTY_ROOT);
    }

    #[test]
    fn split_is_the_largest_power_of_two_below() {
        for (n, k) in [(2, 1), (3, 2), (4, 2), (5, 4), (8, 4), (9, 8), (1000, 512)] {
            assert_eq!(split(n), k, "n={n}");
        }
    }

    #[test]
    fn compact_tree_agrees_with_root_and_resumes() {
        let l = leaves(300);
        let mut t = CompactTree::new();
        for (i, h) in l.iter().enumerate() {
            assert_eq!(t.append(*h), i as u64);
            assert_eq!(t.root(), root(&l[..=i]), "size {}", i + 1);
            assert_eq!(t.frontier().len(), t.size().count_ones() as usize);
        }
        let mut resumed = CompactTree::from_frontier(t.size(), t.frontier().to_vec()).unwrap();
        resumed.append(leaf_hash(b"next"));
        t.append(leaf_hash(b"next"));
        assert_eq!(resumed, t);
        assert!(CompactTree::from_frontier(3, vec![EMPTY_ROOT]).is_err());
    }

    #[test]
    fn proof_lengths_match_generated_proofs() {
        for n in 1..=70u64 {
            let l = leaves(n as usize);
            for i in 0..n {
                assert_eq!(
                    inclusion_proof(&l, i).unwrap().len(),
                    inclusion_proof_len(i, n),
                    "{i} in {n}"
                );
            }
            for m in 1..n {
                assert_eq!(
                    consistency_proof(&l, m).unwrap().len(),
                    consistency_proof_len(m, n),
                    "{m} to {n}"
                );
            }
        }
    }

    #[test]
    fn generation_rejects_bad_arguments() {
        let l = leaves(5);
        assert!(matches!(
            inclusion_proof(&l, 5),
            Err(Error::IndexOutOfRange { index: 5, size: 5 })
        ));
        assert!(inclusion_proof(&[], 0).is_err());
        assert!(consistency_proof(&l, 0).is_err());
        assert!(consistency_proof(&l, 6).is_err());
        assert_eq!(consistency_proof(&l, 5).unwrap(), Vec::<Hash>::new());
    }

    #[test]
    fn hash_from_slice_names_the_value() {
        let err = hash_from_slice("root", b"short").unwrap_err();
        assert_eq!(
            err.to_string(),
            "root is 5 bytes long, expected a 32-byte SHA-256 hash"
        );
        assert_eq!(hash_from_slice("x", &[7; 32]).unwrap(), [7; 32]);
    }
}
