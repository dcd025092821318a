//! Wiring: start the gRPC and admin servers and the config watcher, then drain on
//! SIGTERM/SIGINT. `anyhow` lives here and in main only.

use crate::admin::{self, Readiness};
use crate::config::watch::Reloader;
use crate::config::{ListenAddr, Snapshot, StaticSettings, StoreSettings};
use crate::limits::Limiter;
use crate::limits::memory::MemoryLimiter;
use crate::limits::redis::RedisLimiter;
use crate::metrics::Metrics;
use crate::observe::{Observer, audit::AuditLog, spans};
use crate::server::ExtProc;
use crate::server::grpc::ExtProcServer;
use crate::stages::limits::{Services, settle_worker};
use anyhow::Context;
use arc_swap::ArcSwap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Runs until a shutdown signal, then drains in-flight streams up to the drain timeout.
/// `file_settings` are the static settings as the file states them, before command-line
/// overrides were applied to `snapshot`.
pub async fn run(
    config_path: PathBuf,
    snapshot: Snapshot,
    file_settings: StaticSettings,
    insecure_grpc: bool,
) -> anyhow::Result<()> {
    let settings = snapshot.settings.clone();
    // Before binding anything: a network listener without caller authentication would hand
    // provider credentials to whoever connects.
    let exposure = crate::server::endpoint::listener_exposure(&settings, insecure_grpc)?;
    if exposure == crate::server::endpoint::Exposure::Insecure {
        tracing::error!(grpc = %settings.grpc_listen, "INSECURE: the ext_proc gRPC listener is reachable from the network without caller authentication (--insecure-unauthenticated-grpc); any process that reaches it obtains provider credentials");
    }
    for w in crate::server::endpoint::security_warnings(&snapshot) {
        tracing::warn!("{w}");
    }
    // The first snapshot was compiled before the runtime existed: start its token refreshes.
    crate::providers::gemini::start_token_refresh(&snapshot.routing.backends);
    let metrics = Arc::new(Metrics::new());
    let shutdown = CancellationToken::new();

    // The limits store is static (built once, kept across reloads): its counters and its
    // Redis connection outlive any one config snapshot.
    let limiter_stop = CancellationToken::new();
    let (limiter, redis_task): (Arc<dyn Limiter>, _) = match &snapshot.limits.store {
        StoreSettings::Memory => (Arc::new(MemoryLimiter::new()), None),
        StoreSettings::Redis { settings, .. } => {
            let redis = RedisLimiter::new(settings.clone()).context("Redis limits store")?;
            let task = tokio::spawn(redis.clone().run(limiter_stop.clone()));
            (redis, Some(task))
        }
    };
    let (svc, settlements) = Services::new(limiter.clone());
    let settler = tokio::spawn(settle_worker(limiter.clone(), settlements, metrics.clone()));

    let store = Arc::new(ArcSwap::from_pointee(snapshot));
    let readiness = Arc::new(Readiness::default());
    readiness.set_limiter(limiter.clone());

    let reloader = Reloader::new(config_path, store.clone(), metrics.clone(), file_settings);
    let watcher = tokio::spawn(reloader.watch(shutdown.clone()));

    let admin_listener = tokio::net::TcpListener::bind(settings.admin_listen)
        .await
        .with_context(|| format!("binding admin listener {}", settings.admin_listen))?;
    let admin_router = admin::router(metrics.clone(), readiness.clone(), settings.debug_state);
    let admin_stop = shutdown.clone();
    let admin = tokio::spawn(async move {
        // Peer addresses: /debug/state answers loopback peers only.
        axum::serve(
            admin_listener,
            admin_router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move { admin_stop.cancelled().await })
        .await
    });

    // Audit and span export start before serving, so a bad audit path or collector URL
    // fails at start-up, not on the first request.
    let (audit, audit_writer) = match &settings.audit {
        Some(a) => {
            let (log, writer) =
                AuditLog::start(a, metrics.clone()).context("starting the audit log")?;
            (Some(log), Some(writer))
        }
        None => (None, None),
    };
    let (span_queue, span_task) = match &settings.traces {
        Some(t) => {
            let (q, task) = spans::start(t, metrics.clone()).context("starting span export")?;
            tracing::info!(endpoint = %t.endpoint, protocol = ?t.protocol, sampling_ppm = t.sampling_ppm, "exporting spans over OTLP");
            (Some(q), Some(task))
        }
        None => (None, None),
    };
    let observer = Arc::new(Observer::new(metrics.clone(), audit, span_queue));
    let service = ExtProcServer::new(
        ExtProc::new(store, metrics.clone(), svc)
            .with_sink(observer)
            .with_grpc_auth(&settings.grpc_auth),
        64 << 20,
        64 << 20,
    );
    let grpc_stop = {
        let s = shutdown.clone();
        async move { s.cancelled().await }
    };
    let mut builder =
        tonic::transport::Server::builder().http2_keepalive_interval(Some(Duration::from_secs(30)));
    if let Some(tls) = &settings.grpc_auth.tls {
        builder = builder
            .tls_config(server_tls(tls)?)
            .context("gRPC listener TLS")?;
    }
    let router = builder.add_service(service);
    let grpc = match &settings.grpc_listen {
        ListenAddr::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding gRPC listener {addr}"))?;
            let incoming = crate::server::listen::incoming(listener);
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, grpc_stop))
        }
        ListenAddr::Unix(path) => {
            // A socket left by a previous run would make bind fail.
            if path.exists() {
                std::fs::remove_file(path)
                    .with_context(|| format!("removing stale socket {}", path.display()))?;
            }
            let listener = tokio::net::UnixListener::bind(path)
                .with_context(|| format!("binding gRPC socket {}", path.display()))?;
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, grpc_stop))
        }
    };
    readiness.set_serving();
    tracing::info!(grpc = %settings.grpc_listen, admin = %settings.admin_listen, "tollgate serving");

    let mut grpc = grpc;
    tokio::select! {
        () = shutdown_signal() => {}
        res = &mut grpc => {
            // The gRPC server stopped on its own: that is fatal.
            shutdown.cancel();
            return match res {
                Ok(Ok(())) => Err(anyhow::anyhow!("gRPC server exited unexpectedly")),
                Ok(Err(e)) => Err(e).context("gRPC server failed"),
                Err(e) => Err(e).context("gRPC server task failed"),
            };
        }
    }

    tracing::info!(
        in_flight = metrics.streams_active(),
        timeout = ?settings.drain_timeout,
        "shutting down: draining in-flight streams"
    );
    readiness.set_draining();
    shutdown.cancel();
    match tokio::time::timeout(settings.drain_timeout, &mut grpc).await {
        Ok(_) => tracing::info!("drained"),
        Err(_) => {
            tracing::warn!(
                abandoned = metrics.streams_active(),
                "drain timeout reached; closing remaining streams"
            );
            grpc.abort();
        }
    }
    if let ListenAddr::Unix(path) = &settings.grpc_listen {
        let _ = std::fs::remove_file(path);
    }
    // The gRPC server is gone, and with it every exchange and the observer's queues: the
    // writers flush what is queued and stop.
    drop(grpc);
    if let Some(task) = span_task
        && tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .is_err()
    {
        tracing::warn!("span export did not finish within 10s; remaining spans dropped");
    }
    if let Some(writer) = audit_writer {
        let joined = tokio::task::spawn_blocking(move || writer.join());
        if tokio::time::timeout(Duration::from_secs(10), joined)
            .await
            .is_err()
        {
            tracing::warn!("audit writer did not finish within 10s");
        }
    }
    // Every exchange is gone with the gRPC server, so the settlement queue's senders are
    // dropped: the worker drains what is queued (refunds of streams cut by the shutdown
    // included) and ends. Bounded, in case the store hangs.
    if tokio::time::timeout(Duration::from_secs(5), settler)
        .await
        .is_err()
    {
        tracing::warn!(
            "settlements not drained within 5s; their reservations expire with their windows"
        );
    }
    limiter_stop.cancel();
    if let Some(t) = redis_task {
        let _ = t.await;
    }
    let _ = admin.await;
    let _ = watcher.await;
    Ok(())
}

/// The gRPC listener's TLS: certificate and key, and with a client CA, required client
/// certificates (mTLS: a caller without one fails the handshake).
fn server_tls(tls: &crate::config::GrpcTls) -> anyhow::Result<tonic::transport::ServerTlsConfig> {
    let read =
        |p: &std::path::Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let identity =
        tonic::transport::Identity::from_pem(read(&tls.cert_file)?, read(&tls.key_file)?);
    let mut config = tonic::transport::ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &tls.client_ca_file {
        config = config
            .client_ca_root(tonic::transport::Certificate::from_pem(read(ca)?))
            .client_auth_optional(false);
    }
    Ok(config)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
