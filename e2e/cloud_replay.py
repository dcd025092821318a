"""Replay upstream for the cloud providers tollgate translates to, speaking their real wire
formats and checking credentials the way the clouds do (independently of tollgate's code):

* AWS Bedrock ``POST /model/{modelId}/converse`` and ``/converse-stream``: the SigV4
  signature is recomputed with botocore's own signer for the request as received (method,
  raw path, signed headers, body); a mismatch gets AWS's ``InvalidSignatureException`` shape.
  Streams are binary ``application/vnd.amazon.eventstream`` frames with real CRC32s.
* Google OAuth ``POST /token``: the service-account JWT (RS256) is verified with the test
  key's public half (``cryptography``), its claims checked; an access token is issued.
* Vertex AI ``/v1/projects/{p}/locations/{l}/publishers/google/models/{m}:generateContent``
  (and ``:streamGenerateContent?alt=sse``): needs a bearer token this replay issued.
* Gemini API ``/v1beta/models/{m}:generateContent``: needs the configured ``x-goog-api-key``.

Answers depend on the last user message: text echoes it; a request with tools answers with
a tool call; ``fail-quota`` is a 429 in the provider's error shape, ``fail-status-<NNN>`` that
status in the provider's error shape (AWS exception name / Google status for it); ``fail-midstream`` fails a
stream after the first text (AWS exception event / Google SSE error). Everything received is
recorded for the tests at ``GET /__replay/requests`` (``DELETE`` clears).

Run: ``python cloud_replay.py --port P --aws-key-id K --aws-secret S --gemini-key G
--sa-public-key pub.pem --sa-email E``.
"""

from __future__ import annotations

import argparse
import base64
import calendar
import hashlib
import json
import re
import secrets
import struct
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

# ``fail-status-<NNN>``: the error each cloud answers that HTTP status with.
AWS_EXCEPTIONS = {400: "ValidationException", 403: "AccessDeniedException",
                  404: "ResourceNotFoundException", 429: "ThrottlingException",
                  500: "InternalServerException", 503: "ServiceUnavailableException"}
GOOGLE_STATUSES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                   404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
                   503: "UNAVAILABLE"}


def failed_status(text: str) -> int | None:
    m = re.search(r"fail-status-([45]\d\d)\b", text)
    return int(m.group(1)) if m else None


AUTH_RE = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<day>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, SignedHeaders=(?P<signed>[a-z0-9;-]+), "
    r"Signature=(?P<sig>[0-9a-f]{64})$"
)


# ---- AWS event stream framing (written here, independently of tollgate's decoder)

def _header(name: str, value: str) -> bytes:
    n = name.encode()
    v = value.encode()
    return bytes([len(n)]) + n + b"\x07" + struct.pack(">H", len(v)) + v


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    hdr = b"".join(_header(k, v) for k, v in headers.items())
    total = 16 + len(hdr) + len(payload)
    prelude = struct.pack(">II", total, len(hdr))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    msg = prelude + hdr + payload
    return msg + struct.pack(">I", zlib.crc32(msg))


def event(kind: str, body: dict[str, Any]) -> bytes:
    # Bedrock pads events with a "p" field of varying length.
    body = {**body, "p": "abcdefghijklmnopqrstuvwxyz"[: 1 + len(kind) % 26]}
    return frame(
        {":event-type": kind, ":content-type": "application/json", ":message-type": "event"},
        json.dumps(body).encode(),
    )


def exception(kind: str, message: str) -> bytes:
    return frame(
        {":exception-type": kind, ":content-type": "application/json",
         ":message-type": "exception"},
        json.dumps({"message": message}).encode(),
    )


class State:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.tokens: set[str] = set()
        with open(args.sa_public_key, "rb") as f:
            self.sa_public = serialization.load_pem_public_key(f.read())


