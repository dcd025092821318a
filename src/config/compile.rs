//! Raw YAML → [`Snapshot`]: every error at once, each with its YAML path.
//!
//! serde stops at the first error, so the document is first read as a YAML value and each
//! section (and each list element) is deserialized on its own; then cross-references,
//! names and values are checked. Nothing here is validated twice: the snapshot holds
//! indices that are known to be valid.
//!
//! This file is the core: the structural pass (`Cx::read`), the semantic pass that puts
//! the sections together (`Cx::check`), the shared value checks (durations, sizes,
//! names) and the one file-reading edge, `Cx::read_input`. Each section compiles in its
//! own file: `server`, `observe`, `providers`, `routing`, `guard`, `access` (auth, teams,
//! consumers, pricing, limits, usage).

use super::raw::{ByteSize, RawConfig};
use super::{ReloadSettings, Snapshot};
use crate::routing::{Route, Table};
use crate::suggest;
use serde::de::DeserializeOwned;
use serde_yaml::Value;
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

// One file per section; each adds its part to `impl Cx`, this file reads the YAML and
// puts the sections together.
mod access;
mod guard;
mod observe;
mod providers;
mod routing;
mod server;

// What the tests (`use super::*`) name from the section files and the domain types they
// compile into; before the split these were all in scope here.
#[cfg(test)]
use super::ListenAddr;
#[cfg(test)]
use crate::observe::audit::AuditOutput;
#[cfg(test)]
use crate::observe::spans::OtlpProtocol;
#[cfg(test)]
use crate::providers::ProviderConfig;
#[cfg(test)]
use server::check_log_filter;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// YAML path such as `routes[2].backend`; empty for the whole document.
    pub path: String,
    /// What is wrong, and how to fix it when we can tell.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// How secrets are looked up while compiling.
pub struct CompileOptions<'a> {
    /// Resolve `auth` secrets (off for `tollgate validate --skip-secrets`).
    pub resolve_secrets: bool,
    /// Environment lookup; injected so tests need not touch the process environment.
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

impl CompileOptions<'_> {
    /// Secrets resolved from the real process environment and files.
    pub fn from_process() -> CompileOptions<'static> {
        CompileOptions {
            resolve_secrets: true,
            env: &|name| std::env::var(name).ok(),
        }
    }
}

const SECTIONS: &[&str] = &[
    "version",
    "server",
    "log",
    "reload",
    "routing",
    "backends",
    "models",
    "routes",
    "telemetry",
    "audit",
    "guard",
    "auth",
    "teams",
    "consumers",
    "pricing",
    "limits",
    "usage",
];

/// Compiles a config document.
pub fn compile(text: &str, opts: &CompileOptions<'_>) -> Result<Snapshot, Vec<ConfigError>> {
    compile_with_inputs(text, opts).0
}

/// Compiles a config document, and names every file it read or tried to read besides it
/// (`auth.key_file`, `file:` secrets, `pricing.file`) — also when it fails, so the reloader
/// can watch a file that is missing now and retry once it appears.
pub fn compile_with_inputs(
    text: &str,
    opts: &CompileOptions<'_>,
) -> (Result<Snapshot, Vec<ConfigError>>, Vec<std::path::PathBuf>) {
    let mut cx = Cx::default();
    let raw = cx.read(text);
    let snapshot = raw.and_then(|raw| cx.check(&raw, opts));
    let mut inputs = std::mem::take(&mut cx.inputs);
    inputs.sort();
    inputs.dedup();
    let result = match snapshot {
        Some(mut s) if cx.errors.is_empty() => {
            s.hash = super::content_hash(text.as_bytes());
            s.inputs = inputs.clone();
            Ok(s)
        }
        _ => Err(cx.errors),
    };
    (result, inputs)
}

#[derive(Default)]
struct Cx {
    errors: Vec<ConfigError>,
    /// Files read (or tried) besides the config itself.
    inputs: Vec<std::path::PathBuf>,
}

