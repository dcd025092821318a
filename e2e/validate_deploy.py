"""Offline checks of everything under k8s/ and helm/ (run by `make validate-deploy`).

No cluster and no container engine run here, so each artifact is checked with the real tool
that would read it, offline:

* the Helm chart is linted (strict) and rendered with Helm's own Go library (PyPI
  ``helm-python-sdk``) for several value sets; values that break values.schema.json must be
  refused;
* every manifest, raw and rendered, is validated against the Kubernetes OpenAPI schemas
  (PyPI ``kubernetes-validate``, strict: unknown fields fail). Kinds Kubernetes does not ship
  (kgateway's GatewayExtension/TrafficPolicy/DirectResponse, Gateway API's HTTPRoute) are
  validated against the schemas in k8s/kgateway/schemas/, written for tollgate (see their
  description); any other unknown kind is an error, never a silent skip;
* every Envoy bootstrap embedded in a ConfigMap goes through ``envoy --mode validate``;
* every tollgate.yaml embedded in a ConfigMap goes through ``tollgate validate --skip-secrets``;
* a few properties the deployment depends on are asserted: non-root, read-only root file
  system, probes on /healthz and /ready, fail-closed ext_proc, a preStop hook per container.

Exit status 0 when everything passes; the failures are listed otherwise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import jsonschema
import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parent.parent
K8S = REPO / "k8s"
CHART = REPO / "helm" / "tollgate"
CRD_SCHEMAS = K8S / "kgateway" / "schemas"
OWN_SCHEMAS = {
    ("gateway.kgateway.dev/v1alpha1", "GatewayExtension"): "gatewayextension.schema.json",
    ("gateway.kgateway.dev/v1alpha1", "TrafficPolicy"): "trafficpolicy.schema.json",
    ("gateway.kgateway.dev/v1alpha1", "DirectResponse"): "directresponse.schema.json",
    ("gateway.kgateway.dev/v1alpha1", "BackendConfigPolicy"): "backendconfigpolicy.schema.json",
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): "httproute.schema.json",
}
# Not Kubernetes objects: kustomize's own file.
NOT_OBJECTS = {"kustomization.yaml"}

# Value sets the chart must render cleanly with (on top of values.yaml).
CHART_CASES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "standalone": {"mode": "standalone", "replicaCount": 3},
    "standalone-shared-secret": {"mode": "standalone", "grpcAuth": {
        "tlsSecret": "", "secret": {"name": "tg-grpc", "key": "secret"}}},
    "everything-on": {
        "telemetry": {
            "otlp": {"endpoint": "http://otel-collector.observability:4318", "protocol": "http",
                     "samplingRatio": 0.25, "serviceName": "tollgate-prod"},
            "timeToFirstToken": True,
        },
        "audit": {"output": "/var/log/tollgate/audit.jsonl"},
        "redis": {"urlSecret": {"name": "tollgate-redis", "key": "url"}},
        "providers": [
            {"name": "openai", "kind": "openai", "host": "api.openai.com", "port": 443, "tls": True,
             "apiKeySecret": {"name": "keys", "key": "openai"}},
            {"name": "local-vllm", "kind": "openai", "host": "vllm.models.svc", "port": 8000,
             "tls": False, "basePath": "/v1"},
        ],
        "models": [{"name": "small", "backend": "local-vllm", "upstream_model": "qwen"}],
        "routes": [{"name": "gpt", "match": {"models": ["gpt-*"]}, "backend": "openai"}],
    },
    "single-replica": {"replicaCount": 1},
}
# Values the schema must refuse (a chart that accepts them would render a broken pod).
CHART_BAD: dict[str, dict[str, Any]] = {
    "unknown mode": {"mode": "daemonset"},
    "provider name with capitals": {"providers": [
        {"name": "OpenAI", "kind": "openai", "host": "api.openai.com", "port": 443}]},
    "typo in a value": {"replicas": 2},
    "OTLP endpoint without scheme": {"telemetry": {"otlp": {"endpoint": "collector:4317"}}},
    "debug state as a string": {"server": {"debugState": "yes"}},
}


class Checker:
    def __init__(self, envoy: Path, tollgate: Path, kube_version: str) -> None:
        self.envoy = envoy
        self.tollgate = tollgate
        self.kube_version = kube_version
        self.failures: list[str] = []
        self.counts: dict[str, int] = {}
        self.tmp = Path(tempfile.mkdtemp(prefix="tollgate-deploy-"))

    def ok(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def fail(self, where: str, msg: str) -> None:
        self.failures.append(f"{where}: {msg}")

    # ---- manifests

    def manifest(self, where: str, doc: dict[str, Any]) -> None:
        api, kind = doc.get("apiVersion", ""), doc.get("kind", "")
        where = f"{where} {kind}/{doc.get('metadata', {}).get('name', '?')}"
        own = OWN_SCHEMAS.get((api, kind))
        if own is not None:
            schema = json.loads((CRD_SCHEMAS / own).read_text())
            try:
                jsonschema.validate(doc, schema)
                self.ok(f"{kind} (own schema)")
            except jsonschema.ValidationError as e:
                self.fail(where, f"{e.message} at {'/'.join(map(str, e.absolute_path))}")
        else:
            try:
                kubernetes_validate.validate(doc, self.kube_version, strict=True)
                self.ok(f"{kind} (Kubernetes {self.kube_version} schema)")
            except kubernetes_validate.SchemaNotFoundError:
                self.fail(where, f"no schema for {api} {kind}: add one to k8s/kgateway/schemas")
                return
            except kubernetes_validate.ValidationError as e:
                self.fail(where, str(e).splitlines()[0])
                return
        self.policies(where, doc)
        if kind == "ConfigMap":
            self.configmap(where, doc)

    def policies(self, where: str, doc: dict[str, Any]) -> None:
        kind = doc.get("kind")
        if kind == "GatewayExtension":
            if doc["spec"]["extProc"].get("failOpen") is not False:
                self.fail(where, "extProc.failOpen must be false (kgateway defaults to fail-open)")
        if kind != "Deployment":
            return
        pod = doc["spec"]["template"]["spec"]
        psc = pod.get("securityContext", {})
        if psc.get("runAsNonRoot") is not True:
            self.fail(where, "pod securityContext.runAsNonRoot must be true")
        for c in pod["containers"]:
            cw = f"{where} container {c['name']}"
            sc = c.get("securityContext", {})
            if sc.get("readOnlyRootFilesystem") is not True:
                self.fail(cw, "readOnlyRootFilesystem must be true")
            if sc.get("allowPrivilegeEscalation") is not False:
                self.fail(cw, "allowPrivilegeEscalation must be false")
            if not c.get("resources", {}).get("requests"):
                self.fail(cw, "needs resource requests")
            if "preStop" not in c.get("lifecycle", {}):
                self.fail(cw, "needs a preStop hook (graceful drain)")
            if c["name"] == "tollgate":
                paths = {c.get(p, {}).get("httpGet", {}).get("path")
                         for p in ("livenessProbe", "readinessProbe")}
                if paths != {"/healthz", "/ready"}:
                    self.fail(cw, f"probes must be /healthz (liveness) and /ready, got {paths}")
        self.ok("Deployment policies")

    def configmap(self, where: str, doc: dict[str, Any]) -> None:
        data = doc.get("data") or {}
        if "envoy.yaml" in data:
            self.envoy_config(where, data["envoy.yaml"])
        if "tollgate.yaml" in data:
            self.tollgate_config(where, data["tollgate.yaml"])

    def envoy_config(self, where: str, text: str) -> None:
        cfg = yaml.safe_load(text)
        if '"failure_mode_allow": false' not in json.dumps(cfg):
            self.fail(where, "envoy.yaml: the ext_proc filter must set failure_mode_allow: false")
        path = self.tmp / f"envoy-{len(self.counts)}-{self.counts.get('envoy', 0)}.yaml"
        path.write_text(text)
        r = subprocess.run([str(self.envoy), "--mode", "validate", "-c", str(path),
                            "--log-level", "error"], capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            self.fail(where, f"envoy --mode validate failed:\n{r.stdout}{r.stderr}")
        else:
            self.ok("envoy.yaml (envoy --mode validate)")

    def tollgate_config(self, where: str, text: str) -> None:
        path = self.tmp / f"tollgate-{sum(self.counts.values())}.yaml"
        path.write_text(text)
        r = subprocess.run([str(self.tollgate), "validate", "--skip-secrets", str(path)],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            self.fail(where, f"tollgate validate failed:\n{r.stdout}{r.stderr}")
        elif "warning:" in r.stdout.lower():
            # Shipped defaults are secure: client auth on, no unauthenticated network gRPC.
            self.fail(where, f"tollgate validate warns:\n{r.stdout}")
        else:
            self.ok("tollgate.yaml (tollgate validate)")
        cfg = yaml.safe_load(text)
        if (cfg.get("server") or {}).get("debug_state"):
            self.fail(where, "server.debug_state must stay off in shipped configs")

    # ---- sources

    def raw_manifests(self) -> None:
        files = sorted(K8S.rglob("*.yaml"))
        for f in files:
            if f.name in NOT_OBJECTS:
                continue
            for doc in yaml.safe_load_all(f.read_text()):
                if doc:
                    self.manifest(str(f.relative_to(REPO)), doc)
        kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
        for res in kust["resources"]:
            if not (K8S / res).is_file():
                self.fail("k8s/kustomization.yaml", f"resource {res} does not exist")
        for d in (K8S, K8S / "kgateway"):
            kinds = [doc.get("kind") for f in sorted(d.glob("*.yaml")) if f.name not in NOT_OBJECTS
                     for doc in yaml.safe_load_all(f.read_text()) if doc]
            if "NetworkPolicy" not in kinds:
                self.fail(str(d.relative_to(REPO)), "needs a NetworkPolicy")

    def chart(self) -> None:
        import helm_python

        report = helm_python.lint(str(CHART), strict=True)
        for m in report.get("messages", []):
            if m["severity"] >= 2:
                self.fail(f"helm lint {m['path']}", m["error"])
        for e in report.get("errors", []):
            self.fail("helm lint", e)
        self.ok("helm lint --strict")
        chart = helm_python.Chart.load(str(CHART))
        for case, values in CHART_CASES.items():
            try:
                out = chart.render(values, name="tg", namespace="ai", is_install=True)
            except helm_python.HelmError as e:
                self.fail(f"helm render [{case}]", str(e))
                continue
            kinds = []
            for tpl, text in sorted(out.items()):
                if not tpl.endswith(".yaml"):
                    continue
                for doc in yaml.safe_load_all(text):
                    if doc:
                        kinds.append(doc["kind"])
                        self.manifest(f"helm[{case}] {tpl}", doc)
            sidecar = values.get("mode", "sidecar") == "sidecar"
            want = {"Deployment", "Service", "ConfigMap"}
            if not want <= set(kinds):
                self.fail(f"helm render [{case}]", f"missing kinds: {want - set(kinds)}")
            if sidecar and kinds.count("ConfigMap") != 2:
                self.fail(f"helm render [{case}]", "sidecar mode needs the Envoy ConfigMap")
            if "NetworkPolicy" not in kinds:
                self.fail(f"helm render [{case}]", "needs a NetworkPolicy")
            if ("PodDisruptionBudget" in kinds) != (values.get("replicaCount", 2) > 1):
                self.fail(f"helm render [{case}]", "a PDB belongs with more than one replica only")
            self.ok("helm render")
        for case, values in CHART_BAD.items():
            try:
                chart.render(values, name="tg", namespace="ai")
                self.fail("values.schema.json", f"accepted bad values ({case}): {values}")
            except helm_python.HelmValuesError:
                self.ok("bad values refused")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--envoy", type=Path, default=REPO / ".venv" / "bin" / "envoy")
    ap.add_argument("--tollgate", type=Path, default=REPO / "target" / "debug" / "tollgate")
    ap.add_argument("--kube-version", default=kubernetes_validate.latest_version())
    args = ap.parse_args(argv)
    c = Checker(args.envoy, args.tollgate, args.kube_version)
    c.raw_manifests()
    c.chart()
    for what, n in sorted(c.counts.items()):
        print(f"  ok {n:3d} x {what}")
    if c.failures:
        print(f"\n{len(c.failures)} deployment check(s) failed:")
        for f in c.failures:
            print(f"  FAIL {f}")
        return 1
    print("deployment artifacts: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
