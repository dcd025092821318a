use super::*;

fn backend(name: &str) -> Backend {
    Backend {
        name: name.into(),
        kind: BackendKind::Openai,
        base_path: "/v1".into(),
        envoy_route: name.into(),
        authority: None,
        credential: None,
        provider: crate::providers::ProviderConfig::Openai,
    }
}

fn table() -> Table {
    Table {
        backends: vec![backend("alpha"), backend("beta")],
        models: vec![
            Model {
                name: "gpt-4o-mini".into(),
                aliases: vec!["mini".into()],
                backend: 0,
                upstream_model: "small-2025".into(),
            },
            Model {
                name: "large".into(),
                aliases: vec![],
                backend: 1,
                upstream_model: "large-2025".into(),
            },
        ],
        routes: vec![
            Route {
                name: "research-to-beta".into(),
                models: vec![Glob::new("gpt-*")],
                headers: vec![("x-team".into(), Glob::new("research"))],
                when: Conditions::default(),
                force: false,
                target: Target::Model(1),
            },
            Route {
                name: "beta-passthrough".into(),
                models: vec![Glob::new("beta-*")],
                headers: vec![],
                when: Conditions::default(),
                force: false,
                target: Target::Backend {
                    backend: 1,
                    upstream_model: None,
                },
            },
        ],
        model_command: true,
        ..Table::default()
    }
}

fn headers(pairs: &[(&str, &str)]) -> Headers {
    Headers::from_pairs(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())),
    )
}

fn decide(
    t: &Table,
    model: Option<&str>,
    h: &Headers,
    cmd: Option<&ModelCommand>,
) -> Result<Decision, RouteError> {
    t.decide(&RouteInput::basic(model, h, cmd))
}

#[test]
fn catalogue_name_and_alias_rewrite_to_upstream_name() {
    let t = table();
    let h = Headers::default();
    for name in ["gpt-4o-mini", "mini"] {
        let d = decide(&t, Some(name), &h, None).unwrap();
        assert_eq!(d.backend, 0);
        assert_eq!(d.upstream_model.as_deref(), Some("small-2025"));
        assert_eq!(d.public_model.as_deref(), Some("gpt-4o-mini"));
        assert_eq!(d.rule, Rule::Catalogue);
    }
}

#[test]
fn header_rule_wins_over_catalogue() {
    let t = table();
    let d = decide(
        &t,
        Some("gpt-4o-mini"),
        &headers(&[("x-team", "research")]),
        None,
    )
    .unwrap();
    assert_eq!(d.backend, 1);
    assert_eq!(d.upstream_model.as_deref(), Some("large-2025"));
    assert_eq!(d.rule.label(), "research-to-beta");
    // Without the header the catalogue applies.
    let d = decide(
        &t,
        Some("gpt-4o-mini"),
        &headers(&[("x-team", "sales")]),
        None,
    )
    .unwrap();
    assert_eq!(d.backend, 0);
}

#[test]
fn glob_rule_passes_the_name_through() {
    let t = table();
    let d = decide(&t, Some("beta-experimental"), &Headers::default(), None).unwrap();
    assert_eq!(d.backend, 1);
    assert_eq!(d.upstream_model, None);
    assert_eq!(d.public_model, None);
}

#[test]
fn unknown_model_lists_models_and_suggests() {
    let t = table();
    let err = decide(&t, Some("gpt-4o-mimi"), &Headers::default(), None).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("\"gpt-4o-mimi\" does not exist"), "{msg}");
    assert!(msg.contains("did you mean \"gpt-4o-mini\"?"), "{msg}");
    assert!(
        msg.contains("available models: gpt-4o-mini, large"),
        "{msg}"
    );
}

#[test]
fn missing_model_is_an_error_unless_a_default_route_exists() {
    let mut t = table();
    let err = decide(&t, None, &Headers::default(), None).unwrap_err();
    assert!(matches!(err, RouteError::MissingModel { .. }));
    t.routes.push(Route {
        name: "default".into(),
        models: vec![],
        headers: vec![],
        when: Conditions::default(),
        force: false,
        target: Target::Backend {
            backend: 0,
            upstream_model: Some("fallback".into()),
        },
    });
    let d = decide(&t, None, &Headers::default(), None).unwrap();
    assert_eq!(d.upstream_model.as_deref(), Some("fallback"));
    assert_eq!(d.rule.label(), "default");
}

#[test]
fn command_with_backend_and_model() {
    let t = table();
    let h = Headers::default();
    let cmd = ModelCommand::BackendModel {
        backend: "beta".into(),
        model: "custom-x".into(),
    };
    let d = decide(&t, Some("gpt-4o-mini"), &h, Some(&cmd)).unwrap();
    assert_eq!(d.backend, 1);
    assert_eq!(d.upstream_model.as_deref(), Some("custom-x"));
    assert_eq!(d.rule, Rule::Command);
    // A catalogue name on that backend is translated.
    let cmd = ModelCommand::BackendModel {
        backend: "beta".into(),
        model: "large".into(),
    };
    let d = decide(&t, None, &h, Some(&cmd)).unwrap();
    assert_eq!(d.upstream_model.as_deref(), Some("large-2025"));
    assert_eq!(d.public_model.as_deref(), Some("large"));
}

#[test]
fn command_with_unknown_backend_suggests() {
    let t = table();
    let cmd = ModelCommand::BackendModel {
        backend: "alhpa".into(),
        model: "x".into(),
    };
    let err = decide(&t, None, &Headers::default(), Some(&cmd)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown backend \"alhpa\" in the /model command (did you mean \"alpha\"?)"
    );
}

#[test]
fn command_with_model_only_resolves_like_a_model_and_always_rewrites() {
    let t = table();
    let h = Headers::default();
    let cmd = ModelCommand::Model("mini".into());
    let d = decide(&t, Some("large"), &h, Some(&cmd)).unwrap();
    assert_eq!(d.backend, 0);
    assert_eq!(d.upstream_model.as_deref(), Some("small-2025"));
    assert_eq!(d.rule, Rule::Command);
    let cmd = ModelCommand::Model("beta-raw".into());
    let d = decide(&t, Some("large"), &h, Some(&cmd)).unwrap();
    assert_eq!(d.upstream_model.as_deref(), Some("beta-raw"));
}

#[test]
fn disabled_command_is_ignored() {
    let mut t = table();
    t.model_command = false;
    let cmd = ModelCommand::BackendModel {
        backend: "beta".into(),
        model: "x".into(),
    };
    let d = decide(&t, Some("mini"), &Headers::default(), Some(&cmd)).unwrap();
    assert_eq!(d.backend, 0);
    assert_eq!(d.rule, Rule::Catalogue);
}

#[test]
fn long_catalogues_are_not_listed_in_errors() {
    let mut t = table();
    for i in 0..30 {
        t.models.push(Model {
            name: format!("m{i}"),
            aliases: vec![],
            backend: 0,
            upstream_model: format!("m{i}"),
        });
    }
    let msg = decide(&t, Some("nope-nope-nope"), &Headers::default(), None)
        .unwrap_err()
        .to_string();
    assert!(!msg.contains("available models"), "{msg}");
}
