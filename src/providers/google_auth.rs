//! Google service-account credentials: JSON key → RS256-signed JWT → OAuth access token,
//! cached per (client_email, scopes) and refreshed in the background before expiry.
//!
//! Pure parts: [`ServiceAccount::from_json`], [`assertion`] (the signed JWT; time is an
//! input) and [`parse_token_response`]. I/O at the edge: [`TokenSlot::run`] (one task per
//! slot) POSTs the assertion to the key's `token_uri` (`grant_type=urn:ietf:params:oauth:
//! grant-type:jwt-bearer`) and stores the token; the request path only reads
//! [`TokenSlot::current`], which never waits: no token yet (or only an expired one) is a
//! [`TokenError`] the caller turns into a 503.
//!
//! Invariants: the private key and tokens are never printed (`Debug` hides them; errors
//! carry Google's message, never the assertion). Slots live in a process-wide registry of
//! weak references keyed by (client_email, scopes): a config reload that keeps the same
//! service account finds the live slot and its token, and a slot's task stops once no
//! snapshot holds the slot any more.
//! Refresh: at 5 minutes before expiry (or halfway for tokens shorter than 10 minutes);
//! failures retry with backoff from 1 s to 60 s.

use crate::secret::Secret;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use parking_lot::{Mutex, RwLock};
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// Default OAuth scope for Vertex AI.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Lifetime asked for in the JWT (Google's maximum).
const JWT_LIFETIME: u64 = 3600;

/// Credential problems.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TokenError {
    /// The key file is not a service-account key.
    #[error("service account key: {0}")]
    BadKey(String),
    /// Signing failed.
    #[error("could not sign the service account JWT")]
    Sign,
    /// The token endpoint refused or answered nonsense.
    #[error("token endpoint: {0}")]
    Exchange(String),
    /// No valid token yet.
    #[error("no Google access token yet for {client_email}{}", last_error.as_ref().map(|e| format!(" (last attempt: {e})")).unwrap_or_default())]
    NotReady {
        /// Which account.
        client_email: String,
        /// Why the last refresh failed, when it did.
        last_error: Option<String>,
    },
}

/// A parsed service-account key.
#[derive(Clone)]
pub struct ServiceAccount {
    /// `client_email`.
    pub client_email: String,
    /// `private_key_id` (JWT `kid`).
    pub private_key_id: Option<String>,
    /// `token_uri`.
    pub token_uri: String,
    key: Arc<RsaKeyPair>,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .field("private_key", &"***")
            .finish()
    }
}

impl PartialEq for ServiceAccount {
    fn eq(&self, other: &Self) -> bool {
        self.client_email == other.client_email
            && self.private_key_id == other.private_key_id
            && self.token_uri == other.token_uri
            && Arc::ptr_eq(&self.key, &other.key)
    }
}

fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("-----"))
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

impl ServiceAccount {
    /// Reads a Google service-account JSON key (`type: service_account`, PKCS#8 PEM key).
    pub fn from_json(bytes: &[u8]) -> Result<ServiceAccount, TokenError> {
        let v: Value =
            serde_json::from_slice(bytes).map_err(|_| TokenError::BadKey("not JSON".into()))?;
        let field = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| TokenError::BadKey(format!("missing {k}")))
        };
        if v.get("type").and_then(Value::as_str) != Some("service_account") {
            return Err(TokenError::BadKey(
                "type must be \"service_account\"".into(),
            ));
        }
        let pem = field("private_key")?;
        let der =
            pem_to_der(&pem).ok_or_else(|| TokenError::BadKey("private_key is not PEM".into()))?;
        let key = RsaKeyPair::from_pkcs8(&der)
            .map_err(|_| TokenError::BadKey("private_key is not an RSA PKCS#8 key".into()))?;
        Ok(ServiceAccount {
            client_email: field("client_email")?,
            private_key_id: v
                .get("private_key_id")
                .and_then(Value::as_str)
                .map(str::to_owned),
            token_uri: v
                .get("token_uri")
                .and_then(Value::as_str)
                .unwrap_or("https://oauth2.googleapis.com/token")
                .to_owned(),
            key: Arc::new(key),
        })
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The signed JWT assertion for `scopes` (space-separated) at `now`.
pub fn assertion(sa: &ServiceAccount, scopes: &str, now: SystemTime) -> Result<Secret, TokenError> {
    let mut header = json!({"alg": "RS256", "typ": "JWT"});
    if let (Some(kid), Some(h)) = (&sa.private_key_id, header.as_object_mut()) {
        h.insert("kid".into(), json!(kid));
    }
    let iat = unix(now);
    let claims = json!({
        "iss": sa.client_email,
        "scope": scopes,
        "aud": sa.token_uri,
        "iat": iat,
        "exp": iat + JWT_LIFETIME,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut sig = vec![0u8; sa.key.public().modulus_len()];
    sa.key
        .sign(
            &RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            signing_input.as_bytes(),
            &mut sig,
        )
        .map_err(|_| TokenError::Sign)?;
    Ok(Secret::new(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(sig)
    )))
}

/// The form body POSTed to `token_uri`.
pub fn token_request_body(assertion: &Secret) -> String {
    format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={}",
        assertion.expose()
    )
}

