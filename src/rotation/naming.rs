//! What rotor calls things: credential names, and the fingerprints that stand for
//! credential values everywhere a value may not appear.

use sha2::{Digest, Sha256};

/// Prefix of a keyed fingerprint: `hmac-sha256:` and 8 hex digits.
pub const FINGERPRINT_PREFIX: &str = "hmac-sha256:";
/// Prefix of the unkeyed fingerprints rotor wrote before 0.x (still read, never written).
pub const LEGACY_FINGERPRINT_PREFIX: &str = "sha256:";

/// The operator's fingerprint key (32 bytes from the key Secret), once loaded.
static FINGERPRINT_KEY: std::sync::RwLock<Option<[u8; 32]>> = std::sync::RwLock::new(None);

/// Installs the fingerprint key for this process (the vault does, whenever it loads
/// the key Secret).
pub fn set_fingerprint_key(key: &[u8; 32]) {
    if let Ok(mut slot) = FINGERPRINT_KEY.write() {
        *slot = Some(*key);
    }
}

/// Whether a fingerprint key is installed.
pub fn has_fingerprint_key() -> bool {
    FINGERPRINT_KEY.read().is_ok_and(|k| k.is_some())
}

/// HMAC-SHA256 (RFC 2104) of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use hmac::{KeyInit, Mac};
    // HMAC takes a key of any length: new_from_slice cannot fail for it.
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// `hmac-sha256:` and the first 8 hex digits of the HMAC-SHA256 of `value` under
/// `key`: enough to tell credentials apart, useless without the key even for short
/// values.
pub fn keyed_fingerprint(key: &[u8], value: &str) -> String {
    let mac = hmac_sha256(key, value.as_bytes());
    format!("{FINGERPRINT_PREFIX}{}", hex::encode(&mac[..4]))
}

/// The unkeyed form rotor wrote before fingerprints were keyed: `sha256:` and the
/// first 8 hex digits of the SHA-256 of `value`. Only compared against, never written
/// by an operator that has its key.
pub fn legacy_fingerprint(value: &str) -> String {
    let digest = Sha256::digest(value.as_bytes());
    format!("{LEGACY_FINGERPRINT_PREFIX}{}", hex::encode(&digest[..4]))
}

/// The fingerprint of `value`: keyed with the operator's fingerprint key. A process
/// that has not loaded the key (unit tests, CLI commands that never open the vault)
/// gets the legacy form.
pub fn fingerprint(value: &str) -> String {
    match FINGERPRINT_KEY.read().ok().and_then(|k| *k) {
        Some(key) => keyed_fingerprint(&key, value),
        None => legacy_fingerprint(value),
    }
}

/// Whether `value` has the fingerprint `stored`, in whichever form it was stored
/// (status and vault entries written before the upgrade keep `sha256:`).
pub fn fingerprint_matches(stored: &str, value: &str) -> bool {
    if stored.starts_with(LEGACY_FINGERPRINT_PREFIX) {
        legacy_fingerprint(value) == stored
    } else {
        fingerprint(value) == stored
    }
}

/// The deterministic name of the credential issued by rotation number `sequence` of
/// the resource with `uid`: a resumed rotation issues under the same name, and every
/// credential rotor creates starts with [`CREDENTIAL_PREFIX`].
pub fn credential_name(uid: &str, sequence: u64) -> String {
    let short: String = uid
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect();
    format!(
        "{CREDENTIAL_PREFIX}{}-{sequence}",
        short.to_ascii_lowercase()
    )
}

/// Prefix of every credential name rotor issues.
pub const CREDENTIAL_PREFIX: &str = "rotor-";

/// Whether `name` is one this provider issued under `prefix`: the prefix, then only
/// the digits rotor puts there (a sequence number or a unix time).
pub fn own_name(prefix: &str, name: &str) -> bool {
    name.strip_prefix(prefix).is_some_and(|rest| {
        !rest.is_empty() && rest.len() <= 20 && rest.bytes().all(|b| b.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_fingerprint_is_sha256_prefix() {
        // printf abc | sha256sum → ba7816bf...
        assert_eq!(legacy_fingerprint("abc"), "sha256:ba7816bf");
        assert!(fingerprint_matches("sha256:ba7816bf", "abc"));
        assert!(!fingerprint_matches("sha256:ba7816bf", "abd"));
    }

    #[test]
    fn keyed_fingerprint_is_rfc4231_hmac_sha256() {
        // RFC 4231 test case 2: key "Jefe".
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block.
        let mac = hmac_sha256(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        assert_eq!(
            hex::encode(mac),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
        let fp = keyed_fingerprint(&[7; 32], "12345678");
        assert!(fp.starts_with("hmac-sha256:") && fp.len() == 12 + 8, "{fp}");
        assert_ne!(fp, keyed_fingerprint(&[8; 32], "12345678"));
    }

    #[test]
    fn credential_names_are_deterministic_and_prefixed() {
        let uid = "5f0c3a9e-1b2c-4d5e-8f90-0123456789ab";
        assert_eq!(credential_name(uid, 7), "rotor-5f0c3a9e-7");
        // Another resource's uid gives another name; case and dashes do not matter.
        assert_eq!(credential_name("6A1D-0E2F-77", 7), "rotor-6a1d0e2f-7");
        assert_ne!(credential_name("6a1d0e2f-77", 7), credential_name(uid, 7));
        assert_ne!(credential_name(uid, 7), credential_name(uid, 8));
    }

    #[test]
    fn own_names_are_exact() {
        assert!(own_name("shop-", "shop-1700000000000"));
        assert!(!own_name("shop-", "shop-payments-1700000000000"));
        assert!(!own_name("shop-", "shop-admin"));
        assert!(!own_name("shop-", "shop-"));
        assert!(!own_name("rotor-5f0c3a9e-", "rotor-5f0c3a9e-7x"));
        assert!(own_name("rotor-5f0c3a9e-", "rotor-5f0c3a9e-7"));
    }
}
