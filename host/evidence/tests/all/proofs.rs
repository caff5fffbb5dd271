//! Properties of proof generation and verification over many tree shapes.

use std::time::{Duration, Instant};

use runwarden_evidence::{
    CompactTree, Hash, consistency_proof, inclusion_proof, leaf_hash, root, verify_consistency,
    verify_inclusion,
};

use crate::vectors::{RFC6962_LEAVES, RFC6962_ROOTS};

fn leaves(n: u64) -> Vec<Hash> {
    (0..n)
        .map(|i| leaf_hash(format!("record {i}").as_bytes()))
        .collect()
}

/// Flips each bit of each proof hash in turn; every flip must make `verify` fail.
fn every_bit_flip_fails(proof: &mut [Hash], what: &str, mut verify: impl FnMut(&[Hash]) -> bool) {
    for i in 0..proof.len() {
        for bit in 0..256 {
            proof[i][bit / 8] ^= 1 << (bit % 8);
            assert!(
                !verify(proof),
                "{what}: flipping bit {bit} of proof hash {i} still verifies"
            );
            proof[i][bit / 8] ^= 1 << (bit % 8);
        }
    }
}

#[test]
fn roots_of_the_rfc6962_reference_tree() {
    let l: Vec<Hash> = RFC6962_LEAVES
        .iter()
        .map(|h| leaf_hash(&hex::decode(h).unwrap()))
        .collect();
    let mut tree = CompactTree::new();
    for (n, want) in RFC6962_ROOTS.iter().enumerate() {
        tree.append(l[n]);
        assert_eq!(hex::encode(root(&l[..=n])), *want, "size {}", n + 1);
        assert_eq!(
            hex::encode(tree.root()),
            *want,
            "compact tree, size {}",
            n + 1
        );
    }
}

#[test]
fn every_inclusion_proof_up_to_64_leaves_verifies_and_no_bit_flip_does() {
    for size in 1..=64u64 {
        let l = leaves(size);
        let r = root(&l);
        for index in 0..size {
            let mut proof = inclusion_proof(&l, index).unwrap();
            let leaf = l[index as usize];
            verify_inclusion(&leaf, index, size, &proof, &r)
                .unwrap_or_else(|e| panic!("{index} in {size}: {e}"));
            let what = format!("leaf {index} of {size}");
            every_bit_flip_fails(&mut proof, &what, |p| {
                verify_inclusion(&leaf, index, size, p, &r).is_ok()
            });
            for bit in [0, 77, 255] {
                let mut bad_leaf = leaf;
                bad_leaf[bit / 8] ^= 1 << (bit % 8);
                assert!(
                    verify_inclusion(&bad_leaf, index, size, &proof, &r).is_err(),
                    "{what}: altered leaf"
                );
                let mut bad_root = r;
                bad_root[bit / 8] ^= 1 << (bit % 8);
                assert!(
                    verify_inclusion(&leaf, index, size, &proof, &bad_root).is_err(),
                    "{what}: altered root"
                );
            }
            for other in [index.wrapping_sub(1), index + 1, index ^ 2] {
                if other != index {
                    assert!(
                        verify_inclusion(&leaf, other, size, &proof, &r).is_err(),
                        "{what}: claimed as leaf {other}"
                    );
                }
            }
        }
    }
}

#[test]
fn every_consistency_proof_up_to_64_leaves_verifies_and_no_bit_flip_does() {
    for new_size in 1..=64u64 {
        let l = leaves(new_size);
        let new_root = root(&l);
        for old_size in 1..=new_size {
            let old_root = root(&l[..old_size as usize]);
            let mut proof = consistency_proof(&l, old_size).unwrap();
            verify_consistency(old_size, new_size, &old_root, &new_root, &proof)
                .unwrap_or_else(|e| panic!("{old_size} to {new_size}: {e}"));
            let what = format!("{old_size} to {new_size}");
            every_bit_flip_fails(&mut proof, &what, |p| {
                verify_consistency(old_size, new_size, &old_root, &new_root, p).is_ok()
            });
            for bit in [0, 77, 255] {
                let mut bad_old = old_root;
                bad_old[bit / 8] ^= 1 << (bit % 8);
                assert!(
                    verify_consistency(old_size, new_size, &bad_old, &new_root, &proof).is_err(),
                    "{what}: altered old root"
                );
                let mut bad_new = new_root;
                bad_new[bit / 8] ^= 1 << (bit % 8);
                assert!(
                    verify_consistency(old_size, new_size, &old_root, &bad_new, &proof).is_err(),
                    "{what}: altered new root"
                );
            }
            if old_size < new_size {
                assert!(
                    verify_consistency(old_size, new_size, &new_root, &old_root, &proof).is_err(),
                    "{what}: swapped roots"
                );
                let mut forked = l.clone();
                forked[(old_size - 1) as usize] = leaf_hash(b"rewritten history");
                let forked_root = root(&forked);
                assert!(
                    verify_consistency(old_size, new_size, &old_root, &forked_root, &proof)
                        .is_err(),
                    "{what}: fork"
                );
                let mut truncated = proof.clone();
                truncated.pop();
                assert!(
                    verify_consistency(old_size, new_size, &old_root, &new_root, &truncated)
                        .is_err(),
                    "{what}: truncated"
                );
            }
        }
    }
}

/// Proofs over 100,000 leaves take time linear in the tree, not quadratic.
#[test]
fn proofs_over_100_000_leaves_are_fast() {
    let l = leaves(100_000);
    let start = Instant::now();
    let mut tree = CompactTree::new();
    for h in &l {
        tree.append(*h);
    }
    let r = root(&l);
    assert_eq!(tree.root(), r);
    for index in [0u64, 1, 4_095, 65_536, 99_999] {
        let proof = inclusion_proof(&l, index).unwrap();
        verify_inclusion(&l[index as usize], index, 100_000, &proof, &r).unwrap();
    }
    for old in [1u64, 2, 31_337, 65_536, 99_999, 100_000] {
        let old_root = root(&l[..old as usize]);
        let proof = consistency_proof(&l, old).unwrap();
        verify_consistency(old, 100_000, &old_root, &r, &proof).unwrap();
    }
    // Each proof hashes each tree node at most once (~200,000 hashes, well under a second
    // optimised); a quadratic algorithm would need ~10^10. The bound is loose for slow CI.
    let took = start.elapsed();
    assert!(took < Duration::from_secs(30), "took {took:?}");
}
