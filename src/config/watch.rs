//! Hot reload: watch the config file, compile changes, swap atomically.
//!
//! The parent directory is watched, not the file, because a Kubernetes ConfigMap update
//! swaps a `..data` symlink next to the file rather than writing the file itself. Events
//! are debounced; a slow poll (content-hash compare) backs up file systems without events.
//! An invalid file never replaces the running config: the reason is logged, a failure is
//! counted and `tollgate_config_last_reload_success` drops to 0 until a good file arrives.

use super::{CompileOptions, Snapshot, StaticSettings, compile};
use crate::metrics::Metrics;
use arc_swap::ArcSwap;
use notify::{EventKind, RecursiveMode, Watcher};
use parking_lot::Mutex;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What one reload attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Same bytes as the last attempt: nothing to do.
    Unchanged,
    /// A new snapshot is serving.
    Applied {
        /// Its content hash.
        hash: String,
    },
    /// The file was unreadable or invalid; the old snapshot keeps serving.
    Rejected {
        /// Every reason.
        reasons: Vec<String>,
    },
}

/// Reloads one config file into a shared [`ArcSwap`].
pub struct Reloader {
    path: PathBuf,
    store: Arc<ArcSwap<Snapshot>>,
    metrics: Arc<Metrics>,
    /// Hash of the last content tried, good or bad, so a bad file is reported once.
    last_tried: Mutex<String>,
    /// Static settings as the file last stated them (before command-line overrides), to
    /// tell a real change from an override.
    file_settings: Mutex<StaticSettings>,
}

impl Reloader {
    /// Creates a reloader; `store` holds the snapshot serving now, and `file_settings` the
    /// static settings its file stated (command-line overrides may differ).
    pub fn new(
        path: PathBuf,
        store: Arc<ArcSwap<Snapshot>>,
        metrics: Arc<Metrics>,
        file_settings: StaticSettings,
    ) -> Self {
        let last_tried = Mutex::new(store.load().hash.clone());
        metrics.config_loaded(&store.load().hash);
        Self {
            path,
            store,
            metrics,
            last_tried,
            file_settings: Mutex::new(file_settings),
        }
    }

    /// Reads, compiles and (when valid and changed) swaps in the file.
    pub fn reload_now(&self) -> Outcome {
        let text = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) => {
                // A ConfigMap swap can briefly leave no file; the next event or poll retries.
                let reason = format!("cannot read {}: {e}", self.path.display());
                return self.reject(String::new(), vec![reason]);
            }
        };
        let hash = super::content_hash(&text);
        if *self.last_tried.lock() == hash {
            return Outcome::Unchanged;
        }
        let text = match String::from_utf8(text) {
            Ok(t) => t,
            Err(_) => return self.reject(hash, vec!["the file is not UTF-8".into()]),
        };
        match compile(&text, &CompileOptions::from_process()) {
            Ok(mut next) => {
                *self.last_tried.lock() = hash.clone();
                let stated =
                    std::mem::replace(&mut *self.file_settings.lock(), next.settings.clone());
                if next.settings != stated {
                    tracing::warn!(
                        "static settings (server listen addresses, drain timeout, log, telemetry, audit) changed; they apply after a restart"
                    );
                }
                let running = self.store.load();
                if next.limits.store != running.limits.store {
                    tracing::warn!(
                        "limits.store / limits.redis changed; they apply after a restart"
                    );
                }
                next.limits.store = running.limits.store.clone();
                next.settings = running.settings.clone();
                self.store.store(Arc::new(next));
                self.metrics.config_reloaded(true, &hash);
                tracing::info!(config = %hash, "config reloaded");
                Outcome::Applied { hash }
            }
            Err(errors) => {
                let reasons = errors.iter().map(ToString::to_string).collect();
                self.reject(hash, reasons)
            }
        }
    }

    fn reject(&self, hash: String, reasons: Vec<String>) -> Outcome {
        if !hash.is_empty() {
            *self.last_tried.lock() = hash;
        }
        self.metrics.config_reloaded(false, "");
        tracing::error!(
            path = %self.path.display(),
            "config reload rejected, the previous config keeps serving:\n  {}",
            reasons.join("\n  ")
        );
        Outcome::Rejected { reasons }
    }

    /// Watches the file until `shutdown`; reloads after debounced events and on each poll.
    pub async fn watch(self, shutdown: CancellationToken) {
        let (tx, mut rx) = mpsc::channel::<()>(16);
        let _watcher = match watch_parent(&self.path, tx) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "file events unavailable; relying on polling");
                None
            }
        };
        loop {
            let reload = self.store.load().reload.clone();
            let poll = async {
                if reload.poll_interval.is_zero() {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(reload.poll_interval).await;
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = poll => {}
                event = rx.recv() => {
                    if event.is_none() {
                        return;
                    }
                    // Debounce: wait until events stop for `debounce`.
                    loop {
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            more = rx.recv() => if more.is_none() { return },
                            () = tokio::time::sleep(reload.debounce) => break,
                        }
                    }
                }
            }
            self.reload_now();
        }
    }
}

