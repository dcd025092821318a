//! Hot reload: watch the config file, compile changes, swap atomically.
//!
//! The parent directory is watched, not the file, because a Kubernetes ConfigMap update
//! swaps a `..data` symlink next to the file rather than writing the file itself. Events
//! are debounced; a slow poll (content-hash compare) backs up file systems without events.
//! An invalid file never replaces the running config: the reason is logged, a failure is
//! counted and `tollgate_config_last_reload_success` drops to 0 until a good file arrives.
//!
//! The files the config names (`auth.key_file`, every `file:` secret, `pricing.file`) are
//! watched the same way: their directories get events, and the poll compares one hash over
//! the config and all of them (a missing file hashes as missing). So removing a key from the
//! key file revokes it, and a rotated provider key is sent, at the next event or poll; and a
//! reload rejected because a secret file was briefly missing (a Secret volume mid-swap) is
//! retried as soon as the file is back, since its state — and so the hash — changed.

use super::{CompileOptions, Snapshot, StaticSettings, compile_with_inputs};
use crate::metrics::Metrics;
use arc_swap::ArcSwap;
use notify::{EventKind, RecursiveMode, Watcher};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
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

/// What compiling the file left to do.
enum Step {
    /// Nothing to swap (unchanged or rejected).
    Done(Outcome),
    /// A valid snapshot to install.
    Install { next: Box<Snapshot>, hash: String },
}

/// The compiler the reloader calls: [`compile_with_inputs`] with the process's secrets;
/// replaceable in tests (a compile that waits for a signal shows where it runs).
pub type CompileFn =
    dyn Fn(&str) -> (Result<Snapshot, Vec<super::ConfigError>>, Vec<PathBuf>) + Send + Sync;

