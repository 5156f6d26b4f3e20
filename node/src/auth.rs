//! Staff log-in: Argon2 password hashes, bearer tokens and which role may do what.
//!
//! A token is `hex(account|roles|expiry_ms).hex(HMAC-SHA256)`, keyed by a secret kept in
//! the node's data directory; it survives restarts and needs no session table.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use schema::vocab::Role;
use sha2::{Digest, Sha256};

/// The claims a valid token carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub account: String,
    pub roles: Vec<Role>,
    pub expires_ms: i64,
}

fn hmac(key: &[u8; 32], message: &[u8]) -> [u8; 32] {
    let mut ipad = [0x36u8; 64];
    let mut opad = [0x5cu8; 64];
    for (i, k) in key.iter().enumerate() {
        ipad[i] ^= k;
        opad[i] ^= k;
    }
    let inner = Sha256::new().chain_update(ipad).chain_update(message).finalize();
    Sha256::new().chain_update(opad).chain_update(inner).finalize().into()
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes from hex of any even length.
pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

pub fn issue(key: &[u8; 32], claims: &Claims) -> String {
    let roles: Vec<&str> = claims.roles.iter().map(|r| r.code()).collect();
    let payload = format!("{}|{}|{}", claims.account, roles.join(","), claims.expires_ms);
    format!("{}.{}", hex(payload.as_bytes()), hex(&hmac(key, payload.as_bytes())))
}

/// Why a token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Malformed,
    BadSignature,
    Expired,
}

pub fn verify(key: &[u8; 32], token: &str, now_ms: i64) -> Result<Claims, TokenError> {
    let (payload_hex, mac_hex) = token.split_once('.').ok_or(TokenError::Malformed)?;
    let payload = unhex(payload_hex).ok_or(TokenError::Malformed)?;
    let mac = unhex(mac_hex).ok_or(TokenError::Malformed)?;
    let expected = hmac(key, &payload);
    // Constant-time comparison.
    if mac.len() != 32 || mac.iter().zip(expected.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) != 0 {
        return Err(TokenError::BadSignature);
    }
    let payload = String::from_utf8(payload).map_err(|_| TokenError::Malformed)?;
    let mut parts = payload.split('|');
    let (Some(account), Some(roles), Some(exp), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(TokenError::Malformed);
    };
    let expires_ms: i64 = exp.parse().map_err(|_| TokenError::Malformed)?;
    if now_ms >= expires_ms {
        return Err(TokenError::Expired);
    }
    let roles = roles
        .split(',')
        .filter(|r| !r.is_empty())
        .map(|r| r.parse::<Role>().map_err(|_| TokenError::Malformed))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Claims { account: account.to_owned(), roles, expires_ms })
}

/// Hashes a password with Argon2id (default parameters) and a random salt.
pub fn hash_password(password: &str, salt_bytes: &[u8; 16]) -> Result<String, String> {
    let salt = SaltString::encode_b64(salt_bytes).map_err(|e| e.to_string())?;
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
}

pub fn check_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// Roles allowed to perform each operation kind (and `register`, `edit_archive`).
pub fn allowed_roles(kind: &str) -> &'static [Role] {
    use Role::*;
    match kind {
        "register" | "edit_archive" => &[Manager, Keeper],
        "bind_tag" => &[Manager, Keeper, Filler],
        "receive_empty" => &[Manager, Keeper, Filler, Driver],
        "pre_fill_check" | "fill" | "post_fill_check" => &[Manager, Filler],
        "store_full" => &[Manager, Keeper, Filler],
        "dispatch" => &[Manager, Keeper, Driver],
        "deliver" => &[Manager, Driver],
        "return" => &[Manager, Driver, Keeper],
        "repair" => &[Manager, Repairer],
        "send_to_inspection" => &[Manager, Repairer, Filler, Keeper, Inspector],
        "inspection_result" | "scrap" => &[Manager, Inspector],
        "regulator_finding" => &[Regulator],
        "correction" => &[Manager],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_and_reject_tampering_and_expiry() {
        let key = [9u8; 32];
        let claims = Claims { account: "demo-filler".into(), roles: vec![Role::Filler], expires_ms: 2_000 };
        let t = issue(&key, &claims);
        assert_eq!(verify(&key, &t, 1_000), Ok(claims.clone()));
        assert_eq!(verify(&key, &t, 2_000), Err(TokenError::Expired));
        assert_eq!(verify(&[8u8; 32], &t, 1_000), Err(TokenError::BadSignature));
        // Elevating the role in the payload breaks the MAC.
        let forged_payload = hex(b"demo-filler|manager|2000");
        let forged = format!("{forged_payload}.{}", t.split_once('.').unwrap().1);
        assert_eq!(verify(&key, &forged, 1_000), Err(TokenError::BadSignature));
        assert_eq!(verify(&key, "garbage", 1_000), Err(TokenError::Malformed));
        assert_eq!(verify(&key, "zz.zz", 1_000), Err(TokenError::Malformed));
    }

    #[test]
    fn passwords_hash_and_check() {
        let h = hash_password("demo-pass", &[1; 16]).unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(check_password("demo-pass", &h));
        assert!(!check_password("demo-pas", &h));
        assert!(!check_password("demo-pass", "not a hash"));
    }

    #[test]
    fn hmac_matches_rfc4231_case_2_shape() {
        // RFC 4231 test case 2 uses a 4-byte key; ours pads a 32-byte key the same way.
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        assert_eq!(
            hex(&hmac(&key, b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
