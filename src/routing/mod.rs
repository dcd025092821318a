//! Model routing: which backend serves a request, and under which model name.
//!
//! Pure decision code over plain types (no I/O, no gRPC). The order is fixed and
//! documented in the README:
//! 1. `routes` marked `force: true` (data locality: e.g. "PII → the in-house model"), in
//!    order — nothing a client sends can override them;
//! 2. a `/model backend,model` command (when enabled) picks both explicitly, within the
//!    catalogue or where a route passes the name unchanged to that backend;
//! 3. a team pin (`teams[].pin`);
//! 4. the other `routes`, in order, first match wins;
//! 5. the model catalogue (name or alias);
//! 6. otherwise the model is unknown (404 upstream of here).
//!
//! A rule's target is a catalogue model, a backend, a fallback [`Chain`] or a weighted
//! [`Target::Split`] of those. Every decision is explainable: [`Table::explain`] returns
//! the decision with the reason it matched and, for each earlier rule, why it did not
//! (`tollgate route` prints it); [`Decision::reason`] travels in metadata.
//!
//! The config compiler guarantees every index in a [`Table`] is valid, so lookups here
//! cannot fail.

pub mod command;
pub mod conditions;
pub mod features;
pub mod health;
pub mod split;

use crate::glob::Glob;
use crate::headers::Headers;
use crate::providers::Backend;
use command::ModelCommand;
pub use conditions::{Conditions, Miss, Signals};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// A catalogue entry.
#[derive(Debug, Clone)]
pub struct Model {
    /// Public name.
    pub name: String,
    /// Other public names.
    pub aliases: Vec<String>,
    /// Index into [`Table::backends`].
    pub backend: usize,
    /// Name sent upstream.
    pub upstream_model: String,
}

/// A routing rule.
#[derive(Debug, Clone)]
pub struct Route {
    /// Rule name.
    pub name: String,
    /// Model globs (any may match); empty means any model, including none.
    pub models: Vec<Glob>,
    /// Header conditions (all must match).
    pub headers: Vec<(String, Glob)>,
    /// The other conditions (path, caller, heuristics, locality).
    pub when: Conditions,
    /// Evaluated before `/model` commands and team pins (data locality).
    pub force: bool,
    /// Where matching requests go.
    pub target: Target,
}

/// A fallback chain: Envoy tries the steps in order (one cluster, one priority per step),
/// tollgate's upstream-level filter prepares each attempt for its backend.
#[derive(Debug, Clone)]
pub struct Chain {
    /// Unique name.
    pub name: String,
    /// Value of `x-tollgate-backend` that Envoy's route for the chain matches.
    pub envoy_route: String,
    /// Steps in order (at least two).
    pub steps: Vec<Step>,
}

/// One step of a chain.
#[derive(Debug, Clone)]
pub struct Step {
    /// Index into [`Table::backends`].
    pub backend: usize,
    /// Model the backend receives; `None`: the model the decision chose.
    pub upstream_model: Option<String>,
}

/// A weighted choice of targets.
#[derive(Debug, Clone)]
pub struct Split {
    /// `(weight, target)`; targets are never splits themselves.
    pub variants: Vec<(u32, Target)>,
    /// The same consumer always gets the same variant (hash of rule name and consumer).
    pub sticky: bool,
}

/// Destination of a rule.
#[derive(Debug, Clone)]
pub enum Target {
    /// A catalogue model (index into [`Table::models`]).
    Model(usize),
    /// A backend, renaming the model when `upstream_model` is set.
    Backend {
        /// Index into [`Table::backends`].
        backend: usize,
        /// Model name to send upstream.
        upstream_model: Option<String>,
    },
    /// A fallback chain (index into [`Table::chains`]).
    Chain(usize),
    /// A weighted split.
    Split(Split),
}

