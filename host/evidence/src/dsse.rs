//! DSSE envelopes (github.com/secure-systems-lab/dsse, protocol.md v1.0.0 and envelope.md).
//!
//! A signature covers `PAE(payloadType, payload)`, never the JSON, so the envelope may be
//! re-serialized freely. Signatures are Ed25519 by a [`SigningKey`]; `keyid` is the key's
//! C2SP key ID in hex and only narrows which trusted keys are tried.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::keys::{SigningKey, VerifyingKey};

/// The DSSE pre-authentication encoding:
/// `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, lengths in ASCII decimal.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let t = payload_type.as_bytes();
    let mut out = Vec::with_capacity(t.len() + payload.len() + 32);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(t.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(t);
    out.push(b' ');
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

/// A DSSE JSON envelope: `{"payload", "payloadType", "signatures": [{"keyid", "sig"}]}`.
/// Empty fields may be omitted in the JSON (envelope.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The signed body, base64.
    #[serde(default)]
    pub payload: String,
    /// How to interpret the body, e.g. `application/vnd.in-toto+json`.
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// One entry per signer.
    pub signatures: Vec<EnvelopeSignature>,
}

/// One signature in an [`Envelope`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    /// Unauthenticated hint naming the key: its C2SP key ID in hex. May be empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub keyid: String,
    /// The Ed25519 signature over the PAE, base64.
    pub sig: String,
}

impl Envelope {
    /// Signs `payload` of type `payload_type` with `key`. The envelope uses standard base64.
    pub fn sign(payload_type: &str, payload: &[u8], key: &SigningKey) -> Envelope {
        let mut envelope = Envelope {
            payload: STANDARD.encode(payload),
            payload_type: payload_type.to_owned(),
            signatures: Vec::new(),
        };
        envelope.push_signature(payload, key);
        envelope
    }

    /// Adds a signature by another key (a co-signer).
    pub fn add_signature(&mut self, key: &SigningKey) -> Result<()> {
        let payload = self.payload()?;
        self.push_signature(&payload, key);
        Ok(())
    }

    fn push_signature(&mut self, payload: &[u8], key: &SigningKey) {
        let sig = key.sign(&pae(&self.payload_type, payload));
        self.signatures.push(EnvelopeSignature {
            keyid: key.verifying_key().key_id_hex(),
            sig: STANDARD.encode(sig),
        });
    }

    /// The decoded payload. Accepts standard or URL-safe base64, as DSSE requires. Does not
    /// check any signature: call [`Envelope::verify`] first.
    pub fn payload(&self) -> Result<Vec<u8>> {
        decode_any("envelope payload", &self.payload)
    }

    /// Checks that some signature is by a key in `trusted` and verifies over
    /// `PAE(payloadType, payload)`; returns that key.
    ///
    /// Fails with [`Error::Base64`] if the payload or any signature is not base64 (DSSE:
    /// "reject if decoding fails"), [`Error::BadSignature`] if a trusted key's signature
    /// does not verify and no other trusted signature does, and
    /// [`Error::NoTrustedSignature`] if no signature is by a trusted key.
    pub fn verify<'k>(&self, trusted: &'k [VerifyingKey]) -> Result<&'k VerifyingKey> {
        let payload = self.payload()?;
        let sigs = self
            .signatures
            .iter()
            .enumerate()
            .map(|(i, s)| decode_any(&format!("envelope signature #{}", i + 1), &s.sig))
            .collect::<Result<Vec<_>>>()?;
        let message = pae(&self.payload_type, &payload);
        let mut bad = None;
        for (entry, sig) in self.signatures.iter().zip(&sigs) {
            // keyid is only a hint: an empty one means "try every trusted key".
            let candidates = trusted.iter().filter(|k| {
                entry.keyid.is_empty() || entry.keyid.eq_ignore_ascii_case(&k.key_id_hex())
            });
            for key in candidates {
                if key.verify(&message, sig) {
                    return Ok(key);
                }
                bad.get_or_insert_with(|| key.label());
            }
        }
        match bad {
            Some(key) => Err(Error::BadSignature {
                what: "envelope",
                key,
            }),
            None => Err(Error::NoTrustedSignature {
                what: "envelope",
                signers: self
                    .signatures
                    .iter()
                    .map(|s| format!("keyid {:?}", s.keyid))
                    .collect(),
            }),
        }
    }

    /// The envelope as compact JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an envelope always serializes")
    }

    /// Parses an envelope from JSON.
    pub fn from_json(json: &str) -> Result<Envelope> {
        Ok(serde_json::from_str(json)?)
    }
}

const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STD_ANY_PAD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
const URL_ANY_PAD: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

