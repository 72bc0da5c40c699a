//! The identity provider's JWK set: fetched from a URL or read from a file,
//! refreshed in the background, looked up by `kid` without blocking.
//!
//! Verification reads an immutable snapshot (`Arc<KeySet>` behind a lock
//! held only to clone the `Arc`). One background task fetches: every
//! `refresh`, every few seconds while no set was ever loaded, and when a
//! token names an unknown `kid` — at most once per [`UNKNOWN_KID_INTERVAL`],
//! and every request that meets an unknown `kid` meanwhile waits for that
//! same fetch. A failed fetch keeps the last good set.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{watch, Notify};

use super::keys::VerifyKey;
use super::AuthError;
use crate::config::ConfigError;
use crate::metrics::metrics;

const NAME: &str = "NOTIFY_JWT_JWKS_URL";

/// An unknown `kid` refetches the set at most this often, so a flood of
/// made-up `kid`s cannot turn this node into a load generator for the IdP.
pub const UNKNOWN_KID_INTERVAL: Duration = Duration::from_secs(30);
/// Retry delay while no set has ever been loaded (the node is not ready).
const UNLOADED_RETRY: Duration = Duration::from_secs(3);
/// Retry delay after a failed refresh of a node that has a set.
const FAILED_RETRY: Duration = Duration::from_secs(30);
/// Whole-request bound for one fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest accepted JWK set; real ones are a few KiB.
const MAX_SET_BYTES: usize = 1 << 20;
/// Most keys kept from one set.
const MAX_KEYS: usize = 64;

/// Usable keys by `kid`.
type KeySet = HashMap<String, Arc<VerifyKey>>;

/// Why a fetch did not produce a set.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("cannot read the file: {0}")]
    Read(#[from] std::io::Error),
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("larger than {MAX_SET_BYTES} bytes")]
    TooLarge,
    #[error("not a JWK set: {0}")]
    Json(#[from] serde_json::Error),
    #[error("holds no usable signing key (RS256, ES256 or EdDSA with a kid)")]
    NoUsableKey,
}

enum Source {
    Url {
        url: reqwest::Url,
        client: reqwest::Client,
    },
    File(PathBuf),
}

/// The on-demand refetch's state.
#[derive(Default)]
struct OnDemand {
    /// When the last on-demand fetch was asked for.
    last: Option<Instant>,
    /// Asked for and not answered yet.
    pending: bool,
}

/// A JWK set kept fresh in the background.
pub struct Jwks {
    source: Source,
    refresh: Duration,
    /// `None` until a set was loaded once; never `None` again after.
    keys: RwLock<Option<Arc<KeySet>>>,
    on_demand: Mutex<OnDemand>,
    /// Counts finished fetch attempts, so waiters can tell one has ended.
    attempts: watch::Sender<u64>,
    wake: Arc<Notify>,
}

enum Lookup {
    NotLoaded,
    Unknown,
    Found(Arc<VerifyKey>),
}