/// Reloads one config file into a shared [`ArcSwap`].
pub struct Reloader {
    path: PathBuf,
    compile: Box<CompileFn>,
    store: Arc<ArcSwap<Snapshot>>,
    metrics: Arc<Metrics>,
    /// Hash of the last content tried (config and inputs), good or bad, so a bad state is
    /// reported once.
    last_tried: Mutex<String>,
    /// The other files the config named at the last attempt.
    inputs: Mutex<Vec<PathBuf>>,
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
        let inputs = store.load().inputs.clone();
        let last_tried = std::fs::read(&path)
            .map(|text| state_hash(&text, &inputs))
            .unwrap_or_default();
        metrics.config_loaded(&store.load().hash);
        Self {
            path,
            compile: Box::new(|text| compile_with_inputs(text, &CompileOptions::from_process())),
            store,
            metrics,
            last_tried: Mutex::new(last_tried),
            inputs: Mutex::new(inputs),
            file_settings: Mutex::new(file_settings),
        }
    }

    /// The same reloader with another compiler (tests).
    #[cfg(test)]
    fn with_compile(mut self, compile: Box<CompileFn>) -> Self {
        self.compile = compile;
        self
    }

    /// Directories to watch: the config's and those of the files it names.
    fn dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::iter::once(self.path.as_path())
            .chain(self.inputs.lock().iter().map(PathBuf::as_path))
            .map(parent_dir)
            .collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// Reads, compiles and (when valid and changed) swaps in the file, all on the calling
    /// thread (tests, and callers outside the runtime). The watcher uses [`Self::reload`].
    pub fn reload_now(&self) -> Outcome {
        match self.compile_next() {
            Step::Done(outcome) => outcome,
            Step::Install { next, hash } => self.install(*next, hash),
        }
    }

    /// As [`Self::reload_now`], with the reading and compiling (file I/O, regexes,
    /// tokenizers: milliseconds of CPU) on the blocking pool: the runtime is single-threaded,
    /// so compiling on it would stall every stream for the whole compile. Only the swap runs
    /// here.
    pub async fn reload(self: &Arc<Self>) -> Outcome {
        let this = Arc::clone(self);
        match tokio::task::spawn_blocking(move || this.compile_next()).await {
            Ok(Step::Done(outcome)) => outcome,
            Ok(Step::Install { next, hash }) => self.install(*next, hash),
            Err(e) => self.reject(String::new(), vec![format!("the compile task failed: {e}")]),
        }
    }

    /// Reads and compiles the file; everything but the swap (blocking: file I/O and CPU).
    fn compile_next(&self) -> Step {
        let text = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) => {
                // A ConfigMap swap can briefly leave no file; the next event or poll retries.
                let reason = format!("cannot read {}: {e}", self.path.display());
                return Step::Done(self.reject(String::new(), vec![reason]));
            }
        };
        let before = self.inputs.lock().clone();
        let state = state_hash(&text, &before);
        if *self.last_tried.lock() == state {
            return Step::Done(Outcome::Unchanged);
        }
        let hash = super::content_hash(&text);
        let text = match String::from_utf8(text) {
            Ok(t) => t,
            Err(_) => return Step::Done(self.reject(state, vec!["the file is not UTF-8".into()])),
        };
        let (compiled, inputs) = (self.compile)(&text);
        // The state tried: with the same inputs, the hash taken before compiling (a file that
        // changed meanwhile differs at the next poll and is reloaded again); with new inputs,
        // their hash now.
        let state = if inputs == before {
            state
        } else {
            state_hash(text.as_bytes(), &inputs)
        };
        *self.inputs.lock() = inputs;
        match compiled {
            Ok(next) => {
                *self.last_tried.lock() = state;
                Step::Install {
                    next: Box::new(next),
                    hash,
                }
            }
            Err(errors) => {
                let reasons = errors.iter().map(ToString::to_string).collect();
                Step::Done(self.reject(state, reasons))
            }
        }
    }

    /// Swaps in a compiled snapshot, keeping the static settings, and starts its
    /// background work (the compiler starts none).
    fn install(&self, mut next: Snapshot, hash: String) -> Outcome {
        let stated = std::mem::replace(&mut *self.file_settings.lock(), next.settings.clone());
        if next.settings != stated {
            tracing::warn!(
                "static settings (server listen addresses, drain timeout, log, telemetry, audit) changed; they apply after a restart"
            );
        }
        let running = self.store.load();
        if next.limits.store != running.limits.store {
            tracing::warn!("limits.store / limits.redis changed; they apply after a restart");
        }
        next.limits.store = running.limits.store.clone();
        next.settings = running.settings.clone();
        crate::providers::gemini::start_token_refresh(&next.routing.backends);
        self.store.store(Arc::new(next));
        self.metrics.config_reloaded(true, &hash);
        tracing::info!(config = %hash, "config reloaded");
        Outcome::Applied { hash }
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
        let this = Arc::new(self);
        let (tx, mut rx) = mpsc::channel::<()>(16);
        let mut watcher = match watcher(tx) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "file events unavailable; relying on polling");
                None
            }
        };
        let mut watched: Vec<PathBuf> = Vec::new();
        loop {
            if let Some(w) = watcher.as_mut() {
                for dir in this.dirs() {
                    if !watched.contains(&dir) {
                        // A directory that does not exist yet is covered by the poll.
                        match w.watch(&dir, RecursiveMode::NonRecursive) {
                            Ok(()) => watched.push(dir),
                            Err(e) => {
                                tracing::debug!(dir = %dir.display(), error = %e, "not watched; polling covers it")
                            }
                        }
                    }
                }
            }
            let reload = this.store.load().reload.clone();
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
            this.reload().await;
        }
    }
}