def b64url(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def last_user_text(texts: list[str]) -> str:
    return texts[-1] if texts else ""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: State

    def log_message(self, fmt: str, *a: Any) -> None:  # keep test output quiet
        pass

    # ---- plumbing

    def send(self, status: int, body: bytes, ctype: str = "application/json",
             headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self.send(status, json.dumps(obj).encode(), headers=headers)

    def stream(self, ctype: str, parts: list[bytes]) -> None:
        self.send_response(200)
        self.send_header("content-type", ctype)
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for p in parts:
            # Split every part in two writes so frames straddle HTTP chunks.
            for piece in (p[: len(p) // 2], p[len(p) // 2:]):
                if piece:
                    self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                    self.wfile.flush()
            time.sleep(0.005)
        self.wfile.write(b"0\r\n\r\n")

    def do_GET(self) -> None:
        if self.path == "/__replay/requests":
            with self.state.lock:
                self.send_json(200, {"requests": list(self.state.requests)})
        elif self.path == "/__replay/health":
            self.send_json(200, {"ok": True})
        else:
            self.send_json(404, {"message": "not found"})

    def do_DELETE(self) -> None:
        with self.state.lock:
            self.state.requests.clear()
        self.send_json(200, {"cleared": True})

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        path = self.path
        record = {"path": path, "headers": {k.lower(): v for k, v in self.headers.items()},
                  "body": body.decode("utf-8", "replace")}
        with self.state.lock:
            self.state.requests.append(record)
        if path == "/token":
            return self.token(body)
        m = re.fullmatch(r"/model/([^/]+)/(converse|converse-stream)", path)
        if m:
            return self.bedrock(m.group(1), m.group(2) == "converse-stream", body)
        m = re.fullmatch(r"/v1beta/models/([^/:]+):(generateContent|streamGenerateContent\?alt=sse)", path)
        if m:
            if self.headers.get("x-goog-api-key") != self.state.args.gemini_key:
                return self.google_error(400, "API key not valid. Please pass a valid API key.",
                                         "INVALID_ARGUMENT")
            return self.gemini(m.group(1), m.group(2) != "generateContent", body)
        m = re.fullmatch(
            r"/v1/projects/([^/]+)/locations/([^/]+)/publishers/google/models/([^/:]+):"
            r"(generateContent|streamGenerateContent\?alt=sse)", path)
        if m:
            auth = self.headers.get("authorization", "")
            token = auth[len("Bearer "):] if auth.startswith("Bearer ") else ""
            with self.state.lock:
                ok = token in self.state.tokens
            if not ok:
                return self.google_error(
                    401, "Request had invalid authentication credentials. Expected OAuth 2 "
                    "access token, login cookie or other valid authentication credential.",
                    "UNAUTHENTICATED")
            return self.gemini(m.group(3), m.group(4) != "generateContent", body)
        self.send_json(404, {"message": f"no replay for {path}"})

    # ---- Google OAuth token endpoint

    def token(self, body: bytes) -> None:
        form = parse_qs(body.decode())
        bad = lambda d: self.send_json(400, {"error": "invalid_grant", "error_description": d})  # noqa: E731
        if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"]:
            return self.send_json(400, {"error": "unsupported_grant_type",
                                        "error_description": "Invalid grant_type"})
        jwt = (form.get("assertion") or [""])[0]
        parts = jwt.split(".")
        if len(parts) != 3:
            return bad("Invalid JWT: not three segments")
        try:
            header = json.loads(b64url(parts[0]))
            claims = json.loads(b64url(parts[1]))
            self.state.sa_public.verify(
                b64url(parts[2]), f"{parts[0]}.{parts[1]}".encode(),
                padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return bad("Invalid JWT Signature.")
        except ValueError as e:
            return bad(f"Invalid JWT: {e}")
        now = time.time()
        host = self.headers.get("host", "")
        if header.get("alg") != "RS256":
            return bad("Invalid JWT: alg must be RS256")
        if claims.get("iss") != self.state.args.sa_email:
            return bad("Invalid JWT: iss is not the service account")
        if claims.get("aud") != f"http://{host}/token":
            return bad(f"Invalid JWT: aud {claims.get('aud')!r}")
        if "https://www.googleapis.com/auth/cloud-platform" not in str(claims.get("scope", "")).split():
            return bad("Invalid JWT: scope")
        if not (claims.get("iat", 0) - 300 <= now <= claims.get("exp", 0)) or \
                claims["exp"] - claims["iat"] > 3600:
            return bad("Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
                       "reasonable timeframe.")
        token = "ya29.replay-" + secrets.token_urlsafe(24)
        with self.state.lock:
            self.state.tokens.add(token)
        self.send_json(200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"})

    # ---- Bedrock

    def verify_sigv4(self, body: bytes) -> str | None:
        a = self.state.args
        m = AUTH_RE.match(self.headers.get("authorization", ""))
        if not m:
            return "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders'."
        if m["key"] != a.aws_key_id:
            return "The security token included in the request is invalid."
        if m["service"] != "bedrock" or m["region"] != a.aws_region:
            return f"Credential should be scoped to a valid region and service 'bedrock'."
        amz_date = self.headers.get("x-amz-date", "")
        try:
            t = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
        except ValueError:
            return "Missing or malformed X-Amz-Date."
        if abs(t - time.time()) > 300 or amz_date[:8] != m["day"]:
            return "Signature expired or not yet valid."
        if self.headers.get("x-amz-content-sha256") != hashlib.sha256(body).hexdigest():
            return "The provided 'x-amz-content-sha256' header does not match what was computed."
        signed = m["signed"].split(";")
        if "host" not in signed:
            return "'Host' must be a signed header."
        headers = {h: self.headers.get(h, "") for h in signed}
        req = AWSRequest(method="POST", url=f"https://{headers['host']}{self.path}",
                         data=body, headers=headers)
        req.context["timestamp"] = amz_date
        auth = SigV4Auth(Credentials(a.aws_key_id, a.aws_secret), "bedrock", a.aws_region)
        canonical = auth.canonical_request(req)
        expected = auth.signature(auth.string_to_sign(req, canonical), req)
        if expected != m["sig"]:
            return ("The request signature we calculated does not match the signature you "
                    "provided. Check your AWS Secret Access Key and signing method.")
        return None

    def aws_error(self, status: int, kind: str, message: str) -> None:
        self.send_json(status, {"message": message}, headers={"x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"})

    def bedrock(self, model_id: str, streaming: bool, body: bytes) -> None:
        problem = self.verify_sigv4(body)
        if problem:
            kind = "InvalidSignatureException" if "signature" in problem else "UnrecognizedClientException"
            return self.aws_error(403, kind, problem)
        try:
            req = json.loads(body)
        except ValueError:
            return self.aws_error(400, "SerializationException", "body is not JSON")
        msgs = req.get("messages", [])
        roles = [m.get("role") for m in msgs]
        if not msgs or roles[0] != "user" or any(a == b for a, b in zip(roles, roles[1:])):
            return self.aws_error(400, "ValidationException", "A conversation must start with a user message and alternate between user and assistant roles.")
        blocks = [b for m in msgs for b in m.get("content", [])]
        if any("text" in b and not b["text"].strip() for b in blocks):
            return self.aws_error(400, "ValidationException", "The text field in the ContentBlock object is blank.")
        if any("toolUse" in b or "toolResult" in b for b in blocks) and "toolConfig" not in req:
            return self.aws_error(400, "ValidationException", "The toolConfig field must be defined when using toolUse and toolResult content blocks.")
        user_texts = [b["text"] for b in msgs[-1].get("content", []) if "text" in b]
        text = last_user_text(user_texts)
        if "fail-quota" in text:
            return self.aws_error(429, "ThrottlingException", "Too many requests, please wait before trying again.")
        status = failed_status(text)
        if status:
            kind = AWS_EXCEPTIONS.get(status, "InternalServerException")
            return self.aws_error(status, kind, f"Replayed {kind} ({status}).")
        tools = req.get("toolConfig", {}).get("tools", [])
        has_result = any("toolResult" in b for b in msgs[-1].get("content", []))
        usage = {"inputTokens": 11 + len(text.split()), "outputTokens": 7, "totalTokens": 18 + len(text.split()),
                 "cacheReadInputTokens": 3, "cacheWriteInputTokens": 0}
        if tools and not has_result:
            name = tools[0]["toolSpec"]["name"]
            call = {"toolUseId": "tooluse_" + secrets.token_hex(8), "name": name,
                    "input": {"city": "Paris", "unit": "celsius"}}
            if not streaming:
                return self.send_json(200, {"output": {"message": {"role": "assistant", "content": [
                    {"text": "Checking."}, {"toolUse": call}]}}, "stopReason": "tool_use",
                    "usage": usage, "metrics": {"latencyMs": 12}})
            args = json.dumps(call["input"])
            return self.stream("application/vnd.amazon.eventstream", [
                event("messageStart", {"role": "assistant"}),
                event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Checking."}}),
                event("contentBlockStop", {"contentBlockIndex": 0}),
                event("contentBlockStart", {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": call["toolUseId"], "name": name}}}),
                event("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": args[:9]}}}),
                event("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": args[9:]}}}),
                event("contentBlockStop", {"contentBlockIndex": 1}),
                event("messageStop", {"stopReason": "tool_use"}),
                event("metadata", {"usage": usage, "metrics": {"latencyMs": 12}}),
            ])
        answer = f"Echo: {text}" if not has_result else "Result noted: " + json.dumps(
            msgs[-1]["content"][0]["toolResult"]["content"])
        if not streaming:
            return self.send_json(200, {"output": {"message": {"role": "assistant", "content": [{"text": answer}]}},
                                        "stopReason": "end_turn", "usage": usage, "metrics": {"latencyMs": 9}})
        words = re.findall(r"\S+\s*", answer)
        frames = [event("messageStart", {"role": "assistant"})]
        for i, w in enumerate(words):
            frames.append(event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": w}}))
            if i == 0 and "fail-midstream" in text:
                frames.append(exception("modelStreamErrorException", "The model stream failed: replay fail-midstream."))
                return self.stream("application/vnd.amazon.eventstream", frames)
        frames += [event("contentBlockStop", {"contentBlockIndex": 0}),
                   event("messageStop", {"stopReason": "end_turn"}),
                   event("metadata", {"usage": usage, "metrics": {"latencyMs": 9}})]
        self.stream("application/vnd.amazon.eventstream", frames)

    # ---- Gemini / Vertex

    def google_error(self, status: int, message: str, code: str) -> None:
        self.send_json(status, {"error": {"code": status, "message": message, "status": code}})

    def gemini(self, model: str, streaming: bool, body: bytes) -> None:
        try:
            req = json.loads(body)
        except ValueError:
            return self.google_error(400, "Invalid JSON payload received.", "INVALID_ARGUMENT")
        contents = req.get("contents", [])
        if not contents or any(c.get("role") not in ("user", "model") for c in contents):
            return self.google_error(400, "Please use a valid role: user, model.", "INVALID_ARGUMENT")
        last = contents[-1].get("parts", [])
        text = last_user_text([p["text"] for p in last if "text" in p])
        if "fail-quota" in text:
            return self.google_error(429, "Resource has been exhausted (e.g. check quota).", "RESOURCE_EXHAUSTED")
        status = failed_status(text)
        if status:
            code = GOOGLE_STATUSES.get(status, "INTERNAL")
            return self.google_error(status, f"Replayed {code} ({status}).", code)
        decls = [d for t in req.get("tools", []) for d in t.get("functionDeclarations", [])]
        has_result = any("functionResponse" in p for p in last)
        n = len(text.split())
        usage = {"promptTokenCount": 9 + n, "candidatesTokenCount": 6, "totalTokenCount": 19 + n,
                 "cachedContentTokenCount": 2, "thoughtsTokenCount": 4}
        def resp(parts: list[dict[str, Any]], finish: str | None, with_usage: bool) -> dict[str, Any]:
            cand: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
            if finish:
                cand["finishReason"] = finish
            out: dict[str, Any] = {"candidates": [cand], "modelVersion": model, "responseId": "replay-1"}
            if with_usage:
                out["usageMetadata"] = usage
            return out
        if decls and not has_result:
            parts = [{"text": "Checking."}, {"functionCall": {"name": decls[0]["name"], "args": {"city": "Paris", "unit": "celsius"}}}]
            if not streaming:
                return self.send_json(200, resp(parts, "STOP", True))
            return self.stream("text/event-stream", [
                b"data: " + json.dumps(resp(parts[:1], None, False)).encode() + b"\r\n\r\n",
                b"data: " + json.dumps(resp(parts[1:], "STOP", True)).encode() + b"\r\n\r\n"])
        answer = f"Echo: {text}" if not has_result else "Result noted: " + json.dumps(
            [p["functionResponse"]["response"] for p in last if "functionResponse" in p][0])
        if not streaming:
            return self.send_json(200, resp([{"text": answer}], "STOP", True))
        words = re.findall(r"\S+\s*", answer)
        events = [b"data: " + json.dumps(resp([{"text": "pondering", "thought": True}], None, False)).encode() + b"\r\n\r\n"]
        for i, w in enumerate(words):
            final = i == len(words) - 1
            events.append(b"data: " + json.dumps(resp([{"text": w}], "STOP" if final else None, final)).encode() + b"\r\n\r\n")
            if i == 0 and "fail-midstream" in text:
                events.append(b"data: " + json.dumps({"error": {"code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}}).encode() + b"\r\n\r\n")
                break
        self.stream("text/event-stream", events)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--aws-key-id", required=True)
    p.add_argument("--aws-secret", required=True)
    p.add_argument("--aws-region", default="us-east-1")
    p.add_argument("--gemini-key", required=True)
    p.add_argument("--sa-public-key", required=True)
    p.add_argument("--sa-email", required=True)
    args = p.parse_args()
    Handler.state = State(args)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