impl Jwks {
    /// Parses the setting; fetches nothing yet (see [`Jwks::start`]).
    pub fn new(location: &str, refresh: Duration) -> Result<Self, ConfigError> {
        let source = if let Some((scheme, _)) = location.split_once("://") {
            if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
                return Err(ConfigError::new(
                    NAME,
                    "must be an http(s):// URL or a file path",
                ));
            }
            let url = reqwest::Url::parse(location)
                .map_err(|e| ConfigError::new(NAME, format!("not a valid URL: {e}")))?;
            let client = reqwest::Client::builder()
                .timeout(FETCH_TIMEOUT)
                .connect_timeout(FETCH_TIMEOUT)
                .redirect(reqwest::redirect::Policy::limited(3))
                .user_agent(concat!("campusbite-notify/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| ConfigError::new(NAME, format!("HTTP client: {e}")))?;
            Source::Url { url, client }
        } else if location.is_empty() {
            return Err(ConfigError::new(NAME, "is empty"));
        } else {
            Source::File(PathBuf::from(location))
        };
        Ok(Self {
            source,
            refresh,
            keys: RwLock::new(None),
            on_demand: Mutex::new(OnDemand::default()),
            attempts: watch::Sender::new(0),
            wake: Arc::new(Notify::new()),
        })
    }

    /// Makes the first attempt, then keeps the set fresh on a background
    /// task until `self` is dropped. A file that cannot be loaded stops
    /// start-up; an unreachable URL leaves the node not ready while it retries.
    pub async fn start(self: &Arc<Self>) -> Result<(), ConfigError> {
        if let Err(e) = self.attempt().await {
            match &self.source {
                Source::File(path) => {
                    return Err(ConfigError::new(NAME, format!("{}: {e}", path.display())))
                }
                Source::Url { .. } => {
                    tracing::warn!(error = %e, "JWK set not loaded yet; not ready, retrying")
                }
            }
        }
        tokio::spawn(refresh_loop(Arc::downgrade(self), self.wake.clone()));
        Ok(())
    }

    /// Whether a set has been loaded (the node can check user tokens).
    pub fn is_loaded(&self) -> bool {
        self.snapshot().is_some()
    }

    /// The key named `kid`. An unknown `kid` waits for one refetch unless
    /// one ran within [`UNKNOWN_KID_INTERVAL`]; a known one never waits.
    pub async fn key(&self, kid: &str) -> Result<Arc<VerifyKey>, AuthError> {
        match self.lookup(kid) {
            Lookup::Found(key) => return Ok(key),
            Lookup::NotLoaded => return Err(AuthError::KeysUnavailable),
            Lookup::Unknown => {}
        }
        // Subscribed before asking, so the answer cannot be missed.
        let mut attempts = self.attempts.subscribe();
        if !self.ask_refetch() {
            return Err(AuthError::UnknownKeyId);
        }
        let deadline = tokio::time::Instant::now() + FETCH_TIMEOUT + Duration::from_secs(1);
        while let Ok(Ok(())) = tokio::time::timeout_at(deadline, attempts.changed()).await {
            if let Lookup::Found(key) = self.lookup(kid) {
                return Ok(key);
            }
            if !self.lock_on_demand().pending {
                break;
            }
        }
        Err(AuthError::UnknownKeyId)
    }

    fn snapshot(&self) -> Option<Arc<KeySet>> {
        self.keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn lookup(&self, kid: &str) -> Lookup {
        match self.snapshot() {
            None => Lookup::NotLoaded,
            Some(set) => set.get(kid).cloned().map_or(Lookup::Unknown, Lookup::Found),
        }
    }

    fn lock_on_demand(&self) -> std::sync::MutexGuard<'_, OnDemand> {
        self.on_demand
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Asks the task for a fetch; `false` when the rate limit says no.
    fn ask_refetch(&self) -> bool {
        let mut state = self.lock_on_demand();
        if state.pending {
            return true;
        }
        if state
            .last
            .is_some_and(|t| t.elapsed() < UNKNOWN_KID_INTERVAL)
        {
            return false;
        }
        state.last = Some(Instant::now());
        state.pending = true;
        self.wake.notify_one();
        true
    }

    /// One fetch; installs the set when it is good.
    async fn attempt(&self) -> Result<(), FetchError> {
        // A request that arrives during this fetch is answered by the next one.
        let answering = self.lock_on_demand().pending;
        let m = metrics();
        m.jwks_refreshes.increment(1);
        let result = self.fetch().await.and_then(|body| parse_set(&body));
        let outcome = match result {
            Ok(set) => {
                m.jwks_keys.set(set.len() as f64);
                m.jwks_last_success.set(crate::auth::now_unix() as f64);
                let changed = self.snapshot().is_none_or(|old| {
                    old.len() != set.len() || set.keys().any(|kid| !old.contains_key(kid))
                });
                if changed {
                    let mut kids: Vec<&str> = set.keys().map(String::as_str).collect();
                    kids.sort_unstable();
                    tracing::info!(kids = ?kids, "JWK set loaded");
                }
                *self
                    .keys
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Arc::new(set));
                Ok(())
            }
            Err(e) => {
                m.jwks_failures.increment(1);
                Err(e)
            }
        };
        if answering {
            self.lock_on_demand().pending = false;
        }
        self.attempts.send_modify(|n| *n += 1);
        outcome
    }

    async fn fetch(&self) -> Result<Vec<u8>, FetchError> {
        match &self.source {
            Source::File(path) => {
                use tokio::io::AsyncReadExt;
                let file = tokio::fs::File::open(path).await?;
                let mut body = Vec::new();
                file.take(MAX_SET_BYTES as u64 + 1)
                    .read_to_end(&mut body)
                    .await?;
                if body.len() > MAX_SET_BYTES {
                    return Err(FetchError::TooLarge);
                }
                Ok(body)
            }
            Source::Url { url, client } => {
                let mut response = client
                    .get(url.clone())
                    .header(reqwest::header::ACCEPT, "application/json")
                    .send()
                    .await?;
                if !response.status().is_success() {
                    return Err(FetchError::Status(response.status().as_u16()));
                }
                if response
                    .content_length()
                    .is_some_and(|n| n > MAX_SET_BYTES as u64)
                {
                    return Err(FetchError::TooLarge);
                }
                let mut body = Vec::new();
                while let Some(chunk) = response.chunk().await? {
                    if body.len() + chunk.len() > MAX_SET_BYTES {
                        return Err(FetchError::TooLarge);
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(body)
            }
        }
    }
}

async fn refresh_loop(jwks: Weak<Jwks>, wake: Arc<Notify>) {
    let mut delay = match jwks.upgrade() {
        Some(j) if j.is_loaded() => j.refresh,
        Some(_) => UNLOADED_RETRY,
        None => return,
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = wake.notified() => {}
        }
        let Some(jwks) = jwks.upgrade() else { return };
        delay = match jwks.attempt().await {
            Ok(()) => jwks.refresh,
            Err(e) if jwks.is_loaded() => {
                tracing::warn!(error = %e, "JWK set refresh failed; keeping the last good set");
                jwks.refresh.min(FAILED_RETRY)
            }
            Err(e) => {
                tracing::warn!(error = %e, "JWK set not loaded yet; not ready, retrying");
                UNLOADED_RETRY
            }
        };
    }
}

/// The usable signing keys of a JWK set. Keys this node cannot use
/// (encryption keys, other algorithms, no `kid`) are skipped, not fatal:
/// identity providers publish such keys beside their signing keys.
fn parse_set(body: &[u8]) -> Result<KeySet, FetchError> {
    #[derive(Deserialize)]
    struct RawSet {
        keys: Vec<Value>,
    }
    let raw: RawSet = serde_json::from_slice(body)?;
    let mut set = KeySet::new();
    for value in raw.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            continue;
        };
        let Some((kid, key)) = usable(&jwk) else {
            continue;
        };
        if set.len() < MAX_KEYS {
            // The first of two keys with one kid wins; the IdP's order is its preference.
            set.entry(kid).or_insert_with(|| Arc::new(key));
        }
    }
    if set.is_empty() {
        return Err(FetchError::NoUsableKey);
    }
    Ok(set)
}