/// A token endpoint answer: the token and its lifetime; or Google's error text.
pub fn parse_token_response(status: u16, body: &[u8]) -> Result<(Secret, Duration), TokenError> {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if status != 200 {
        let msg = v
            .get("error_description")
            .or_else(|| v.get("error"))
            .and_then(Value::as_str)
            .unwrap_or("no error message");
        return Err(TokenError::Exchange(format!("HTTP {status}: {msg}")));
    }
    let token = v
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| TokenError::Exchange("answer has no access_token".into()))?;
    let expires = v.get("expires_in").and_then(Value::as_u64).unwrap_or(3600);
    Ok((Secret::new(token), Duration::from_secs(expires)))
}

/// When to refresh a token fetched at `fetched` living `ttl`.
pub fn refresh_at(fetched: SystemTime, ttl: Duration) -> SystemTime {
    let lead = if ttl > Duration::from_secs(600) {
        Duration::from_secs(300)
    } else {
        ttl / 2
    };
    fetched + ttl.saturating_sub(lead)
}

#[derive(Debug, Clone)]
struct Token {
    value: Secret,
    expires: SystemTime,
}

/// One account+scopes' current token.
#[derive(Debug)]
pub struct TokenSlot {
    account: ServiceAccount,
    scopes: String,
    token: RwLock<Option<Token>>,
    last_error: RwLock<Option<String>>,
    refreshing: std::sync::atomic::AtomicBool,
}