fn watch_parent(path: &Path, tx: mpsc::Sender<()>) -> notify::Result<notify::RecommendedWatcher> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res
            && !matches!(ev.kind, EventKind::Access(_))
        {
            // A full channel already holds a pending reload; dropping is fine.
            let _ = tx.try_send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
    }

    const V1: &str =
        "version: 1\nbackends: [{name: a, kind: openai}]\nmodels: [{name: m1, backend: a}]\n";
    const V2: &str = "version: 1\nbackends: [{name: a, kind: openai}]\nmodels: [{name: m1, backend: a}, {name: m2, backend: a}]\n";

    fn setup() -> (
        tempfile::TempDir,
        PathBuf,
        Arc<ArcSwap<Snapshot>>,
        Reloader,
        Arc<Metrics>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tollgate.yaml");
        write(&path, V1);
        let snap = super::super::load(&path, &CompileOptions::from_process()).unwrap();
        let settings = snap.settings.clone();
        let store = Arc::new(ArcSwap::from_pointee(snap));
        let metrics = Arc::new(Metrics::new());
        let r = Reloader::new(path.clone(), store.clone(), metrics.clone(), settings);
        (dir, path, store, r, metrics)
    }

    #[test]
    fn valid_change_is_applied_and_unchanged_is_skipped() {
        let (_d, path, store, r, metrics) = setup();
        assert_eq!(r.reload_now(), Outcome::Unchanged);
        write(&path, V2);
        assert!(matches!(r.reload_now(), Outcome::Applied { .. }));
        assert_eq!(store.load().routing.models.len(), 2);
        assert_eq!(r.reload_now(), Outcome::Unchanged);
        assert!(
            metrics
                .render()
                .contains("tollgate_config_reloads_total{result=\"success\"} 1")
        );
    }

    #[test]
    fn invalid_change_keeps_the_old_config() {
        let (_d, path, store, r, metrics) = setup();
        write(&path, "version: 1\nmodels: [{name: m1, backend: nope}]\n");
        let Outcome::Rejected { reasons } = r.reload_now() else {
            panic!("expected rejection")
        };
        assert_eq!(reasons, vec!["models[0].backend: unknown backend \"nope\""]);
        assert_eq!(store.load().routing.models.len(), 1);
        let text = metrics.render();
        assert!(
            text.contains("tollgate_config_reloads_total{result=\"failure\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tollgate_config_last_reload_success 0"),
            "{text}"
        );
        // The same bad bytes are not retried (no log flood); a fix is applied.
        assert_eq!(r.reload_now(), Outcome::Unchanged);
        write(&path, V2);
        assert!(matches!(r.reload_now(), Outcome::Applied { .. }));
        assert!(
            metrics
                .render()
                .contains("tollgate_config_last_reload_success 1")
        );
    }

    #[test]
    fn static_settings_are_kept_until_restart() {
        let (_d, path, store, r, _m) = setup();
        write(
            &path,
            &format!("{V2}server: {{ admin_listen: 127.0.0.1:1 }}\n"),
        );
        assert!(matches!(r.reload_now(), Outcome::Applied { .. }));
        assert_eq!(store.load().settings.admin_listen.port(), 9090);
        assert_eq!(store.load().routing.models.len(), 2);
    }

    #[tokio::test]
    async fn watcher_picks_up_a_configmap_style_symlink_swap() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = dir.path().join("..v1");
        let v2 = dir.path().join("..v2");
        std::fs::create_dir(&v1).unwrap();
        std::fs::create_dir(&v2).unwrap();
        write(&v1.join("tollgate.yaml"), V1);
        write(&v2.join("tollgate.yaml"), &V2.replace("m2", "m3"));
        let data = dir.path().join("..data");
        std::os::unix::fs::symlink("..v1", &data).unwrap();
        let path = dir.path().join("tollgate.yaml");
        std::os::unix::fs::symlink("..data/tollgate.yaml", &path).unwrap();

        let snap = super::super::load(&path, &CompileOptions::from_process()).unwrap();
        let settings = snap.settings.clone();
        let store = Arc::new(ArcSwap::from_pointee(snap));
        let r = Reloader::new(path, store.clone(), Arc::new(Metrics::new()), settings);
        let stop = CancellationToken::new();
        let task = tokio::spawn(r.watch(stop.clone()));
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        // Atomic swap, as the kubelet does it: new symlink, then rename over ..data.
        let tmp = dir.path().join("..data_tmp");
        std::os::unix::fs::symlink("..v2", &tmp).unwrap();
        std::fs::rename(&tmp, &data).unwrap();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
        while store.load().routing.models.len() != 2 {
            assert!(tokio::time::Instant::now() < deadline, "swap not picked up");
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        assert_eq!(store.load().routing.models[1].name, "m3");
        stop.cancel();
        task.await.unwrap();
    }
}
