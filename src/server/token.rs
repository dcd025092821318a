//! The attempt token: what the router-level exchange decided for a fallback-chain request,
//! signed, so the upstream-level attempt streams act on that decision and never on names a
//! caller supplies (endpoint metadata, headers, dynamic metadata are all caller-controlled
//! for a raw gRPC client).
//!
//! The router-level exchange puts the token in dynamic metadata (`io.tollgate.attempt_token`);
//! Envoy forwards the namespace to the upstream-level filter of every attempt
//! (`metadata_options.forwarding_namespaces`), which reads but never consumes it, so every
//! retry still has it (a header removed by attempt 1 would be gone for attempt 2).
//!
//! Form: `v1.<base64url(JSON grant)>.<base64url(HMAC-SHA256 over "v1.<payload>")>`. The key is
//! derived from the per-deployment secret (`HMAC(secret, "tollgate attempt token v1")`), so
//! every replica accepts another's tokens, or is per-process random without a secret (the
//! router-level and upstream-level streams of a request must then reach the same process,
//! which a sidecar on loopback or a Unix socket guarantees).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::hmac;
use serde::{Deserialize, Serialize};

/// Dynamic-metadata key (namespace `io.tollgate`) of the token.
pub const METADATA_KEY: &str = "attempt_token";
/// Longest token accepted: bounded work before the signature is checked.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
const PREFIX: &str = "v1.";
const DERIVE_LABEL: &[u8] = b"tollgate attempt token v1";

/// What the router-level decision allowed one request's attempts to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The request id (`x-request-id` as the router-level exchange left it).
    pub rid: String,
    /// The chain.
    pub chain: String,
    /// The (backend, upstream model) steps the router-level access check approved: the only
    /// ones an attempt may prepare and credential.
    pub steps: Vec<(String, String)>,
    /// The client's path, without the query.
    pub path: String,
    /// The client's query (with its `?`), or empty.
    pub query: String,
    /// Expiry, Unix milliseconds.
    pub exp: u64,
}

/// Why a token was refused. Nothing here names the token's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No token in the attempt's metadata.
    #[error(
        "no attempt token: the upstream-level filter acts only for a request the router-level filter routed to a chain"
    )]
    Missing,
    /// Not a token of this form.
    #[error("malformed attempt token")]
    Malformed,
    /// Signed with another key, or altered.
    #[error("attempt token signature does not verify")]
    BadSignature,
    /// Past its expiry.
    #[error("attempt token expired")]
    Expired,
    /// For another request.
    #[error("attempt token is for another request")]
    OtherRequest,
    /// The backend Envoy picked is not one the decision allowed.
    #[error("attempt token does not allow this backend")]
    BackendNotAllowed,
}

impl TokenError {
    /// A fixed explanation for logs and the refusal.
    pub fn reason(self) -> &'static str {
        match self {
            TokenError::Missing => {
                "upstream-level filter: no attempt token (the router-level tollgate filter must route the request to a chain, and the io.tollgate namespace must be forwarded: metadata_options.forwarding_namespaces.untyped)"
            }
            TokenError::Malformed => "upstream-level filter: malformed attempt token",
            TokenError::BadSignature => {
                "upstream-level filter: attempt token signature does not verify (replicas must share server.grpc_auth.secret)"
            }
            TokenError::Expired => {
                "upstream-level filter: attempt token expired (raise server.grpc_auth.attempt_token_ttl above the chain's total attempt time)"
            }
            TokenError::OtherRequest => {
                "upstream-level filter: attempt token is for another request"
            }
            TokenError::BackendNotAllowed => {
                "upstream-level filter: the attempt token does not allow the backend Envoy picked"
            }
        }
    }
}

/// The signing key.
pub struct TokenKey(hmac::Key);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(***)")
    }
}

impl TokenKey {
    /// Derived from the per-deployment secret: the same on every replica.
    pub fn from_secret(secret: &[u8]) -> Self {
        let outer = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let derived = hmac::sign(&outer, DERIVE_LABEL);
        Self(hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()))
    }

    /// Per-process random.
    pub fn random() -> Self {
        Self(super::endpoint::random_key())
    }
}

/// Signs a grant.
pub fn issue(key: &TokenKey, grant: &Grant) -> String {
    // Serialising a struct of strings and integers cannot fail.
    let json = serde_json::to_vec(grant).unwrap_or_default();
    let mut token = String::with_capacity(PREFIX.len() + json.len() * 2);
    token.push_str(PREFIX);
    token.push_str(&B64.encode(json));
    let tag = hmac::sign(&key.0, token.as_bytes());
    token.push('.');
    token.push_str(&B64.encode(tag.as_ref()));
    token
}