/// Everything routing needs, compiled from the config.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// Backends.
    pub backends: Vec<Backend>,
    /// Catalogue.
    pub models: Vec<Model>,
    /// Rules in order.
    pub routes: Vec<Route>,
    /// Whether `/model` commands are honoured.
    pub model_command: bool,
    /// Fallback chains.
    pub chains: Vec<Chain>,
    /// Response header naming the decision (e.g. `x-tollgate-route`); `None`: not sent.
    pub decision_header: Option<String>,
    /// How long a failed backend is avoided where an alternative exists (zero: never).
    pub cooldown: Duration,
    /// Detectors for `pii` conditions (built-in entities or the configured list).
    pub pii: Option<Arc<crate::pii::Masker>>,
    /// Some rule needs body features (size, tools, images, PII).
    pub needs_features: bool,
}

/// What a request asks for.
#[derive(Debug, Clone)]
pub struct RouteInput<'a> {
    /// `model` from the body.
    pub model: Option<&'a str>,
    /// Request headers as the client sent them.
    pub headers: &'a Headers,
    /// A `/model` command from the last user message.
    pub command: Option<&'a ModelCommand>,
    /// Path, caller, heuristics and locality signals.
    pub signals: Signals<'a>,
    /// The caller's team pin: backend index and optional model.
    pub pin: Option<(usize, Option<&'a str>)>,
    /// Backends cooling down after failures (indices).
    pub cooling: &'a [usize],
    /// A random number for non-sticky splits.
    pub roll: u64,
}

impl<'a> RouteInput<'a> {
    /// An input with only model and headers (no caller, no heuristics, nothing cooling).
    pub fn basic(
        model: Option<&'a str>,
        headers: &'a Headers,
        command: Option<&'a ModelCommand>,
    ) -> Self {
        Self {
            model,
            headers,
            command,
            signals: Signals::default(),
            pin: None,
            cooling: &[],
            roll: 0,
        }
    }
}

/// Which rule made the decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// A `/model` command.
    Command,
    /// A named route.
    Route(String),
    /// The caller's team pin.
    TeamPin,
    /// The catalogue.
    Catalogue,
}

impl Rule {
    /// Name for metrics, logs and metadata.
    pub fn label(&self) -> &str {
        match self {
            Rule::Command => "model_command",
            Rule::Route(name) => name,
            Rule::TeamPin => "team_pin",
            Rule::Catalogue => "catalogue",
        }
    }
}

/// The routing decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Index into [`Table::backends`].
    pub backend: usize,
    /// Catalogue name when the model is in the catalogue (bounded: safe as a metric label).
    pub public_model: Option<String>,
    /// Model name to send upstream; `None` keeps the body's model as it is.
    pub upstream_model: Option<String>,
    /// The rule that decided.
    pub rule: Rule,
    /// Fallback chain the request goes through (index into [`Table::chains`]).
    pub chain: Option<usize>,
    /// Why the rule matched, in plain words.
    pub reason: String,
}

/// One place a request may be sent to (see [`Table::destinations`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// Index into [`Table::backends`].
    pub backend: usize,
    /// Model name that backend receives.
    pub model: String,
    /// The catalogue entry that is (backend, model), if any; `None`: unlisted.
    pub entry: Option<usize>,
}

/// The routing outcome in plain words, for metrics, logs and metadata. Lives with the
/// decision it describes so `observe` can hold it without importing `stages`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// Backend name.
    pub backend: String,
    /// Catalogue name of the model the request is sent to (the first destination), or
    /// `unlisted`: resolved from backend and upstream model, never what the client typed.
    pub model_label: String,
    /// Model the upstream receives.
    pub upstream_model: String,
    /// Model name the client asked for (empty when the body named none).
    pub requested_model: String,
    /// Rule that decided.
    pub rule: String,
    /// `stream: true`.
    pub stream: bool,
    /// Why the rule matched (plain words, no request content beyond names and counts).
    pub reason: String,
    /// Fallback chain name, when the request goes through one (`backend` is then the
    /// chain's first step until the response says which backend answered).
    pub chain: Option<String>,
    /// Every backend and model the request may be sent to (each chain step), as access
    /// control checks them.
    pub destinations: Vec<Destination>,
    /// The model the client asked for: the `/model` command's, else the body's (for
    /// messages; bounded and free of control characters).
    pub asked_model: String,
}

/// A decision with the reasons earlier rules did not apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The decision (or why there is none).
    pub result: Result<Decision, RouteError>,
    /// `(rule, why it did not match)` for every rule evaluated before the deciding one.
    pub skipped: Vec<(String, String)>,
}

