"""AWS Bedrock, Google Vertex AI and the Gemini API through real Envoy and tollgate, with the
official OpenAI SDK: the same client code reaches each cloud by changing only `model`.

The upstream is e2e/cloud_replay.py, which checks credentials as the clouds do, with code
independent of tollgate's: SigV4 signatures recomputed by botocore's signer, the service
account's RS256 JWT verified with its public key (a key pair generated for this run) before
an access token is issued, Vertex calls needing that token, Gemini calls the API key. Bedrock
streams are binary AWS eventstream frames, Google streams SSE.
"""

from __future__ import annotations

import hashlib
import json
import sys
import uuid
from pathlib import Path
from typing import Any, Iterator

import openai
import pytest

from harness import Proc, Stack, free_port, http_request, load_yaml, DEMO_TOLLGATE_CONFIG

HERE = Path(__file__).resolve().parent
AWS_KEY_ID = "AKIDTOLLGATEE2E"
SA_EMAIL = "tollgate-e2e@tollgate-e2e.iam.gserviceaccount.com"
MODELS = ["bedrock-claude", "vertex-gemini", "gemini-flash"]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                       "unit": {"type": "string"}}, "required": ["city"],
                       "additionalProperties": False},
    },
}


class Clouds:
    def __init__(self, stack: Stack, replay_url: str) -> None:
        self.stack = stack
        self.replay_url = replay_url

    def requests(self) -> list[dict[str, Any]]:
        r = http_request("GET", f"{self.replay_url}/__replay/requests")
        assert r.status == 200, r
        return r.json()["requests"]

    def clear(self) -> None:
        assert http_request("DELETE", f"{self.replay_url}/__replay/requests").status == 200

    def model_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests() if r["path"] != "/token"]


