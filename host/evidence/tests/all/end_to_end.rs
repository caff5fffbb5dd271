//! The evidence path: sign records, log them, sign a checkpoint, and verify it all as an
//! auditor holding only the public key.

use runwarden_evidence::{
    Checkpoint, CompactTree, Envelope, Error, SigningKey, VerifyingKey, consistency_proof,
    inclusion_proof, leaf_hash, verify_consistency, verify_inclusion,
};

const STATEMENT: &str = "application/vnd.in-toto+json";

#[test]
fn an_auditor_verifies_records_against_a_signed_checkpoint() {
    let host = SigningKey::generate("runwarden.example/host-17").unwrap();

    // The host: one DSSE envelope per invocation; each envelope's JSON is a log leaf.
    let records: Vec<String> = (0..10)
        .map(|i| {
            Envelope::sign(
                STATEMENT,
                format!("{{\"invocation\":{i}}}").as_bytes(),
                &host,
            )
            .to_json()
        })
        .collect();
    let leaves: Vec<_> = records.iter().map(|r| leaf_hash(r.as_bytes())).collect();
    let mut tree = CompactTree::new();
    for l in &leaves {
        tree.append(*l);
    }
    let old = Checkpoint {
        origin: host.name().into(),
        size: 6,
        root: runwarden_evidence::root(&leaves[..6]),
    };
    let new = Checkpoint {
        origin: host.name().into(),
        size: tree.size(),
        root: tree.root(),
    };
    let (old_note, new_note) = (old.sign(&host).unwrap(), new.sign(&host).unwrap());
    let proofs: Vec<_> = (0..10)
        .map(|i| inclusion_proof(&leaves, i).unwrap())
        .collect();
    let consistency = consistency_proof(&leaves, 6).unwrap();

    // The auditor: only the public key text is trusted.
    let trusted = [VerifyingKey::from_text(&host.verifying_key().to_text()).unwrap()];
    let cp = Checkpoint::parse(&new_note, &trusted).unwrap();
    let earlier = Checkpoint::parse(&old_note, &trusted).unwrap();
    verify_consistency(earlier.size, cp.size, &earlier.root, &cp.root, &consistency).unwrap();
    for (i, record) in records.iter().enumerate() {
        let env = Envelope::from_json(record).unwrap();
        env.verify(&trusted).unwrap();
        assert_eq!(
            env.payload().unwrap(),
            format!("{{\"invocation\":{i}}}").as_bytes()
        );
        verify_inclusion(
            &leaf_hash(record.as_bytes()),
            i as u64,
            cp.size,
            &proofs[i],
            &cp.root,
        )
        .unwrap();
    }

    // An altered record fails its signature, and a re-signed one (by another key) fails both
    // trust and inclusion.
    let mut altered = Envelope::from_json(&records[3]).unwrap();
    altered.payload = base64_of(b"{\"invocation\":33}");
    assert!(matches!(
        altered.verify(&trusted),
        Err(Error::BadSignature { .. })
    ));
    let forger = SigningKey::generate("runwarden.example/host-17").unwrap();
    let forged = Envelope::sign(STATEMENT, b"{\"invocation\":3}", &forger).to_json();
    assert!(matches!(
        Envelope::from_json(&forged).unwrap().verify(&trusted),
        Err(Error::NoTrustedSignature { .. })
    ));
    assert!(
        verify_inclusion(
            &leaf_hash(forged.as_bytes()),
            3,
            cp.size,
            &proofs[3],
            &cp.root
        )
        .is_err()
    );

    // Removing or reordering records changes the root the host signed.
    let mut reordered = leaves.clone();
    reordered.swap(2, 3);
    assert_ne!(runwarden_evidence::root(&reordered), cp.root);
    assert!(verify_inclusion(&leaves[2], 3, cp.size, &proofs[3], &cp.root).is_err());

    // A checkpoint signed by the forger is not trusted.
    assert!(matches!(
        Checkpoint::parse(&new.sign(&forger).unwrap(), &trusted),
        Err(Error::NoTrustedSignature { .. })
    ));
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