/// Decodes standard or URL-safe base64, padded or not.
fn decode_any(field: &str, text: &str) -> Result<Vec<u8>> {
    // Standard first (what runwarden writes); URL-safe only when that fails.
    STD_ANY_PAD
        .decode(text)
        .or_else(|e| URL_ANY_PAD.decode(text).map_err(|_| e))
        .map_err(|source| Error::Base64 {
            field: field.to_owned(),
            source,
        })
}

/// A DSSE envelope borrowed from the text it was parsed from (for verifying many quickly).
#[derive(Deserialize)]
pub(crate) struct EnvelopeRef<'a> {
    #[serde(default, borrow)]
    pub(crate) payload: std::borrow::Cow<'a, str>,
    #[serde(rename = "payloadType", borrow)]
    pub(crate) payload_type: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    pub(crate) signatures: Vec<SignatureRef<'a>>,
}

/// One signature of an [`EnvelopeRef`].
#[derive(Deserialize)]
pub(crate) struct SignatureRef<'a> {
    #[serde(default, borrow)]
    pub(crate) keyid: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    pub(crate) sig: std::borrow::Cow<'a, str>,
}

/// `PAE(payload_type, base64-decode(payload_b64))` built in one buffer, with the offset at
/// which the decoded payload starts.
pub(crate) fn pae_decoding(payload_type: &str, payload_b64: &str) -> Result<(Vec<u8>, usize)> {
    let decoded =
        |engine: &GeneralPurpose| -> std::result::Result<(Vec<u8>, usize), base64::DecodeError> {
            let unpadded = payload_b64.trim_end_matches('=').len();
            let len = unpadded * 3 / 4;
            let t = payload_type.as_bytes();
            let mut out = Vec::with_capacity(len + t.len() + 32);
            out.extend_from_slice(b"DSSEv1 ");
            out.extend_from_slice(t.len().to_string().as_bytes());
            out.push(b' ');
            out.extend_from_slice(t);
            out.push(b' ');
            out.extend_from_slice(len.to_string().as_bytes());
            out.push(b' ');
            let at = out.len();
            out.resize(at + len, 0);
            match engine.decode_slice(payload_b64, &mut out[at..]) {
                Ok(n) if n == len => Ok((out, at)),
                Ok(_) => Err(base64::DecodeError::InvalidLength(payload_b64.len())),
                Err(base64::DecodeSliceError::DecodeError(e)) => Err(e),
                Err(base64::DecodeSliceError::OutputSliceTooSmall) => {
                    Err(base64::DecodeError::InvalidLength(payload_b64.len()))
                }
            }
        };
    decoded(&STD_ANY_PAD)
        .or_else(|e| decoded(&URL_ANY_PAD).map_err(|_| e))
        .map_err(|source| Error::Base64 {
            field: "envelope payload".to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    // DSSE protocol.md, "Test Vectors" (github.com/secure-systems-lab/dsse, protocol.md, read at
    // commit 0110cc2e89df500345148a36c780d883922443ca): payloadType
    // "http://example.com/HelloWorld", body "hello world" give
    // PAE "DSSEv1 29 http://example.com/HelloWorld 11 hello world".
    #[test]
    fn pae_decoding_equals_pae_of_the_decoded_payload() {
        for body in [
            &b""[..],
            b"a",
            b"ab",
            b"abc",
            b"hello world",
            &[0xffu8; 100][..],
        ] {
            for engine in [&STANDARD, &base64::engine::general_purpose::URL_SAFE_NO_PAD] {
                let (buf, at) = pae_decoding("t/x", &engine.encode(body)).unwrap();
                assert_eq!(buf, pae("t/x", body));
                assert_eq!(&buf[at..], body);
            }
        }
        assert!(pae_decoding("t", "a").is_err());
        assert!(pae_decoding("t", "ab$=").is_err());
    }

    #[test]
    fn pae_matches_the_dsse_spec_example() {
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ".to_vec());
        // Lengths are byte lengths, not character counts.
        assert_eq!(pae("é", b"\x00"), "DSSEv1 2 é 1 \u{0}".as_bytes().to_vec());
    }

    // The same spec's example envelope (its signature is ECDSA P-256, which this crate does
    // not verify): the JSON shape must parse, the payload must decode, keyid may be absent.
    #[test]
    fn the_dsse_spec_example_envelope_parses() {
        let json = r#"{"payload": "aGVsbG8gd29ybGQ=",
 "payloadType": "http://example.com/HelloWorld",
 "signatures": [{"sig": "A3JqsQGtVsJ2O2xqrI5IcnXip5GToJ3F+FnZ+O88SjtR6rDAajabZKciJTfUiHqJPcIAriEGAHTVeCUjW2JIZA=="}]}"#;
        let env = Envelope::from_json(json).unwrap();
        assert_eq!(env.payload().unwrap(), b"hello world");
        assert_eq!(env.payload_type, "http://example.com/HelloWorld");
        assert_eq!(env.signatures[0].keyid, "");
        let key = SigningKey::generate("example.com/k")
            .unwrap()
            .verifying_key();
        // An empty keyid means every trusted key is tried; this one did not sign.
        assert!(matches!(
            env.verify(&[key]),
            Err(Error::BadSignature { .. })
        ));
        assert!(matches!(
            env.verify(&[]),
            Err(Error::NoTrustedSignature { .. })
        ));
    }

    #[test]
    fn sign_then_verify() {
        let sk = SigningKey::generate("example.com/host").unwrap();
        let vk = sk.verifying_key();
        let env = Envelope::sign("application/vnd.in-toto+json", b"{\"a\":1}", &sk);
        assert_eq!(env.signatures[0].keyid, vk.key_id_hex());
        let trusted = [vk.clone()];
        assert_eq!(env.verify(&trusted).unwrap(), &vk);
        let back = Envelope::from_json(&env.to_json()).unwrap();
        assert_eq!(back, env);
        assert_eq!(back.payload().unwrap(), b"{\"a\":1}");
    }

    #[test]
    fn the_json_shape_is_dsse() {
        let sk = SigningKey::from_seed("k", [7; 32]).unwrap();
        let env = Envelope::sign("t", b"x", &sk);
        let v: serde_json::Value = serde_json::from_str(&env.to_json()).unwrap();
        let obj = v.as_object().unwrap();
        assert_eq!(obj.len(), 3);
        assert_eq!(v["payload"], "eA==");
        assert_eq!(v["payloadType"], "t");
        assert_eq!(v["signatures"][0]["keyid"], sk.verifying_key().key_id_hex());
        assert!(v["signatures"][0]["sig"].as_str().unwrap().len() == 88);
    }

    #[test]
    fn tampering_is_detected() {
        let sk = SigningKey::generate("example.com/host").unwrap();
        let trusted = [sk.verifying_key()];
        let env = Envelope::sign("application/vnd.in-toto+json", b"payload", &sk);

        let mut changed = env.clone();
        changed.payload = STANDARD.encode(b"PAYLOAD");
        assert!(matches!(
            changed.verify(&trusted),
            Err(Error::BadSignature {
                what: "envelope",
                ..
            })
        ));

        let mut retyped = env.clone();
        retyped.payload_type = "text/plain".into();
        assert!(matches!(
            retyped.verify(&trusted),
            Err(Error::BadSignature { .. })
        ));

        let mut garbled = env.clone();
        garbled.signatures[0].sig = "not base64!".into();
        assert!(matches!(
            garbled.verify(&trusted),
            Err(Error::Base64 { .. })
        ));

        let mut bad_payload = env.clone();
        bad_payload.payload = "%%%".into();
        assert!(matches!(
            bad_payload.verify(&trusted),
            Err(Error::Base64 { .. })
        ));

        let stranger = SigningKey::generate("example.com/other")
            .unwrap()
            .verifying_key();
        let err = env.verify(&[stranger]).unwrap_err();
        assert!(matches!(err, Error::NoTrustedSignature { .. }), "{err}");
        assert!(err.to_string().contains(&trusted[0].key_id_hex()), "{err}");

        let mut unsigned = env.clone();
        unsigned.signatures.clear();
        assert!(matches!(
            unsigned.verify(&trusted),
            Err(Error::NoTrustedSignature { .. })
        ));
    }

    #[test]
    fn any_trusted_signature_suffices() {
        let a = SigningKey::generate("a").unwrap();
        let b = SigningKey::generate("b").unwrap();
        let mut env = Envelope::sign("t", b"body", &a);
        env.add_signature(&b).unwrap();
        assert_eq!(env.verify(&[b.verifying_key()]).unwrap().name(), "b");
        assert_eq!(env.verify(&[a.verifying_key()]).unwrap().name(), "a");
        // A forged first signature does not hide a valid second one.
        env.signatures[0].sig = STANDARD.encode([0u8; 64]);
        assert_eq!(
            env.verify(&[a.verifying_key(), b.verifying_key()])
                .unwrap()
                .name(),
            "b"
        );
    }

    #[test]
    fn url_safe_and_unpadded_base64_are_accepted() {
        let sk = SigningKey::generate("k").unwrap();
        let payload = [0xfbu8, 0xff, 0xfe, 0x3e];
        let mut env = Envelope::sign("t", &payload, &sk);
        env.payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload);
        env.signatures[0].sig = env.signatures[0]
            .sig
            .replace('+', "-")
            .replace('/', "_")
            .trim_end_matches('=')
            .to_owned();
        assert_eq!(env.payload().unwrap(), payload);
        env.verify(&[sk.verifying_key()]).unwrap();
    }
}
