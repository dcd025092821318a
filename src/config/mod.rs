//! Configuration: the YAML file, its compiled [`Snapshot`], and hot reload.
//!
//! Tiers:
//! - **static** (read at start, a change is logged and needs a restart): `server.grpc_listen`,
//!   `server.admin_listen`, `server.drain_timeout`, `log`, `telemetry`, `audit`;
//! - **hot** (swapped atomically on reload): everything else — backends and their secrets,
//!   models, routes, routing switches, `server.max_request_body`, `reload`, consumers, teams,
//!   key hashes (and `auth.key_file`), prices, limit rules, usage settings.
//! - `limits.store` and `limits.redis` are static too: the store (its counters, its Redis
//!   connection) is built once at start; a reload keeps the running store settings.
//!
//! Each ext_proc stream loads one `Arc<Snapshot>` when it starts and keeps it for its whole
//! life, so a request never sees half of an old config and half of a new one.

pub mod compile;
pub mod raw;
pub mod watch;

pub use compile::{CompileOptions, ConfigError, compile, compile_with_inputs};

use crate::routing::Table;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default ext_proc gRPC address.
pub const DEFAULT_GRPC_LISTEN: &str = "127.0.0.1:50051";
/// Default admin HTTP address.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";
/// Default largest request body.
pub const DEFAULT_MAX_REQUEST_BODY: u64 = 4 << 20;

fn default_admin() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}

/// Where the gRPC server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// TCP.
    Tcp(SocketAddr),
    /// Unix domain socket path (sidecars sharing an emptyDir).
    Unix(PathBuf),
}

impl Default for ListenAddr {
    fn default() -> Self {
        ListenAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], 50051)))
    }
}

impl ListenAddr {
    /// Parses `host:port` or `unix:/path`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(
                    "unix: needs a socket path, e.g. unix:/run/tollgate/tollgate.sock".into(),
                );
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        text.parse()
            .map(ListenAddr::Tcp)
            .map_err(|_| format!("{text:?} is not host:port (e.g. 127.0.0.1:50051) or unix:/path"))
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Settings read once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticSettings {
    /// ext_proc gRPC address.
    pub grpc_listen: ListenAddr,
    /// Admin HTTP address.
    pub admin_listen: SocketAddr,
    /// Longest wait for in-flight streams at shutdown.
    pub drain_timeout: Duration,
    /// Tracing filter.
    pub log_level: String,
    /// JSON log lines.
    pub log_json: bool,
    /// OTLP trace export; `None` when off.
    pub traces: Option<crate::observe::spans::TraceSettings>,
    /// Ask Envoy for SSE response bodies to time the first token.
    pub time_to_first_token: bool,
    /// Audit log; `None` when off.
    pub audit: Option<crate::observe::audit::AuditSettings>,
    /// Who may call the ext_proc endpoint.
    pub grpc_auth: GrpcAuth,
    /// `/debug/state` is served.
    pub debug_state: bool,
    /// A client-sent `x-request-id` is used as the request id.
    pub trust_request_id: bool,
}

/// Caller authentication of the ext_proc endpoint, as compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcAuth {
    /// Shared secret callers send as `x-tollgate-secret` metadata.
    pub secret: Option<crate::secret::Secret>,
    /// TLS files.
    pub tls: Option<GrpcTls>,
    /// Lifetime of attempt tokens.
    pub attempt_token_ttl: Duration,
}

impl Default for GrpcAuth {
    fn default() -> Self {
        Self {
            secret: None,
            tls: None,
            attempt_token_ttl: Duration::from_secs(300),
        }
    }
}

/// TLS files for the gRPC listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcTls {
    /// Certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Private key (PEM).
    pub key_file: PathBuf,
    /// Client CA (PEM): callers need a certificate it signed.
    pub client_ca_file: Option<PathBuf>,
}

/// Reload behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadSettings {
    /// Quiet time after a file event.
    pub debounce: Duration,
    /// Fallback poll interval; zero disables.
    pub poll_interval: Duration,
}

