//! The admin password and account passwords: argon2id PHC strings made
//! and checked by the process's one verifier ([`store::password`], shared
//! with the mail daemon: a few reused work buffers, a bounded queue), and
//! the checks a new password must pass before it is hashed.

use store::PasswordError;

/// Hashes a password the way the store does (argon2id, PHC string).
pub fn hash_password(pw: &str) -> Result<String, String> {
    store::password::hash(pw).map_err(|e| e.to_string())
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
pub fn check_new_password(pw: &str) -> Result<(), String> {
    if pw.is_empty() {
        return Err("the password is empty".into());
    }
    if pw.len() > store::accounts::MAX_PASSWORD {
        return Err(format!("the password is longer than {} bytes", store::accounts::MAX_PASSWORD));
    }
    if pw.chars().any(|c| c.is_control()) {
        return Err("the password contains control characters".into());
    }
    Ok(())
}
