use super::*;
use crate::routing::Target;

fn env(name: &str) -> Option<String> {
    match name {
        "ALPHA_KEY" => Some("sk-alpha".into()),
        "EMPTY_KEY" => Some("  ".into()),
        _ => None,
    }
}

fn opts() -> CompileOptions<'static> {
    CompileOptions {
        resolve_secrets: true,
        env: &env,
    }
}

fn errors(yaml: &str) -> Vec<String> {
    match compile(yaml, &opts()) {
        Ok(_) => panic!("expected errors for:\n{yaml}"),
        Err(errs) => errs.iter().map(ToString::to_string).collect(),
    }
}

const GOOD: &str = r#"
version: 1
server:
  grpc_listen: unix:/tmp/tollgate.sock
  max_request_body: 2MiB
backends:
  - name: alpha
    kind: openai
    auth:
      bearer: { env: ALPHA_KEY }
  - name: anthropic
    kind: openai
    base_path: /api/v1/
    envoy_route: anthropic-route
    auth:
      header: { name: X-Api-Key, value: { env: ALPHA_KEY } }
models:
  - name: gpt-4o-mini
    aliases: [mini]
    backend: alpha
    upstream_model: gpt-4o-mini-2024-07-18
routes:
  - name: claude
    match: { models: ["claude-*"], headers: { x-team: research } }
    backend: anthropic
  - name: default
    model: mini
"#;

#[test]
fn compiles_a_full_config() {
    let s = compile(GOOD, &opts()).expect("valid");
    assert_eq!(
        s.settings.grpc_listen,
        ListenAddr::Unix("/tmp/tollgate.sock".into())
    );
    assert_eq!(s.max_request_body, 2 << 20);
    let b = &s.routing.backends[1];
    assert_eq!(b.base_path, "/api/v1");
    assert_eq!(b.envoy_route, "anthropic-route");
    let cred = b.credential.as_ref().expect("credential");
    assert_eq!(cred.header, "x-api-key");
    assert_eq!(cred.value.expose(), "sk-alpha");
    let a = s.routing.backends[0]
        .credential
        .as_ref()
        .expect("credential");
    assert_eq!(a.value.expose(), "Bearer sk-alpha");
    assert_eq!(s.routing.models[0].upstream_model, "gpt-4o-mini-2024-07-18");
    assert!(matches!(s.routing.routes[1].target, Target::Model(0)));
    assert!(s.routing.model_command);
    assert_eq!(s.hash.len(), 12);
    assert!(
        s.summary()
            .contains("2 backends, 1 models (1 aliases), 2 routes")
    );
}

#[test]
fn unknown_backend_reference_has_path_and_suggestion() {
    let yaml = GOOD.replace("backend: anthropic\n", "backend: anthropc\n");
    assert_eq!(
        errors(&yaml),
        vec![r#"routes[0].backend: unknown backend "anthropc" (did you mean "anthropic"?)"#]
    );
}

#[test]
fn collects_every_error_in_one_pass() {
    let yaml = r#"
version: 1
backends:
  - name: alpha
    kind: opnai
  - name: beta
    kind: openai
    bas_path: /v1
models:
  - name: m
    backend: gamma
routes:
  - match: { models: ["x"] }
"#;
    let errs = errors(yaml);
    assert_eq!(
        errs,
        vec![
            r#"backends[0].kind: unknown value "opnai" (did you mean "openai"?); expected one of: openai, azure_openai, anthropic, bedrock, vertex, gemini"#,
            r#"backends[1].bas_path: unknown field "bas_path" (did you mean "base_path"?); expected one of: name, kind, base_path, envoy_route, authority, auth, anthropic, azure_openai, bedrock, vertex, forward_headers"#,
        ],
        "structural errors are reported first, all of them"
    );
    // Once the structure is right, every semantic error shows up together.
    let yaml = yaml
        .replace("opnai", "openai")
        .replace("bas_path", "base_path");
    let errs = errors(&yaml);
    assert_eq!(
        errs,
        vec![
            r#"models[0].backend: unknown backend "gamma""#,
            "routes[0]: missing target: set `model` (a catalogue entry), `backend`, `chain` or `split`",
        ]
    );
}

#[test]
fn unknown_sections_and_missing_version() {
    let errs = errors("backend: []\n");
    assert_eq!(
        errs,
        vec![
            r#"backend: unknown section (did you mean "backends"?)"#,
            "version: missing: add `version: 1`",
        ]
    );
    assert_eq!(
        errors("version: 2\n"),
        vec!["version: unsupported version 2; this tollgate reads version 1"]
    );
}

#[test]
fn yaml_syntax_errors_carry_a_location() {
    let errs = errors("version: 1\nbackends: [\n");
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with("invalid YAML:"), "{errs:?}");
    assert!(errs[0].contains("line"), "{errs:?}");
    assert_eq!(
        errors("- 1\n- 2\n"),
        vec!["the config must be a YAML mapping with `version: 1` at the top"]
    );
}