/// Why a request cannot be routed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RouteError {
    /// No model and no rule that applies without one.
    #[error("you must provide a model parameter{}", available_suffix(.available))]
    MissingModel {
        /// Public names, for the message.
        available: Vec<String>,
    },
    /// The model is neither routed by a rule nor in the catalogue.
    #[error("the model {requested:?} does not exist or you do not have access to it{}{}", .hint, available_suffix(.available))]
    UnknownModel {
        /// What was asked.
        requested: String,
        /// A near-miss suggestion (` (did you mean "x"?)`) or empty.
        hint: String,
        /// Public names, for the message.
        available: Vec<String>,
    },
    /// `/model` named a backend that does not exist.
    #[error("unknown backend {requested:?} in the /model command{hint}")]
    UnknownBackend {
        /// What was asked.
        requested: String,
        /// A near-miss suggestion or empty.
        hint: String,
    },
}

/// Lists available models when the list is short enough to read in an error message.
fn available_suffix(available: &[String]) -> String {
    const MAX_LISTED: usize = 20;
    if available.is_empty() || available.len() > MAX_LISTED {
        String::new()
    } else {
        format!("; available models: {}", available.join(", "))
    }
}

impl Table {
    /// Public model names (no aliases), in config order.
    pub fn public_models(&self) -> Vec<String> {
        self.models.iter().map(|m| m.name.clone()).collect()
    }

    fn find_model(&self, name: &str) -> Option<usize> {
        self.models
            .iter()
            .position(|m| m.name == name || m.aliases.iter().any(|a| a == name))
    }

    fn catalogue_decision(&self, idx: usize, rule: Rule) -> Decision {
        let m = &self.models[idx];
        Decision {
            backend: m.backend,
            public_model: Some(m.name.clone()),
            upstream_model: Some(m.upstream_model.clone()),
            rule,
            chain: None,
            reason: String::new(),
        }
    }

    /// Decides where a request goes.
    pub fn decide(&self, input: &RouteInput<'_>) -> Result<Decision, RouteError> {
        self.evaluate(input, None)
    }

    /// Decides and explains: the decision plus why each earlier rule did not match.
    pub fn explain(&self, input: &RouteInput<'_>) -> Explanation {
        let mut skipped = Vec::new();
        let result = self.evaluate(input, Some(&mut skipped));
        Explanation { result, skipped }
    }

    fn evaluate(
        &self,
        input: &RouteInput<'_>,
        mut trace: Option<&mut Vec<(String, String)>>,
    ) -> Result<Decision, RouteError> {
        let forced = self.routes.iter().filter(|r| r.force);
        if let Some(d) = self.first_route(forced, input, input.model, trace.as_deref_mut()) {
            return Ok(d);
        }
        if let Some(cmd) = input.command.filter(|_| self.model_command) {
            match cmd {
                ModelCommand::BackendModel { backend, model } => {
                    return self.explicit(backend, model, input);
                }
                ModelCommand::Model(model) => {
                    let mut d = self.by_model(Some(model), input, trace)?;
                    // The body still names the original model: always rewrite.
                    if d.upstream_model.is_none() {
                        d.upstream_model = Some(model.clone());
                    }
                    d.rule = Rule::Command;
                    d.reason = format!("/model {model} command, resolved as: {}", d.reason);
                    return Ok(d);
                }
            }
        } else if let Some(t) = trace.as_deref_mut()
            && input.command.is_some()
        {
            t.push((
                "model_command".into(),
                "/model commands are disabled".into(),
            ));
        }
        if let Some((backend, model)) = input.pin {
            return Ok(Decision {
                backend,
                public_model: None,
                upstream_model: model.map(str::to_owned),
                rule: Rule::TeamPin,
                chain: None,
                reason: format!(
                    "team {} is pinned to backend {}",
                    input.signals.team.unwrap_or_default(),
                    self.backends[backend].name
                ),
            });
        }
        self.by_model(input.model, input, trace)
    }

