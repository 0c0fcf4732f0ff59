//! Envelope encryption, pure: each entry is encrypted with its own AES-256-GCM data key
//! (DEK); the DEK is wrapped by a versioned key-encryption key (KEK). The associated
//! data binds the ciphertext and the wrapped DEK to where the entry belongs, so an
//! entry moved to another resource or slot fails to open.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use zeroize::Zeroizing;

/// A 256-bit key.
pub type KeyBytes = Zeroizing<[u8; 32]>;

/// The KEKs by version; the highest is current.
#[derive(Default, Clone)]
pub struct Keyring {
    pub keys: BTreeMap<u32, KeyBytes>,
    /// Where the KEKs come from (the operator namespace of the KEK Secret), recorded
    /// on every vault so `keys rotate` re-wraps only the vaults of its own KEKs.
    pub origin: String,
}

/// A short, non-secret identity of a KEK (the first 8 bytes of a SHA-256 over a
/// domain tag and the key), recorded with every entry: a KEK Secret recreated with a
/// new `v1` is then recognised as "that version is gone", not as tampering.
pub fn kek_id(key: &[u8; 32]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(b"rotor/kek-id/v1|")
        .chain_update(key)
        .finalize();
    hex::encode(&digest[..8])
}

impl Keyring {
    pub fn current(&self) -> Option<(u32, &KeyBytes)> {
        self.keys.iter().next_back().map(|(v, k)| (*v, k))
    }

    /// A fresh random key.
    pub fn generate() -> KeyBytes {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rng().fill(&mut key[..]);
        key
    }
}

/// One sealed value, as stored (JSON).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Sealed {
    /// KEK version that wraps the DEK.
    pub kek_version: u32,
    /// nonce ‖ AES-GCM(KEK, DEK), base64.
    pub wrapped_dek: String,
    /// nonce ‖ AES-GCM(DEK, plaintext), base64.
    pub ciphertext: String,
    /// [`kek_id`] of the KEK that wraps the DEK (absent in entries sealed before it
    /// was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kek_id: Option<String>,
}

/// Why a sealed value cannot be opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    #[error("key_version_unavailable: the entry needs KEK v{0}, which is gone")]
    KeyVersionUnavailable(u32),
    #[error("the entry failed authentication (tampered, or bound to another resource or slot)")]
    Tampered,
    #[error("the entry is malformed")]
    Malformed,
}

fn seal_with(key: &[u8; 32], plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    let mut nonce = [0u8; 12];
    rand::rng().fill(&mut nonce);
    let sealed = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("AES-GCM encryption of an in-memory buffer cannot fail");
    let mut out = nonce.to_vec();
    out.extend(sealed);
    out
}

fn open_with(key: &[u8; 32], sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    if sealed.len() < 12 + 16 {
        return Err(OpenError::Malformed);
    }
    let (nonce, body) = sealed.split_at(12);
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad })
        .map(Zeroizing::new)
        .map_err(|_| OpenError::Tampered)
}

fn dek_aad(aad: &[u8]) -> Vec<u8> {
    let mut v = aad.to_vec();
    v.extend_from_slice(b"|dek");
    v
}

/// Seals `plaintext` under a fresh DEK wrapped by the current KEK.
pub fn seal(ring: &Keyring, plaintext: &[u8], aad: &[u8]) -> Option<Sealed> {
    let (version, kek) = ring.current()?;
    let dek = Keyring::generate();
    Some(Sealed {
        kek_version: version,
        wrapped_dek: B64.encode(seal_with(kek, &dek[..], &dek_aad(aad))),
        ciphertext: B64.encode(seal_with(&dek, plaintext, aad)),
        kek_id: Some(kek_id(kek)),
    })
}

fn unwrap_dek(ring: &Keyring, sealed: &Sealed, aad: &[u8]) -> Result<KeyBytes, OpenError> {
    let kek = ring
        .keys
        .get(&sealed.kek_version)
        .ok_or(OpenError::KeyVersionUnavailable(sealed.kek_version))?;
    // Same version number, another key: the KEK Secret was recreated.
    if sealed.kek_id.as_ref().is_some_and(|id| *id != kek_id(kek)) {
        return Err(OpenError::KeyVersionUnavailable(sealed.kek_version));
    }
    let wrapped = B64
        .decode(&sealed.wrapped_dek)
        .map_err(|_| OpenError::Malformed)?;
    let dek = open_with(kek, &wrapped, &dek_aad(aad))?;
    let mut key = Zeroizing::new([0u8; 32]);
    if dek.len() != 32 {
        return Err(OpenError::Malformed);
    }
    key.copy_from_slice(&dek);
    Ok(key)
}

/// Opens a sealed value.
pub fn open(ring: &Keyring, sealed: &Sealed, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    let dek = unwrap_dek(ring, sealed, aad)?;
    let ciphertext = B64
        .decode(&sealed.ciphertext)
        .map_err(|_| OpenError::Malformed)?;
    open_with(&dek, &ciphertext, aad)
}

