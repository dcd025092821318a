//! The audit log: one JSON object per request, written off the request path.
//!
//! [`line`] (pure) turns a [`RequestRecord`] into the JSON line; [`AuditLog`] queues lines
//! into a bounded channel read by one writer thread, which appends to stdout or to a file
//! rotated by size (`audit.jsonl` → `audit.jsonl.1` → … → `.N`, oldest deleted). A full
//! queue or a failed write drops the line and counts it in
//! `tollgate_audit_lines_dropped_total`: the audit log never slows a request.
//!
//! Fields are present only when known (tokens, cost, consumer, team and guard actions come
//! from later stages). No prompt or response text is ever written: the payload option is
//! refused by the config until the guard's masking exists (see `config::compile`).

use super::RequestRecord;
use crate::metrics::Metrics;
use serde_json::{Map, Value, json};
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;

// Owned here, not by `config` (config -> observe only).

/// Audit log destination and limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    /// Where lines go.
    pub output: AuditOutput,
    /// Rotate at this size (files only).
    pub max_size: u64,
    /// Rotated files kept.
    pub max_files: u32,
    /// Bound of the writer's queue.
    pub queue_size: usize,
    /// Add the guard-masked messages to each line (see [`crate::guard::masked_payload`]).
    pub include_payload: bool,
}

/// Audit destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditOutput {
    /// Standard output, one line per request.
    Stdout,
    /// A file, rotated by size.
    File(PathBuf),
}

/// The audit line for one request.
pub fn line(r: &RequestRecord) -> Value {
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_owned(), v);
    };
    put(
        "ts",
        json!(humantime::format_rfc3339_millis(r.started_at).to_string()),
    );
    put("request_id", json!(r.request_id));
    put("trace_id", json!(r.trace.trace_id.to_string()));
    put("span_id", json!(r.trace.span_id.to_string()));
    if let Some(op) = r.operation {
        put("operation", json!(op));
    }
    if let Some(rt) = &r.routed {
        if !rt.requested_model.is_empty() {
            put("requested_model", json!(rt.requested_model));
        }
        put("model", json!(rt.model_label));
        put("upstream_model", json!(rt.upstream_model));
        put("backend", json!(rt.backend));
        put("rule", json!(rt.rule));
        put("stream", json!(rt.stream));
    }
    if let Some(p) = r.provider {
        put("provider", json!(p));
    }
    if let Some(rm) = &r.response_model {
        put("response_model", json!(rm));
    }
    match r.status {
        Some(s) => put("status", json!(s)),
        None => put("status", Value::Null),
    }
    if let Some(e) = r.error_type() {
        put("error", json!(e));
    }
    put("latency_ms", json!(millis(r.duration)));
    if let Some(t) = r.time_to_first_token {
        put("ttft_ms", json!(millis(t)));
    }
    if let Some(u) = r.usage {
        put(
            "tokens",
            json!({"input": u.input_tokens, "output": u.output_tokens, "total": u.input_tokens + u.output_tokens}),
        );
    }
    if let Some(c) = r.cost_usd {
        put("cost_usd", json!(c));
    }
    if let Some(c) = &r.consumer {
        put("consumer", json!(c));
    }
    if let Some(p) = &r.payload {
        put("payload", p.clone());
    }
    if r.limits_fail_open {
        put("limits_fail_open", json!(true));
    }
    if let Some(t) = &r.team {
        put("team", json!(t));
    }
    if let Some(g) = &r.guard {
        let detections: Map<String, Value> = g
            .detections
            .iter()
            .map(|(k, n)| (k.clone(), json!(n)))
            .collect();
        put(
            "guard",
            json!({"detections": detections, "masked": g.masked, "blocked": g.blocked}),
        );
    }
    Value::Object(m)
}

