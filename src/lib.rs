//! tollgate: an AI gateway that runs as an Envoy ext_proc sidecar.
//!
//! Request flow (one way, top to bottom):
//! `server` (gRPC stream) → `server::exchange` (per-request state machine) → `stages`
//! (route, then guard) → `routing` / `guard` / `pii` / `llm` (pure decisions, masking, body
//! edits, SSE) → replies built in `server::reply`. `config` compiles the YAML into the
//! immutable snapshot every stream pins; `metrics` and `admin` observe; `observe` turns each
//! finished request into GenAI metrics, an audit line and an OTLP span; `app` wires it all.

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod drain;
pub mod error;
pub mod guard;
pub mod headers;
pub mod llm;
pub mod metrics;
pub mod observe;
pub mod pii;
pub mod proto;
pub mod routing;
pub mod secret;
pub mod server;
pub mod stages;
pub mod suggest;
pub mod telemetry;
