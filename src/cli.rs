//! Command-line interface.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// tollgate: an AI gateway that runs as an Envoy ext_proc sidecar. It routes OpenAI-compatible
/// requests to backends by model, rewrites paths and credentials, and refuses bad requests
/// with clear JSON errors.
#[derive(Debug, Parser)]
#[command(name = "tollgate", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the ext_proc gRPC server and the admin HTTP server.
    Serve {
        /// Config file (YAML). Watched and hot-reloaded.
        #[arg(short, long, env = "TOLLGATE_CONFIG", value_name = "FILE")]
        config: PathBuf,
        /// Override `server.grpc_listen`: host:port or unix:/path.
        #[arg(long, env = "TOLLGATE_GRPC_LISTEN", value_name = "ADDR")]
        grpc_listen: Option<String>,
        /// Override `server.admin_listen`: host:port.
        #[arg(long, env = "TOLLGATE_ADMIN_LISTEN", value_name = "ADDR")]
        admin_listen: Option<String>,
        /// Start a non-loopback gRPC listener without caller authentication (no
        /// `server.grpc_auth.secret`, no client CA). Anyone who reaches it obtains provider
        /// credentials: for isolated test networks only.
        #[arg(long)]
        insecure_unauthenticated_grpc: bool,
    },
    /// Check a config file; print every problem with its YAML path. Exit 1 if invalid.
    Validate {
        /// Config file (YAML).
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Do not resolve backend secrets (environment variables, secret files), e.g. in CI
        /// where they are not present.
        #[arg(long)]
        skip_secrets: bool,
    },
    /// Explain where a request would be routed, without starting a server: the chosen
    /// backend (or fallback chain) and model, the rule that matched and why, and why each
    /// earlier rule did not match.
    Route {
        /// Config file (YAML). Secrets are not resolved.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Request body (JSON), e.g. a chat-completions request.
        #[arg(short, long, value_name = "FILE")]
        request: PathBuf,
        /// Request header `name:value` (repeatable), e.g. `x-tollgate-profile:reasoning`.
        #[arg(short = 'H', long = "header", value_name = "NAME:VALUE")]
        headers: Vec<String>,
        /// Request path.
        #[arg(long, default_value = "/v1/chat/completions")]
        path: String,
        /// Caller: a consumer name from the config.
        #[arg(long)]
        consumer: Option<String>,
        /// Caller: a team name from the config.
        #[arg(long)]
        team: Option<String>,
        /// Caller: a client API key (identified like the gateway does; never printed).
        #[arg(long, env = "TOLLGATE_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
        /// The random draw of non-sticky weighted splits (the gateway draws per request).
        #[arg(long, default_value_t = 0)]
        roll: u64,
        /// Treat this backend as cooling down after failures (repeatable).
        #[arg(long)]
        cooling: Vec<String>,
    },
    /// Print the JSON Schema of the config file.
    Schema,
    /// Drain a sidecar Envoy before shutdown (Kubernetes preStop hook): ask its admin API for
    /// a graceful listener drain, then wait until it has no active requests.
    DrainEnvoy {
        /// Envoy admin address, host:port.
        #[arg(long, default_value = "127.0.0.1:9901", value_name = "ADDR")]
        admin: String,
        /// Longest wait for active requests to finish, e.g. `40s`.
        #[arg(long, default_value = "40s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Run the built-in PII/secret detectors over stdin (test bridge for oracle checks and
    /// `make pii-report`): each input line is a JSON string; each output line is
    /// `{"findings": [{"entity", "start", "end"}], "masked": "..."}` with byte offsets.
    #[command(hide = true)]
    PiiScan,
    /// Print the hash of an API key for `consumers[].keys` (reads the key from standard
    /// input, so it stays out of shell history and process lists).
    HashKey,
    /// Count tokens of standard input exactly (tiktoken), as tollgate does when a provider
    /// reports no usage: plain text, or with `--chat` a chat-completions body with OpenAI's
    /// message framing.
    CountTokens {
        /// `o200k` (GPT-4o and later) or `cl100k` (GPT-4, GPT-3.5).
        #[arg(long, default_value = "o200k")]
        encoding: String,
        /// Read a JSON request body (chat messages or embeddings input).
        #[arg(long)]
        chat: bool,
    },
}
