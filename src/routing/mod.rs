//! Model routing: which backend serves a request, and under which model name.
//!
//! Pure decision code over plain types (no I/O, no gRPC). The order is fixed and
//! documented in the README:
//! 1. a `/model backend,model` command (when enabled) picks both explicitly;
//! 2. `routes`, in order, first match wins;
//! 3. the model catalogue (name or alias);
//! 4. otherwise the model is unknown (404 upstream of here).
//!
//! The config compiler guarantees every index in a [`Table`] is valid, so lookups here
//! cannot fail.

pub mod command;
pub mod glob;

use crate::headers::Headers;
use crate::secret::Secret;
use command::ModelCommand;
use glob::Glob;
use thiserror::Error;

/// API dialect of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// Any OpenAI-compatible server (OpenAI, vLLM, Ollama, OpenRouter, ...): passthrough.
    Openai,
    /// Azure OpenAI: deployment-addressed paths, `api-version`, `api-key` or Entra bearer.
    AzureOpenai,
    /// Anthropic Messages API: chat completions translated both ways; `/v1/messages` native.
    Anthropic,
    /// AWS Bedrock Converse / ConverseStream, SigV4-signed.
    Bedrock,
    /// Google Vertex AI generateContent, OAuth service-account token.
    Vertex,
    /// Google Gemini API generateContent, API key.
    Gemini,
}

impl BackendKind {
    /// The name as written in the config (`azure_openai`), for logs and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Openai => "openai",
            BackendKind::AzureOpenai => "azure_openai",
            BackendKind::Anthropic => "anthropic",
            BackendKind::Bedrock => "bedrock",
            BackendKind::Vertex => "vertex",
            BackendKind::Gemini => "gemini",
        }
    }
}

/// A compiled upstream.
#[derive(Debug, Clone)]
pub struct Backend {
    /// Unique name.
    pub name: String,
    /// Dialect.
    pub kind: BackendKind,
    /// Path prefix at the upstream, without a trailing slash (may be empty).
    pub base_path: String,
    /// Value of `x-tollgate-backend` that Envoy's route matches.
    pub envoy_route: String,
    /// `:authority` rewrite.
    pub authority: Option<String>,
    /// Credential to add.
    pub credential: Option<Credential>,
    /// Per-kind settings (the variant matches `kind`).
    pub provider: crate::providers::ProviderConfig,
}

/// A header carrying a backend credential.
#[derive(Debug, Clone)]
pub struct Credential {
    /// Lower-case header name.
    pub header: String,
    /// Full header value (e.g. `Bearer sk-...`).
    pub value: Secret,
}

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
    /// Where matching requests go.
    pub target: Target,
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
}

/// What a request asks for.
#[derive(Debug, Clone, Copy)]
pub struct RouteInput<'a> {
    /// `model` from the body.
    pub model: Option<&'a str>,
    /// Request headers as the client sent them.
    pub headers: &'a Headers,
    /// A `/model` command from the last user message.
    pub command: Option<&'a ModelCommand>,
}

/// Which rule made the decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// A `/model` command.
    Command,
    /// A named route.
    Route(String),
    /// The catalogue.
    Catalogue,
}

impl Rule {
    /// Name for metrics, logs and metadata.
    pub fn label(&self) -> &str {
        match self {
            Rule::Command => "model_command",
            Rule::Route(name) => name,
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
        }
    }

    /// Decides where a request goes.
    pub fn decide(&self, input: &RouteInput<'_>) -> Result<Decision, RouteError> {
        if let Some(cmd) = input.command.filter(|_| self.model_command) {
            match cmd {
                ModelCommand::BackendModel { backend, model } => {
                    return self.explicit(backend, model);
                }
                ModelCommand::Model(model) => {
                    let mut d = self.by_model(Some(model), input.headers)?;
                    // The body still names the original model: always rewrite.
                    if d.upstream_model.is_none() {
                        d.upstream_model = Some(model.clone());
                    }
                    d.rule = Rule::Command;
                    return Ok(d);
                }
            }
        }
        self.by_model(input.model, input.headers)
    }

    fn explicit(&self, backend: &str, model: &str) -> Result<Decision, RouteError> {
        let Some(b) = self.backends.iter().position(|b| b.name == backend) else {
            return Err(RouteError::UnknownBackend {
                requested: backend.to_owned(),
                hint: crate::suggest::hint(backend, self.backends.iter().map(|b| b.name.as_str())),
            });
        };
        // A catalogue name on that same backend is translated; anything else goes as typed.
        let listed = self
            .find_model(model)
            .filter(|&i| self.models[i].backend == b);
        Ok(match listed {
            Some(i) => self.catalogue_decision(i, Rule::Command),
            None => Decision {
                backend: b,
                public_model: None,
                upstream_model: Some(model.to_owned()),
                rule: Rule::Command,
            },
        })
    }

    fn by_model(&self, model: Option<&str>, headers: &Headers) -> Result<Decision, RouteError> {
        if let Some(route) = self.routes.iter().find(|r| r.matches(model, headers)) {
            let rule = Rule::Route(route.name.clone());
            return Ok(match &route.target {
                Target::Model(i) => self.catalogue_decision(*i, rule),
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
                },
            });
        }
        let Some(model) = model else {
            return Err(RouteError::MissingModel {
                available: self.public_models(),
            });
        };
        match self.find_model(model) {
            Some(i) => Ok(self.catalogue_decision(i, Rule::Catalogue)),
            None => Err(RouteError::UnknownModel {
                requested: model.to_owned(),
                hint: crate::suggest::hint(
                    model,
                    self.models
                        .iter()
                        .flat_map(|m| std::iter::once(&m.name).chain(&m.aliases))
                        .map(String::as_str),
                ),
                available: self.public_models(),
            }),
        }
    }
}

impl Route {
    /// Whether every condition holds.
    pub fn matches(&self, model: Option<&str>, headers: &Headers) -> bool {
        let model_ok = self.models.is_empty()
            || model.is_some_and(|m| self.models.iter().any(|g| g.matches(m)));
        model_ok
            && self
                .headers
                .iter()
                .all(|(name, g)| headers.get(name).is_some_and(|v| g.matches(v)))
    }

    /// Whether the rule matches every request (a default route).
    pub fn is_catch_all(&self) -> bool {
        self.models.is_empty() && self.headers.is_empty()
    }
}

#[cfg(test)]
mod tests;
