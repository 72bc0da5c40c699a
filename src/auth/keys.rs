//! Keys given directly in the settings: an HS256 secret or a PEM public key.

use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey};

use crate::config::ConfigError;

/// One verification key and the only algorithm it accepts.
pub struct VerifyKey {
    /// The key itself.
    pub key: DecodingKey,
    /// Fixed by the key, never by the token: no algorithm switching.
    pub algorithm: Algorithm,
}

impl VerifyKey {
    /// An HS256 shared secret.
    pub fn secret(secret: &str) -> Self {
        Self {
            key: DecodingKey::from_secret(secret.as_bytes()),
            algorithm: Algorithm::HS256,
        }
    }

    /// A PEM public key; its type picks RS256, ES256 (P-256) or EdDSA (Ed25519).
    /// `name` is the setting that named the file, for the error.
    pub fn pem_file(name: &'static str, path: &Path) -> Result<Self, ConfigError> {
        let pem = std::fs::read(path)
            .map_err(|e| ConfigError::new(name, format!("cannot read {}: {e}", path.display())))?;
        DecodingKey::from_rsa_pem(&pem)
            .map(|key| (key, Algorithm::RS256))
            .or_else(|_| DecodingKey::from_ec_pem(&pem).map(|key| (key, Algorithm::ES256)))
            .or_else(|_| DecodingKey::from_ed_pem(&pem).map(|key| (key, Algorithm::EdDSA)))
            .map(|(key, algorithm)| Self { key, algorithm })
            .map_err(|_| ConfigError::new(name, "not a PEM RSA, EC (P-256) or Ed25519 public key"))
    }
}