/// Checks a token's form, signature and expiry; `now_ms` is Unix milliseconds.
pub fn verify(key: &TokenKey, token: &str, now_ms: u64) -> Result<Grant, TokenError> {
    if token.len() > MAX_TOKEN_LEN || !token.starts_with(PREFIX) {
        return Err(TokenError::Malformed);
    }
    let (signed, tag) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let tag = B64.decode(tag).map_err(|_| TokenError::Malformed)?;
    hmac::verify(&key.0, signed.as_bytes(), &tag).map_err(|_| TokenError::BadSignature)?;
    let payload = B64
        .decode(&signed[PREFIX.len()..])
        .map_err(|_| TokenError::Malformed)?;
    let grant: Grant = serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
    if now_ms >= grant.exp {
        return Err(TokenError::Expired);
    }
    Ok(grant)
}

impl Grant {
    /// Whether this grant lets the attempt of request `rid` prepare `backend`.
    pub fn admits(&self, rid: &str, backend: &str) -> Result<(), TokenError> {
        if self.rid != rid {
            return Err(TokenError::OtherRequest);
        }
        if !self.steps.iter().any(|(b, _)| b == backend) {
            return Err(TokenError::BackendNotAllowed);
        }
        Ok(())
    }
}

/// Unix milliseconds of `t`.
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn grant() -> Grant {
        Grant {
            rid: "req-1".into(),
            chain: "resilient".into(),
            steps: vec![
                ("alpha".into(), "echo".into()),
                ("claude-fallback".into(), "claude-demo".into()),
            ],
            path: "/v1/chat/completions".into(),
            query: String::new(),
            exp: 10_000,
        }
    }

    #[test]
    fn a_token_verifies_only_with_its_key_before_expiry() {
        let key = TokenKey::from_secret(b"deployment-secret-0123456789");
        let t = issue(&key, &grant());
        assert_eq!(verify(&key, &t, 9_999), Ok(grant()));
        assert_eq!(verify(&key, &t, 10_000), Err(TokenError::Expired));
        // Another replica with the same secret accepts it; another deployment does not.
        let same = TokenKey::from_secret(b"deployment-secret-0123456789");
        assert!(verify(&same, &t, 0).is_ok());
        let other = TokenKey::from_secret(b"another-secret-0123456789");
        assert_eq!(verify(&other, &t, 0), Err(TokenError::BadSignature));
        let random = TokenKey::random();
        assert_eq!(verify(&random, &t, 0), Err(TokenError::BadSignature));
    }

    #[test]
    fn a_grant_admits_only_its_request_and_backends() {
        let g = grant();
        assert_eq!(g.admits("req-1", "alpha"), Ok(()));
        assert_eq!(g.admits("req-1", "claude-fallback"), Ok(()));
        assert_eq!(
            g.admits("req-1", "beta"),
            Err(TokenError::BackendNotAllowed)
        );
        assert_eq!(g.admits("req-2", "alpha"), Err(TokenError::OtherRequest));
    }

    #[test]
    fn widening_the_grant_breaks_the_signature() {
        let key = TokenKey::from_secret(b"deployment-secret-0123456789");
        let t = issue(&key, &grant());
        let (signed, tag) = t.rsplit_once('.').unwrap_or_default();
        let mut wide = grant();
        wide.steps.push(("beta".into(), "echo".into()));
        wide.exp = u64::MAX;
        let forged_payload = B64.encode(serde_json::to_vec(&wide).unwrap_or_default());
        let forged = format!("{PREFIX}{forged_payload}.{tag}");
        assert_eq!(verify(&key, &forged, 0), Err(TokenError::BadSignature));
        assert!(verify(&key, signed, 0).is_err(), "a token without its tag");
        assert_eq!(verify(&key, "", 0), Err(TokenError::Malformed));
        assert_eq!(
            verify(&key, &"v1.".repeat(MAX_TOKEN_LEN), 0),
            Err(TokenError::Malformed)
        );
    }

    proptest! {
        /// Any single-byte change of a valid token is refused.
        #[test]
        fn any_altered_byte_is_refused(pos in 0usize..400, byte in 0u8..128) {
            let key = TokenKey::from_secret(b"deployment-secret-0123456789");
            let t = issue(&key, &grant());
            let mut bytes = t.clone().into_bytes();
            let pos = pos % bytes.len();
            prop_assume!(bytes[pos] != byte);
            bytes[pos] = byte;
            if let Ok(altered) = String::from_utf8(bytes) {
                // base64 without padding can decode two spellings of the last character
                // to the same bytes; only a token that verifies to the same grant passes.
                if let Ok(g) = verify(&key, &altered, 0) {
                    prop_assert_eq!(g, grant());
                }
            }
        }
    }
}
