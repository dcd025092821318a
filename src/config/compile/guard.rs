//! Compiling the guard section: policies, their matches, PII detectors and tool rules.

use super::{CompileOptions, Cx};
use crate::config::raw::RawGuard;
use crate::glob::Glob;
use crate::guard::{Guard, OnDenied, Policy, PolicyMatch, ToolPolicy};
use crate::suggest;
use std::collections::HashSet;

impl Cx {
    pub(super) fn guard(&mut self, raw: &RawGuard, opts: &CompileOptions<'_>) -> Guard {
        use crate::pii::{self, Action, Detector, detect};
        use std::sync::Arc;
        // Custom detectors first: names must not shadow built-ins.
        let mut customs: Vec<Arc<Detector>> = Vec::new();
        let mut names: HashSet<String> = pii::BUILTIN.iter().map(|s| (*s).to_owned()).collect();
        for (i, d) in raw.detectors.iter().enumerate() {
            let at = |f: &str| format!("guard.detectors[{i}].{f}");
            let valid_name = !d.name.is_empty()
                && d.name.len() <= 40
                && d.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !valid_name {
                self.err(
                    at("name"),
                    format!("{:?} must be 1-40 characters of a-z, 0-9 or '_'", d.name),
                );
                continue;
            }
            if !names.insert(d.name.clone()) {
                self.err(
                    at("name"),
                    format!(
                        "detector name {:?} is already used (built-in or earlier detector)",
                        d.name
                    ),
                );
                continue;
            }
            let validator = match d.validator.as_deref() {
                None => None,
                Some(v) => match pii::validate::Validator::by_name(v) {
                    Some(v) => Some(v),
                    None => {
                        self.err(
                            at("validator"),
                            format!(
                                "unknown validator {v:?}{}; expected one of: {}",
                                suggest::hint(v, pii::validate::Validator::NAMES.iter().copied()),
                                pii::validate::Validator::NAMES.join(", ")
                            ),
                        );
                        continue;
                    }
                },
            };
            match Detector::custom(&d.name, &d.pattern, validator) {
                Ok(det) => customs.push(Arc::new(det)),
                Err(e) => self.err(at("pattern"), e.to_string()),
            }
        }
        let builtins: Vec<Arc<Detector>> = pii::BUILTIN
            .iter()
            .filter_map(|e| detect::builtin(e))
            .map(Arc::new)
            .collect();
        let all: Vec<Arc<Detector>> = builtins.into_iter().chain(customs).collect();
        let known: Vec<String> = all.iter().map(|d| d.entity.to_string()).collect();

        let uses_hash = raw.policies.iter().any(|p| {
            p.pii.as_ref().is_some_and(|pii| {
                pii.default_action.as_deref() == Some("hash")
                    || pii.entities.values().any(|a| a == "hash")
            })
        });
        let hash_key: Arc<[u8]> = match (&raw.hash_key, uses_hash) {
            (Some(r), _) if opts.resolve_secrets => match self.secret("guard.hash_key", r, opts) {
                Some(k) => Arc::from(k.into_bytes()),
                None => Arc::from(&b""[..]),
            },
            (None, true) => {
                self.err("guard.hash_key", "a policy uses the `hash` action: set hash_key (env or file) so hashes cannot be reversed by guessing");
                Arc::from(&b""[..])
            }
            _ => Arc::from(&b"unresolved"[..]),
        };

        let mut policy_names = HashSet::new();
        let mut policies = Vec::new();
        for (i, p) in raw.policies.iter().enumerate() {
            let at = |f: &str| format!("guard.policies[{i}].{f}");
            self.name(&at("name"), &p.name, "policy");
            if !policy_names.insert(p.name.clone()) {
                self.err(at("name"), format!("duplicate policy name {:?}", p.name));
            }
            let action = |cx: &mut Cx, path: String, text: &str| -> Option<Option<Action>> {
                if text == "off" {
                    return Some(None);
                }
                match Action::by_label(text) {
                    Some(a) => Some(Some(a)),
                    None => {
                        cx.err(
                            path,
                            format!(
                                "unknown action {text:?}{}; expected one of: {}, off",
                                suggest::hint(text, Action::LABELS.iter().copied()),
                                Action::LABELS.join(", ")
                            ),
                        );
                        None
                    }
                }
            };
            let mut request = None;
            let mut response = None;
            let mut restore_dets = Vec::new();
            let mut roles: Vec<String> = crate::guard::KNOWN_ROLES
                .iter()
                .map(|r| (*r).to_owned())
                .collect();
            let mut thinking = crate::guard::Thinking::default();
            if let Some(pii_cfg) = &p.pii {
                if let Some(t) = pii_cfg.thinking.as_deref() {
                    match crate::guard::Thinking::by_label(t) {
                        Some(x) => thinking = x,
                        None => self.err(
                            at("pii.thinking"),
                            format!(
                                "{t:?} must be one of {}{}",
                                crate::guard::Thinking::LABELS.join(", "),
                                suggest::hint(t, crate::guard::Thinking::LABELS.iter().copied())
                            ),
                        ),
                    }
                }
                let default = action(
                    self,
                    at("pii.default_action"),
                    pii_cfg.default_action.as_deref().unwrap_or("mask"),
                )
                .flatten();
                for name in pii_cfg.entities.keys() {
                    if !known.contains(name) {
                        self.err(
                            at(&format!("pii.entities.{name}")),
                            format!(
                                "unknown entity {name:?}{}",
                                suggest::hint(name, known.iter().map(String::as_str))
                            ),
                        );
                    }
                }
                let mut req_dets = Vec::new();
                let mut resp_dets = Vec::new();
                for d in &all {
                    let a = match pii_cfg.entities.get(&*d.entity) {
                        Some(text) => {
                            action(self, at(&format!("pii.entities.{}", d.entity)), text).flatten()
                        }
                        None => default,
                    };
                    let Some(a) = a else { continue };
                    req_dets.push((d.clone(), a));
                    // Responses never issue new pseudonyms: the client would see them.
                    let ra = if a == Action::Pseudonymize {
                        Action::Mask
                    } else {
                        a
                    };
                    resp_dets.push((d.clone(), ra));
                }
                if let Some(r) = &pii_cfg.roles {
                    roles = r.clone();
                }
                if pii_cfg.request.unwrap_or(true) {
                    request = Some(Arc::new(pii::masker(req_dets, hash_key.clone(), false)));
                }
                if pii_cfg.response.unwrap_or(true) {
                    restore_dets = resp_dets.clone();
                    response = Some(Arc::new(pii::masker(resp_dets, hash_key.clone(), false)));
                }
            }
            let response_restore = Arc::new(pii::masker(restore_dets, hash_key.clone(), true));
            let blocked =
                p.blocked.as_ref().and_then(|b| {
                    match crate::guard::blocked::Blocked::new(&b.words, &b.regexes) {
                        Ok(x) => Some(x),
                        Err((j, e)) => {
                            let path = if j == usize::MAX {
                                at("blocked.words")
                            } else {
                                at(&format!("blocked.regexes[{j}]"))
                            };
                            self.err(path, format!("invalid: {e}"));
                            None
                        }
                    }
                });
            let tools = p.tools.as_ref().map(|t| {
                let on_denied = match t.on_denied.as_deref() {
                    None | Some("remove") => OnDenied::Remove,
                    Some("refuse") => OnDenied::Refuse,
                    Some(other) => {
                        self.err(
                            at("tools.on_denied"),
                            format!(
                                "{other:?} must be `remove` or `refuse`{}",
                                suggest::hint(other, ["remove", "refuse"])
                            ),
                        );
                        OnDenied::Remove
                    }
                };
                ToolPolicy {
                    allow: t.allow.iter().map(|g| Glob::new(g)).collect(),
                    deny: t.deny.iter().map(|g| Glob::new(g)).collect(),
                    on_denied,
                }
            });
            policies.push(Arc::new(Policy {
                name: p.name.clone(),
                matches: PolicyMatch {
                    routes: p.matches.routes.iter().map(|g| Glob::new(g)).collect(),
                    models: p.matches.models.iter().map(|g| Glob::new(g)).collect(),
                },
                shadow: p.shadow,
                request,
                response,
                response_restore,
                roles,
                thinking,
                blocked,
                blocked_in_responses: p.blocked.as_ref().and_then(|b| b.responses).unwrap_or(true),
                tools,
                prepend_system: p.system_prompt.as_ref().and_then(|s| s.prepend.clone()),
                append_system: p.system_prompt.as_ref().and_then(|s| s.append.clone()),
            }));
        }
        Guard { policies }
    }
}
