//! Compiling the access, pricing, limits and usage sections (same error discipline as the
//! rest of the compiler: every problem with its YAML path).

use super::super::raw::{
    ClientAuthMode, FailureMode, LimitDimension, LimitStore, PromptTokens, RawConfig, RawLimits,
    RawPricing,
};
use super::super::{LimitSettings, StoreSettings, UsageSettings};
use super::{CompileOptions, Cx};
use crate::auth::{self, Access, Consumer, Mode, Pin, Team};
use crate::glob::Glob;
use crate::limits::redis::RedisSettings;
use crate::limits::{Dimension, Limit, Metric, Rule, Window};
use crate::pricing::{PriceEntry, PriceTable};
use crate::secret::Secret;
use crate::suggest;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// Default output reservation when a request sets no maximum.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

fn globs(list: &[String]) -> Vec<Glob> {
    list.iter().map(|g| Glob::new(g)).collect()
}

impl Cx {
    fn header_name(&mut self, path: &str, name: &str) -> String {
        let ok = !name.is_empty()
            && name
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_');
        if !ok {
            self.err(
                path,
                format!("{name:?} must be a lower-case header name such as x-consumer-id"),
            );
        }
        name.to_owned()
    }

    fn backend_list(
        &mut self,
        path: &str,
        list: &[String],
        backends: &HashMap<&str, usize>,
    ) -> Vec<String> {
        for (j, b) in list.iter().enumerate() {
            self.backend_ref(&format!("{path}[{j}]"), b, backends);
        }
        list.to_vec()
    }