    /// `/model backend,model`: a catalogue entry on that backend (by public name, alias or
    /// upstream name), or a name a route would pass unchanged to that same backend for
    /// this request. Anything else is refused: a command must not reach models the
    /// operator never listed (`/model beta,anything`).
    fn explicit(
        &self,
        backend: &str,
        model: &str,
        input: &RouteInput<'_>,
    ) -> Result<Decision, RouteError> {
        let Some(b) = self.backends.iter().position(|b| b.name == backend) else {
            return Err(RouteError::UnknownBackend {
                requested: backend.to_owned(),
                hint: crate::suggest::hint(backend, self.backends.iter().map(|b| b.name.as_str())),
            });
        };
        let listed = self
            .models
            .iter()
            .position(|m| {
                m.backend == b && (m.name == model || m.aliases.iter().any(|a| a == model))
            })
            .or_else(|| self.catalogue_entry(b, model));
        let mut d = match listed {
            Some(i) => self.catalogue_decision(i, Rule::Command),
            None => match self.passthrough_route(b, model, input) {
                Some(route) => Decision {
                    backend: b,
                    public_model: None,
                    upstream_model: Some(model.to_owned()),
                    rule: Rule::Command,
                    chain: None,
                    reason: format!("passed as typed: route {} passes it to {backend}", route),
                },
                None => return Err(self.unknown_model(model)),
            },
        };
        let how = std::mem::take(&mut d.reason);
        d.reason = if how.is_empty() {
            format!("/model {backend},{model} command")
        } else {
            format!("/model {backend},{model} command, {how}")
        };
        Ok(d)
    }

    /// A route that would send `model`, unchanged, to backend `b` for this request: the
    /// operator's explicit permission to pass unlisted names there.
    fn passthrough_route(&self, b: usize, model: &str, input: &RouteInput<'_>) -> Option<&str> {
        self.routes
            .iter()
            .find(|r| {
                matches!(r.target, Target::Backend { backend, upstream_model: None } if backend == b)
                    && r.check(Some(model), input.headers, &input.signals).is_ok()
            })
            .map(|r| r.name.as_str())
    }

    /// The catalogue entry served by backend `b` under the upstream name `upstream`.
    pub fn catalogue_entry(&self, b: usize, upstream: &str) -> Option<usize> {
        self.models
            .iter()
            .position(|m| m.backend == b && m.upstream_model == upstream)
    }

    /// Every backend and model a decision may send the request to: one destination, or
    /// each step of its fallback chain. `body_model` is the model the client's body named;
    /// a decision that keeps it sends it as is. This, not what the client typed, is what
    /// access control, guard, pricing and limits judge.
    pub fn destinations(&self, d: &Decision, body_model: Option<&str>) -> Vec<Destination> {
        let sent = d
            .upstream_model
            .as_deref()
            .or(body_model)
            .unwrap_or_default();
        let entry_of = |backend: usize, model: &str| {
            d.public_model
                .as_deref()
                .and_then(|p| self.models.iter().position(|m| m.name == p))
                .filter(|&i| {
                    self.models[i].backend == backend && self.models[i].upstream_model == model
                })
                .or_else(|| self.catalogue_entry(backend, model))
        };
        let one = |backend: usize, model: &str| Destination {
            backend,
            model: model.to_owned(),
            entry: entry_of(backend, model),
        };
        match d.chain {
            Some(c) => self.chains[c]
                .steps
                .iter()
                .map(|s| one(s.backend, s.upstream_model.as_deref().unwrap_or(sent)))
                .collect(),
            None => vec![one(d.backend, sent)],
        }
    }

