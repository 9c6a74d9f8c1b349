//! The admin password and account passwords: argon2id PHC strings made
//! and checked by the process's one verifier ([`store::password`], shared
//! with the mail daemon: a few reused work buffers, a bounded queue), and
//! the checks a new password must pass before it is hashed.

use store::PasswordError;

/// Why a new password was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NewPasswordError {
    #[error("the password is empty")]
    Empty,
    #[error("the password is longer than {} bytes", store::accounts::MAX_PASSWORD)]
    TooLong,
    #[error("the password contains control characters")]
    Control,
    #[error("the passwords differ")]
    Differ,
}

/// Hashes a password the way the store does (argon2id, PHC string).
pub fn hash_password(pw: &str) -> Result<String, PasswordError> {
    store::password::hash(pw)
}

/// Checks `pw` against `hash`: Ok(false) for a wrong password, an error
/// for a hash that cannot be checked or when too many checks are under
/// way ([`PasswordError::Busy`]: try again). Blocks for the argon2 work.
pub fn check_password(hash: &str, pw: &str) -> Result<bool, PasswordError> {
    store::password::verify(hash, pw)
}

/// Whether `pw` matches `hash`; false also when it cannot be checked.
pub fn verify_password(hash: &str, pw: &str) -> bool {
    check_password(hash, pw).unwrap_or(false)
}

/// Checks a new password before it is hashed.
pub fn check_new_password(pw: &str) -> Result<(), NewPasswordError> {
    if pw.is_empty() {
        return Err(NewPasswordError::Empty);
    }
    if pw.len() > store::accounts::MAX_PASSWORD {
        return Err(NewPasswordError::TooLong);
    }
    if pw.chars().any(|c| c.is_control()) {
        return Err(NewPasswordError::Control);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_passwords_are_checked() {
        assert_eq!(check_new_password(""), Err(NewPasswordError::Empty));
        assert_eq!(check_new_password(&"x".repeat(store::accounts::MAX_PASSWORD + 1)), Err(NewPasswordError::TooLong));
        assert_eq!(check_new_password("a\tb"), Err(NewPasswordError::Control));
        assert_eq!(check_new_password("correct horse"), Ok(()));
    }
}
