//! Compiling the routing table: models and their names, backend references, route rules
//! with their conditions and targets (model, backend, chain, weighted split), fallback
//! chains and the routing switches. Part of [`super::Cx`], so
//! every error is collected with its YAML path like the rest of the config.

use super::Cx;
use crate::config::raw::{
    RawChain, RawMatch, RawModel, RawRoute, RawRouting, RawTextMatch, RawVariant, Stickiness,
};
use crate::glob::Glob;
use crate::pii::{self, detect};
use crate::providers::Backend;
use crate::routing::conditions::{Conditions, PROFILES, TextMatch, TokenBound};
use crate::routing::{Chain, Model, Route, Split, Step, Target};
use crate::suggest;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// Largest split weight (keeps totals far from overflow, and weights readable).
const MAX_WEIGHT: u32 = 1_000_000;

/// Routing switches compiled.
pub(super) struct Switches {
    pub decision_header: Option<String>,
    pub cooldown: Duration,
    pub pii: Option<Arc<pii::Masker>>,
}

impl Cx {
    pub(super) fn routing_switches(&mut self, raw: &RawRouting) -> Switches {
        let decision_header = raw.decision_header.as_ref().and_then(|h| {
            let ok = !h.is_empty()
                && h.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
            if !ok {
                self.err(
                    "routing.decision_header",
                    format!("{h:?} must be a lower-case header name (a-z, 0-9, '-')"),
                );
            }
            ok.then(|| h.clone())
        });
        let cooldown = self.duration(
            "routing.cooldown",
            raw.cooldown.as_deref(),
            Duration::from_secs(30),
        );
        let names: Vec<&str> = match &raw.pii_entities {
            Some(list) => list.iter().map(String::as_str).collect(),
            None => pii::BUILTIN.to_vec(),
        };
        let mut dets = Vec::new();
        for (i, name) in names.iter().enumerate() {
            match detect::builtin(name) {
                Some(d) => dets.push((Arc::new(d), pii::Action::Allow)),
                None => self.err(
                    format!("routing.pii_entities[{i}]"),
                    format!(
                        "unknown PII entity {name:?}{}",
                        suggest::hint(name, pii::BUILTIN.iter().copied())
                    ),
                ),
            }
        }
        let pii = Some(Arc::new(pii::masker(
            dets,
            Arc::from(&b"tollgate-routing"[..]),
            false,
        )));
        Switches {
            decision_header,
            cooldown,
            pii,
        }
    }

    pub(super) fn chains(
        &mut self,
        raw: &[RawChain],
        backends: &HashMap<&str, usize>,
        compiled: &[Backend],
    ) -> Vec<Chain> {
        let mut names = HashSet::new();
        let taken: HashSet<&str> = compiled.iter().map(|b| b.envoy_route.as_str()).collect();
        let mut routes_seen = HashSet::new();
        raw.iter()
            .enumerate()
            .map(|(i, c)| {
                let at = |f: &str| format!("routing.chains[{i}].{f}");
                self.name(&at("name"), &c.name, "chain");
                if !names.insert(c.name.as_str()) {
                    self.err(at("name"), format!("duplicate chain name {:?}", c.name));
                }
                let envoy_route = c
                    .envoy_route
                    .clone()
                    .unwrap_or_else(|| format!("chain-{}", c.name));
                if envoy_route.is_empty() || !envoy_route.bytes().all(|b| b.is_ascii_graphic()) {
                    self.err(at("envoy_route"), format!("{envoy_route:?} must be non-empty visible ASCII (it is a header value)"));
                } else if taken.contains(envoy_route.as_str()) || !routes_seen.insert(envoy_route.clone()) {
                    self.err(at("envoy_route"), format!("{envoy_route:?} is already used by a backend or chain; each needs its own Envoy route"));
                }
                if c.steps.len() < 2 {
                    self.err(at("steps"), "a fallback chain needs at least two steps");
                }
                let mut seen = HashSet::new();
                let steps = c
                    .steps
                    .iter()
                    .enumerate()
                    .map(|(j, s)| {
                        let path = at(&format!("steps[{j}].backend"));
                        if !seen.insert(s.backend.as_str()) {
                            self.err(&path, format!("backend {:?} appears twice in the chain (Envoy priorities hold each endpoint once)", s.backend));
                        }
                        Step {
                            backend: self.backend_ref(&path, &s.backend, backends).unwrap_or_default(),
                            upstream_model: s.upstream_model.clone(),
                        }
                    })
                    .collect();
                Chain {
                    name: c.name.clone(),
                    envoy_route,
                    steps,
                }
            })
            .collect()
    }