    /// The error for a model that is neither routed nor listed, naming what `visible`
    /// keeps (the caller's allowed models), so a restricted caller does not learn the
    /// whole catalogue from it.
    pub fn unknown_model_for(
        &self,
        requested: &str,
        visible: &dyn Fn(usize) -> bool,
    ) -> RouteError {
        RouteError::UnknownModel {
            requested: requested.to_owned(),
            hint: crate::suggest::hint(
                requested,
                self.models
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| visible(*i))
                    .flat_map(|(_, m)| std::iter::once(&m.name).chain(&m.aliases))
                    .map(String::as_str),
            ),
            available: self.visible_models(visible),
        }
    }

    fn unknown_model(&self, requested: &str) -> RouteError {
        self.unknown_model_for(requested, &|_| true)
    }

    /// Public names of the models `visible` keeps, in config order.
    pub fn visible_models(&self, visible: &dyn Fn(usize) -> bool) -> Vec<String> {
        self.models
            .iter()
            .enumerate()
            .filter(|(i, _)| visible(*i))
            .map(|(_, m)| m.name.clone())
            .collect()
    }

    /// The same routing error with its model and backend lists cut to what the caller may
    /// use (`visible_model` by catalogue index, `visible_backend` by backend index).
    pub fn restrict_error(
        &self,
        err: RouteError,
        visible_model: &dyn Fn(usize) -> bool,
        visible_backend: &dyn Fn(usize) -> bool,
    ) -> RouteError {
        match err {
            RouteError::MissingModel { .. } => RouteError::MissingModel {
                available: self.visible_models(visible_model),
            },
            RouteError::UnknownModel { requested, .. } => {
                self.unknown_model_for(&requested, visible_model)
            }
            RouteError::UnknownBackend { requested, .. } => RouteError::UnknownBackend {
                hint: crate::suggest::hint(
                    &requested,
                    self.backends
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| visible_backend(*i))
                        .map(|(_, b)| b.name.as_str()),
                ),
                requested,
            },
        }
    }

    /// The first matching route among `routes`, resolved.
    fn first_route<'r>(
        &self,
        routes: impl Iterator<Item = &'r Route>,
        input: &RouteInput<'_>,
        model: Option<&str>,
        mut trace: Option<&mut Vec<(String, String)>>,
    ) -> Option<Decision> {
        for route in routes {
            match route.check(model, input.headers, &input.signals) {
                Ok(why) => {
                    let mut d = self.resolve(&route.target, route, model, input);
                    let matched = if why.is_empty() {
                        "matches every request".to_owned()
                    } else {
                        why.join(", ")
                    };
                    d.reason = if d.reason.is_empty() {
                        matched
                    } else {
                        format!("{matched}; {}", d.reason)
                    };
                    return Some(d);
                }
                Err(miss) => {
                    if let Some(t) = trace.as_deref_mut() {
                        t.push((route.name.clone(), miss.to_string()));
                    }
                }
            }
        }
        None
    }

    /// The decision for a rule's target (a split picks one variant).
    fn resolve(
        &self,
        target: &Target,
        route: &Route,
        model: Option<&str>,
        input: &RouteInput<'_>,
    ) -> Decision {
        let rule = Rule::Route(route.name.clone());
        match target {
            Target::Model(i) => {
                let mut d = self.catalogue_decision(*i, rule);
                d.reason = format!("to model {}", self.models[*i].name);
                d
            }
            Target::Backend {
                backend,
                upstream_model,
            } => Decision {
                backend: *backend,
                public_model: model
                    .and_then(|m| self.find_model(m))
                    .map(|i| self.models[i].name.clone()),
                upstream_model: upstream_model.clone(),
                rule,
                chain: None,
                reason: format!("to backend {}", self.backends[*backend].name),
            },
            Target::Chain(c) => {
                let chain = &self.chains[*c];
                if input.cooling.contains(&chain.steps[0].backend)
                    && let Some(step) = chain
                        .steps
                        .iter()
                        .find(|s| !input.cooling.contains(&s.backend))
                {
                    let name = &self.backends[step.backend].name;
                    return Decision {
                        backend: step.backend,
                        public_model: model
                            .and_then(|m| self.find_model(m))
                            .map(|i| self.models[i].name.clone()),
                        upstream_model: step.upstream_model.clone(),
                        rule,
                        chain: None,
                        reason: format!(
                            "to fallback chain {}, whose first step {} is cooling down: straight to {name}",
                            chain.name, self.backends[chain.steps[0].backend].name
                        ),
                    };
                }
                let steps: Vec<&str> = chain
                    .steps
                    .iter()
                    .map(|s| self.backends[s.backend].name.as_str())
                    .collect();
                Decision {
                    backend: chain.steps[0].backend,
                    public_model: model
                        .and_then(|m| self.find_model(m))
                        .map(|i| self.models[i].name.clone()),
                    // The model the client asked for; steps may rename it (per attempt).
                    upstream_model: None,
                    rule,
                    chain: Some(*c),
                    reason: format!("to fallback chain {} ({})", chain.name, steps.join(" → ")),
                }
            }
            Target::Split(split) => {
                let weighted: Vec<split::Weighted> = split
                    .variants
                    .iter()
                    .map(|(weight, t)| split::Weighted {
                        weight: *weight,
                        excluded: self
                            .target_backend(t)
                            .is_some_and(|b| input.cooling.contains(&b)),
                    })
                    .collect();
                let sticky = split
                    .sticky
                    .then_some(input.signals.consumer)
                    .flatten()
                    .map(|c| (route.name.as_str(), c));
                // The compiler guarantees a positive total weight.
                let pick = split::pick(&weighted, sticky, input.roll).unwrap_or(split::Pick {
                    index: 0,
                    bucket: 0,
                    total: 0,
                    by: "default",
                });
                let (weight, variant) = &split.variants[pick.index];
                let mut d = self.resolve(variant, route, model, input);
                let cooled = weighted.iter().filter(|w| w.excluded).count();
                d.reason = format!(
                    "split variant {} of {} (weight {weight} of {}, bucket {} by {}{}) {}",
                    pick.index + 1,
                    split.variants.len(),
                    pick.total,
                    pick.bucket,
                    pick.by,
                    if cooled > 0 {
                        format!(", {cooled} variant(s) cooling down")
                    } else {
                        String::new()
                    },
                    d.reason
                );
                d
            }
        }
    }

    /// The backend a non-split target sends to first.
    fn target_backend(&self, t: &Target) -> Option<usize> {
        match t {
            Target::Model(i) => Some(self.models[*i].backend),
            Target::Backend { backend, .. } => Some(*backend),
            Target::Chain(c) => Some(self.chains[*c].steps[0].backend),
            Target::Split(_) => None,
        }
    }

    fn by_model(
        &self,
        model: Option<&str>,
        input: &RouteInput<'_>,
        trace: Option<&mut Vec<(String, String)>>,
    ) -> Result<Decision, RouteError> {
        let normal = self.routes.iter().filter(|r| !r.force);
        if let Some(d) = self.first_route(normal, input, model, trace) {
            return Ok(d);
        }
        let Some(model) = model else {
            return Err(RouteError::MissingModel {
                available: self.public_models(),
            });
        };
        match self.find_model(model) {
            Some(i) => {
                let mut d = self.catalogue_decision(i, Rule::Catalogue);
                d.reason = format!("model {model:?} is in the catalogue");
                Ok(d)
            }
            None => Err(self.unknown_model(model)),
        }
    }

    /// The chain whose Envoy route value is `envoy_route`, or named `name`.
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }
}