    pub(super) fn access(
        &mut self,
        raw: &RawConfig,
        backends: &HashMap<&str, usize>,
        opts: &CompileOptions<'_>,
    ) -> Access {
        let mut teams = Vec::new();
        let mut team_index: HashMap<&str, usize> = HashMap::new();
        for (i, t) in raw.teams.iter().enumerate() {
            let at = |f: &str| format!("teams[{i}].{f}");
            self.name(&at("name"), &t.name, "team");
            if team_index.insert(t.name.as_str(), i).is_some() {
                self.err(at("name"), format!("duplicate team name {:?}", t.name));
            }
            let pin = t.pin.as_ref().map(|p| {
                self.backend_ref(&at("pin.backend"), &p.backend, backends);
                Pin {
                    backend: p.backend.clone(),
                    model: p.model.clone(),
                }
            });
            if let (Some(p), Some(list)) = (&pin, &t.backends)
                && !list.contains(&p.backend)
            {
                self.err(
                    at("pin.backend"),
                    format!(
                        "{:?} is not in this team's own `backends`; every pinned request would be refused",
                        p.backend
                    ),
                );
            }
            teams.push(Team {
                name: t.name.clone(),
                models: t.models.as_deref().map(globs),
                backends: t
                    .backends
                    .as_deref()
                    .map(|l| self.backend_list(&at("backends"), l, backends)),
                pin,
            });
        }
        let mut consumers = Vec::new();
        let mut keys: HashMap<[u8; 32], usize> = HashMap::new();
        let mut consumer_index: HashMap<String, usize> = HashMap::new();
        for (i, c) in raw.consumers.iter().enumerate() {
            let at = |f: &str| format!("consumers[{i}].{f}");
            let ok = !c.name.is_empty()
                && c.name.len() <= 64
                && c.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-@".contains(&b));
            if !ok {
                self.err(
                    at("name"),
                    format!(
                        "consumer name {:?} must be 1-64 characters of a-z, 0-9, '.', '_', '-' or '@'",
                        c.name
                    ),
                );
            }
            if consumer_index.insert(c.name.clone(), i).is_some() {
                self.err(at("name"), format!("duplicate consumer name {:?}", c.name));
            }
            let team = c.team.as_deref().and_then(|t| {
                let found = team_index.get(t).copied();
                if found.is_none() {
                    let known: Vec<&str> = raw.teams.iter().map(|x| x.name.as_str()).collect();
                    self.err(
                        at("team"),
                        format!("unknown team {t:?}{}", suggest::hint(t, known)),
                    );
                }
                found
            });
            for (j, k) in c.keys.iter().enumerate() {
                match auth::parse_hash(k) {
                    Some(d) => {
                        if let Some(other) = keys.insert(d, i) {
                            self.err(
                                at(&format!("keys[{j}]")),
                                format!("this key hash is also listed for consumers[{other}]"),
                            );
                        }
                    }
                    None => self.err(
                        at(&format!("keys[{j}]")),
                        "not a key hash: expected sha256:<64 hex digits> (run `tollgate hash-key` to make one; never put the key itself here)",
                    ),
                }
            }
            consumers.push(Consumer {
                name: c.name.clone(),
                team,
                models: c.models.as_deref().map(globs),
                backends: c
                    .backends
                    .as_deref()
                    .map(|l| self.backend_list(&at("backends"), l, backends)),
            });
        }
        if let Some(file) = &raw.auth.key_file
            && opts.resolve_secrets
        {
            self.key_file(file, &consumer_index, &mut keys);
        }
        let mode = match raw.auth.mode {
            None if raw.consumers.is_empty() => Mode::Open,
            None | Some(ClientAuthMode::ApiKey) => Mode::ApiKey,
            Some(ClientAuthMode::None) => Mode::Open,
            Some(ClientAuthMode::IdentityHeaders) => match &raw.auth.identity_headers {
                Some(h) => Mode::IdentityHeaders {
                    consumer: self.header_name("auth.identity_headers.consumer", &h.consumer),
                    team: h
                        .team
                        .as_deref()
                        .map(|t| self.header_name("auth.identity_headers.team", t)),
                },
                None => {
                    self.err(
                        "auth.identity_headers",
                        "identity_headers mode needs `identity_headers: {consumer: <header>}`",
                    );
                    Mode::Open
                }
            },
        };
        if raw.auth.identity_headers.is_some() && !matches!(mode, Mode::IdentityHeaders { .. }) {
            self.err(
                "auth.identity_headers",
                "only used with `mode: identity_headers`",
            );
        }
        if mode == Mode::ApiKey && raw.consumers.is_empty() && raw.auth.key_file.is_none() {
            self.err(
                "auth.mode",
                "api_key mode with no consumers would refuse every request; add `consumers`",
            );
        }
        let anonymous = raw.auth.anonymous_consumer.as_deref().and_then(|a| {
            let found = consumer_index.get(a).copied();
            if found.is_none() {
                self.err(
                    "auth.anonymous_consumer",
                    format!(
                        "unknown consumer {a:?}{}",
                        suggest::hint(a, raw.consumers.iter().map(|c| c.name.as_str()))
                    ),
                );
            }
            found
        });
        if anonymous.is_some() && mode != Mode::ApiKey {
            self.err("auth.anonymous_consumer", "only used with `mode: api_key`");
        }
        Access {
            mode,
            consumers,
            teams,
            keys,
            anonymous,
        }
    }

