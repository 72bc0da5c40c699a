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
        let parsers: [(
            fn(&[u8]) -> jsonwebtoken::errors::Result<DecodingKey>,
            Algorithm,
        ); 3] = [
            (DecodingKey::from_rsa_pem, Algorithm::RS256),
            (DecodingKey::from_ec_pem, Algorithm::ES256),
            (DecodingKey::from_ed_pem, Algorithm::EdDSA),
        ];
        parsers
            .into_iter()
            .find_map(|(parse, algorithm)| parse(&pem).ok().map(|key| Self { key, algorithm }))
            .ok_or_else(|| {
                ConfigError::new(name, "not a PEM RSA, EC (P-256) or Ed25519 public key")
            })
    }
}