#[test]
fn secrets_are_checked_and_never_printed() {
    let yaml = r#"
version: 1
backends:
  - name: a
    kind: openai
    auth: { bearer: { env: MISSING_KEY } }
  - name: b
    kind: openai
    auth: { bearer: { env: EMPTY_KEY } }
  - name: c
    kind: openai
    auth: { bearer: { file: /nonexistent/tollgate/key } }
"#;
    let errs = errors(yaml);
    assert_eq!(
        errs[0],
        r#"backends[0].auth.bearer.env: environment variable "MISSING_KEY" is not set"#
    );
    assert_eq!(
        errs[1],
        r#"backends[1].auth.bearer.env: environment variable "EMPTY_KEY" is empty"#
    );
    assert!(errs[2].starts_with(
        r#"backends[2].auth.bearer.file: cannot read secret file "/nonexistent/tollgate/key""#
    ));
    // validate --skip-secrets compiles without them.
    let skip = CompileOptions {
        resolve_secrets: false,
        env: &env,
    };
    assert!(compile(yaml, &skip).is_ok());
}

#[test]
fn secret_files_are_read_and_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "sk-from-file\n").unwrap();
    let yaml = format!(
        "version: 1\nbackends:\n  - name: a\n    kind: openai\n    auth: {{ bearer: {{ file: {} }} }}\n",
        key.display()
    );
    let s = compile(&yaml, &opts()).unwrap();
    let cred = s.routing.backends[0].credential.as_ref().unwrap();
    assert_eq!(cred.value.expose(), "Bearer sk-from-file");
    assert!(
        !format!("{s:?}").contains("sk-from-file"),
        "Debug must not print secrets"
    );
}

#[test]
fn duplicate_names_and_bad_values() {
    let yaml = r#"
version: 1
server:
  grpc_listen: "localhost"
  admin_listen: "nope"
  max_request_body: 4 parsecs
  drain_timeout: soon
log: { level: "loud=" }
backends:
  - { name: Alpha, kind: openai, base_path: "v1" }
  - { name: b, kind: openai, envoy_route: same }
  - { name: b, kind: openai, envoy_route: same }
models:
  - { name: m, backend: b }
  - { name: n, aliases: [m], backend: b }
routes:
  - { name: everything, backend: b }
  - { match: { models: [x] }, model: m, backend: b }
"#;
    let errs = errors(yaml);
    let expected = [
        r#"server.grpc_listen: "localhost" is not host:port (e.g. 127.0.0.1:50051) or unix:/path"#,
        r#"server.admin_listen: "nope" is not a host:port address such as 127.0.0.1:9090"#,
        "server.drain_timeout: \"soon\" is not a duration",
        "log.level: \"loud=\" is not a log level or filter",
        "server.max_request_body: \"4 parsecs\" is not a positive size",
        r#"backends[0].name: backend name "Alpha" must be 1-64 characters"#,
        r#"backends[0].base_path: "v1" must start with '/'"#,
        r#"backends[2].name: duplicate backend name "b""#,
        r#"backends[2].envoy_route: "same" is already used by backends[1]"#,
        r#"models[1].aliases[0]: model name "m" is already used at models[0].name"#,
        "routes[1]: unreachable: routes[0] matches every request",
        "routes[1]: set only one of `model`, `backend` or `chain`",
    ];
    for e in expected {
        assert!(
            errs.iter().any(|x| x.starts_with(e)),
            "missing {e:?} in {errs:#?}"
        );
    }
    assert_eq!(errs.len(), expected.len(), "{errs:#?}");
}

