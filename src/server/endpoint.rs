//! Who may call the ext_proc endpoint: the replies carry provider credentials, so the
//! endpoint is a credential vault and its callers must be Envoy.
//!
//! - [`CallerCheck`]: the per-deployment secret Envoy sends as gRPC initial metadata
//!   (`x-tollgate-secret`), compared in constant time (`ring::hmac::verify` of the presented
//!   value against the tag of the configured one, under a per-process random key: neither
//!   the length nor a prefix of the secret shows in the timing).
//! - [`listener_exposure`]: a listener other than loopback or a Unix socket needs caller
//!   authentication (the secret, or mTLS with a client CA), or the loudly named
//!   `--insecure-unauthenticated-grpc` flag.
//! - [`security_warnings`]: what `tollgate validate` and start-up say about a config that
//!   attaches provider credentials while clients are not authenticated.

use crate::config::{ListenAddr, Snapshot, StaticSettings};
use crate::providers::ProviderConfig;
use crate::secret::Secret;
use ring::hmac;

/// gRPC initial-metadata key carrying the per-deployment secret.
pub const SECRET_METADATA_KEY: &str = "x-tollgate-secret";

/// Why a caller or a listener was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// The stream carried no secret.
    #[error("the ext_proc caller sent no x-tollgate-secret metadata")]
    MissingSecret,
    /// The stream carried a wrong secret.
    #[error("the ext_proc caller sent a wrong x-tollgate-secret")]
    WrongSecret,
    /// A network listener without caller authentication.
    #[error(
        "server.grpc_listen {0} is reachable from the network, and every ext_proc reply can carry a provider credential: set server.grpc_auth.secret (Envoy sends it as initial_metadata x-tollgate-secret) and/or server.grpc_auth.tls.client_ca_file (mTLS), listen on 127.0.0.1 or a unix: socket, or pass --insecure-unauthenticated-grpc"
    )]
    Unauthenticated(String),
}

impl EndpointError {
    /// Metric label (`tollgate_endpoint_refused_total{reason}`).
    pub fn label(&self) -> &'static str {
        match self {
            EndpointError::MissingSecret => "missing_secret",
            EndpointError::WrongSecret => "wrong_secret",
            EndpointError::Unauthenticated(_) => "unauthenticated_listener",
        }
    }
}

/// Checks the shared secret of each stream.
pub struct CallerCheck {
    /// `None`: no secret configured, every caller passes this check.
    expected: Option<(hmac::Key, hmac::Tag)>,
}

impl std::fmt::Debug for CallerCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallerCheck")
            .field("secret", &self.expected.is_some())
            .finish()
    }
}

impl CallerCheck {
    /// Lets every caller through (no secret configured).
    pub fn open() -> Self {
        Self { expected: None }
    }

    /// Requires `secret`.
    pub fn new(secret: &Secret) -> Self {
        let key = random_key();
        let tag = hmac::sign(&key, secret.expose().as_bytes());
        Self {
            expected: Some((key, tag)),
        }
    }

    /// Whether a secret is required.
    pub fn requires_secret(&self) -> bool {
        self.expected.is_some()
    }

    /// Checks the value of the stream's `x-tollgate-secret` metadata.
    pub fn check(&self, presented: Option<&[u8]>) -> Result<(), EndpointError> {
        let Some((key, tag)) = &self.expected else {
            return Ok(());
        };
        let presented = presented.ok_or(EndpointError::MissingSecret)?;
        hmac::verify(key, presented, tag.as_ref()).map_err(|_| EndpointError::WrongSecret)
    }
}

/// A fresh HMAC-SHA256 key: 244 random bits from two v4 UUIDs (the OS generator, and an
/// infallible API, unlike `ring::rand`'s).
pub(crate) fn random_key() -> hmac::Key {
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    hmac::Key::new(hmac::HMAC_SHA256, &bytes)
}

/// How far a gRPC listener is reachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    /// Loopback address or Unix socket: only processes on this host (or pod).
    Local,
    /// A network listener whose callers authenticate.
    Authenticated,
    /// A network listener without caller authentication (explicitly allowed).
    Insecure,
}

/// Decides whether the gRPC listener may start. mTLS counts only with a client CA; TLS
/// alone encrypts but lets anyone call.
pub fn listener_exposure(
    settings: &StaticSettings,
    insecure_allowed: bool,
) -> Result<Exposure, EndpointError> {
    let local = match &settings.grpc_listen {
        ListenAddr::Unix(_) => true,
        ListenAddr::Tcp(a) => a.ip().is_loopback(),
    };
    let auth = &settings.grpc_auth;
    let authenticated = auth.secret.is_some()
        || auth
            .tls
            .as_ref()
            .is_some_and(|t| t.client_ca_file.is_some());
    match (local, authenticated, insecure_allowed) {
        (true, _, _) => Ok(Exposure::Local),
        (false, true, _) => Ok(Exposure::Authenticated),
        (false, false, true) => Ok(Exposure::Insecure),
        (false, false, false) => Err(EndpointError::Unauthenticated(
            settings.grpc_listen.to_string(),
        )),
    }
}