impl Route {
    /// Whether every condition holds; on success the facts that made it hold.
    pub fn check(
        &self,
        model: Option<&str>,
        headers: &Headers,
        signals: &Signals<'_>,
    ) -> Result<Vec<String>, Miss> {
        let mut why = Vec::new();
        if !self.models.is_empty() {
            match model.and_then(|m| self.models.iter().find(|g| g.matches(m)).map(|g| (m, g))) {
                Some((m, g)) => why.push(format!("model {m:?} matches {:?}", g.as_str())),
                None => return Err(Miss::Model(model.map(str::to_owned))),
            }
        }
        for (name, g) in &self.headers {
            if !headers.get(name).is_some_and(|v| g.matches(v)) {
                return Err(Miss::Header(name.clone()));
            }
            why.push(format!("header {name} matches {:?}", g.as_str()));
        }
        why.extend(self.when.check(signals)?);
        Ok(why)
    }

    /// Whether every condition holds.
    pub fn matches(&self, model: Option<&str>, headers: &Headers) -> bool {
        self.check(model, headers, &Signals::default()).is_ok()
    }

    /// Whether the rule matches every request (a default route).
    pub fn is_catch_all(&self) -> bool {
        self.models.is_empty() && self.headers.is_empty() && self.when.is_empty()
    }
}

#[cfg(test)]
mod tests;