#[test]
fn log_filters() {
    assert!(check_log_filter("info").is_ok());
    assert!(check_log_filter("warn,tollgate=debug,h2=off").is_ok());
    let e = check_log_filter("inf").unwrap_err();
    assert!(e.contains("did you mean \"info\"?"), "{e}");
    assert!(check_log_filter("tollgate=loud").is_err());
    assert!(check_log_filter("=info").is_err());
}

#[test]
fn byte_sizes() {
    assert_eq!(parse_byte_size("4MiB"), Some(4 << 20));
    assert_eq!(parse_byte_size("512 KiB"), Some(512 << 10));
    assert_eq!(parse_byte_size("1MB"), Some(1_000_000));
    assert_eq!(parse_byte_size("100"), Some(100));
    assert_eq!(parse_byte_size("1TB"), None);
    assert_eq!(parse_byte_size("MiB"), None);
    assert_eq!(parse_byte_size("99999999999999999999GiB"), None);
}

#[test]
fn shipped_configs_compile() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let skip = CompileOptions {
        resolve_secrets: false,
        env: &env,
    };
    let shipped: Vec<_> = std::fs::read_dir(root.join("e2e/demo"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    assert!(!shipped.is_empty());
    for path in shipped {
        let text = std::fs::read_to_string(&path).unwrap();
        if let Err(e) = compile(&text, &skip) {
            panic!("{} does not compile: {e:?}", path.display());
        }
    }
}

#[test]
fn telemetry_and_audit_are_off_by_default() {
    let snap = compile("version: 1\n", &opts()).expect("valid");
    assert_eq!(snap.settings.traces, None);
    assert!(!snap.settings.time_to_first_token);
    assert_eq!(snap.settings.audit, None);
}

#[test]
fn telemetry_and_audit_compile() {
    let snap = compile(
        r#"
version: 1
telemetry:
  traces: { enabled: true, endpoint: "http://collector:4318", protocol: http, sampling_ratio: 0.25, queue_size: 10 }
  metrics: { time_to_first_token: true }
audit: { output: /var/log/tollgate/audit.jsonl, max_size: 1MiB, max_files: 3 }
"#,
        &opts(),
    )
    .expect("valid");
    let t = snap.settings.traces.expect("traces on");
    assert_eq!(t.endpoint, "http://collector:4318/v1/traces");
    assert_eq!(t.protocol, OtlpProtocol::Http);
    assert_eq!(t.sampling_ppm, 250_000);
    assert_eq!(t.service_name, "tollgate");
    assert_eq!(t.queue_size, 10);
    assert_eq!(t.export_timeout, Duration::from_secs(5));
    assert!(snap.settings.time_to_first_token);
    let a = snap.settings.audit.expect("audit on");
    assert_eq!(
        a.output,
        AuditOutput::File("/var/log/tollgate/audit.jsonl".into())
    );
    assert_eq!(a.max_size, 1 << 20);
    assert_eq!(a.max_files, 3);

    let grpc = compile(
        "version: 1\ntelemetry: { traces: { enabled: true } }\naudit: { output: stdout }\n",
        &opts(),
    )
    .expect("valid");
    assert_eq!(
        grpc.settings.traces.expect("on").endpoint,
        "http://127.0.0.1:4317"
    );
    assert_eq!(grpc.settings.audit.expect("on").output, AuditOutput::Stdout);
}

#[test]
fn telemetry_and_audit_errors_have_paths() {
    let errs = errors(
        r#"
version: 1
telemetry:
  traces: { enabled: true, endpoint: "collector:4317", sampling_ratio: 1.5, servce_name: x }
audit: { output: relative/audit.jsonl }
"#,
    );
    let joined = errs.join("\n");
    assert!(
        joined.contains("telemetry.traces.servce_name: unknown field \"servce_name\" (did you mean \"service_name\"?)"),
        "{joined}"
    );
    let errs = errors(
        r#"
version: 1
telemetry:
  traces: { enabled: true, endpoint: "collector:4317", sampling_ratio: 1.5 }
audit: { output: relative/audit.jsonl, queue_size: 0 }
"#,
    );
    let joined = errs.join("\n");
    for want in [
        "telemetry.traces.endpoint: \"collector:4317\" is not a URL",
        "telemetry.traces.sampling_ratio: 1.5 is not between 0.0 and 1.0",
        "audit.output: \"relative/audit.jsonl\" must be `stdout` or an absolute file path",
        "audit.queue_size: must be at least 1",
    ] {
        assert!(joined.contains(want), "missing {want:?} in:\n{joined}");
    }
    let errs = errors("version: 1\ntelemetry: { traces: { endpoint: \"http://u:p@c:4317\" } }\n");
    assert!(
        errs.join("\n").contains("must not carry credentials"),
        "{errs:?}"
    );
}

#[test]
fn guard_errors_are_all_reported_with_paths() {
    let yaml = r#"
version: 1
guard:
  detectors:
    - { name: order_id, pattern: "ORD-[0-9]+" }
    - { name: email, pattern: "x{1,3}" }
    - { name: ticket, pattern: "T-[0-9]{6}", validator: lunh }
  policies:
    - name: p
      pii:
        default_action: maks
        entities: { emial: mask, card: hash }
      blocked: { regexes: ["("] }
      tools: { deny: [shell], on_denied: drop }
"#;
    let errs = errors(yaml);
    let expect = [
        "guard.detectors[0].pattern: the pattern can match unboundedly long text",
        "guard.detectors[1].name: detector name \"email\" is already used",
        "guard.detectors[2].validator: unknown validator \"lunh\" (did you mean \"luhn\"?)",
        "guard.hash_key: a policy uses the `hash` action",
        "guard.policies[0].pii.default_action: unknown action \"maks\" (did you mean \"mask\"?)",
        "guard.policies[0].pii.entities.emial: unknown entity \"emial\" (did you mean \"email\"?)",
        "guard.policies[0].blocked.regexes[0]: invalid",
        "guard.policies[0].tools.on_denied: \"drop\" must be `remove` or `refuse`",
    ];
    for e in expect {
        assert!(
            errs.iter().any(|x| x.starts_with(e)),
            "missing {e:?} in {errs:#?}"
        );
    }
}

#[test]
fn guard_policies_compile() {
    let yaml = r#"
version: 1
guard:
  hash_key: { env: ALPHA_KEY }
  detectors:
    - { name: order_id, pattern: "ORD-[0-9]{8}" }
  policies:
    - name: strict
      match: { routes: [research], models: ["gpt-*"] }
      pii: { entities: { order_id: hash, ipv4: off } }
    - name: default
"#;
    let s = compile(yaml, &opts()).expect("valid");
    assert_eq!(s.guard.policies.len(), 2);
    assert_eq!(
        s.guard
            .select("research", &["gpt-4o"])
            .map(|p| p.name.clone()),
        Some("strict".into())
    );
    assert_eq!(
        s.guard
            .select("catalogue", &["gpt-4o"])
            .map(|p| p.name.clone()),
        Some("default".into())
    );
    let strict = s.guard.select("research", &["gpt-4o"]).expect("policy");
    let masker = strict.request.as_ref().expect("request masking on");
    let mut st = crate::pii::MaskState::default();
    let out = masker.mask("ORD-12345678 from 10.0.0.1", &mut st);
    assert!(
        out.starts_with("[ORDER_ID:") && out.ends_with(" from 10.0.0.1"),
        "{out}"
    );
}

#[test]
fn access_limits_and_usage_sections_compile() {
    let yaml = r#"
version: 1
backends: [{ name: alpha, kind: openai }, { name: inhouse, kind: openai }]
models: [{ name: m, backend: alpha }]
auth: { mode: api_key, anonymous_consumer: app }
teams:
  - { name: t, models: ["m*"], backends: [inhouse], pin: { backend: inhouse, model: llama } }
consumers:
  - name: app
    team: t
    keys: ["sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"]
pricing: { defaults: false, models: [{ model: m, input: 1, output: 2 }] }
limits:
  store: redis
  redis: { url: "redis://127.0.0.1:6379/0", password: { env: ALPHA_KEY }, failure_mode: closed }
  rules:
    - { name: r, per: [consumer, model], requests_per_minute: 5, cost_per_month: 1.5 }
usage: { prompt_tokens: exact, exact_for: { routes: [catalogue] } }
"#;
    let s = compile(yaml, &opts()).expect("valid");
    assert_eq!(s.access.consumers.len(), 1);
    assert_eq!(s.access.anonymous, Some(0));
    assert_eq!(
        s.limits.rules[0].limits[1].max, 1_500_000,
        "USD → micro-dollars"
    );
    assert!(s.usage.exact_default);
    assert_eq!(s.pricing.len(), 1);
    let crate::config::StoreSettings::Redis {
        settings,
        fail_open,
    } = &s.limits.store
    else {
        panic!("redis")
    };
    assert!(!fail_open);
    assert_eq!(
        settings.url.expose(),
        "redis://:sk-alpha@127.0.0.1:6379/0",
        "password from the secret, never from the file"
    );
    assert!(!format!("{settings:?}").contains("sk-alpha"));
}

#[test]
fn access_and_limits_errors_have_paths() {
    let errs = errors(
        r#"
version: 1
backends: [{ name: alpha, kind: openai }]
teams: [{ name: t, pin: { backend: alfa } }]
consumers:
  - { name: app, team: tt, keys: ["my-plain-key"] }
  - { name: app, keys: [] }
auth: { anonymous_consumer: nobody }
limits:
  redis: { url: "redis://user:pw@host:6379" }
  default_max_tokens: 18446744073709551615
  rules:
    - { name: empty }
    - { name: neg, cost_per_day: -1 }
usage: { exact_for: { routes: [nope] } }
"#,
    );
    let expect = [
        "teams[0].pin.backend: unknown backend \"alfa\"",
        "consumers[0].team: unknown team \"tt\" (did you mean \"t\"?)",
        "consumers[0].keys[0]: not a key hash",
        "consumers[1].name: duplicate consumer name \"app\"",
        "auth.anonymous_consumer: unknown consumer \"nobody\"",
        "limits.rules[0]: sets no limit",
        "limits.rules[1].cost_per_day: -1 must be a non-negative number",
        "limits.redis: set `store: redis` to use it",
        "limits.default_max_tokens: must be from 1 to 16777216",
        "usage.exact_for.routes[0]: unknown route \"nope\"",
    ];
    for e in expect {
        assert!(
            errs.iter().any(|x| x.starts_with(e)),
            "missing {e:?} in {errs:#?}"
        );
    }
    assert!(
        !errs.join("\n").contains("my-plain-key"),
        "a key pasted by mistake is not echoed"
    );
}

const CLOUDS: &str = r#"
version: 1
backends:
  - name: bedrock
    kind: bedrock
    bedrock:
      region: eu-west-3
      access_key_id: { env: ALPHA_KEY }
      secret_access_key: { env: ALPHA_KEY }
  - name: vertex
    kind: vertex
    vertex:
      project: my-proj
      location: us-central1
      service_account: { file: "SA_FILE" }
  - name: gemini
    kind: gemini
    auth:
      api_key: { env: ALPHA_KEY }
"#;

fn clouds_yaml() -> String {
    CLOUDS.replace(
        "SA_FILE",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/gemini/TEST-ONLY-service-account.json"
        ),
    )
}

