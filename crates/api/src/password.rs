//! Passwords: argon2id with a server-side pepper, run off the async workers on a bounded pool.
//!
//! The pepper is a key derived from the master key (outside the data directory), given to
//! argon2 as its secret input: a copy of the journal or a snapshot alone does not allow an
//! offline guess at any password. The engine stores only the PHC string.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Shortest and longest password accepted (in characters; length beats composition rules).
pub const PASSWORD_LEN_MIN: usize = 10;
pub const PASSWORD_LEN_MAX: usize = 256;

/// argon2id cost; the default is OWASP's (19 MiB, 2 passes, 1 lane).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cost {
    pub memory_kib: u32,
    pub passes: u32,
}

impl Default for Cost {
    fn default() -> Cost {
        Cost {
            memory_kib: 19 * 1024,
            passes: 2,
        }
    }
}

/// Hashes and verifies on the blocking pool, at most `parallel` at a time (each uses
/// `memory_kib` of memory, so the bound is also a memory bound).
#[derive(Clone)]
pub struct Hasher {
    pepper: Arc<[u8; 32]>,
    cost: Cost,
    permits: Arc<Semaphore>,
    /// A hash of a random password, verified when the email is unknown so that the answer takes
    /// as long as for a known one.
    dummy: Arc<String>,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hasher({:?})", self.cost)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswordError {
    #[error("the password must be {PASSWORD_LEN_MIN} to {PASSWORD_LEN_MAX} characters")]
    Length,
    #[error("password hashing is unavailable")]
    Unavailable,
}

fn argon(pepper: &[u8], cost: Cost) -> Argon2<'_> {
    let params = Params::new(cost.memory_kib, cost.passes, 1, None).expect("valid argon2 parameters");
    Argon2::new_with_secret(pepper, Algorithm::Argon2id, Version::V0x13, params)
        .expect("a 32-byte pepper is a valid argon2 secret")
}

fn hash_now(pepper: &[u8], cost: Cost, password: &str) -> String {
    let salt = SaltString::encode_b64(&crate::vault::random_bytes::<16>()).expect("16 bytes make a salt");
    argon(pepper, cost)
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashing cannot fail with valid parameters")
        .to_string()
}

fn verify_now(pepper: &[u8], cost: Cost, phc: &str, password: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        argon(pepper, cost)
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

pub fn check_length(password: &str) -> Result<(), PasswordError> {
    let n = password.chars().count();
    if (PASSWORD_LEN_MIN..=PASSWORD_LEN_MAX).contains(&n) {
        Ok(())
    } else {
        Err(PasswordError::Length)
    }
}

impl Hasher {
    pub fn new(pepper: [u8; 32], cost: Cost, parallel: usize) -> Hasher {
        let dummy = hash_now(&pepper, cost, &hex::encode(crate::vault::random_bytes::<16>()));
        Hasher {
            pepper: Arc::new(pepper),
            cost,
            permits: Arc::new(Semaphore::new(parallel.max(1))),
            dummy: Arc::new(dummy),
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&[u8], Cost) -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| PasswordError::Unavailable)?;
        let pepper = self.pepper.clone();
        let cost = self.cost;
        tokio::task::spawn_blocking(move || f(&pepper[..], cost))
            .await
            .map_err(|_| PasswordError::Unavailable)
    }

    /// The PHC string for a new password (length checked first).
    pub async fn hash(&self, password: &str) -> Result<String, PasswordError> {
        check_length(password)?;
        let p = password.to_owned();
        self.blocking(move |pepper, cost| hash_now(pepper, cost, &p))
            .await
    }

    /// Whether `password` matches `phc`; with `None` (unknown user) it spends the same time and
    /// answers false.
    pub async fn verify(&self, phc: Option<&str>, password: &str) -> Result<bool, PasswordError> {
        let known = phc.is_some();
        let phc = phc.map_or_else(|| self.dummy.as_str().to_owned(), str::to_owned);
        let p = password.to_owned();
        let ok = self
            .blocking(move |pepper, cost| verify_now(pepper, cost, &phc, &p))
            .await?;
        Ok(ok && known)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: Cost = Cost {
        memory_kib: 64,
        passes: 1,
    };

    #[tokio::test]
    async fn password_hashes_verify_only_their_password_and_pepper() {
        let h = Hasher::new([7; 32], CHEAP, 2);
        let phc = h.hash("correct horse battery").await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$"), "{phc}");
        assert!(!phc.contains("correct"));
        assert!(h.verify(Some(&phc), "correct horse battery").await.unwrap());
        assert!(!h.verify(Some(&phc), "correct horse batterY").await.unwrap());
        // Another pepper (another master key) cannot verify it: the journal alone is useless.
        let other = Hasher::new([8; 32], CHEAP, 1);
        assert!(!other.verify(Some(&phc), "correct horse battery").await.unwrap());
        // Salted: the same password hashes differently.
        assert_ne!(phc, h.hash("correct horse battery").await.unwrap());
        // Unknown user: false, whatever the password.
        assert!(!h.verify(None, "correct horse battery").await.unwrap());
        assert!(!h.verify(Some("not a phc string"), "x").await.unwrap());
    }

    #[tokio::test]
    async fn password_length_bounds() {
        let h = Hasher::new([1; 32], CHEAP, 1);
        assert_eq!(h.hash("short").await, Err(PasswordError::Length));
        assert_eq!(h.hash(&"x".repeat(257)).await, Err(PasswordError::Length));
        assert!(h.hash(&"é".repeat(10)).await.is_ok());
    }
}
