//! Bearer tokens: `carte_` followed by 32 random bytes in hex. Only the sha256 of a token
//! is ever stored, so a leaked database does not leak credentials.
//!
//! This module makes and hashes secrets; it does not decide what a token may do.

use crate::blob::sha256_of;
use crate::model::Digest;

pub const PREFIX: &str = "carte_";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token: reading system randomness: {0}")]
    Random(getrandom::Error),
}

/// A fresh secret token.
pub fn generate() -> Result<String, TokenError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(TokenError::Random)?;
    Ok(format!("{PREFIX}{}", Digest::from_bytes(&bytes)))
}

/// What the store keeps of a token.
pub fn hash(token: &str) -> Digest {
    sha256_of(token.as_bytes())
}

/// Cheap shape check before any lookup, so garbage never reaches the database.
pub fn well_formed(token: &str) -> bool {
    token
        .strip_prefix(PREFIX)
        .is_some_and(|rest| rest.len() == 64 && rest.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_well_formed() {
        let a = generate().expect("random");
        let b = generate().expect("random");
        assert_ne!(a, b);
        assert!(well_formed(&a), "{a}");
        assert_ne!(hash(&a), hash(&b));
        for bad in ["", "carte_", "carte_xyz", "bearer_0000", &a[1..]] {
            assert!(!well_formed(bad), "{bad}");
        }
    }
}