#[test]
fn cloud_kinds_compile_and_vertex_tokens_survive_reloads() {
    let a = compile(&clouds_yaml(), &opts()).expect("valid");
    let b = compile(&clouds_yaml(), &opts()).expect("valid");
    let kinds: Vec<_> = a.routing.backends.iter().map(|b| b.kind.as_str()).collect();
    assert_eq!(kinds, ["bedrock", "vertex", "gemini"]);
    match &a.routing.backends[0].provider {
        ProviderConfig::Bedrock(c) => {
            assert_eq!(c.region, "eu-west-3");
            assert_eq!(c.credentials.access_key_id, "sk-alpha");
            assert_eq!(a.routing.backends[0].base_path, "");
        }
        other => panic!("{other:?}"),
    }
    let gemini = &a.routing.backends[2];
    assert_eq!(
        gemini.credential.as_ref().map(|c| c.header.as_str()),
        Some("x-goog-api-key")
    );
    // The same service account in a reloaded snapshot shares the token slot.
    assert_eq!(
        a.routing.backends[1].provider,
        b.routing.backends[1].provider
    );
    assert!(!format!("{:?}", a.routing.backends[1]).contains("PRIVATE KEY"));
}

#[test]
fn cloud_kind_errors_have_paths() {
    let yaml = r#"
version: 1
backends:
  - name: b
    kind: bedrock
    auth: { bearer: { env: ALPHA_KEY } }
    bedrock:
      region: "US East"
      access_key_id: { env: NOPE }
      secret_access_key: { env: ALPHA_KEY }
  - name: v
    kind: vertex
  - name: g
    kind: gemini
    vertex: { project: p, location: l, service_account: { env: ALPHA_KEY } }
"#;
    let errs = errors(yaml);
    for want in [
        "backends[0].auth: kind bedrock signs requests with SigV4",
        "backends[0].bedrock.region: \"US East\" is not an AWS region",
        "backends[0].bedrock.access_key_id.env: environment variable \"NOPE\" is not set",
        "backends[1].vertex: kind vertex needs a `vertex` section",
        "backends[2].vertex: the `vertex` section is only for `kind: vertex`",
        "backends[2].auth: kind gemini needs an API key",
    ] {
        assert!(
            errs.iter().any(|e| e.starts_with(want)),
            "missing {want:?} in {errs:#?}"
        );
    }
    let bad_key = clouds_yaml().replace(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/gemini/TEST-ONLY-service-account.json"
        ),
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/gemini/response_tools.gemini.json"
        ),
    );
    let errs = errors(&bad_key);
    assert!(
        errs.iter().any(|e| e
            .starts_with("backends[1].vertex.service_account: service account key: type must be")),
        "{errs:#?}"
    );
}

