//! HTTPS with HTTP/2: many tabs of one browser share one connection, instead
//! of hitting HTTP/1.1's six-connections-per-host limit.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::ConfigError;

/// Builds the TLS configuration from PEM files (ALPN `h2` and `http/1.1` are
/// added by actix-http).
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<ServerConfig, ConfigError> {
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            ConfigError::new(
                "NOTIFY_TLS_CERT_FILE",
                format!("{}: {e}", cert_file.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(ConfigError::new(
            "NOTIFY_TLS_CERT_FILE",
            "no certificate in the file",
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
        ConfigError::new(
            "NOTIFY_TLS_KEY_FILE",
            format!("{}: {e}", key_file.display()),
        )
    })?;
    ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| ConfigError::new("NOTIFY_TLS_KEY_FILE", e.to_string()))
}