/// A signing key with a `kid` whose declared algorithm (or, when it
/// declares none, its key type) is RS256, ES256 or EdDSA.
fn usable(jwk: &Jwk) -> Option<(String, VerifyKey)> {
    let kid = jwk.common.key_id.clone().filter(|k| !k.is_empty())?;
    if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        _ => return None,
    };
    let declared = match jwk.common.key_algorithm {
        None => by_type,
        Some(KeyAlgorithm::RS256) => Algorithm::RS256,
        Some(KeyAlgorithm::ES256) => Algorithm::ES256,
        Some(KeyAlgorithm::EdDSA) => Algorithm::EdDSA,
        Some(_) => return None,
    };
    if declared != by_type {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some((
        kid,
        VerifyKey {
            key,
            algorithm: declared,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const RSA_N: &str = "u1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0_IzW7yWR7QkrmBL7jTKEn5u-qKhbwKfBstIs-bMY2Zkp18gnTxKLxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW_VDL5AaWTg0nLVkjRo9z-40RQzuVaE8AkAFmxZzow3x-VJYKdjykkJ0iT9wCS0DRTXu269V264Vf_3jvredZiKRkgwlL9xNAwxXFg0x_XFw005UWVRIkdgcKWTjpBP2dPwVZ4WWC-9aGVd-Gyn1o0CLelf4rEjGoXbAAEgAqeGUxrcIlbjXfbcmw";

    #[test]
    fn a_set_keeps_its_signing_keys_and_skips_the_rest() {
        let body = json!({"keys": [
            {"kty": "RSA", "kid": "r", "alg": "RS256", "use": "sig", "n": RSA_N, "e": "AQAB"},
            {"kty": "RSA", "kid": "no-alg", "n": RSA_N, "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": RSA_N, "e": "AQAB"},
            {"kty": "RSA", "kid": "ps", "alg": "PS256", "n": RSA_N, "e": "AQAB"},
            {"kty": "RSA", "kid": "liar", "alg": "ES256", "n": RSA_N, "e": "AQAB"},
            {"kty": "RSA", "n": RSA_N, "e": "AQAB"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "XYZ", "kid": "odd"},
        ]});
        let set = parse_set(body.to_string().as_bytes()).unwrap();
        let mut kids: Vec<&str> = set.keys().map(String::as_str).collect();
        kids.sort_unstable();
        assert_eq!(kids, ["no-alg", "r"]);
        assert_eq!(set["r"].algorithm, Algorithm::RS256);
    }

    #[test]
    fn a_set_without_a_usable_key_is_an_error() {
        for body in [
            json!({"keys": []}),
            json!({"keys": [{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]}),
        ] {
            assert!(matches!(
                parse_set(body.to_string().as_bytes()),
                Err(FetchError::NoUsableKey)
            ));
        }
        assert!(matches!(parse_set(b"[]"), Err(FetchError::Json(_))));
    }

    fn rsa_jwk(kid: &str) -> Value {
        json!({"kty": "RSA", "kid": kid, "alg": "RS256", "n": RSA_N, "e": "AQAB"})
    }

    #[tokio::test]
    async fn an_unknown_kid_refetches_once_per_interval() {
        let path = std::env::temp_dir().join(format!(
            "campusbite-notify-jwks-{}-{}.json",
            std::process::id(),
            crate::auth::now_unix()
        ));
        std::fs::write(&path, json!({"keys": [rsa_jwk("a")]}).to_string()).unwrap();
        let jwks = Arc::new(Jwks::new(path.to_str().unwrap(), Duration::from_secs(3600)).unwrap());
        jwks.start().await.unwrap();
        let attempts = || *jwks.attempts.borrow();
        assert_eq!(attempts(), 1);

        assert!(jwks.key("a").await.is_ok());
        assert_eq!(attempts(), 1, "a known kid fetched");
        std::fs::write(
            &path,
            json!({"keys": [rsa_jwk("a"), rsa_jwk("b")]}).to_string(),
        )
        .unwrap();
        assert!(jwks.key("b").await.is_ok(), "a new key after one refetch");
        assert_eq!(attempts(), 2);
        assert!(matches!(jwks.key("c").await, Err(AuthError::UnknownKeyId)));
        assert_eq!(attempts(), 2, "refetched within the interval");

        // The file going away keeps the last good set.
        std::fs::remove_file(&path).unwrap();
        assert!(jwks.attempt().await.is_err());
        assert!(jwks.key("b").await.is_ok());
    }

    #[test]
    fn only_http_urls_and_paths_are_accepted() {
        assert!(Jwks::new(
            "https://idp.example/.well-known/jwks.json",
            Duration::from_secs(60)
        )
        .is_ok());
        assert!(Jwks::new("/etc/jwks.json", Duration::from_secs(60)).is_ok());
        assert!(Jwks::new("ftp://idp.example/jwks", Duration::from_secs(60)).is_err());
        assert!(Jwks::new("http://", Duration::from_secs(60)).is_err());
        assert!(Jwks::new("", Duration::from_secs(60)).is_err());
    }
}