#[test]
fn provider_sections_are_checked_against_the_kind() {
    let errs = errors(
        r#"
version: 1
backends:
  - name: a
    kind: openai
    anthropic: { version: "2023-06-01" }
  - name: b
    kind: azure_openai
    azure_openai: { api_version: "2024 10", deployments: { gpt-4o: "bad/name" } }
  - name: c
    kind: anthropic
    anthropic: { default_max_tokens: 0 }
"#,
    );
    assert_eq!(
        errs,
        vec![
            "backends[0].anthropic: the `anthropic` section is only for `kind: anthropic`; this backend is `kind: openai`",
            r#"backends[1].azure_openai.api_version: "2024 10" is not an api-version such as "2024-10-21""#,
            r#"backends[1].azure_openai.deployments.gpt-4o: "bad/name" is not a deployment name (1-64 characters of a-z, A-Z, 0-9, '.', '_' or '-')"#,
            "backends[2].anthropic.default_max_tokens: must be at least 1",
        ]
    );
}

#[test]
fn api_key_auth_uses_each_kinds_own_header_and_defaults_apply() {
    let snap = compile(
        r#"
version: 1
backends:
  - { name: o, kind: openai, auth: { api_key: { env: ALPHA_KEY } } }
  - { name: z, kind: azure_openai, auth: { api_key: { env: ALPHA_KEY } } }
  - { name: c, kind: anthropic, auth: { api_key: { env: ALPHA_KEY } } }
"#,
        &opts(),
    )
    .expect("valid");
    let b = &snap.routing.backends;
    let cred = |i: usize| {
        let c = b[i].credential.as_ref().expect("credential");
        (c.header.clone(), c.value.expose().starts_with("Bearer "))
    };
    assert_eq!(cred(0), ("authorization".into(), true));
    assert_eq!(cred(1), ("api-key".into(), false));
    assert_eq!(cred(2), ("x-api-key".into(), false));
    assert_eq!(
        (
            b[0].base_path.as_str(),
            b[1].base_path.as_str(),
            b[2].base_path.as_str()
        ),
        ("/v1", "", "/v1")
    );
    assert_eq!(
        b[2].provider,
        crate::providers::ProviderConfig::Anthropic(crate::providers::anthropic::Config::default())
    );
    match &b[1].provider {
        crate::providers::ProviderConfig::AzureOpenai(c) => assert_eq!(c.api_version, "2024-10-21"),
        other => panic!("{other:?}"),
    }
    for backend in b {
        assert_eq!(backend.provider.kind(), backend.kind);
    }
}

