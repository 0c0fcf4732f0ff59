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

/// Longest Kubernetes object name (a DNS subdomain).
pub const MAX_NAME: usize = 253;
/// Longest Kubernetes label value.
pub const MAX_LABEL_VALUE: usize = 63;

/// `prefix` + `name` when that fits in `limit` bytes; otherwise as much of it as fits
/// before `-` and 10 hex digits of the SHA-256 of `name` — the way Kubernetes bounds
/// generated names, so two long names that share their start still differ. `prefix`
/// and `name` are a Kubernetes name's characters (lower-case letters, digits, `-`,
/// `.`); the cut never leaves a `-` or `.` before the hash, so a valid name or label
/// value stays one.
pub fn bounded_name(prefix: &str, name: &str, limit: usize) -> String {
    let whole = format!("{prefix}{name}");
    if whole.len() <= limit {
        return whole;
    }
    let hash = hex::encode(&Sha256::digest(name.as_bytes())[..5]);
    let mut keep = limit.saturating_sub(hash.len() + 1).min(whole.len());
    while !whole.is_char_boundary(keep) {
        keep -= 1;
    }
    let head = whole[..keep].trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    if head.is_empty() {
        hash
    } else {
        format!("{head}-{hash}")
    }
}

/// `text` cut to at most `max` bytes (on a character's boundary, `…` in the last
/// three): for messages whose length is not rotor's to choose (an API server's error,
/// a webhook's denial) where the API bounds them (an Event's note: 1 KiB).
pub fn clipped(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let ellipsis = if max >= '…'.len_utf8() { "…" } else { "" };
    let mut end = max - ellipsis.len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ellipsis}", &text[..end])
}

/// A text (a table's cell, an error in a log line) on one line, with no control characters (a vendor's message could hold a
/// newline or a terminal escape) and no invisible format characters (bidi overrides
/// and isolates, zero-width marks: text that would reorder a row on screen): each
/// becomes a space.
pub fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() || invisible(c) {
                ' '
            } else {
                c
            }
        })
        .collect()
}

/// The format characters that change how a line is shown without being seen.
fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}'
    )
}

/// `value` as a label value: itself when it has at most 63 bytes, else bounded with a
/// hash ([`bounded_name`]).
pub fn label_value(value: &str) -> String {
    bounded_name("", value, MAX_LABEL_VALUE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipped_text_fits_its_bound_on_a_character_boundary() {
        assert_eq!(clipped("short", 10), "short");
        let long = "é".repeat(700);
        let cut = clipped(&long, 1024);
        assert!(cut.len() <= 1024, "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert!(cut.len() >= 1020);
        assert_eq!(clipped("abcdef", 4), "a…");
        assert_eq!(clipped("abcdef", 2), "ab");
        assert_eq!(clipped("éa", 1), "");
    }

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

    #[test]
    fn long_names_are_bounded_with_a_hash_and_short_ones_kept() {
        assert_eq!(
            bounded_name("rotor-vault-", "db", MAX_NAME),
            "rotor-vault-db"
        );
        assert_eq!(label_value("db"), "db");
        let exact = "a".repeat(63);
        assert_eq!(label_value(&exact), exact, "63 bytes fit");
        let long = format!("long-{}", "n".repeat(245));
        let name = bounded_name("rotor-vault-", &long, MAX_NAME);
        assert_eq!(name.len(), MAX_NAME, "{name}");
        assert!(name.starts_with("rotor-vault-long-nnn"), "{name}");
        let label = label_value(&long);
        assert_eq!(label.len(), MAX_LABEL_VALUE, "{label}");
        // Two long names that differ only at the end stay apart.
        let other = format!("{}x", &long[..249]);
        assert_ne!(label_value(&other), label);
        assert_ne!(bounded_name("rotor-vault-", &other, MAX_NAME), name);
        // The cut never leaves a separator before the hash, so a valid DNS subdomain
        // stays one and a label value starts and ends with a letter or digit.
        for long in [
            format!("{}.{}", "x".repeat(51), "y".repeat(40)),
            format!("{}-{}", "x".repeat(51), "y".repeat(40)),
            format!("{}.{}", "x".repeat(229), "y".repeat(23)),
        ] {
            for s in [
                label_value(&long),
                bounded_name("rotor-vault-", &long, MAX_NAME),
            ] {
                assert!(s.len() <= MAX_NAME, "{s}");
                assert!(s.ends_with(|c: char| c.is_ascii_alphanumeric()), "{s}");
                assert!(!s.contains(".-") && !s.contains("-."), "{s}");
            }
        }
        let cut_at_the_dot = format!("{}.{}", "x".repeat(229), "y".repeat(23));
        let name = bounded_name("rotor-vault-", &cut_at_the_dot, MAX_NAME);
        assert!(
            name.starts_with(&format!("rotor-vault-{}-", "x".repeat(229))),
            "{name}"
        );
        assert!(label_value(&cut_at_the_dot.replace('.', "-")).starts_with(&"x".repeat(52)));
    }
}