impl Cx {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Structural pass: YAML syntax, known sections, field names and types.
    fn read(&mut self, text: &str) -> Option<RawConfig> {
        let doc: Value = match serde_yaml::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                self.err("", format!("invalid YAML: {e}"));
                return None;
            }
        };
        let Value::Mapping(map) = doc else {
            self.err(
                "",
                "the config must be a YAML mapping with `version: 1` at the top",
            );
            return None;
        };
        for key in map.keys() {
            match key.as_str() {
                Some(k) if SECTIONS.contains(&k) => {}
                Some(k) => self.err(
                    k,
                    format!(
                        "unknown section{}",
                        suggest::hint(k, SECTIONS.iter().copied())
                    ),
                ),
                None => self.err("", format!("section names must be strings, got {key:?}")),
            }
        }
        let get = |k: &str| map.get(k).cloned().unwrap_or(Value::Null);
        let version: Option<u32> = match map.get("version") {
            None => {
                self.err("version", "missing: add `version: 1`");
                None
            }
            Some(v) => self.section("version", v.clone()),
        };
        let server = self.section_or_default("server", get("server"));
        let log = self.section_or_default("log", get("log"));
        let reload = self.section_or_default("reload", get("reload"));
        let routing = self.section_or_default("routing", get("routing"));
        let backends = self.list("backends", get("backends"));
        let models = self.list("models", get("models"));
        let routes = self.list("routes", get("routes"));
        let telemetry = self.section_or_default("telemetry", get("telemetry"));
        let audit = self.section_or_default("audit", get("audit"));
        let guard = self.section_or_default("guard", get("guard"));
        let auth = self.section_or_default("auth", get("auth"));
        let teams = self.list("teams", get("teams"));
        let consumers = self.list("consumers", get("consumers"));
        let pricing = self.section_or_default("pricing", get("pricing"));
        let limits = self.section_or_default("limits", get("limits"));
        let usage = self.section_or_default("usage", get("usage"));
        Some(RawConfig {
            version: version?,
            server: server?,
            log: log?,
            reload: reload?,
            routing: routing?,
            backends: backends?,
            models: models?,
            routes: routes?,
            telemetry: telemetry?,
            audit: audit?,
            guard: guard?,
            auth: auth?,
            teams: teams?,
            consumers: consumers?,
            pricing: pricing?,
            limits: limits?,
            usage: usage?,
        })
    }

    fn section<T: DeserializeOwned>(&mut self, path: &str, value: Value) -> Option<T> {
        // serde_yaml cannot read externally tagged enums (`auth: {bearer: ...}`) from a
        // `Value`; its JSON form can, and every config value has one.
        let json = match serde_json::to_value(&value) {
            Ok(j) => j,
            Err(e) => {
                self.err(path, format!("cannot be represented as plain data: {e}"));
                return None;
            }
        };
        match serde_path_to_error::deserialize::<_, T>(json) {
            Ok(v) => Some(v),
            Err(e) => {
                let inner = e.path().to_string();
                let full = match inner.as_str() {
                    "." => path.to_owned(),
                    p if p.starts_with('[') => format!("{path}{p}"),
                    p => format!("{path}.{p}"),
                };
                self.err(full, humanize(&e.into_inner().to_string()));
                None
            }
        }
    }

    fn section_or_default<T: DeserializeOwned + Default>(
        &mut self,
        path: &str,
        value: Value,
    ) -> Option<T> {
        if value.is_null() {
            return Some(T::default());
        }
        self.section(path, value)
    }

    /// Deserializes list elements one by one so every broken element is reported.
    fn list<T: DeserializeOwned>(&mut self, path: &str, value: Value) -> Option<Vec<T>> {
        match value {
            Value::Null => Some(Vec::new()),
            Value::Sequence(items) => {
                let mut out = Vec::with_capacity(items.len());
                let mut ok = true;
                for (i, item) in items.into_iter().enumerate() {
                    match self.section(&format!("{path}[{i}]"), item) {
                        Some(v) => out.push(v),
                        None => ok = false,
                    }
                }
                ok.then_some(out)
            }
            _ => {
                self.err(path, "expected a list");
                None
            }
        }
    }

    /// Semantic pass: names, references, values, secrets.
    fn check(&mut self, raw: &RawConfig, opts: &CompileOptions<'_>) -> Option<Snapshot> {
        if raw.version != 1 {
            self.err(
                "version",
                format!(
                    "unsupported version {}; this tollgate reads version 1",
                    raw.version
                ),
            );
        }
        let settings = self.settings(raw, opts);
        let max_request_body = match &raw.server.max_request_body {
            None => super::DEFAULT_MAX_REQUEST_BODY,
            Some(size) => self
                .byte_size("server.max_request_body", size)
                .unwrap_or_default(),
        };
        let reload = ReloadSettings {
            debounce: self.duration(
                "reload.debounce",
                raw.reload.debounce.as_deref(),
                Duration::from_millis(250),
            ),
            poll_interval: self.duration(
                "reload.poll_interval",
                raw.reload.poll_interval.as_deref(),
                Duration::from_secs(5),
            ),
        };
        let backends = self.backends(&raw.backends, opts);
        let backend_index: HashMap<&str, usize> = raw
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| (b.name.as_str(), i))
            .collect();
        let models = self.models(&raw.models, &backend_index);
        let switches = self.routing_switches(&raw.routing);
        let chains = self.chains(&raw.routing.chains, &backend_index, &backends);
        let routes = self.routes(&raw.routes, &backend_index, &raw.models, &chains);
        let needs_features = routes.iter().any(|r: &Route| r.when.needs_features());
        let guard = self.guard(&raw.guard, opts);
        let access = self.access(raw, &backend_index, opts);
        let pricing = self.pricing(&raw.pricing);
        let limits = self.limits(&raw.limits, &access, opts);
        let usage = self.usage(raw);
        Some(Snapshot {
            settings,
            max_request_body,
            reload,
            routing: Table {
                backends,
                models,
                routes,
                model_command: raw.routing.model_command.unwrap_or(true),
                chains,
                decision_header: switches.decision_header,
                cooldown: switches.cooldown,
                pii: switches.pii,
                needs_features,
            },
            guard,
            hash: String::new(),
            inputs: Vec::new(),
            access,
            pricing,
            limits,
            usage,
        })
    }

    fn duration(&mut self, path: &str, text: Option<&str>, default: Duration) -> Duration {
        let Some(text) = text else { return default };
        humantime::parse_duration(text).unwrap_or_else(|e| {
            self.err(
                path,
                format!("{text:?} is not a duration such as \"250ms\" or \"30s\": {e}"),
            );
            default
        })
    }

    fn byte_size(&mut self, path: &str, size: &ByteSize) -> Option<u64> {
        let parsed = match size {
            ByteSize::Bytes(n) => Some(*n),
            ByteSize::Text(t) => parse_byte_size(t),
        };
        match parsed {
            Some(0) | None => {
                let shown = match size {
                    ByteSize::Bytes(n) => n.to_string(),
                    ByteSize::Text(t) => format!("{t:?}"),
                };
                self.err(
                    path,
                    format!("{shown} is not a positive size such as 4MiB, 512KiB or 1048576"),
                );
                None
            }
            some => some,
        }
    }

    fn name(&mut self, path: &str, name: &str, what: &str) {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        if !ok {
            self.err(
                path,
                format!(
                    "{what} name {name:?} must be 1-64 characters of a-z, 0-9, '.', '_' or '-'"
                ),
            );
        }
    }

    /// Reads a file the config names, remembering it for the reloader to watch.
    fn read_input(&mut self, file: &str) -> std::io::Result<String> {
        self.inputs.push(file.into());
        std::fs::read_to_string(file)
    }
}

/// Parses `4MiB`, `512 KiB`, `1MB`, `100` (bytes).
pub fn parse_byte_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" => 1 << 10,
        "mb" => 1_000_000,
        "mib" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Rewrites serde's "unknown field `x`, expected one of `a`, `b`" into a suggestion.
fn humanize(message: &str) -> String {
    for (prefix, what) in [("unknown field `", "field"), ("unknown variant `", "value")] {
        let Some(rest) = message.strip_prefix(prefix) else {
            continue;
        };
        let Some((word, tail)) = rest.split_once('`') else {
            continue;
        };
        let expected: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
        let hint = suggest::hint(word, expected.iter().copied());
        let list = if expected.is_empty() {
            String::new()
        } else {
            format!("; expected one of: {}", expected.join(", "))
        };
        return format!("unknown {what} {word:?}{hint}{list}");
    }
    message.to_owned()
}

#[cfg(test)]
mod tests;