#[test]
fn forward_headers_default_per_kind_and_only_name_steering_headers() {
    let yaml = r#"
version: 1
backends:
  - { name: a, kind: openai }
  - { name: c, kind: anthropic }
  - { name: c2, kind: anthropic, forward_headers: [] }
  - { name: o, kind: openai, forward_headers: [openai-organization, cookie] }
models:
  - { name: m, backend: a }
"#;
    let snap = compile(yaml, &opts()).expect("valid");
    let fwd: Vec<Vec<String>> = snap
        .routing
        .backends
        .iter()
        .map(|b| b.forward_headers.clone())
        .collect();
    assert_eq!(
        fwd,
        vec![
            vec![],
            vec!["anthropic-beta".to_owned()],
            vec![],
            vec!["openai-organization".to_owned(), "cookie".to_owned()],
        ]
    );
    let errs = errors(
        r#"
version: 1
backends:
  - { name: a, kind: openai, forward_headers: [authorization, Cookie] }
models:
  - { name: m, backend: a }
"#,
    );
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs[0].starts_with(
            "backends[0].forward_headers[0]: \"authorization\" is not a provider-steering header"
        ),
        "{errs:?}"
    );
}

#[test]
fn compiling_starts_no_task_and_installing_starts_the_token_refresh() {
    // Counted with the runtime's live tasks: compile must stay pure even inside a runtime
    // (a reload used to compile there and so started the refresh as a side effect).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _inside = rt.enter();
    let tasks = || rt.metrics().num_alive_tasks();
    // A scope of its own: token slots are shared per (account, scopes) across snapshots.
    let yaml = clouds_yaml().replace(
        "      location: us-central1\n",
        "      location: us-central1\n      scopes: [\"https://example.test/compile-is-pure\"]\n",
    );
    let before = tasks();
    let snap = compile(&yaml, &opts()).expect("valid");
    assert_eq!(tasks(), before, "compile started a task");
    crate::providers::gemini::start_token_refresh(&snap.routing.backends);
    assert_eq!(
        tasks(),
        before + 1,
        "one refresh task for the one Vertex backend"
    );
    // Installing the same accounts again (a reload) shares the running slot.
    let again = compile(&yaml, &opts()).expect("valid");
    crate::providers::gemini::start_token_refresh(&again.routing.backends);
    assert_eq!(tasks(), before + 1);
}