/// Whether a backend sends a credential tollgate holds.
fn holds_credential(b: &crate::providers::Backend) -> bool {
    b.credential.is_some()
        || matches!(
            b.provider,
            ProviderConfig::Bedrock(_) | ProviderConfig::Vertex(_)
        )
}

/// Warnings about a config that hands provider credentials to unauthenticated clients.
pub fn security_warnings(snap: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    let credentialed: Vec<&str> = snap
        .routing
        .backends
        .iter()
        .filter(|b| holds_credential(b))
        .map(|b| b.name.as_str())
        .collect();
    if !credentialed.is_empty() {
        let open = match snap.access.mode {
            crate::auth::Mode::Open => Some("auth.mode is none"),
            crate::auth::Mode::ApiKey if snap.access.anonymous.is_some() => {
                Some("auth.anonymous_consumer admits requests without a key")
            }
            crate::auth::Mode::ApiKey | crate::auth::Mode::IdentityHeaders { .. } => None,
        };
        if let Some(why) = open {
            out.push(format!(
                "WARNING: client authentication is off ({why}) while backends {} attach provider credentials: anyone who reaches the gateway spends them; configure consumers with keys (auth.mode: api_key)",
                credentialed.join(", ")
            ));
        }
    }
    if snap.settings.debug_state {
        out.push(
            "warning: server.debug_state is on: keep the admin listener off any Service".into(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CompileOptions, compile};

    fn snap(yaml: &str) -> Snapshot {
        let env = |_: &str| Some("sk-test-0123456789abcdef".to_owned());
        let opts = CompileOptions {
            resolve_secrets: true,
            env: &env,
        };
        match compile(yaml, &opts) {
            Ok(s) => s,
            Err(e) => unreachable!("config: {e:?}"),
        }
    }

    const BACKEND: &str = "backends:\n  - name: openai\n    kind: openai\n    auth: { bearer: { env: K } }\nmodels:\n  - { name: m, backend: openai }\n";

    #[test]
    fn the_secret_is_required_and_compared_exactly() {
        let check = CallerCheck::new(&Secret::new("s3cret-s3cret-s3cret"));
        assert_eq!(check.check(None), Err(EndpointError::MissingSecret));
        assert_eq!(check.check(Some(b"")), Err(EndpointError::WrongSecret));
        assert_eq!(
            check.check(Some(b"s3cret-s3cret-s3creT")),
            Err(EndpointError::WrongSecret)
        );
        assert_eq!(
            check.check(Some(b"s3cret-s3cret-s3cret ")),
            Err(EndpointError::WrongSecret)
        );
        assert_eq!(
            check.check(Some(b"s3cret-s3cret-s3cre")),
            Err(EndpointError::WrongSecret)
        );
        assert_eq!(check.check(Some(b"s3cret-s3cret-s3cret")), Ok(()));
        assert_eq!(CallerCheck::open().check(None), Ok(()));
    }

    #[test]
    fn network_listeners_need_caller_authentication() {
        let mut s = snap(&format!("version: 1\n{BACKEND}")).settings;
        assert_eq!(listener_exposure(&s, false), Ok(Exposure::Local));
        s.grpc_listen = ListenAddr::Unix("/tmp/x.sock".into());
        assert_eq!(listener_exposure(&s, false), Ok(Exposure::Local));
        s.grpc_listen = ListenAddr::parse("[::1]:50051").unwrap_or_default();
        assert_eq!(listener_exposure(&s, false), Ok(Exposure::Local));
        s.grpc_listen = ListenAddr::parse("0.0.0.0:50051").unwrap_or_default();
        assert!(matches!(
            listener_exposure(&s, false),
            Err(EndpointError::Unauthenticated(_))
        ));
        assert_eq!(listener_exposure(&s, true), Ok(Exposure::Insecure));
        // TLS without a client CA authenticates nobody.
        s.grpc_auth.tls = Some(crate::config::GrpcTls {
            cert_file: "c.pem".into(),
            key_file: "k.pem".into(),
            client_ca_file: None,
        });
        assert!(listener_exposure(&s, false).is_err());
        if let Some(t) = s.grpc_auth.tls.as_mut() {
            t.client_ca_file = Some("ca.pem".into());
        }
        assert_eq!(listener_exposure(&s, false), Ok(Exposure::Authenticated));
        s.grpc_auth.tls = None;
        s.grpc_auth.secret = Some(Secret::new("0123456789abcdef0123"));
        assert_eq!(listener_exposure(&s, false), Ok(Exposure::Authenticated));
    }

    #[test]
    fn credentials_without_client_auth_are_warned_about() {
        let open = snap(&format!("version: 1\n{BACKEND}"));
        let w = security_warnings(&open);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("client authentication is off") && w[0].contains("openai"));
        assert!(!w[0].contains("sk-test"), "no secret in a warning");
        let keyed = snap(&format!(
            "version: 1\n{BACKEND}consumers:\n  - name: app\n    keys: [\"sha256:{}\"]\n",
            "0".repeat(64)
        ));
        assert!(security_warnings(&keyed).is_empty());
        let no_credential = snap(
            "version: 1\nbackends:\n  - { name: local, kind: openai }\nmodels:\n  - { name: m, backend: local }\n",
        );
        assert!(security_warnings(&no_credential).is_empty());
    }
}
