//! Generated passwords: strong, from the operating system's random number generator, and safe to
//! put in a PostgreSQL connection string or URL without quoting.

use rand::TryRngCore;
use rand::rngs::OsRng;

use crate::secret::SecretValue;

/// Letters and digits only: no character needs escaping in a URI, a `.pgpass` file, a shell or
/// YAML. 62 symbols carry 5.95 bits each.
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// The default length: 40 characters, about 238 bits of entropy.
pub const DEFAULT_PASSWORD_LENGTH: usize = 40;

/// Why no password could be generated.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random number generator failed: {0}")]
pub struct RandomnessError(String);

/// A password of `length` characters drawn uniformly from letters and digits using `OsRng`
/// (`getrandom(2)`), by rejection sampling so that no character is more likely than another.
pub fn generate_password(length: usize) -> Result<SecretValue, RandomnessError> {
    // 248 = 4 * 62: bytes at or above it are rejected to keep the draw uniform.
    const LIMIT: u8 = 248;
    let mut out = String::with_capacity(length);
    let mut buffer = [0u8; 64];
    while out.len() < length {
        OsRng
            .try_fill_bytes(&mut buffer)
            .map_err(|e| RandomnessError(e.to_string()))?;
        for byte in buffer {
            if out.len() == length {
                break;
            }
            if byte < LIMIT {
                out.push(char::from(ALPHABET[usize::from(byte) % ALPHABET.len()]));
            }
        }
    }
    Ok(SecretValue::new(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn passwords_have_the_length_and_alphabet_asked_for() {
        let password = generate_password(DEFAULT_PASSWORD_LENGTH).unwrap();
        assert_eq!(password.expose().len(), DEFAULT_PASSWORD_LENGTH);
        assert!(password.expose().bytes().all(|b| ALPHABET.contains(&b)));
        assert_eq!(generate_password(0).unwrap().expose(), "");
        assert_eq!(generate_password(1000).unwrap().expose().len(), 1000);
    }

    #[test]
    fn passwords_differ_and_use_the_whole_alphabet() {
        let passwords: HashSet<String> = (0..100)
            .map(|_| {
                generate_password(DEFAULT_PASSWORD_LENGTH)
                    .unwrap()
                    .expose()
                    .to_owned()
            })
            .collect();
        assert_eq!(passwords.len(), 100);
        let used: HashSet<char> = passwords.iter().flat_map(|p| p.chars()).collect();
        assert_eq!(
            used.len(),
            ALPHABET.len(),
            "4000 draws cover all 62 symbols"
        );
    }
}