fn parent_dir(path: &Path) -> PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// One hash over the config bytes and every input file's path and content (or its absence).
/// Internal only: never logged or exported (it covers secrets).
fn state_hash(config: &[u8], inputs: &[PathBuf]) -> String {
    let mut h = Sha256::new();
    h.update((config.len() as u64).to_le_bytes());
    h.update(config);
    for p in inputs {
        let path = p.as_os_str().as_encoded_bytes();
        h.update((path.len() as u64).to_le_bytes());
        h.update(path);
        match std::fs::read(p) {
            Ok(bytes) => {
                h.update([1]);
                h.update((bytes.len() as u64).to_le_bytes());
                h.update(&bytes);
            }
            Err(e) => {
                h.update([0]);
                h.update(format!("{:?}", e.kind()).as_bytes());
            }
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn watcher(tx: mpsc::Sender<()>) -> notify::Result<notify::RecommendedWatcher> {
    notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res
            && !matches!(ev.kind, EventKind::Access(_))
        {
            // A full channel already holds a pending reload; dropping is fine.
            let _ = tx.try_send(());
        }
    })
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
    fn a_reload_compiles_off_the_runtime_thread() {
        // One thread, as in production. The compile waits until another task has run three
        // times: on the runtime thread that task could never run (the wait gives up after
        // 10 s and the compile records it saw no ticks), on the blocking pool it does.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (_d, path, store, r, _m) = setup();
        write(&path, V2);
        let (tick_tx, tick_rx) = std::sync::mpsc::channel::<u32>();
        let tick_rx = Mutex::new(tick_rx);
        let seen = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let seen_in_compile = seen.clone();
        let r = Arc::new(r.with_compile(Box::new(move |text| {
            let ticks = tick_rx
                .lock()
                .recv_timeout(std::time::Duration::from_secs(10))
                .unwrap_or(0);
            seen_in_compile.store(ticks, std::sync::atomic::Ordering::SeqCst);
            compile_with_inputs(text, &CompileOptions::from_process())
        })));
        let outcome = rt.block_on(async {
            let ticker = tokio::spawn(async move {
                let mut ticks = 0;
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                    ticks += 1;
                }
                let _ = tick_tx.send(ticks);
            });
            let outcome = r.reload().await;
            ticker.await.unwrap();
            outcome
        });
        assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert_eq!(store.load().routing.models.len(), 2);
    }

    #[test]
    fn the_same_compile_on_the_runtime_thread_starves_other_tasks() {
        // The counter-test: `reload_now` on the runtime thread (what the watcher did before)
        // lets the ticker run not once while the compile runs.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (_d, path, _store, r, _m) = setup();
        write(&path, V2);
        let ticks = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let during = Arc::new(std::sync::atomic::AtomicU32::new(u32::MAX));
        let (t, d) = (ticks.clone(), during.clone());
        let r = r.with_compile(Box::new(move |text| {
            // Give any other runnable task the chance it would have on another thread.
            std::thread::yield_now();
            d.store(
                t.load(std::sync::atomic::Ordering::SeqCst),
                std::sync::atomic::Ordering::SeqCst,
            );
            compile_with_inputs(text, &CompileOptions::from_process())
        }));
        rt.block_on(async {
            let t = ticks.clone();
            let ticker = tokio::spawn(async move {
                for _ in 0..3 {
                    t.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tokio::task::yield_now().await;
                }
            });
            assert!(matches!(r.reload_now(), Outcome::Applied { .. }));
            ticker.await.unwrap();
        });
        assert_eq!(during.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert_eq!(ticks.load(std::sync::atomic::Ordering::SeqCst), 3);
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

    /// A config whose backend key is a `file:` secret and whose consumer keys are in a key
    /// file, both outside the config's directory (like mounted Secrets).
    fn with_files() -> (
        tempfile::TempDir,
        PathBuf,
        PathBuf,
        PathBuf,
        Arc<ArcSwap<Snapshot>>,
        Reloader,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let secrets = dir.path().join("secrets");
        std::fs::create_dir(&secrets).unwrap();
        let conf = dir.path().join("conf");
        std::fs::create_dir(&conf).unwrap();
        let key = secrets.join("provider-key");
        let keys = secrets.join("keys.txt");
        write(&key, "sk-old\n");
        write(
            &keys,
            &format!("app {}\napp {}\n", hash_of("k1"), hash_of("k2")),
        );
        let path = conf.join("tollgate.yaml");
        write(
            &path,
            &format!(
                "version: 1\nbackends: [{{name: a, kind: openai, auth: {{api_key: {{file: {}}}}}}}]\nmodels: [{{name: m1, backend: a}}]\nauth: {{mode: api_key, key_file: {}}}\nconsumers: [{{name: app}}]\n",
                key.display(),
                keys.display()
            ),
        );
        let snap = super::super::load(&path, &CompileOptions::from_process()).unwrap();
        let settings = snap.settings.clone();
        let store = Arc::new(ArcSwap::from_pointee(snap));
        let r = Reloader::new(
            path.clone(),
            store.clone(),
            Arc::new(Metrics::new()),
            settings,
        );
        (dir, key, keys, path, store, r)
    }

    fn hash_of(key: &str) -> String {
        crate::auth::hash_key(&crate::secret::Secret::new(key))
    }

    fn provider_key(store: &ArcSwap<Snapshot>) -> String {
        let snap = store.load();
        snap.routing.backends[0]
            .credential
            .as_ref()
            .map(|c| c.value.expose().to_owned())
            .unwrap_or_default()
    }

    fn knows(store: &ArcSwap<Snapshot>, key: &str) -> bool {
        use sha2::{Digest, Sha256};
        let d: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        store.load().access.keys.contains_key(&d)
    }

    #[test]
    fn a_key_removed_from_the_key_file_is_revoked_without_touching_the_config() {
        let (_d, _key, keys, _path, store, r) = with_files();
        assert!(knows(&store, "k1") && knows(&store, "k2"));
        assert_eq!(r.reload_now(), Outcome::Unchanged);
        write(&keys, &format!("app {}\n", hash_of("k1")));
        assert!(matches!(r.reload_now(), Outcome::Applied { .. }));
        assert!(knows(&store, "k1"));
        assert!(!knows(&store, "k2"), "revoked");
        assert_eq!(r.reload_now(), Outcome::Unchanged);
    }

    #[test]
    fn a_rotated_secret_file_is_picked_up_and_a_briefly_missing_one_is_retried() {
        let (_d, key, _keys, _path, store, r) = with_files();
        assert_eq!(provider_key(&store), "Bearer sk-old");
        write(&key, "sk-new\n");
        assert!(matches!(r.reload_now(), Outcome::Applied { .. }));
        assert_eq!(provider_key(&store), "Bearer sk-new");
        // Mid-swap: the file is gone. Rejected, the running key keeps serving ...
        std::fs::remove_file(&key).unwrap();
        assert!(matches!(r.reload_now(), Outcome::Rejected { .. }));
        assert_eq!(provider_key(&store), "Bearer sk-new");
        // ... not retried while nothing changes (no log flood) ...
        assert_eq!(r.reload_now(), Outcome::Unchanged);
        // ... and retried once it is back, even with the very same content.
        write(&key, "sk-new\n");
        assert!(matches!(r.reload_now(), Outcome::Applied { .. }));
        assert_eq!(provider_key(&store), "Bearer sk-new");
        std::fs::remove_file(&key).unwrap();
        assert!(matches!(r.reload_now(), Outcome::Rejected { .. }));
        write(&key, "sk-newer\n");
        assert!(matches!(r.reload_now(), Outcome::Applied { .. }));
        assert_eq!(provider_key(&store), "Bearer sk-newer");
    }

    #[tokio::test]
    async fn the_watcher_sees_a_secret_file_change_in_another_directory() {
        let (_d, key, _keys, path, store, r) = with_files();
        // Events only: the poll is far off.
        let text = std::fs::read_to_string(&path).unwrap();
        write(
            &path,
            &format!("{text}reload: {{poll_interval: 1h, debounce: 50ms}}\n"),
        );
        assert!(matches!(r.reload_now(), Outcome::Applied { .. }));
        let stop = CancellationToken::new();
        let task = tokio::spawn(r.watch(stop.clone()));
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        write(&key, "sk-rotated\n");
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
        while provider_key(&store) != "Bearer sk-rotated" {
            assert!(
                tokio::time::Instant::now() < deadline,
                "rotation not picked up"
            );
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        stop.cancel();
        task.await.unwrap();
    }
}
