//! Managed keys' secrets and ids.
//!
//! A secret is `tgk_`, 32 random characters of `[0-9A-Za-z]` (190 bits from the operating
//! system's random source) and a 6-character checksum of them: the prefix lets secret scanners
//! recognise a leaked key, and the checksum refuses a mistyped one before any lookup. Only the
//! secret's blake3 digest is ever stored; a 190-bit random secret needs no slow hash or salt.

/// The prefix of every managed key's secret.
pub(crate) const PREFIX: &str = "tgk_";
const BODY: usize = 32;
const CHECKSUM: usize = 6;
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `len` characters of `[0-9A-Za-z]`, uniform: bytes at or above 248 (4 × 62) are drawn again.
fn random_text(len: usize) -> Result<String, String> {
    let mut text = String::with_capacity(len);
    let mut bytes = [0u8; 64];
    while text.len() < len {
        getrandom::fill(&mut bytes).map_err(|e| format!("the system's random source: {e}"))?;
        for byte in bytes.iter().filter(|b| **b < 248) {
            if text.len() < len {
                text.push(char::from(ALPHABET[usize::from(*byte % 62)]));
            }
        }
    }
    Ok(text)
}

/// The checksum of a secret's random part: its blake3 digest, as six base62 characters.
fn checksum(body: &str) -> String {
    let digest = blake3::hash(body.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest.as_bytes()[..8]);
    let mut value = u64::from_le_bytes(bytes);
    (0..CHECKSUM)
        .map(|_| {
            let digit = ALPHABET[(value % 62) as usize];
            value /= 62;
            char::from(digit)
        })
        .collect()
}

/// A new secret.
pub(crate) fn new_secret() -> Result<String, String> {
    let body = random_text(BODY)?;
    Ok(format!("{PREFIX}{body}{}", checksum(&body)))
}

/// A new key id: `key_` and 12 random characters. Public: it names the key in lists and
/// commands, and proves nothing.
pub(crate) fn new_id() -> Result<String, String> {
    Ok(format!("key_{}", random_text(12)?))
}

/// Whether `presented` carries the managed prefix but is not a well-formed secret (a typo, a
/// truncated copy): refused without a lookup.
pub(crate) fn is_mistyped(presented: &str) -> bool {
    let Some(rest) = presented.strip_prefix(PREFIX) else {
        return false;
    };
    if rest.len() != BODY + CHECKSUM || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return true;
    }
    let (body, check) = rest.split_at(BODY);
    checksum(body) != check
}

/// What is stored of a secret (of any key, managed or listed in `API_KEYS`).
pub(crate) fn digest(secret: &[u8]) -> [u8; 32] {
    *blake3::hash(secret).as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_has_its_prefix_and_checksum() {
        let secret = new_secret().expect("random");
        assert_eq!(secret.len(), PREFIX.len() + BODY + CHECKSUM);
        assert!(!is_mistyped(&secret), "{secret}");
        assert_ne!(secret, new_secret().expect("random"));
        // One character changed, one dropped: refused before any lookup.
        let mut typo = secret.clone().into_bytes();
        typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
        assert!(is_mistyped(&String::from_utf8(typo).expect("ascii")));
        assert!(is_mistyped(&secret[..secret.len() - 1]));
        // Keys without the prefix (API_KEYS) are not managed ones: looked up as they are.
        assert!(!is_mistyped("alice-test-key-0001"));
        assert!(new_id().expect("random").starts_with("key_"));
    }
}
