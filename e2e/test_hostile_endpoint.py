"""The ext_proc endpoint is a credential vault: hostile callers through the real Envoy 1.40.

tollgate's replies carry provider credentials. These tests put a real Envoy in the caller's
seat with the wrong credentials (no shared secret, a wrong one, no client certificate, an
upstream-level filter with no router-level decision) and check that no request reaches a
provider, so no credential left tollgate; and that with the right credentials only what the
request was entitled to happens. Raw gRPC clients (forged attempt metadata, replayed, expired
and widened tokens) are in tests/endpoint.rs.
"""

from __future__ import annotations

import copy
import datetime
import ssl
import socket
import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest

import harness
from harness import DEMO_TOLLGATE_CONFIG, Stack, free_port, http_request, load_yaml

SECRET = "e2e-deployment-secret-0123456789abcdef"


def _tollgate_config(tmp_path: Path, *, primary: str = "echo", **grpc_auth: Any) -> Any:
    cfg = load_yaml(DEMO_TOLLGATE_CONFIG)
    cfg["routing"]["chains"] = [{"name": "resilient", "steps": [
        {"backend": "alpha", "upstream_model": primary},
        {"backend": "claude-fallback", "upstream_model": "claude-demo"},
    ]}]
    cfg["routing"]["cooldown"] = "0s"
    secret_file = tmp_path / "grpc-secret"
    secret_file.write_text(SECRET + "\n")
    auth = {"secret": {"file": str(secret_file)}}
    auth.update(grpc_auth)
    cfg["server"]["grpc_auth"] = {k: v for k, v in auth.items() if v is not None}
    return cfg


def _ext_proc_services(node: Any, visit: Callable[[dict[str, Any]], None]) -> None:
    """Calls ``visit`` on every ext_proc filter's grpc_service (router- and upstream-level)."""
    if isinstance(node, dict):
        if "grpc_service" in node and "envoy_grpc" in node["grpc_service"]:
            visit(node["grpc_service"])
        for v in node.values():
            _ext_proc_services(v, visit)
    elif isinstance(node, list):
        for v in node:
            _ext_proc_services(v, visit)


def _send_secret(value: str | None) -> Callable[[Any], Any]:
    def transform(cfg: Any) -> Any:
        cfg = copy.deepcopy(cfg)
        if value is not None:
            _ext_proc_services(cfg, lambda g: g.setdefault("initial_metadata", []).append(
                {"key": "x-tollgate-secret", "value": value}))
        return cfg
    return transform


def _restart_envoy(stack: Stack, transform: Callable[[Any], Any]) -> None:
    stack.procs["envoy"].stop()
    stack.envoy_transform = transform
    stack.start_envoy()


def _chat(stack: Stack, model: str, **headers: str) -> harness.Response:
    return http_request(
        "POST", f"{stack.base_url}/v1/chat/completions",
        headers={"authorization": f"Bearer {harness.DEMO_CLIENT_KEY}", **headers},
        body={"model": model, "messages": [{"role": "user", "content": "hello vault"}]},
        timeout=20,
    )


def _refused(stack: Stack, reason: str) -> float:
    return stack.metric("tollgate_endpoint_refused_total", reason=reason) or 0.0


def test_only_an_envoy_with_the_secret_gets_credentials(make_stack: Any, tmp_path: Path) -> None:
    stack = make_stack(tollgate_config=_tollgate_config(tmp_path, primary="error-503"),
                       envoy_transform=_send_secret(SECRET))
    # With the secret: routed and credentialed; the chain's second attempt too (the attempt
    # token, keyed by the secret, travels in forwarded dynamic metadata to every retry).
    r = _chat(stack, "mini")
    assert r.status == 200, r
    r = _chat(stack, "resilient-demo")
    assert r.status == 200, r
    assert r.headers["x-demo-upstream"] == "beta", r
    assert r.headers["x-tollgate-route"].startswith("resilient; backend=claude-fallback"), r
    assert _refused(stack, "attempt_token") == 0

    # Without it, or with a wrong one (also one byte short): fail closed, no provider called.
    for value, reason in [(None, "missing_secret"), ("wrong-secret", "wrong_secret"),
                          (SECRET[:-1], "wrong_secret")]:
        _restart_envoy(stack, _send_secret(value))
        stack.clear_upstreams()
        before = _refused(stack, reason)
        r = _chat(stack, "mini")
        assert r.status == 500, r
        assert b"demo-alpha-key" not in r.body and b"demo-beta-key" not in r.body
        assert (stack.upstream_count("alpha"), stack.upstream_count("beta")) == (0, 0)
        assert _refused(stack, reason) > before
    assert SECRET not in stack.procs["tollgate"].log_text()