    fn key_file(
        &mut self,
        file: &str,
        consumers: &HashMap<String, usize>,
        keys: &mut HashMap<[u8; 32], usize>,
    ) {
        let text = match self.read_input(file) {
            Ok(t) => t,
            Err(e) => {
                self.err("auth.key_file", format!("cannot read {file:?}: {e}"));
                return;
            }
        };
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let at = format!("auth.key_file:{}", n + 1);
            let Some((name, hash)) = line.split_once(char::is_whitespace) else {
                self.err(at, "expected `<consumer> sha256:<hex>`");
                continue;
            };
            let Some(&i) = consumers.get(name) else {
                self.err(at, format!("unknown consumer {name:?}"));
                continue;
            };
            match auth::parse_hash(hash.trim()) {
                Some(d) => {
                    keys.insert(d, i);
                }
                None => self.err(at, "not a key hash: expected sha256:<64 hex digits>"),
            }
        }
    }

    pub(super) fn pricing(&mut self, raw: &RawPricing) -> PriceTable {
        let mut entries: Vec<PriceEntry> = Vec::new();
        for (i, e) in raw.models.iter().enumerate() {
            if e.model.is_empty() || !e.price.is_valid() {
                self.err(
                    format!("pricing.models[{i}]"),
                    "needs a model name and non-negative prices (USD per million tokens)",
                );
            }
            entries.push(e.clone());
        }
        if let Some(file) = &raw.file {
            match self
                .read_input(file)
                .map_err(|e| e.to_string())
                .and_then(|t| PriceTable::parse_file(&t))
            {
                Ok(list) => entries.extend(list),
                Err(e) => self.err("pricing.file", format!("cannot use {file:?}: {e}")),
            }
        }
        if raw.defaults.unwrap_or(true) {
            entries.extend(PriceTable::defaults());
        }
        PriceTable::new(entries)
    }

    pub(super) fn limits(
        &mut self,
        raw: &RawLimits,
        access: &Access,
        opts: &CompileOptions<'_>,
    ) -> LimitSettings {
        let mut names = HashSet::new();
        let mut rules = Vec::new();
        for (i, r) in raw.rules.iter().enumerate() {
            let at = |f: &str| format!("limits.rules[{i}].{f}");
            self.name(&at("name"), &r.name, "limit rule");
            if !names.insert(r.name.as_str()) {
                self.err(at("name"), format!("duplicate limit rule {:?}", r.name));
            }
            let mut limits = Vec::new();
            for (field, metric, window, value) in [
                (
                    "requests_per_minute",
                    Metric::Requests,
                    Window::Minute,
                    r.requests_per_minute.map(|v| v as f64),
                ),
                (
                    "tokens_per_minute",
                    Metric::Tokens,
                    Window::Minute,
                    r.tokens_per_minute.map(|v| v as f64),
                ),
                ("cost_per_day", Metric::Cost, Window::Day, r.cost_per_day),
                (
                    "cost_per_month",
                    Metric::Cost,
                    Window::Month,
                    r.cost_per_month,
                ),
            ] {
                let Some(v) = value else { continue };
                if !v.is_finite() || v < 0.0 {
                    self.err(at(field), format!("{v} must be a non-negative number"));
                    continue;
                }
                let max = match metric {
                    Metric::Cost => (v * 1e6).round() as u64,
                    _ => v as u64,
                };
                limits.push(Limit {
                    metric,
                    window,
                    max,
                });
            }
            if limits.is_empty() {
                self.err(
                    format!("limits.rules[{i}]"),
                    "sets no limit: add requests_per_minute, tokens_per_minute, cost_per_day or cost_per_month",
                );
            }
            let mut per = Vec::new();
            for d in &r.per {
                let d = match d {
                    LimitDimension::Consumer => Dimension::Consumer,
                    LimitDimension::Team => Dimension::Team,
                    LimitDimension::Model => Dimension::Model,
                };
                if per.contains(&d) {
                    self.err(at("per"), "lists a dimension twice");
                }
                per.push(d);
            }
            if !access.enabled()
                && (per.contains(&Dimension::Consumer) || per.contains(&Dimension::Team))
            {
                self.err(
                    at("per"),
                    "per consumer/team needs authentication (`auth`, `consumers`); with auth off every request is the consumer \"anonymous\"",
                );
            }
            rules.push(Rule {
                name: r.name.clone(),
                per,
                consumers: globs(&r.matches.consumers),
                teams: globs(&r.matches.teams),
                models: globs(&r.matches.models),
                limits,
            });
        }
        let store = match (raw.store, &raw.redis) {
            (None | Some(LimitStore::Memory), None) => StoreSettings::Memory,
            (None | Some(LimitStore::Memory), Some(_)) => {
                self.err("limits.redis", "set `store: redis` to use it");
                StoreSettings::Memory
            }
            (Some(LimitStore::Redis), None) => {
                self.err(
                    "limits.redis",
                    "store: redis needs `redis: {url: redis://host:port}`",
                );
                StoreSettings::Memory
            }
            (Some(LimitStore::Redis), Some(r)) => {
                let url = r.url.trim();
                let rest = url
                    .strip_prefix("redis://")
                    .or_else(|| url.strip_prefix("rediss://"));
                match rest {
                    None => self.err("limits.redis.url", "must start with redis:// or rediss://"),
                    Some(rest) if rest.split('/').next().unwrap_or_default().contains('@') => self
                        .err(
                            "limits.redis.url",
                            "holds credentials; put the password in `password: {env: ...}` or `{file: ...}`",
                        ),
                    Some(_) => {}
                }
                let password = match (&r.password, opts.resolve_secrets) {
                    (Some(p), true) => self.secret("limits.redis.password", p, opts),
                    _ => None,
                };
                let full = match (password, rest) {
                    (Some(p), Some(rest)) => {
                        let scheme = &url[..url.len() - rest.len()];
                        format!("{scheme}:{}@{rest}", percent_encode(&p))
                    }
                    _ => url.to_owned(),
                };
                let command_timeout = self.duration(
                    "limits.redis.command_timeout",
                    r.command_timeout.as_deref(),
                    Duration::from_millis(100),
                );
                if command_timeout.is_zero() {
                    self.err("limits.redis.command_timeout", "must be above zero");
                }
                let key_prefix = r.key_prefix.clone().unwrap_or_else(|| "tollgate".into());
                if key_prefix.is_empty() || key_prefix.contains([' ', '*', '?']) {
                    self.err(
                        "limits.redis.key_prefix",
                        "must be non-empty, without spaces or globs",
                    );
                }
                StoreSettings::Redis {
                    settings: RedisSettings {
                        url: Secret::new(full),
                        command_timeout,
                        breaker_failures: r.breaker_failures.unwrap_or(3).max(1),
                        breaker_cooldown: self.duration(
                            "limits.redis.breaker_cooldown",
                            r.breaker_cooldown.as_deref(),
                            Duration::from_secs(1),
                        ),
                        key_prefix,
                    },
                    fail_open: r.failure_mode.unwrap_or(FailureMode::Open) == FailureMode::Open,
                }
            }
        };
        let default_max_tokens = raw.default_max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
        // It is sent upstream as the request's ceiling when a limit applies, and reserved.
        let most = crate::llm::openai::MAX_OUTPUT_TOKENS;
        if !(1..=most).contains(&default_max_tokens) {
            self.err(
                "limits.default_max_tokens",
                format!("must be from 1 to {most}"),
            );
        }
        LimitSettings {
            rules,
            default_max_tokens,
            store,
        }
    }

    pub(super) fn usage(&mut self, raw: &RawConfig) -> UsageSettings {
        let u = &raw.usage;
        let mut known: Vec<String> = vec!["catalogue".into(), "model_command".into()];
        known.extend(
            raw.routes
                .iter()
                .enumerate()
                .map(|(i, r)| r.name.clone().unwrap_or_else(|| format!("routes[{i}]"))),
        );
        for (i, r) in u.exact_for.routes.iter().enumerate() {
            if !known.contains(r) {
                self.err(
                    format!("usage.exact_for.routes[{i}]"),
                    format!(
                        "unknown route {r:?}{}",
                        suggest::hint(r, known.iter().map(String::as_str))
                    ),
                );
            }
        }
        UsageSettings {
            meter: u.meter.unwrap_or(true),
            exact_default: u.prompt_tokens == Some(PromptTokens::Exact),
            exact_routes: u.exact_for.routes.clone(),
            exact_models: globs(&u.exact_for.models),
        }
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