impl TokenSlot {
    /// A slot without a token.
    pub fn new(account: ServiceAccount, scopes: &str) -> Self {
        Self {
            account,
            scopes: scopes.to_owned(),
            token: RwLock::new(None),
            last_error: RwLock::new(None),
            refreshing: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Starts the refresh task on the current Tokio runtime, once per slot (a slot kept
    /// across reloads keeps its one task); a no-op outside a runtime.
    pub fn ensure_refreshing(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !self.refreshing.swap(true, Ordering::AcqRel) {
            rt.spawn(TokenSlot::run(Arc::downgrade(self), HttpClient::new()));
        }
    }

    /// The token valid at `now`, without waiting.
    pub fn current(&self, now: SystemTime) -> Result<Secret, TokenError> {
        match &*self.token.read() {
            Some(t) if t.expires > now + Duration::from_secs(10) => Ok(t.value.clone()),
            _ => Err(TokenError::NotReady {
                client_email: self.account.client_email.clone(),
                last_error: self.last_error.read().clone(),
            }),
        }
    }

    /// Stores a fetched token (the refresh task's result; also for tests).
    pub fn store(&self, value: Secret, fetched: SystemTime, ttl: Duration) {
        *self.token.write() = Some(Token {
            value,
            expires: fetched + ttl,
        });
        *self.last_error.write() = None;
    }

    /// One exchange at the token endpoint.
    pub async fn fetch(&self, client: &HttpClient) -> Result<(Secret, Duration), TokenError> {
        let jwt = assertion(&self.account, &self.scopes, SystemTime::now())?;
        let (status, body) = client
            .post_form(&self.account.token_uri, token_request_body(&jwt))
            .await?;
        parse_token_response(status, &body)
    }

    /// Keeps the slot's token fresh until the slot is dropped everywhere.
    pub async fn run(slot: Weak<TokenSlot>, client: HttpClient) {
        let mut backoff = Duration::from_secs(1);
        loop {
            let Some(s) = slot.upgrade() else { return };
            let wait = match s.fetch(&client).await {
                Ok((token, ttl)) => {
                    let now = SystemTime::now();
                    s.store(token, now, ttl);
                    backoff = Duration::from_secs(1);
                    refresh_at(now, ttl)
                        .duration_since(now)
                        .unwrap_or(Duration::from_secs(1))
                }
                Err(e) => {
                    tracing::warn!(client_email = %s.account.client_email, error = %e, "Google token refresh failed");
                    *s.last_error.write() = Some(e.to_string());
                    let w = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                    w
                }
            };
            drop(s);
            // Wake at least every 30 s so a dropped slot ends its task promptly.
            let mut left = wait;
            while !left.is_zero() {
                let step = left.min(Duration::from_secs(30));
                tokio::time::sleep(step).await;
                left -= step;
                if slot.strong_count() == 0 {
                    return;
                }
            }
        }
    }
}

type Registry = Mutex<HashMap<(String, String), Weak<TokenSlot>>>;

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The live slot for this account and scopes (so a reload keeps the token it has), or a
/// new one without a token. Starts nothing: the config compiler calls this and must stay
/// free of tasks and I/O; whoever installs the snapshot starts the refresh
/// ([`crate::providers::gemini::start_token_refresh`]). A changed key for the same email
/// (rotation) gets a new slot.
pub fn slot_for(account: ServiceAccount, scopes: &str) -> Arc<TokenSlot> {
    let key = (account.client_email.clone(), scopes.to_owned());
    let mut reg = registry().lock();
    reg.retain(|_, w| w.strong_count() > 0);
    if let Some(live) = reg.get(&key).and_then(Weak::upgrade) {
        let same_key = live.account.private_key_id == account.private_key_id
            && live.account.token_uri == account.token_uri;
        if same_key {
            return live;
        }
    }
    let slot = Arc::new(TokenSlot::new(account, scopes));
    reg.insert(key, Arc::downgrade(&slot));
    slot
}

/// A small HTTP(S) client for the token endpoint.
#[derive(Clone)]
pub struct HttpClient {
    inner: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        http_body_util::Full<bytes::Bytes>,
    >,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpClient")
    }
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClient {
    /// HTTPS (webpki roots) or plain HTTP, HTTP/1.1.
    pub fn new() -> Self {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        Self {
            inner:
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build(https),
        }
    }

    /// POSTs a form; returns status and body (bounded to 1 MiB, 10 s timeout).
    pub async fn post_form(&self, uri: &str, body: String) -> Result<(u16, Vec<u8>), TokenError> {
        use http_body_util::BodyExt as _;
        let req = hyper::Request::post(uri)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .map_err(|_| TokenError::Exchange(format!("bad token_uri {uri:?}")))?;
        let fut = async {
            let resp = self
                .inner
                .request(req)
                .await
                .map_err(|e| TokenError::Exchange(format!("request failed: {e}")))?;
            let status = resp.status().as_u16();
            let limited = http_body_util::Limited::new(resp.into_body(), 1 << 20);
            let body = limited
                .collect()
                .await
                .map_err(|e| TokenError::Exchange(format!("reading the answer failed: {e}")))?
                .to_bytes();
            Ok((status, body.to_vec()))
        };
        tokio::time::timeout(Duration::from_secs(10), fut)
            .await
            .map_err(|_| TokenError::Exchange("timed out after 10s".into()))?
    }
}

#[cfg(test)]
mod tests;
