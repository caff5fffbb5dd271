//! Signed component releases and the trust policy that admits them: every way a release
//! can be wrong is refused with an error naming what is wrong.

use runwarden_evidence::{
    ComponentKind, Envelope, Release, ReleaseError, RiskLevel, SigningKey, TrustPolicy,
    TrustedPublisher, component_sha256,
};

const COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0 a component's bytes";

fn release(name: &str, version: &str, risk: RiskLevel, kind: ComponentKind) -> Release {
    Release {
        kind,
        name: name.into(),
        version: version.into(),
        sha256: component_sha256(COMPONENT),
        risk,
        manifest: serde_json::json!({"name": name, "version": version, "summary": "s"}),
        built_from: None,
        signed_at: "2026-12-07T12:00:00.000Z".into(),
    }
}

fn policy(key: &SigningKey, components: &[&str], max_risk: RiskLevel) -> TrustPolicy {
    TrustPolicy {
        publishers: vec![TrustedPublisher {
            key: key.verifying_key().to_text(),
            components: components.iter().map(|c| c.to_string()).collect(),
            max_risk,
            rules: false,
        }],
        minimum_versions: Default::default(),
    }
}

#[test]
fn a_release_signed_by_a_trusted_publisher_is_admitted_with_its_key() {
    let key = SigningKey::generate("acme-msp").unwrap();
    let r = release(
        "restart-service",
        "1.2.0",
        RiskLevel::Medium,
        ComponentKind::Runbook,
    );
    let env = r.sign(&key).to_json();
    let p = policy(&key, &["restart-*"], RiskLevel::Medium);
    let (got, publisher) = p.admit(&env, COMPONENT).unwrap();
    assert_eq!(got, r);
    assert_eq!(publisher.key_id_hex(), key.verifying_key().key_id_hex());
    // The policy survives its own text form (operators write it as TOML, agents get JSON).
    let back: TrustPolicy = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
    assert_eq!(back, p);
}

#[test]
fn altered_bytes_a_wrong_key_or_a_forged_statement_are_refused() {
    let key = SigningKey::generate("acme-msp").unwrap();
    let p = policy(&key, &["*"], RiskLevel::High);
    let r = release(
        "restart-service",
        "1.2.0",
        RiskLevel::Low,
        ComponentKind::Runbook,
    );
    let env = r.sign(&key).to_json();
    // One byte changed.
    let mut altered = COMPONENT.to_vec();
    *altered.last_mut().unwrap() ^= 1;
    let e = p.admit(&env, &altered).unwrap_err();
    assert!(matches!(e, ReleaseError::Altered { .. }), "{e}");
    assert!(e.to_string().contains("altered"), "{e}");
    // Signed by a key the policy does not list.
    let mallory = SigningKey::generate("acme-msp").unwrap();
    let e = p.admit(&r.sign(&mallory).to_json(), COMPONENT).unwrap_err();
    assert!(matches!(e, ReleaseError::Untrusted(_)), "{e}");
    // The statement changed after signing (a higher version claimed): the signature fails.
    let mut forged = Envelope::from_json(&env).unwrap();
    let statement = String::from_utf8(forged.payload().unwrap())
        .unwrap()
        .replace("1.2.0", "9.9.9");
    use base64::Engine as _;
    forged.payload = base64::engine::general_purpose::STANDARD.encode(statement);
    let e = p.admit(&forged.to_json(), COMPONENT).unwrap_err();
    assert!(matches!(e, ReleaseError::Untrusted(_)), "{e}");
    // Not a release at all: an invocation record's envelope, or junk.
    for junk in ["{}", "not json", &"x".repeat(2 << 20)] {
        let e = p.admit(junk, COMPONENT).unwrap_err();
        assert!(matches!(e, ReleaseError::Malformed(_)), "{e}");
    }
    // A subject that is not the predicate's component.
    let mut other = r.clone();
    other.sha256 = component_sha256(b"another");
    let e = p.admit(&other.sign(&key).to_json(), COMPONENT).unwrap_err();
    assert!(matches!(e, ReleaseError::Altered { .. }), "{e}");
}

#[test]
fn the_policy_limits_names_risk_rule_sets_and_downgrades() {
    let key = SigningKey::generate("acme-msp").unwrap();
    let mut p = policy(&key, &["restart-*", "rotate-logs"], RiskLevel::Medium);
    let admit = |p: &TrustPolicy, r: Release| p.admit(&r.sign(&key).to_json(), COMPONENT);
    // A name outside its globs.
    let e = admit(
        &p,
        release(
            "flush-firewall",
            "1.0.0",
            RiskLevel::Low,
            ComponentKind::Runbook,
        ),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("may not publish \"flush-firewall\""), "{e}");
    assert!(e.contains("\"restart-*\", \"rotate-logs\""), "{e}");
    // Above its risk.
    let e = admit(
        &p,
        release(
            "restart-host",
            "1.0.0",
            RiskLevel::High,
            ComponentKind::Runbook,
        ),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("high risk") && e.contains("medium risk at most"),
        "{e}"
    );
    // A rule set, which it was not trusted with.
    let e = admit(
        &p,
        release("rotate-logs", "1.0.0", RiskLevel::Low, ComponentKind::Rules),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("rule sets"), "{e}");
    p.publishers[0].rules = true;
    admit(
        &p,
        release("rotate-logs", "1.0.0", RiskLevel::Low, ComponentKind::Rules),
    )
    .unwrap();
    // A downgrade below the lowest version allowed.
    p.minimum_versions
        .insert("restart-service".into(), "1.10.0".into());
    let e = admit(
        &p,
        release(
            "restart-service",
            "1.9.9",
            RiskLevel::Low,
            ComponentKind::Runbook,
        ),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("a downgrade") && e.contains("1.10.0"), "{e}");
    admit(
        &p,
        release(
            "restart-service",
            "1.10.0",
            RiskLevel::Low,
            ComponentKind::Runbook,
        ),
    )
    .unwrap();
    // Two entries for one key do not add up: a high-risk rule set is admitted only by an
    // entry that allows both.
    let mut split = policy(&key, &["restart-*"], RiskLevel::High);
    split.publishers.push(TrustedPublisher {
        key: key.verifying_key().to_text(),
        components: vec!["*".into()],
        max_risk: RiskLevel::Low,
        rules: true,
    });
    let e = admit(
        &split,
        release("restart-x", "1.0.0", RiskLevel::High, ComponentKind::Rules),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("high risk") && e.contains("low risk at most"),
        "{e}"
    );
    admit(
        &split,
        release("restart-x", "1.0.0", RiskLevel::Low, ComponentKind::Rules),
    )
    .unwrap();
    admit(
        &split,
        release(
            "restart-x",
            "1.0.0",
            RiskLevel::High,
            ComponentKind::Runbook,
        ),
    )
    .unwrap();
    // Deny by default: an empty policy admits nothing.
    let e = admit(
        &TrustPolicy::default(),
        release(
            "restart-service",
            "1.10.0",
            RiskLevel::Low,
            ComponentKind::Runbook,
        ),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("lists no publisher"), "{e}");
    // A second publisher's entry does not widen the first's.
    let other = SigningKey::generate("other").unwrap();
    p.publishers.push(TrustedPublisher {
        key: other.verifying_key().to_text(),
        components: vec!["*".into()],
        max_risk: RiskLevel::High,
        rules: true,
    });
    let e = admit(
        &p,
        release(
            "flush-firewall",
            "1.0.0",
            RiskLevel::Low,
            ComponentKind::Runbook,
        ),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("may not publish"), "{e}");
}
