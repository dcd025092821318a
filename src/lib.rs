//! tollgate: an AI gateway that runs as an Envoy ext_proc sidecar.
//!
//! Request flow (one way, top to bottom):
//! `server` (gRPC stream) → `server::exchange` (per-request state machine) → `stages`
//! (access, route, guard, usage, limits) → pure decisions: `auth` (consumers, teams),
//! `routing`, `guard` / `pii` (masking), `llm` (body edits, SSE, usage shapes), `tokens`,
//! `pricing`, `limits` (reservation arithmetic; memory and Redis stores) → replies built in
//! `server::reply`. `config` compiles the YAML into the immutable snapshot every stream pins;
//! `metrics` and `admin` observe; `observe` turns each finished request into GenAI metrics,
//! an audit line and an OTLP span; `app` wires it all at start-up.

pub mod admin;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod drain;
pub mod error;
pub mod explain;
pub mod fastrand;
pub mod fuzz;
pub mod glob;
pub mod guard;
pub mod headers;
pub mod limits;
pub mod llm;
pub mod metrics;
pub mod observe;
pub mod pii;
pub mod pricing;
pub mod proto;
pub mod providers;
pub mod routing;
pub mod secret;
pub mod server;
pub mod stages;
pub mod suggest;
pub mod telemetry;
pub mod tokens;