def _no_router_level_ext_proc(cfg: Any) -> Any:
    """The HCM's ext_proc filter removed; the chain cluster's upstream-level one kept."""
    cfg = _send_secret(SECRET)(cfg)
    for listener in cfg["static_resources"]["listeners"]:
        for chain in listener.get("filter_chains", []):
            for f in chain.get("filters", []):
                hcm = f.get("typed_config", {})
                if "http_filters" in hcm:
                    hcm["http_filters"] = [h for h in hcm["http_filters"]
                                           if h["name"] != "envoy.filters.http.ext_proc"]
    return cfg


def test_an_upstream_filter_without_the_router_level_decision_gets_no_credential(
    make_stack: Any, tmp_path: Path
) -> None:
    # The caller is an Envoy holding the secret whose request never went through tollgate's
    # router-level filter: the chain cluster's endpoints name chain and backend, but there is
    # no attempt token. Nothing may be credentialed.
    stack = make_stack(tollgate_config=_tollgate_config(tmp_path),
                       envoy_transform=_no_router_level_ext_proc)
    r = _chat(stack, "resilient-demo", **{"x-tollgate-backend": "chain-resilient"})
    assert r.status == 500, r
    assert b"demo-alpha-key" not in r.body
    assert (stack.upstream_count("alpha"), stack.upstream_count("beta")) == (0, 0)
    assert _refused(stack, "attempt_token") >= 1


def test_debug_state_is_off_by_default(stack: Stack) -> None:
    assert http_request("GET", f"{stack.tollgate_admin_url}/debug/state").status == 404
    assert http_request("GET", f"{stack.tollgate_admin_url}/metrics").status == 200


def test_a_client_request_id_is_not_trusted_by_default(make_stack: Any, tmp_path: Path) -> None:
    cfg = _tollgate_config(tmp_path)
    del cfg["server"]["trust_request_id"]
    stack = make_stack(tollgate_config=cfg, envoy_transform=_send_secret(SECRET))
    r = _chat(stack, "mini", **{"x-request-id": "forged-id-of-another-request"})
    assert r.status == 200, r
    seen = stack.upstream_requests("alpha")[-1]["headers"]["x-request-id"]
    assert seen != "forged-id-of-another-request"
    entry = stack.wait_access_log(lambda e: e.get("request_id") == seen)
    assert entry["status"] == 200
    # A chain: the attempts read the id tollgate set (the token is bound to it).
    r = _chat(stack, "resilient-demo", **{"x-request-id": "forged-id-of-another-request"})
    assert r.status == 200 and r.headers["x-demo-upstream"] == "alpha", r
    assert stack.upstream_requests("alpha")[-1]["headers"]["x-request-id"] not in (
        seen, "forged-id-of-another-request")
    assert _refused(stack, "attempt_token") == 0


def _tollgate(*args: str, env: dict[str, str] | None = None,
              timeout: float = 15) -> subprocess.CompletedProcess[str]:
    exe = harness.require_binary(harness.target_dir() / "tollgate", "cargo build")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout,
                          env={"PATH": "/usr/bin:/bin", **(env or {})})


def test_validate_warns_when_credentials_meet_no_client_auth(tmp_path: Path) -> None:
    base = ("version: 1\nbackends:\n  - name: openai\n    kind: openai\n"
            "    auth: { bearer: { env: OPENAI_KEY } }\nmodels:\n  - { name: m, backend: openai }\n")
    open_cfg = tmp_path / "open.yaml"
    open_cfg.write_text(base)
    r = _tollgate("validate", str(open_cfg), env={"OPENAI_KEY": "sk-live-do-not-print"})
    assert r.returncode == 0, r
    assert "WARNING: client authentication is off" in r.stdout and "openai" in r.stdout, r
    assert "sk-live-do-not-print" not in r.stdout + r.stderr
    keyed = tmp_path / "keyed.yaml"
    keyed.write_text(base + f"consumers:\n  - name: app\n    keys: [\"sha256:{'0' * 64}\"]\n")
    r = _tollgate("validate", "--skip-secrets", str(keyed))
    assert r.returncode == 0 and "WARNING" not in r.stdout, r


