//! Offline OpenAI-compatible upstream for tollgate's local demo, e2e tests
//! and benchmarks: deterministic chat completions (plain and streamed),
//! model listing and embeddings, plus a `/__demo` API that shows tests
//! exactly what the gateway forwarded.

mod anthropic;
mod azure;
mod embed;
mod error;
mod fields;
mod record;
mod reply;
mod server;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::server::{AppState, Config};

#[derive(Debug, Parser)]
#[command(name = "tollgate-demo-upstream", version, about)]
struct Args {
    /// Address to listen on (port 0 picks a free port; the start line says which).
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: SocketAddr,

    /// Name sent in `x-demo-upstream` and used in replies and `owned_by`.
    #[arg(long, default_value = "demo")]
    name: String,

    /// Require `Authorization: Bearer KEY` on every `/v1/*` request.
    #[arg(long, env = "DEMO_UPSTREAM_API_KEY", hide_env_values = true)]
    api_key: Option<String>,

    /// Characters of reply text per streamed chunk.
    #[arg(long, default_value_t = 3, value_parser = positive)]
    chunk_chars: usize,

    /// Pause between streamed events, in milliseconds (0 = none).
    #[arg(long, default_value_t = 0)]
    chunk_delay_ms: u64,

    /// Runtime worker threads.
    #[arg(long, default_value_t = 1, value_parser = positive)]
    workers: usize,
}

fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// The only output by default: one line at start, and fatal errors.
#[allow(clippy::print_stderr)]
fn log(line: &str) {
    eprintln!("tollgate-demo-upstream: {line}");
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.workers)
        .enable_all()
        .build();
    let result = match runtime {
        Ok(runtime) => runtime.block_on(run(args)),
        Err(e) => Err(format!("cannot start the runtime: {e}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log(&e);
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let state = AppState::new(Config {
        name: args.name.clone(),
        api_key: args.api_key.filter(|k| !k.is_empty()),
        chunk_chars: args.chunk_chars,
        chunk_delay: Duration::from_millis(args.chunk_delay_ms),
    })?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))?;
    log(&format!("listening on {addr} as {}", args.name));
    server::serve(listener, state, shutdown_signal())
        .await
        .map_err(|e| format!("server error: {e}"))
}

/// Resolves on SIGINT or SIGTERM. A signal that cannot be watched never
/// fires rather than shutting the server down at once.
async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn cli_parses_flags_and_rejects_zero() {
        let args = Args::try_parse_from([
            "x",
            "--listen",
            "127.0.0.1:0",
            "--name",
            "alpha",
            "--api-key",
            "k",
            "--chunk-chars",
            "5",
            "--chunk-delay-ms",
            "20",
            "--workers",
            "2",
        ])
        .unwrap();
        assert_eq!(args.name, "alpha");
        assert_eq!(args.api_key.as_deref(), Some("k"));
        assert_eq!(
            (args.chunk_chars, args.chunk_delay_ms, args.workers),
            (5, 20, 2)
        );
        assert!(Args::try_parse_from(["x", "--chunk-chars", "0"]).is_err());
        assert!(Args::try_parse_from(["x", "--workers", "0"]).is_err());
    }
}
