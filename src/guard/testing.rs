//! Test helper: compile a policy from YAML.

use super::Policy;
use crate::config::{CompileOptions, compile};
use std::sync::Arc;

/// The first policy of a config whose `guard:` section is `guard_yaml`.
pub fn policy(guard_yaml: &str) -> Arc<Policy> {
    let text = format!(
        "version: 1\nbackends: [{{name: a, kind: openai}}]\nmodels: [{{name: m, backend: a}}]\nguard:\n{guard_yaml}"
    );
    let opts = CompileOptions {
        resolve_secrets: true,
        env: &|_| Some("test-hash-key".into()),
    };
    let snap = compile(&text, &opts).unwrap_or_else(|e| panic!("config: {e:?}"));
    snap.guard.policies[0].clone()
}
