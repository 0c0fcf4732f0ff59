//! `provider.random`: a value drawn from the operating system's CSPRNG. No external
//! system, so revoking is a no-op and the value is valid wherever it is deployed.

use crate::api::{Charset, RandomSpec};
use crate::rotation::{Credential, IssueRequest, Provider, ProviderError, Revocation};
use async_trait::async_trait;
use rand::{Rng, distr::Uniform};
use secrecy::{ExposeSecret, SecretString};

const OUTPUT: &str = "value";

/// Generates random values.
#[derive(Debug)]
pub struct RandomProvider {
    length: usize,
    charset: &'static [u8],
}

/// The characters of `charset`, as bytes (every one ASCII).
fn alphabet(charset: Charset) -> &'static [u8] {
    match charset {
        Charset::Alphanumeric => b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
        Charset::Alphabetic => b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
        Charset::Numeric => b"0123456789",
        Charset::Hex => b"0123456789abcdef",
        Charset::Base64url => b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
        Charset::Printable => b"!\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~",
    }
}

impl RandomProvider {
    pub fn new(spec: &RandomSpec) -> Result<Self, ProviderError> {
        let charset = alphabet(spec.charset);
        if !(8..=4096).contains(&spec.length) {
            return Err(ProviderError::InvalidConfig(format!(
                "random.length {} is out of range: use 8 to 4096",
                spec.length
            )));
        }
        Ok(Self {
            length: spec.length as usize,
            charset,
        })
    }
}

#[async_trait]
impl Provider for RandomProvider {
    fn kind(&self) -> &'static str {
        "random"
    }

    fn outputs(&self) -> &'static [&'static str] {
        &[OUTPUT]
    }

    fn secret_output(&self) -> &'static str {
        OUTPUT
    }

    async fn issue(&self, request: &IssueRequest<'_>) -> Result<Credential, ProviderError> {
        let pick = Uniform::new(0, self.charset.len()).expect("charsets are never empty");
        let value: String = rand::rng()
            .sample_iter(pick)
            .take(self.length)
            .map(|i| char::from(self.charset[i]))
            .collect();
        let credential = Credential::single(request.name, OUTPUT, SecretString::from(value));
        request
            .stash
            .keep(&credential)
            .await
            .map_err(ProviderError::Stash)?;
        Ok(credential)
    }

    async fn test(&self, credential: &Credential) -> Result<(), ProviderError> {
        let value = credential
            .outputs
            .get(OUTPUT)
            .ok_or_else(|| ProviderError::TestFailed("no value was generated".into()))?
            .expose_secret();
        let well_formed =
            value.len() == self.length && value.bytes().all(|b| self.charset.contains(&b));
        if well_formed {
            Ok(())
        } else {
            Err(ProviderError::TestFailed(
                "the generated value does not match length and charset".into(),
            ))
        }
    }

    async fn revoke(&self, _id: &str) -> Result<Revocation, ProviderError> {
        Ok(Revocation::Revoked)
    }

    async fn list_own(&self, _prefix: &str) -> Result<Vec<String>, ProviderError> {
        Ok(Vec::new())
    }

    fn lists_own(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rotation::NoStash;

    fn issue(name: &str) -> IssueRequest<'_> {
        IssueRequest {
            name,
            slot: 0,
            stash: &NoStash,
        }
    }

    fn spec(length: u32, charset: Charset) -> RandomSpec {
        RandomSpec { length, charset }
    }

    #[tokio::test]
    async fn values_have_length_and_charset_and_differ() {
        let p = RandomProvider::new(&spec(40, Charset::Hex)).unwrap();
        let a = p.issue(&issue("a")).await.unwrap();
        let b = p.issue(&issue("b")).await.unwrap();
        p.test(&a).await.unwrap();
        let va = a.outputs["value"].expose_secret();
        assert_eq!(va.len(), 40);
        assert!(
            va.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(va, b.outputs["value"].expose_secret());
    }

    #[test]
    fn a_bad_length_is_a_config_error() {
        let err = RandomProvider::new(&spec(4, Charset::Hex)).unwrap_err();
        assert!(
            err.to_string().contains("random.length 4 is out of range"),
            "{err}"
        );
    }

    #[test]
    fn every_charset_is_printable_ascii_without_space_or_repeats() {
        for charset in [
            Charset::Alphanumeric,
            Charset::Alphabetic,
            Charset::Numeric,
            Charset::Hex,
            Charset::Base64url,
            Charset::Printable,
        ] {
            let chars = alphabet(charset);
            assert!(chars.iter().all(u8::is_ascii_graphic), "{charset:?}");
            let unique: std::collections::BTreeSet<_> = chars.iter().collect();
            assert_eq!(unique.len(), chars.len(), "{charset:?}");
        }
        assert_eq!(alphabet(Charset::Printable).len(), 94);
    }

    #[tokio::test]
    async fn debug_output_never_shows_the_value() {
        let p = RandomProvider::new(&spec(32, Charset::Alphanumeric)).unwrap();
        let c = p.issue(&issue("x")).await.unwrap();
        let debug = format!("{c:?}");
        assert!(!debug.contains(c.outputs["value"].expose_secret()));
    }
}