fn millis(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// The queue in front of the writer thread.
pub struct AuditLog {
    tx: SyncSender<String>,
}

/// Joins the writer thread once every [`AuditLog`] handle is gone.
pub struct AuditWriter {
    handle: JoinHandle<()>,
}

impl AuditWriter {
    /// Waits for the writer to flush the queue and stop (after the last `AuditLog` dropped).
    pub fn join(self) {
        let _ = self.handle.join();
    }
}

/// Why the audit log could not start.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The file or its directory is not writable.
    #[error("cannot open audit log {path}: {source}")]
    Open {
        /// File path.
        path: String,
        /// I/O error.
        source: io::Error,
    },
    /// The writer thread did not start.
    #[error("cannot start the audit writer thread: {0}")]
    Thread(io::Error),
}

impl AuditLog {
    /// Opens the output (so a bad path fails at start-up) and starts the writer thread.
    pub fn start(
        settings: &AuditSettings,
        metrics: Arc<Metrics>,
    ) -> Result<(AuditLog, AuditWriter), AuditError> {
        let sink = match &settings.output {
            AuditOutput::Stdout => Sink::Stdout,
            AuditOutput::File(path) => Sink::File(RotatingFile::open(
                path.clone(),
                settings.max_size,
                settings.max_files,
            )?),
        };
        let (tx, rx) = mpsc::sync_channel(settings.queue_size);
        let handle = std::thread::Builder::new()
            .name("tollgate-audit".into())
            .spawn(move || write_loop(rx, sink, &metrics))
            .map_err(AuditError::Thread)?;
        Ok((AuditLog { tx }, AuditWriter { handle }))
    }

    /// Queues the record's line; `false` when the queue is full (the line is dropped).
    pub fn submit(&self, record: &RequestRecord) -> bool {
        let mut text = line(record).to_string();
        text.push('\n');
        match self.tx.try_send(text) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }
}

enum Sink {
    Stdout,
    File(RotatingFile),
}

fn write_loop(rx: Receiver<String>, mut sink: Sink, metrics: &Metrics) {
    let mut failing = false;
    // Block for one line, then take whatever else is queued and flush once per batch.
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter().take(1023));
        let n = batch.len();
        let res = match &mut sink {
            Sink::Stdout => {
                let mut out = io::stdout().lock();
                batch
                    .iter()
                    .try_for_each(|l| out.write_all(l.as_bytes()))
                    .and_then(|()| out.flush())
            }
            Sink::File(f) => f.write_batch(&batch),
        };
        match res {
            Ok(()) => failing = false,
            Err(e) => {
                for _ in 0..n {
                    metrics.audit_dropped();
                }
                // One warning per failure streak, not one per line.
                if !failing {
                    tracing::warn!(error = %e, lines = n, "audit log write failed; lines dropped");
                }
                failing = true;
            }
        }
    }
}

/// An append-only file rotated by size.
struct RotatingFile {
    path: PathBuf,
    max_size: u64,
    max_files: u32,
    out: BufWriter<File>,
    size: u64,
}

impl RotatingFile {
    fn open(path: PathBuf, max_size: u64, max_files: u32) -> Result<Self, AuditError> {
        let (out, size) = open_append(&path).map_err(|source| AuditError::Open {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self {
            path,
            max_size,
            max_files,
            out,
            size,
        })
    }

    fn write_batch(&mut self, lines: &[String]) -> io::Result<()> {
        for l in lines {
            if self.size > 0 && self.size + l.len() as u64 > self.max_size {
                self.rotate()?;
            }
            self.out.write_all(l.as_bytes())?;
            self.size += l.len() as u64;
        }
        self.out.flush()
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.out.flush()?;
        let numbered = |i: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{i}"));
            PathBuf::from(p)
        };
        if self.max_files == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            let _ = std::fs::remove_file(numbered(self.max_files));
            for i in (1..self.max_files).rev() {
                let from = numbered(i);
                if from.exists() {
                    std::fs::rename(&from, numbered(i + 1))?;
                }
            }
            std::fs::rename(&self.path, numbered(1))?;
        }
        let (out, size) = open_append(&self.path)?;
        self.out = out;
        self.size = size;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<(BufWriter<File>, u64)> {
    let f = OpenOptions::new().create(true).append(true).open(path)?;
    let size = f.metadata()?.len();
    Ok((BufWriter::with_capacity(64 << 10, f), size))
}

#[cfg(test)]
mod tests;
