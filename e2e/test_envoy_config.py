"""The shipped Envoy configs: they load in Envoy 1.40, stay in step, route on tollgate's header
only, and fail closed.  The behavioural checks here need the demo upstreams but no tollgate."""

from __future__ import annotations

import copy
import json
import subprocess
from typing import Any

import pytest

import harness
from harness import ENVOY_CONFIG, ENVOY_UDS_CONFIG, Stack, http_request, load_yaml


def _hcm(cfg: Any) -> dict[str, Any]:
    [listener] = cfg["static_resources"]["listeners"]
    [chain] = listener["filter_chains"]
    [hcm] = chain["filters"]
    return hcm["typed_config"]


def _ext_proc(cfg: Any) -> dict[str, Any]:
    filters = _hcm(cfg)["http_filters"]
    assert [f["name"] for f in filters] == [
        "envoy.filters.http.ext_proc",
        "envoy.filters.http.router",
    ]
    return filters[0]["typed_config"]


def _cluster(cfg: Any, name: str) -> dict[str, Any]:
    [c] = [c for c in cfg["static_resources"]["clusters"] if c["name"] == name]
    return c


@pytest.mark.parametrize("path", [ENVOY_CONFIG, ENVOY_UDS_CONFIG], ids=["tcp", "uds"])
def test_shipped_config_passes_envoy_validate(path: Any) -> None:
    r = subprocess.run(
        [str(harness.envoy_binary()), "--mode", "validate", "-c", str(path), "--log-level", "warn"],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK" in r.stdout
    # No deprecated fields: they break on the next Envoy upgrade.
    assert "Deprecated field" not in r.stdout + r.stderr


def test_tcp_and_uds_configs_differ_only_in_the_ext_proc_endpoint() -> None:
    tcp, uds = load_yaml(ENVOY_CONFIG), load_yaml(ENVOY_UDS_CONFIG)

    def endpoint(cfg: Any) -> dict[str, Any]:
        c = _cluster(cfg, "tollgate_ext_proc")
        return c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]

    assert endpoint(tcp)["address"] == {
        "socket_address": {"address": "127.0.0.1", "port_value": 50051}
    }
    assert endpoint(uds)["address"] == {"pipe": {"path": "/tmp/tollgate/tollgate.sock"}}
    tcp2, uds2 = copy.deepcopy(tcp), copy.deepcopy(uds)
    endpoint(tcp2)["address"] = endpoint(uds2)["address"] = None
    assert tcp2 == uds2


def test_ext_proc_filter_is_fail_closed_and_routes_by_body() -> None:
    ep = _ext_proc(load_yaml(ENVOY_CONFIG))
    assert ep["failure_mode_allow"] is False
    assert ep["grpc_service"]["envoy_grpc"]["cluster_name"] == "tollgate_ext_proc"
    assert ep["processing_mode"] == {
        "request_header_mode": "SEND",
        "request_body_mode": "BUFFERED",
        "request_trailer_mode": "SKIP",
        "response_header_mode": "SEND",
        "response_body_mode": "NONE",
        "response_trailer_mode": "SKIP",
    }
    assert ep["mutation_rules"]["allow_all_routing"] is True
    assert ep["metadata_options"]["receiving_namespaces"]["untyped"] == ["io.tollgate"]
    assert ep["allow_mode_override"] is True
    assert ep["message_timeout"] and ep["max_message_timeout"]
    c = _cluster(load_yaml(ENVOY_CONFIG), "tollgate_ext_proc")
    opts = c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert "http2_protocol_options" in opts["explicit_http_config"]


def test_route_table_ends_in_a_json_503_catch_all() -> None:
    cfg = load_yaml(ENVOY_CONFIG)
    [vh] = _hcm(cfg)["route_config"]["virtual_hosts"]
    routes = vh["routes"]
    # The demo's claude and azure backends are replays served by the alpha upstream process.
    # claude-fallback (the resilient chain's Anthropic step) is the beta process's replay.
    shared = {"claude": "alpha", "azure": "alpha", "claude-fallback": "beta"}
    for r in routes[:-1]:
        [h] = r["match"]["headers"]
        assert h["name"] == "x-tollgate-backend"
        value = h["string_match"]["exact"]
        assert r["route"]["cluster"] == shared.get(value, value)
    last = routes[-1]
    assert last["match"] == {"prefix": "/"} and "headers" not in last["match"]
    assert last["direct_response"]["status"] == 503
    body = json.loads(last["direct_response"]["body"]["inline_string"])
    assert body["error"]["code"] == "no_route"


def test_without_ext_proc_only_the_tollgate_header_selects_a_backend(
    make_stack: Any,
) -> None:
    """The route table alone (ext_proc stripped from a throwaway copy): the header picks the
    cluster, and a request without it gets the JSON 503 and reaches no upstream."""
    s: Stack = make_stack(with_tollgate=False, envoy_transform=harness.strip_ext_proc)
    s.clear_upstreams()
    for name in ("alpha", "beta"):
        r = http_request(
            "GET", f"{s.base_url}/__demo/health", headers={"x-tollgate-backend": name}
        )
        assert r.status == 200, r
        assert r.headers.get("x-demo-upstream") == name, r
    for hdrs in ({}, {"x-tollgate-backend": "gamma"}, {"x-tollgate-backend": "Alpha"}):
        r = http_request(
            "POST", f"{s.base_url}/v1/chat/completions", headers=hdrs,
            body={"model": "echo", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert r.status == 503, r
        assert r.headers["content-type"] == "application/json"
        assert r.json()["error"]["code"] == "no_route"
        assert "x-demo-upstream" not in r.headers
    assert s.upstream_count("alpha") == 0
    assert s.upstream_count("beta") == 0


def test_without_tollgate_envoy_fails_closed_with_json_error(make_stack: Any) -> None:
    """Shipped config, tollgate never started: every request is refused before any upstream,
    even one carrying a valid routing header."""
    s: Stack = make_stack(with_tollgate=False)
    s.clear_upstreams()
    for hdrs in ({}, {"x-tollgate-backend": "alpha", "authorization": "Bearer demo-alpha-key"}):
        r = http_request(
            "POST", f"{s.base_url}/v1/chat/completions", headers=hdrs,
            body={"model": "echo", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert r.status == 500, r
        assert r.headers["content-type"] == "application/json"
        assert r.json()["error"]["code"] == "gateway_unavailable"
    assert s.upstream_count("alpha") == 0
    assert s.upstream_count("beta") == 0
    entry = s.wait_access_log(lambda e: e.get("status") == 500)
    assert entry["response_code_details"].startswith("ext_proc_error")
