"""Capture real metrics for the dashboard picture: start demo upstreams + tollgate + Envoy
(e2e/harness.py), drive a mixed OpenAI-SDK load through Envoy, and scrape tollgate's /metrics
once a second into deploy/grafana/scrape.jsonl.gz (one {"t": unix_time, "text": exposition} per
line). `render.py` turns that file into tollgate.png.

    .venv/bin/python deploy/grafana/capture.py --target-dir target/release --seconds 60
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "e2e"))

import harness  # noqa: E402


def load(stack: harness.Stack, stop: threading.Event, seed: int) -> None:
    import openai

    rng = random.Random(seed)
    client = stack.openai()
    while not stop.is_set():
        pick = rng.random()
        try:
            if pick < 0.45:
                stream = client.chat.completions.create(
                    model=rng.choice(["echo", "mini"]),
                    messages=[{"role": "user", "content": "tell me a story " * rng.randint(1, 30)}],
                    stream=True,
                )
                for _ in stream:
                    pass
            elif pick < 0.85:
                client.chat.completions.create(
                    model=rng.choice(["mini", "demo-large", "beta-passthrough-model"]),
                    messages=[{"role": "user", "content": "hello"}],
                )
            elif pick < 0.95:
                client.chat.completions.create(
                    model="no-such-model", messages=[{"role": "user", "content": "x"}])
            else:
                client.embeddings.create(model="echo", input="embed me")
        except openai.APIError:
            pass
        time.sleep(rng.uniform(0.0, 0.05))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target-dir", default="target/release")
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--out", type=Path, default=HERE / "scrape.jsonl.gz")
    args = ap.parse_args()
    cfg = harness.load_yaml(harness.DEMO_TOLLGATE_CONFIG)
    cfg["telemetry"] = {"metrics": {"time_to_first_token": True}}
    cfg["log"] = {"level": "warn"}
    with harness.Stack(target=harness.target_dir(args.target_dir), tollgate_config=cfg) as stack:
        stop = threading.Event()
        threads = [threading.Thread(target=load, args=(stack, stop, i), daemon=True)
                   for i in range(args.clients)]
        for t in threads:
            t.start()
        with gzip.open(args.out, "wt", encoding="utf-8") as out:
            end = time.time() + args.seconds
            while time.time() < end:
                out.write(json.dumps({"t": time.time(), "text": stack.metrics()}) + "\n")
                time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join(timeout=10)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
