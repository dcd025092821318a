#!/usr/bin/env python3
"""Run the local tollgate demo on the fixed ports until Ctrl-C.

    alpha upstream   127.0.0.1:8081      beta upstream   127.0.0.1:8082
    tollgate gRPC    127.0.0.1:50051     tollgate admin  127.0.0.1:9090
    Envoy            127.0.0.1:10000     Envoy admin     127.0.0.1:9901

Usage (what `make run` does):  .venv/bin/python e2e/run_demo.py --target-dir target/release
Backend keys come from DEMO_ALPHA_KEY / DEMO_BETA_KEY (default demo-alpha-key / demo-beta-key).
Logs go to a temporary directory printed in the banner (or --workdir).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target-dir", default=None,
                    help="cargo profile dir with tollgate and tollgate-demo-upstream "
                         "(default: $TOLLGATE_TARGET_DIR or target/debug)")
    ap.add_argument("--uds", action="store_true",
                    help="use envoy/envoy-uds.yaml (gRPC over a Unix socket)")
    ap.add_argument("--workdir", default=None, help="where logs and generated configs go")
    args = ap.parse_args()

    keys = {
        "alpha": os.environ.get("DEMO_ALPHA_KEY", harness.DEFAULT_KEYS["alpha"]),
        "beta": os.environ.get("DEMO_BETA_KEY", harness.DEFAULT_KEYS["beta"]),
    }
    workdir = Path(args.workdir) if args.workdir else Path(
        __import__("tempfile").mkdtemp(prefix="tollgate-demo-"))
    stack = harness.Stack(
        workdir,
        target=harness.target_dir(args.target_dir),
        fixed_ports=True,
        uds=args.uds,
        keys=keys,
        envoy_concurrency=2,
        envoy_log_level="warn",
        config_in_place=harness.DEMO_TOLLGATE_CONFIG,
    )
    if args.uds:
        # The shipped UDS file's socket path, as documented.
        stack.socket_path = harness.SHIPPED_SOCKET
        Path(harness.SHIPPED_SOCKET).parent.mkdir(parents=True, exist_ok=True)
        with __import__("contextlib").suppress(FileNotFoundError):
            os.unlink(harness.SHIPPED_SOCKET)

    stopping = False

    def stop() -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        print("\nstopping tollgate demo ...", flush=True)
        stack.stop()

    harness.install_signal_handlers(stop)
    try:
        stack.start()
    except harness.StackError as e:
        stop()
        print(f"tollgate demo failed to start:\n{e}", file=sys.stderr)
        return 1

    p = stack.ports
    print(f"""
tollgate demo is up (Ctrl-C to stop).  Logs: {workdir}  (Envoy access log: envoy-access.log)

  Envoy (OpenAI base URL)  http://127.0.0.1:{p.envoy}/v1
  tollgate admin           http://127.0.0.1:{p.tollgate_admin}/metrics   /ready   /healthz
  Envoy admin              http://127.0.0.1:{p.envoy_admin}/
  upstreams                alpha :{p.alpha}   beta :{p.beta}   (GET /__demo/requests)
  tollgate config          {stack.tollgate_config_path}   (edit it: hot reload)

  curl -s http://127.0.0.1:{p.envoy}/v1/chat/completions \\
    -H 'content-type: application/json' -H 'authorization: Bearer tollgate-demo-key' \\
    -d '{{"model":"echo","messages":[{{"role":"user","content":"hello tollgate"}}]}}'

  models: echo, gpt-4o-mini (alias mini), demo-large, beta-*;  curl -H 'authorization: Bearer tollgate-demo-key' http://127.0.0.1:{p.envoy}/v1/models
  first-line command: start the last user message with "/model beta,beta-some-model" + newline
""", flush=True)

    try:
        while True:
            for name, proc in stack.procs.items():
                if not proc.alive():
                    print(f"{name} exited unexpectedly:\n{proc.tail(20)}", file=sys.stderr)
                    stop()
                    return 1
            time.sleep(0.5)
    finally:
        stop()


if __name__ == "__main__":
    sys.exit(main())
