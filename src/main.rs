//! The `tollgate` binary: parse the command line, load the config, run.
#![allow(
    clippy::print_stdout,
    reason = "the CLI: its results and diagnostics are what it prints (stderr is linted off crate-wide)"
)]

use clap::Parser;
use std::process::ExitCode;
use tollgate::cli::{Cli, Command};
use tollgate::config::{self, CompileOptions, ListenAddr};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { file, skip_secrets } => validate(&file, skip_secrets),
        Command::PiiScan => pii_scan(),
        Command::Route {
            config,
            request,
            headers,
            path,
            consumer,
            team,
            api_key,
            roll,
            cooling,
        } => route(
            &config,
            &request,
            tollgate::explain::Ask {
                path,
                headers: headers
                    .iter()
                    .filter_map(|h| h.split_once(':'))
                    .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                    .collect(),
                consumer,
                team,
                api_key,
                roll,
                cooling,
            },
        ),
        Command::Schema => {
            let schema = schemars::schema_for!(config::raw::RawConfig);
            match serde_json::to_string_pretty(&schema) {
                Ok(text) => {
                    println!("{text}");
                    ExitCode::SUCCESS
                }
                Err(_) => ExitCode::FAILURE,
            }
        }
        Command::DrainEnvoy { admin, timeout } => drain_envoy(&admin, timeout),
        Command::HashKey => hash_key(),
        Command::CountTokens { encoding, chat } => count_tokens(&encoding, chat),
        Command::Serve {
            config,
            grpc_listen,
            admin_listen,
            insecure_unauthenticated_grpc,
        } => serve(
            config,
            grpc_listen,
            admin_listen,
            insecure_unauthenticated_grpc,
        ),
    }
}

fn drain_envoy(admin: &str, timeout: std::time::Duration) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            println!("tollgate drain-envoy: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(tollgate::drain::drain_envoy(admin, timeout)) {
        Ok(tollgate::drain::Drained::Idle) => {
            println!("tollgate drain-envoy: Envoy at {admin} is draining with no active requests");
            ExitCode::SUCCESS
        }
        Ok(tollgate::drain::Drained::TimedOut(n)) => {
            println!("tollgate drain-envoy: {n} requests still active after {timeout:?}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("tollgate drain-envoy: {e}");
            ExitCode::FAILURE
        }
    }
}

fn hash_key() -> ExitCode {
    let mut key = String::new();
    if std::io::stdin().read_line(&mut key).is_err() {
        println!("tollgate hash-key: cannot read the key from standard input");
        return ExitCode::from(1);
    }
    let key = key.trim_end_matches(['\n', '\r']);
    if key.trim().is_empty() {
        println!(
            "tollgate hash-key: pipe the key in, e.g. `printf %s \"$KEY\" | tollgate hash-key`"
        );
        return ExitCode::from(2);
    }
    println!(
        "{}",
        tollgate::auth::hash_key(&tollgate::secret::Secret::new(key))
    );
    ExitCode::SUCCESS
}

fn count_tokens(encoding: &str, chat: bool) -> ExitCode {
    use std::io::Read;
    use tollgate::tokens::{self, Encoding};
    let enc = match encoding {
        "o200k" | "o200k_base" => Encoding::O200k,
        "cl100k" | "cl100k_base" => Encoding::Cl100k,
        other => {
            println!("tollgate count-tokens: unknown encoding {other:?}; use o200k or cl100k");
            return ExitCode::from(2);
        }
    };
    let mut input = Vec::new();
    if std::io::stdin().read_to_end(&mut input).is_err() {
        println!("tollgate count-tokens: cannot read standard input");
        return ExitCode::from(1);
    }
    let count = if chat {
        match tokens::count_prompt(enc, &input) {
            Some(n) => n,
            None => {
                println!("tollgate count-tokens: --chat needs a JSON request body");
                return ExitCode::from(1);
            }
        }
    } else {
        match std::str::from_utf8(&input) {
            Ok(text) => enc.count(text),
            Err(_) => {
                println!("tollgate count-tokens: standard input is not UTF-8");
                return ExitCode::from(1);
            }
        }
    };
    println!("{count}");
    ExitCode::SUCCESS
}