def test_serve_warns_at_start_up_when_credentials_meet_no_client_auth(tmp_path: Path) -> None:
    cfg = tmp_path / "open.yaml"
    cfg.write_text("version: 1\nbackends:\n  - name: openai\n    kind: openai\n"
                   "    auth: { bearer: { env: OPENAI_KEY } }\nmodels:\n  - { name: m, backend: openai }\n")
    exe = harness.require_binary(harness.target_dir() / "tollgate", "cargo build")
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(exe), "serve", "--config", str(cfg), "--grpc-listen", f"127.0.0.1:{free_port()}",
             "--admin-listen", f"127.0.0.1:{free_port()}"],
            stdout=out, stderr=subprocess.STDOUT,
            env={"PATH": "/usr/bin:/bin", "OPENAI_KEY": "sk-live-do-not-print"})
        try:
            harness.wait_until("the start-up warning",
                               lambda: "tollgate serving" in log.read_text(), timeout=15)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    text = log.read_text()
    assert "WARNING: client authentication is off" in text, text
    assert text.index("WARNING: client authentication") < text.index("tollgate serving")
    assert "sk-live-do-not-print" not in text


def test_a_network_listener_without_caller_auth_refuses_to_start(tmp_path: Path) -> None:
    cfg = tmp_path / "t.yaml"
    cfg.write_text("version: 1\nbackends:\n  - { name: local, kind: openai }\n"
                   "models:\n  - { name: m, backend: local }\n")
    r = _tollgate("serve", "--config", str(cfg), "--grpc-listen", f"0.0.0.0:{free_port()}",
                  "--admin-listen", f"127.0.0.1:{free_port()}")
    assert r.returncode != 0
    assert "reachable from the network" in r.stdout + r.stderr, r


# ---- mTLS


def _certs(d: Path) -> dict[str, Path]:
    """A CA, a server certificate for localhost/127.0.0.1, and a client certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    import ipaddress

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write(stem: str, cert: Any, key: Any) -> None:
        (d / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (d / f"{stem}.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("e2e-ca")).issuer_name(name("e2e-ca"))
          .public_key(ca_key.public_key()).serial_number(1)
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(hours=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    write("ca", ca, ca_key)

    def leaf(stem: str, cn: str, usage: Any, san: list[Any]) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(name("e2e-ca"))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(hours=1))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                .add_extension(x509.SubjectAlternativeName(san), critical=False)
                .sign(ca_key, hashes.SHA256()))
        write(stem, cert, key)

    leaf("server", "tollgate", ExtendedKeyUsageOID.SERVER_AUTH,
         [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    leaf("client", "envoy", ExtendedKeyUsageOID.CLIENT_AUTH, [x509.DNSName("envoy")])
    return {k: d / k for k in ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")}


def _envoy_tls(certs: dict[str, Path], with_client_cert: bool) -> Callable[[Any], Any]:
    def transform(cfg: Any) -> Any:
        cfg = copy.deepcopy(cfg)
        common: dict[str, Any] = {
            "alpn_protocols": ["h2"],
            "validation_context": {
                "trusted_ca": {"filename": str(certs["ca.crt"])},
                "match_typed_subject_alt_names": [
                    {"san_type": "DNS", "matcher": {"exact": "localhost"}}],
            },
        }
        if with_client_cert:
            common["tls_certificates"] = [{
                "certificate_chain": {"filename": str(certs["client.crt"])},
                "private_key": {"filename": str(certs["client.key"])},
            }]
        for c in cfg["static_resources"]["clusters"]:
            if c["name"] == "tollgate_ext_proc":
                c["transport_socket"] = {
                    "name": "envoy.transport_sockets.tls",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                        "sni": "localhost",
                        "common_tls_context": common,
                    },
                }
        return cfg
    return transform


def test_mtls_admits_only_callers_with_a_client_certificate(
    make_stack: Any, tmp_path: Path
) -> None:
    certs = _certs(tmp_path)
    cfg = _tollgate_config(tmp_path, secret=None, tls={
        "cert_file": str(certs["server.crt"]), "key_file": str(certs["server.key"]),
        "client_ca_file": str(certs["ca.crt"]),
    })
    stack = make_stack(tollgate_config=cfg, envoy_transform=_envoy_tls(certs, True))
    r = _chat(stack, "mini")
    assert r.status == 200, r
    r = _chat(stack, "resilient-demo")
    assert r.status == 200 and r.headers["x-demo-upstream"] == "alpha", r

    # An Envoy that trusts the server but has no client certificate: the handshake fails.
    _restart_envoy(stack, _envoy_tls(certs, False))
    stack.clear_upstreams()
    r = _chat(stack, "mini")
    assert r.status == 500, r
    assert (stack.upstream_count("alpha"), stack.upstream_count("beta")) == (0, 0)

    # A raw TLS client without a certificate gets no application data at all.
    ctx = ssl.create_default_context(cafile=str(certs["ca.crt"]))
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", stack.ports.grpc), timeout=5) as raw:
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                # TLS 1.3: the server's refusal of the missing certificate arrives on read.
                tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                if not tls.recv(1):
                    raise ConnectionResetError("closed without data")