    pub(super) fn conditions(&mut self, at: &str, m: &RawMatch) -> Conditions {
        for (j, p) in m.profiles.iter().enumerate() {
            if !PROFILES.contains(&p.as_str()) {
                self.err(
                    format!("{at}.profiles[{j}]"),
                    format!(
                        "unknown profile {p:?}; one of {}{}",
                        PROFILES.join(", "),
                        suggest::hint(p, PROFILES.iter().copied())
                    ),
                );
            }
        }
        for (j, p) in m.paths.iter().enumerate() {
            if !p.starts_with('/') || p.contains('?') {
                self.err(
                    format!("{at}.paths[{j}]"),
                    format!("{p:?} must start with '/' and hold no query"),
                );
            }
        }
        let prompt_tokens = m.prompt_tokens.and_then(|b| match (b.above, b.below) {
            (Some(a), None) => Some(TokenBound::Above(a)),
            (None, Some(b)) => Some(TokenBound::Below(b)),
            _ => {
                self.err(
                    format!("{at}.prompt_tokens"),
                    "set exactly one of `above` or `below` (use two rules for a range)",
                );
                None
            }
        });
        let last_user_message = m
            .last_user_message
            .as_ref()
            .and_then(|t| self.text_match(&format!("{at}.last_user_message"), t));
        Conditions {
            profiles: m.profiles.clone(),
            paths: m.paths.iter().map(|g| Glob::new(g)).collect(),
            consumers: m.consumers.iter().map(|g| Glob::new(g)).collect(),
            teams: m.teams.iter().map(|g| Glob::new(g)).collect(),
            prompt_tokens,
            last_user_message,
            tools: m.tools,
            images: m.images,
            stream: m.stream,
            pii: m.pii,
        }
    }

    fn text_match(&mut self, at: &str, t: &RawTextMatch) -> Option<TextMatch> {
        if t.keywords.is_empty() && t.regex.is_none() {
            self.err(at, "set `keywords`, `regex` or both");
            return None;
        }
        for (j, k) in t.keywords.iter().enumerate() {
            if k.trim().is_empty() {
                self.err(format!("{at}.keywords[{j}]"), "empty keyword");
            }
        }
        let regex = match t.regex.as_deref() {
            None => None,
            Some(r) => match regex::RegexBuilder::new(r).size_limit(1 << 20).build() {
                Ok(re) => Some(re),
                Err(e) => {
                    self.err(format!("{at}.regex"), format!("invalid regex: {e}"));
                    None
                }
            },
        };
        Some(TextMatch {
            keywords: t.keywords.iter().map(|k| k.to_lowercase()).collect(),
            regex,
        })
    }

    /// The target of a route: exactly one of model, backend, chain, split.
    pub(super) fn target(
        &mut self,
        i: usize,
        r: &RawRoute,
        backends: &HashMap<&str, usize>,
        models: &[RawModel],
        chains: &[Chain],
    ) -> Target {
        let at = format!("routes[{i}]");
        if let Some(variants) = &r.split {
            if r.model.is_some()
                || r.backend.is_some()
                || r.chain.is_some()
                || r.upstream_model.is_some()
            {
                self.err(
                    &at,
                    "with `split`, name targets inside the variants, not on the route",
                );
            }
            if variants.is_empty() {
                self.err(format!("{at}.split"), "a split needs at least one variant");
            }
            let compiled = variants
                .iter()
                .enumerate()
                .map(|(j, v)| {
                    let vat = format!("{at}.split[{j}]");
                    if v.weight == 0 || v.weight > MAX_WEIGHT {
                        self.err(
                            format!("{vat}.weight"),
                            format!("weight must be 1..={MAX_WEIGHT}"),
                        );
                    }
                    let t = self.dest(&vat, &Dest::from_variant(v), backends, models, chains);
                    (v.weight, t)
                })
                .collect();
            return Target::Split(Split {
                variants: compiled,
                sticky: r.sticky == Some(Stickiness::Consumer),
            });
        }
        if r.sticky.is_some() {
            self.err(format!("{at}.sticky"), "`sticky` only applies to a `split`");
        }
        self.dest(&at, &Dest::from_route(r), backends, models, chains)
    }

    fn dest(
        &mut self,
        at: &str,
        d: &Dest<'_>,
        backends: &HashMap<&str, usize>,
        models: &[RawModel],
        chains: &[Chain],
    ) -> Target {
        let set = [d.model.is_some(), d.backend.is_some(), d.chain.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        if set != 1 {
            self.err(
                at,
                if set == 0 {
                    "missing target: set `model` (a catalogue entry), `backend`, `chain` or `split`"
                } else {
                    "set only one of `model`, `backend` or `chain`"
                },
            );
            return Target::Model(0);
        }
        if d.upstream_model.is_some() && d.backend.is_none() {
            self.err(format!("{at}.upstream_model"), "use upstream_model with `backend`; a catalogue `model` already names its upstream model, a chain's steps name theirs");
        }
        if let Some(m) = d.model {
            let idx = models
                .iter()
                .position(|x| x.name == m || x.aliases.iter().any(|a| a == m));
            if idx.is_none() {
                self.err(
                    format!("{at}.model"),
                    format!(
                        "unknown model {m:?}{}",
                        suggest::hint(m, models.iter().map(|x| x.name.as_str()))
                    ),
                );
            }
            return Target::Model(idx.unwrap_or_default());
        }
        if let Some(b) = d.backend {
            return Target::Backend {
                backend: self
                    .backend_ref(&format!("{at}.backend"), b, backends)
                    .unwrap_or_default(),
                upstream_model: d.upstream_model.map(str::to_owned),
            };
        }
        let c = d.chain.unwrap_or_default();
        match chains.iter().position(|x| x.name == c) {
            Some(idx) => Target::Chain(idx),
            None => {
                self.err(
                    format!("{at}.chain"),
                    format!(
                        "unknown chain {c:?}{}",
                        suggest::hint(c, chains.iter().map(|x| x.name.as_str()))
                    ),
                );
                Target::Model(0)
            }
        }
    }
}

/// A target as written on a route or a split variant.
struct Dest<'a> {
    model: Option<&'a str>,
    backend: Option<&'a str>,
    upstream_model: Option<&'a str>,
    chain: Option<&'a str>,
}