/// Re-wraps the DEK under the current KEK; the ciphertext is not touched.
pub fn rewrap(ring: &Keyring, sealed: &Sealed, aad: &[u8]) -> Result<Sealed, OpenError> {
    let (version, kek) = ring.current().ok_or(OpenError::KeyVersionUnavailable(0))?;
    if version == sealed.kek_version {
        return Ok(sealed.clone());
    }
    let dek = unwrap_dek(ring, sealed, aad)?;
    Ok(Sealed {
        kek_version: version,
        wrapped_dek: B64.encode(seal_with(kek, &dek[..], &dek_aad(aad))),
        ciphertext: sealed.ciphertext.clone(),
        kek_id: Some(kek_id(kek)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(versions: &[u32]) -> Keyring {
        Keyring {
            keys: versions.iter().map(|v| (*v, Keyring::generate())).collect(),
            origin: String::new(),
        }
    }

    const AAD: &[u8] = b"rotor/v1|shop|db|0|rotor-abc-1";

    #[test]
    fn round_trips_and_uses_the_current_kek() {
        let r = ring(&[1, 2]);
        let s = seal(&r, b"s3cr3t-value", AAD).unwrap();
        assert_eq!(s.kek_version, 2);
        assert_eq!(&open(&r, &s, AAD).unwrap()[..], b"s3cr3t-value");
        assert!(!s.ciphertext.contains("s3cr3t"));
    }

    #[test]
    fn every_kind_of_tampering_fails_loudly() {
        let r = ring(&[1]);
        let s = seal(&r, b"value", AAD).unwrap();
        let flip = |b64: &str| {
            let mut raw = B64.decode(b64).unwrap();
            let last = raw.len() - 1;
            raw[last] ^= 1;
            B64.encode(raw)
        };
        let bad_ct = Sealed {
            ciphertext: flip(&s.ciphertext),
            ..s.clone()
        };
        assert_eq!(open(&r, &bad_ct, AAD).unwrap_err(), OpenError::Tampered);
        let bad_dek = Sealed {
            wrapped_dek: flip(&s.wrapped_dek),
            ..s.clone()
        };
        assert_eq!(open(&r, &bad_dek, AAD).unwrap_err(), OpenError::Tampered);
        assert_eq!(
            open(&r, &s, b"rotor/v1|shop|db|1|rotor-abc-1").unwrap_err(),
            OpenError::Tampered,
            "another slot"
        );
        assert_eq!(
            open(&r, &s, b"rotor/v1|other|db|0|rotor-abc-1").unwrap_err(),
            OpenError::Tampered,
            "another namespace"
        );
        // The same ring plus a v2: it opens the entry as sealed (under v1), so what
        // fails below fails only because the entry claims v2. (Without a recorded KEK
        // id; with one, a mismatch reads as "that version is gone", tested below.)
        let mut r2 = r.clone();
        r2.keys.insert(2, Keyring::generate());
        assert_eq!(&open(&r2, &s, AAD).unwrap()[..], b"value");
        let bad_version = Sealed {
            kek_version: 2,
            kek_id: None,
            ..s.clone()
        };
        assert_eq!(
            open(&r2, &bad_version, AAD).unwrap_err(),
            OpenError::Tampered,
            "claims another KEK"
        );
        // Claiming v2 together with v2's id: still only v2 is tried.
        let claims_v2 = Sealed {
            kek_version: 2,
            kek_id: Some(kek_id(&r2.keys[&2])),
            ..s.clone()
        };
        assert_eq!(
            open(&r2, &claims_v2, AAD).unwrap_err(),
            OpenError::Tampered,
            "claims another KEK, with its id"
        );
        let gone = Sealed {
            kek_version: 7,
            ..s
        };
        assert_eq!(
            open(&r, &gone, AAD).unwrap_err(),
            OpenError::KeyVersionUnavailable(7)
        );
        assert!(
            OpenError::KeyVersionUnavailable(7)
                .to_string()
                .starts_with("key_version_unavailable")
        );
    }

    #[test]
    fn a_recreated_kek_of_the_same_version_is_unavailable_not_tampering() {
        let s = seal(&ring(&[1]), b"value", AAD).unwrap();
        assert_eq!(
            open(&ring(&[1]), &s, AAD).unwrap_err(),
            OpenError::KeyVersionUnavailable(1)
        );
        // Entries sealed before the KEK id was recorded keep the old behaviour.
        let legacy = Sealed { kek_id: None, ..s };
        assert_eq!(
            open(&ring(&[1]), &legacy, AAD).unwrap_err(),
            OpenError::Tampered
        );
    }

    #[test]
    fn rewrap_keeps_the_ciphertext_and_old_entries_stay_readable() {
        let mut r = ring(&[1]);
        let s = seal(&r, b"value", AAD).unwrap();
        r.keys.insert(2, Keyring::generate());
        let re = rewrap(&r, &s, AAD).unwrap();
        assert_eq!(re.kek_version, 2);
        assert_eq!(re.ciphertext, s.ciphertext, "ciphertext untouched");
        assert_eq!(&open(&r, &re, AAD).unwrap()[..], b"value");
        assert_eq!(
            &open(&r, &s, AAD).unwrap()[..],
            b"value",
            "v1 still readable while v1 exists"
        );
        r.keys.remove(&1);
        assert_eq!(
            open(&r, &s, AAD).unwrap_err(),
            OpenError::KeyVersionUnavailable(1)
        );
        assert_eq!(&open(&r, &re, AAD).unwrap()[..], b"value");
    }
}