fn route(
    config_path: &std::path::Path,
    request: &std::path::Path,
    ask: tollgate::explain::Ask,
) -> ExitCode {
    let env = |name: &str| std::env::var(name).ok();
    let opts = CompileOptions {
        resolve_secrets: false,
        env: &env,
    };
    let snap = match config::load(config_path, &opts) {
        Ok(s) => s,
        Err(e) => {
            println!("{e}");
            return ExitCode::from(1);
        }
    };
    let body = match std::fs::read(request) {
        Ok(b) => b,
        Err(e) => {
            println!("cannot read {}: {e}", request.display());
            return ExitCode::from(1);
        }
    };
    match tollgate::explain::report(&snap, &ask, &body) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("{e}");
            ExitCode::from(2)
        }
    }
}

fn validate(file: &std::path::Path, skip_secrets: bool) -> ExitCode {
    let env = |name: &str| std::env::var(name).ok();
    let opts = CompileOptions {
        resolve_secrets: !skip_secrets,
        env: &env,
    };
    match config::load(file, &opts) {
        Ok(snap) => {
            println!("{}: ok: {}", file.display(), snap.summary());
            for w in tollgate::server::endpoint::security_warnings(&snap) {
                println!("{}: {w}", file.display());
            }
            if let Err(e) = tollgate::server::endpoint::listener_exposure(&snap.settings, false) {
                println!("{}: warning: {e}", file.display());
            }
            ExitCode::SUCCESS
        }
        Err(config::LoadError::Invalid { errors, .. }) => {
            let n = errors.len();
            for e in errors {
                println!("{}: {e}", file.display());
            }
            println!(
                "{}: {n} error{}",
                file.display(),
                if n == 1 { "" } else { "s" }
            );
            ExitCode::from(1)
        }
        Err(e) => {
            println!("{e}");
            ExitCode::from(1)
        }
    }
}

fn serve(
    path: std::path::PathBuf,
    grpc: Option<String>,
    admin: Option<String>,
    insecure_grpc: bool,
) -> ExitCode {
    let mut snap = match config::load(&path, &CompileOptions::from_process()) {
        Ok(s) => s,
        Err(e) => {
            // Logging is not set up yet (its level comes from this very file).
            println!("tollgate: {e}");
            return ExitCode::from(1);
        }
    };
    let file_settings = snap.settings.clone();
    if let Some(g) = grpc {
        match ListenAddr::parse(&g) {
            Ok(a) => snap.settings.grpc_listen = a,
            Err(e) => {
                println!("tollgate: --grpc-listen: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(a) = admin {
        match a.parse() {
            Ok(a) => snap.settings.admin_listen = a,
            Err(_) => {
                println!("tollgate: --admin-listen: {a:?} is not host:port");
                return ExitCode::from(2);
            }
        }
    }
    tollgate::telemetry::init(&snap.settings.log_level, snap.settings.log_json);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), config = %path.display(), "{}", snap.summary());
    let runtime = match runtime_builder().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(tollgate::app::run(path, snap, file_settings, insecure_grpc)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One CPU available (pinned, or a container limit of one core): a current-thread runtime.
/// On one core a multi-thread runtime only adds cross-thread wake-ups and atomics to every
/// ext_proc message (measured: `make bench`). `TOLLGATE_RUNTIME=multi_thread|current_thread`
/// overrides the choice; `TOKIO_WORKER_THREADS` sizes the multi-thread runtime.
fn runtime_builder() -> tokio::runtime::Builder {
    let one_cpu = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
    let current = match std::env::var("TOLLGATE_RUNTIME").as_deref() {
        Ok("current_thread") => true,
        Ok("multi_thread") => false,
        _ => one_cpu,
    };
    if current {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    }
}

fn pii_scan() -> ExitCode {
    use std::io::{BufRead, Write};
    let masker = tollgate::pii::builtin_masker(tollgate::pii::Action::Mask);
    let stdin = std::io::stdin();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for line in stdin.lock().lines() {
        let Ok(line) = line else {
            return ExitCode::FAILURE;
        };
        if line.trim().is_empty() {
            continue;
        }
        let Ok(text) = serde_json::from_str::<String>(&line) else {
            return ExitCode::from(64);
        };
        let report = tollgate::pii::scan(&masker, &text);
        if writeln!(out, "{report}").is_err() {
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