/// A compiled, immutable configuration.
#[derive(Debug)]
pub struct Snapshot {
    /// Static settings (as read when this snapshot was compiled).
    pub settings: StaticSettings,
    /// Largest request body accepted.
    pub max_request_body: u64,
    /// Reload behaviour.
    pub reload: ReloadSettings,
    /// Routing table.
    pub routing: Table,
    /// Guard policies.
    pub guard: crate::guard::Guard,
    /// Short content hash of the source file (shown in logs and metrics).
    pub hash: String,
    /// Other files this snapshot's content came from (`auth.key_file`, `file:` secrets,
    /// `pricing.file`): the reloader watches them like the config itself.
    pub inputs: Vec<std::path::PathBuf>,
    /// Consumers, teams and how they are identified.
    pub access: crate::auth::Access,
    /// Prices per model.
    pub pricing: crate::pricing::PriceTable,
    /// Limit rules and the counter store.
    pub limits: LimitSettings,
    /// Token counting and metering.
    pub usage: UsageSettings,
}

/// Limits as compiled.
#[derive(Debug, Clone, Default)]
pub struct LimitSettings {
    /// Rules; every matching one applies.
    pub rules: Vec<crate::limits::Rule>,
    /// Output tokens reserved when a request sets no maximum.
    pub default_max_tokens: u64,
    /// Counter store (static: read at start).
    pub store: StoreSettings,
}

/// Where limit counters live.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum StoreSettings {
    /// In-process.
    #[default]
    Memory,
    /// Redis.
    Redis {
        /// Connection settings.
        settings: crate::limits::redis::RedisSettings,
        /// Admit requests while Redis is down.
        fail_open: bool,
    },
}

/// Token counting and metering as compiled.
#[derive(Debug, Clone, Default)]
pub struct UsageSettings {
    /// Read response bodies for usage even without token/cost limits.
    pub meter: bool,
    /// Count prompts exactly by default.
    pub exact_default: bool,
    /// Routing rule labels with exact counting.
    pub exact_routes: Vec<String>,
    /// Model globs with exact counting.
    pub exact_models: Vec<crate::glob::Glob>,
}

impl UsageSettings {
    /// Whether prompts of this request are counted exactly.
    pub fn exact_for(&self, rule: &str, models: &[&str]) -> bool {
        self.exact_default
            || self.exact_routes.iter().any(|r| r == rule)
            || self
                .exact_models
                .iter()
                .any(|g| models.iter().any(|m| g.matches(m)))
    }
}

impl Snapshot {
    /// One line for logs and `tollgate validate`.
    pub fn summary(&self) -> String {
        let aliases: usize = self.routing.models.iter().map(|m| m.aliases.len()).sum();
        format!(
            "{} backends, {} models ({} aliases), {} routes, {} guard policies, {} consumers, {} teams, {} limit rules; grpc {}, admin {}; config {}",
            self.routing.backends.len(),
            self.routing.models.len(),
            aliases,
            self.routing.routes.len(),
            self.guard.policies.len(),
            self.access.consumers.len(),
            self.access.teams.len(),
            self.limits.rules.len(),
            self.settings.grpc_listen,
            self.settings.admin_listen,
            self.hash
        )
    }
}

/// Short SHA-256 of the config bytes.
pub fn content_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// Why a config file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File path.
        path: String,
        /// I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid config.
    #[error("{path} is not a valid tollgate config:\n{}", list(.errors))]
    Invalid {
        /// File path.
        path: String,
        /// Every problem found.
        errors: Vec<ConfigError>,
    },
}

fn list(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(|e| format!("  {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads and compiles a config file.
pub fn load(path: &Path, opts: &CompileOptions<'_>) -> Result<Snapshot, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.display().to_string(),
        source,
    })?;
    compile(&text, opts).map_err(|errors| LoadError::Invalid {
        path: path.display().to_string(),
        errors,
    })
}