impl<'a> Dest<'a> {
    fn from_route(r: &'a RawRoute) -> Self {
        Self {
            model: r.model.as_deref(),
            backend: r.backend.as_deref(),
            upstream_model: r.upstream_model.as_deref(),
            chain: r.chain.as_deref(),
        }
    }

    fn from_variant(v: &'a RawVariant) -> Self {
        Self {
            model: v.model.as_deref(),
            backend: v.backend.as_deref(),
            upstream_model: v.upstream_model.as_deref(),
            chain: v.chain.as_deref(),
        }
    }
}

impl Cx {
    pub(super) fn models(
        &mut self,
        raw: &[RawModel],
        backends: &HashMap<&str, usize>,
    ) -> Vec<Model> {
        let mut names: HashMap<&str, String> = HashMap::new();
        let mut out = Vec::with_capacity(raw.len());
        for (i, m) in raw.iter().enumerate() {
            let at = |f: &str| format!("models[{i}].{f}");
            for (j, name) in std::iter::once(&m.name).chain(&m.aliases).enumerate() {
                let path = if j == 0 {
                    at("name")
                } else {
                    at(&format!("aliases[{}]", j - 1))
                };
                if name.is_empty()
                    || name.contains(['*', '?'])
                    || name.chars().any(char::is_control)
                {
                    self.err(&path, format!("{name:?} is not a usable model name (empty, a glob, or control characters)"));
                }
                if let Some(first) = names.insert(name, path.clone()) {
                    self.err(
                        path,
                        format!("model name {name:?} is already used at {first}"),
                    );
                }
            }
            let backend = self.backend_ref(&at("backend"), &m.backend, backends);
            out.push(Model {
                name: m.name.clone(),
                aliases: m.aliases.clone(),
                backend: backend.unwrap_or_default(),
                upstream_model: m.upstream_model.clone().unwrap_or_else(|| m.name.clone()),
            });
        }
        out
    }

    pub(super) fn backend_ref(
        &mut self,
        path: &str,
        name: &str,
        backends: &HashMap<&str, usize>,
    ) -> Option<usize> {
        let found = backends.get(name).copied();
        if found.is_none() {
            let mut known: Vec<&str> = backends.keys().copied().collect();
            known.sort_unstable();
            self.err(
                path,
                format!("unknown backend {name:?}{}", suggest::hint(name, known)),
            );
        }
        found
    }

    pub(super) fn routes(
        &mut self,
        raw: &[RawRoute],
        backends: &HashMap<&str, usize>,
        models: &[RawModel],
        chains: &[crate::routing::Chain],
    ) -> Vec<Route> {
        let mut names = HashSet::new();
        let mut catch_all: Option<usize> = None;
        let mut out = Vec::with_capacity(raw.len());
        for (i, r) in raw.iter().enumerate() {
            let at = |f: &str| format!("routes[{i}].{f}");
            let name = r.name.clone().unwrap_or_else(|| format!("routes[{i}]"));
            if r.name.is_some() {
                self.name(&at("name"), &name, "route");
            }
            if !names.insert(name.clone()) {
                self.err(at("name"), format!("duplicate route name {name:?}"));
            }
            if let Some(first) = catch_all {
                self.err(format!("routes[{i}]"), format!("unreachable: routes[{first}] matches every request, so rules after it never apply; move it to the end"));
            }
            for (j, g) in r.matches.models.iter().enumerate() {
                if g.is_empty() {
                    self.err(at(&format!("match.models[{j}]")), "empty model pattern");
                }
            }
            let mut headers = Vec::new();
            for (h, v) in &r.matches.headers {
                if h.is_empty()
                    || h.bytes().any(|c| {
                        c.is_ascii_uppercase()
                            || !(c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b':')
                    })
                {
                    self.err(
                        at(&format!("match.headers.{h}")),
                        format!("header names must be lower-case tokens, got {h:?}"),
                    );
                }
                headers.push((h.clone(), Glob::new(v)));
            }
            let target = self.target(i, r, backends, models, chains);
            let when = self.conditions(&at("match"), &r.matches);
            let route = Route {
                name,
                models: r.matches.models.iter().map(|g| Glob::new(g)).collect(),
                headers,
                when,
                force: r.force,
                target,
            };
            if route.is_catch_all() && catch_all.is_none() {
                catch_all = Some(i);
            }
            out.push(route);
        }
        out
    }
}