def _keypair(workdir: Path) -> tuple[Path, Path, str]:
    """A service-account key generated for this run (never committed), and its public half."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    pub = workdir / "sa-public.pem"
    pub.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return workdir / "sa.json", pub, pem


@pytest.fixture(scope="module")
def clouds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clouds]:
    workdir = tmp_path_factory.mktemp("clouds")
    port = free_port()
    sa_path, pub_path, pem = _keypair(workdir)
    sa_path.write_text(json.dumps({
        "type": "service_account", "project_id": "tollgate-e2e", "private_key_id": "e2e-1",
        "private_key": pem, "client_email": SA_EMAIL, "client_id": "1",
        "token_uri": f"http://127.0.0.1:{port}/token"}))
    aws_secret = uuid.uuid4().hex
    gemini_key = "AIza" + uuid.uuid4().hex
    secrets = {"aws-key-id": AWS_KEY_ID, "aws-secret": aws_secret, "gemini-key": gemini_key}
    for name, value in secrets.items():
        (workdir / name).write_text(value + "\n")
    replay = Proc(
        "clouds",
        [sys.executable, str(HERE / "cloud_replay.py"), "--port", str(port),
         "--aws-key-id", AWS_KEY_ID, "--aws-secret", aws_secret, "--gemini-key", gemini_key,
         "--sa-public-key", str(pub_path), "--sa-email", SA_EMAIL],
        workdir / "clouds.log",
    ).start()
    replay_url = f"http://127.0.0.1:{port}"
    try:
        import time

        deadline = time.monotonic() + 15
        while True:
            try:
                if http_request("GET", f"{replay_url}/__replay/health").status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, replay.tail()
            time.sleep(0.1)

        cfg = load_yaml(DEMO_TOLLGATE_CONFIG)
        cfg["backends"] += [
            {"name": "bedrock", "kind": "bedrock",
             # Signed for (and sent as, via :authority) the real regional host.
             "authority": "bedrock-runtime.us-east-1.amazonaws.com",
             "bedrock": {"region": "us-east-1",
                         "access_key_id": {"file": str(workdir / "aws-key-id")},
                         "secret_access_key": {"file": str(workdir / "aws-secret")}}},
            {"name": "vertex", "kind": "vertex",
             "vertex": {"project": "tollgate-e2e", "location": "us-central1",
                        "service_account": {"file": str(sa_path)}}},
            {"name": "gemini", "kind": "gemini",
             "auth": {"api_key": {"file": str(workdir / "gemini-key")}}},
        ]
        cfg["models"] += [
            {"name": "bedrock-claude", "backend": "bedrock",
             "upstream_model": "anthropic.claude-3-5-sonnet-20240620-v1:0"},
            {"name": "vertex-gemini", "backend": "vertex", "upstream_model": "gemini-2.0-flash"},
            {"name": "gemini-flash", "backend": "gemini", "upstream_model": "gemini-2.0-flash"},
        ]

        def envoy_transform(envoy: Any) -> Any:
            res = envoy["static_resources"]
            res["clusters"].append({
                "name": "clouds", "type": "STATIC", "connect_timeout": "2s",
                "load_assignment": {"cluster_name": "clouds", "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {
                        "address": "127.0.0.1", "port_value": port}}}}]}]}})
            for listener in res["listeners"]:
                for chain in listener["filter_chains"]:
                    for f in chain["filters"]:
                        vhosts = f.get("typed_config", {}).get("route_config", {}).get("virtual_hosts", [])
                        for vh in vhosts:
                            routes = vh["routes"]
                            at = next(i for i, r in enumerate(routes) if r.get("name") == "no-route")
                            for b in ("bedrock", "vertex", "gemini"):
                                routes.insert(at, {
                                    "name": f"backend-{b}",
                                    "match": {"prefix": "/", "headers": [
                                        {"name": "x-tollgate-backend", "string_match": {"exact": b}}]},
                                    "route": {"cluster": "clouds", "timeout": "30s"}})
            return envoy

        stack = Stack(workdir / "stack", tollgate_config=cfg, envoy_transform=envoy_transform)
        with stack:
            c = Clouds(stack, replay_url)
            # tollgate fetches the Vertex token in the background at startup (until it has
            # one, Vertex requests are refused with a 503 rather than kept waiting).
            deadline = time.monotonic() + 10
            while not any(r["path"] == "/token" for r in c.requests()):
                assert time.monotonic() < deadline, "tollgate never asked the token endpoint"
                time.sleep(0.05)
            yield c
    finally:
        replay.stop()


@pytest.fixture
def cl(clouds: Clouds) -> Clouds:
    clouds.clear()
    return clouds


def client(c: Clouds) -> Any:
    return c.stack.openai(timeout=20.0)


@pytest.mark.parametrize("model", MODELS)
def test_same_client_code_every_cloud_non_streaming(cl: Clouds, model: str) -> None:
    prompt = f"hello {model} {uuid.uuid4().hex[:8]}"
    resp = client(cl).chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": "Be terse."}, {"role": "user", "content": prompt}],
        max_tokens=64, temperature=0.3, stop=["###"],
    )
    assert resp.choices[0].message.content == f"Echo: {prompt}"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens > 0
    assert resp.usage.prompt_tokens_details.cached_tokens > 0
    (req,) = cl.model_requests()
    body = json.loads(req["body"])
    assert "tollgate-demo-key" not in json.dumps(req["headers"]), "the client key stays at the gateway"
    if model == "bedrock-claude":
        assert req["path"] == "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
        assert req["headers"]["host"] == "bedrock-runtime.us-east-1.amazonaws.com"
        assert req["headers"]["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={AWS_KEY_ID}/")
        assert req["headers"]["x-amz-content-sha256"] == hashlib.sha256(req["body"].encode()).hexdigest()
        assert body["system"] == [{"text": "Be terse."}]
        assert body["inferenceConfig"] == {"maxTokens": 64, "temperature": 0.3, "stopSequences": ["###"]}
    else:
        assert req["path"].endswith("/models/gemini-2.0-flash:generateContent")
        assert body["systemInstruction"] == {"parts": [{"text": "Be terse."}]}
        assert body["generationConfig"] == {"maxOutputTokens": 64, "temperature": 0.3, "stopSequences": ["###"]}
        if model == "vertex-gemini":
            assert req["path"].startswith("/v1/projects/tollgate-e2e/locations/us-central1/publishers/google/")
            assert req["headers"]["authorization"].startswith("Bearer ya29.replay-")
        else:
            assert req["path"].startswith("/v1beta/models/")
            assert "authorization" not in req["headers"]


@pytest.mark.parametrize("model", MODELS)
def test_streaming_every_cloud_with_usage(cl: Clouds, model: str) -> None:
    prompt = f"stream from {model} please"
    chunks = list(client(cl).chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], stream=True,
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"Echo: {prompt}", "thought parts are not forwarded"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0
    assert len({c.id for c in chunks}) == 1
    (req,) = cl.model_requests()
    assert req["path"].endswith("converse-stream" if model == "bedrock-claude"
                                else ":streamGenerateContent?alt=sse")


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("stream", [False, True])
def test_tool_calls_and_results_every_cloud(cl: Clouds, model: str, stream: bool) -> None:
    c = client(cl)
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Paris?"}]
    if stream:
        chunks = list(c.chat.completions.create(model=model, messages=messages,
                                                tools=[WEATHER_TOOL], tool_choice="auto",
                                                stream=True))
        calls: dict[int, dict[str, str]] = {}
        for ch in chunks:
            for tc in (ch.choices[0].delta.tool_calls or []) if ch.choices else []:
                slot = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                slot["id"] = tc.id or slot["id"]
                slot["name"] = (tc.function.name or "") or slot["name"]
                slot["arguments"] += tc.function.arguments or ""
        finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1]
        call = calls[0]
    else:
        resp = c.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL],
                                         tool_choice="auto")
        finish = resp.choices[0].finish_reason
        tc = resp.choices[0].message.tool_calls[0]
        call = {"id": tc.id, "name": tc.function.name, "arguments": tc.function.arguments}
    assert finish == "tool_calls"
    assert call["name"] == "get_weather" and call["id"]
    assert json.loads(call["arguments"]) == {"city": "Paris", "unit": "celsius"}
    # The tool's answer goes back in the provider's own shape.
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call["id"], "type": "function",
             "function": {"name": call["name"], "arguments": call["arguments"]}}]},
        {"role": "tool", "tool_call_id": call["id"], "content": '{"temperature_c": 18}'},
    ]
    resp = c.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL])
    assert resp.choices[0].message.content.startswith("Result noted: ")
    assert "18" in resp.choices[0].message.content
    body = json.loads(cl.model_requests()[-1]["body"])
    if model == "bedrock-claude":
        assert body["messages"][-1]["content"][0]["toolResult"]["toolUseId"] == call["id"]
        assert body["toolConfig"]["tools"][0]["toolSpec"]["name"] == "get_weather"
    else:
        assert body["contents"][-1]["parts"][0]["functionResponse"] == {
            "name": "get_weather", "response": {"temperature_c": 18}}
        params = body["tools"][0]["functionDeclarations"][0]["parameters"]
        assert "additionalProperties" not in params


@pytest.mark.parametrize("model,provider_message", [
    ("bedrock-claude", "Too many requests, please wait before trying again."),
    ("vertex-gemini", "Resource has been exhausted (e.g. check quota)."),
    ("gemini-flash", "Resource has been exhausted (e.g. check quota)."),
])
def test_provider_errors_keep_status_and_message(cl: Clouds, model: str, provider_message: str) -> None:
    with pytest.raises(openai.RateLimitError) as e:
        client(cl).chat.completions.create(model=model, messages=[{"role": "user", "content": "fail-quota"}])
    assert e.value.status_code == 429
    assert e.value.body["message"] == provider_message
    assert e.value.body["type"] == "rate_limit_error"
    # Mid-stream failures arrive as an error event the SDK raises.
    with pytest.raises(openai.APIError) as e2:
        for _ in client(cl).chat.completions.create(
                model=model, messages=[{"role": "user", "content": "please fail-midstream now"}],
                stream=True):
            pass
    assert ("stream failed" in str(e2.value)) or ("overloaded" in str(e2.value)), e2.value


def test_replay_rejects_bad_credentials(cl: Clouds) -> None:
    """The replay's checks can fail: without tollgate's signature/token/key it refuses."""
    body = json.dumps({"messages": [{"role": "user", "content": [{"text": "x"}]}]})
    bad_sig = ("AWS4-HMAC-SHA256 Credential=AKIDTOLLGATEE2E/20260101/us-east-1/bedrock/aws4_request, "
               "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64)
    r = http_request("POST", f"{cl.replay_url}/model/m/converse", body=body.encode(),
                     headers={"authorization": bad_sig, "content-type": "application/json"})
    assert r.status == 403, r
    r = http_request("POST", f"{cl.replay_url}/v1/projects/p/locations/l/publishers/google/models/m:generateContent",
                     body=b"{}", headers={"authorization": "Bearer ya29.forged"})
    assert r.status == 401 and r.json()["error"]["status"] == "UNAUTHENTICATED"
    r = http_request("POST", f"{cl.replay_url}/v1beta/models/m:generateContent", body=b"{}",
                     headers={"x-goog-api-key": "AIza-wrong"})
    assert r.status == 400 and "API key not valid" in r.json()["error"]["message"]
    r = http_request("POST", f"{cl.replay_url}/token", body=b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=a.b.c")
    assert r.status == 400
