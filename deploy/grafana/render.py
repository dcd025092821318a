"""Draw the panels of tollgate.json (the Grafana dashboard) from scraped metrics, with matplotlib.

Grafana does not run here, so this is not a screenshot. The script reads the dashboard's own
panels and evaluates each panel's PromQL against the scrapes in scrape.jsonl.gz (written by
capture.py from a real run), implementing the few query shapes the dashboard uses: `rate`,
`increase`, `sum by (…)`, `min`, `histogram_quantile` (Prometheus's linear interpolation
within a bucket), and a scalar factor. A panel whose series never appeared says so.

    pip install matplotlib   # not needed by CI
    .venv/bin/python deploy/grafana/render.py
"""

from __future__ import annotations

import gzip
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "e2e"))

from harness import parse_metrics  # noqa: E402

WINDOW = 5  # scrapes per rate window ($__rate_interval at 1 s scrapes)

Series = dict[tuple[tuple[str, str], ...], list[float | None]]


def load(path: Path) -> tuple[list[float], list[dict[str, dict[tuple, float]]]]:
    times, samples = [], []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        text = f.read()
    for line in text.splitlines():
        rec = json.loads(line)
        by_name: dict[str, dict[tuple, float]] = {}
        for name, labels, value in parse_metrics(rec["text"]):
            by_name.setdefault(name, {})[tuple(sorted(labels.items()))] = value
        times.append(rec["t"])
        samples.append(by_name)
    return times, samples


def raw(samples: list, times: list, metric: str, fn: str) -> Series:
    """Per-label-set rate/increase (fn) or the raw gauge (fn == '')."""
    keys = set()
    for s in samples:
        keys |= set(s.get(metric, {}))
    out: Series = {}
    for k in keys:
        vals = [s.get(metric, {}).get(k) for s in samples]
        if not fn:
            out[k] = vals
            continue
        col: list[float | None] = []
        for i in range(len(vals)):
            j = max(0, i - WINDOW)
            a, b = vals[j], vals[i]
            if i == 0 or b is None:
                col.append(None)
                continue
            a = a or 0.0  # a series born inside the window started from zero
            d = max(0.0, b - a)
            col.append(d / (times[i] - times[j]) if fn == "rate" else d)
        out[k] = col
    return out


def aggregate(series: Series, by: list[str], how: str) -> Series:
    out: dict[tuple, list[float | None]] = {}
    for k, vals in series.items():
        labels = dict(k)
        key = tuple((b, labels.get(b, "")) for b in by)
        acc = out.setdefault(key, [None] * len(vals))
        for i, v in enumerate(vals):
            if v is None:
                continue
            if acc[i] is None:
                acc[i] = v
            else:
                acc[i] = acc[i] + v if how == "sum" else min(acc[i], v)
    return out


def quantile(q: float, buckets: Series, by: list[str]) -> Series:
    groups: dict[tuple, dict[float, list[float | None]]] = {}
    for k, vals in buckets.items():
        labels = dict(k)
        g = tuple((b, labels.get(b, "")) for b in by if b != "le")
        le = math.inf if labels["le"] == "+Inf" else float(labels["le"])
        groups.setdefault(g, {})[le] = vals
    out: Series = {}
    for g, by_le in groups.items():
        les = sorted(by_le)
        n = len(next(iter(by_le.values())))
        col: list[float | None] = []
        for i in range(n):
            counts = [by_le[le][i] or 0.0 for le in les]
            total = counts[-1]
            if total <= 0:
                col.append(None)
                continue
            rank = q * total
            lo_le, lo_c = 0.0, 0.0
            val = None
            for le, c in zip(les, counts):
                if c >= rank:
                    if math.isinf(le):
                        val = lo_le
                    else:
                        val = lo_le + (le - lo_le) * ((rank - lo_c) / (c - lo_c) if c > lo_c else 1)
                    break
                lo_le, lo_c = le, c
            col.append(val)
        out[g] = col
    return out


AGG = re.compile(r"^(sum|min)(?: by \(([^)]*)\))?\s*\((.*)\)$")
FN = re.compile(r"^(rate|increase)\(([a-zA-Z_:][\w:]*)(\{[^}]*\})?\[[^\]]+\]\)$")
HQ = re.compile(r"^histogram_quantile\(([\d.]+), (.*)\)$")


def evaluate(expr: str, times: list, samples: list) -> Series:
    expr = expr.strip()
    factor = 1.0
    m = re.match(r"^(.*) \* ([\d.]+)$", expr)
    if m:
        expr, factor = m.group(1), float(m.group(2))
    m = HQ.match(expr)
    if m:
        inner = AGG.match(m.group(2))
        assert inner, expr
        by = [b.strip() for b in (inner.group(2) or "").split(",") if b.strip()]
        buckets = aggregate(evaluate(inner.group(3), times, samples), by, inner.group(1))
        return quantile(float(m.group(1)), buckets, by)
    m = AGG.match(expr)
    if m:
        by = [b.strip() for b in (m.group(2) or "").split(",") if b.strip()]
        res = aggregate(evaluate(m.group(3), times, samples), by, m.group(1))
    elif FN.match(expr):
        res = _fn(expr, times, samples)
    else:
        res = raw(samples, times, expr, "")
    return {k: [None if v is None else v * factor for v in vals] for k, vals in res.items()}


def _fn(expr: str, times: list, samples: list) -> Series:
    m = FN.match(expr)
    assert m, expr
    series = raw(samples, times, m.group(2), m.group(1))
    if m.group(3):
        want = dict(re.findall(r'(\w+)="([^"]*)"', m.group(3)))
        series = {k: v for k, v in series.items() if all(dict(k).get(a) == b for a, b in want.items())}
    return series


def legend(fmt: str, key: tuple) -> str:
    labels = dict(key)
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt) or "value"


def main() -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dash = json.loads((HERE / "tollgate.json").read_text())
    times, samples = load(HERE / "scrape.jsonl.gz")
    t0 = times[0]
    xs = [t - t0 for t in times]
    panels = dash["panels"]
    cols = 3
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(18, 3.6 * rows))
    fig.patch.set_facecolor("#111217")
    for ax, p in zip(axes.flat, panels):
        ax.set_facecolor("#181b1f")
        ax.set_title(p["title"], color="#d8d9da", fontsize=10, loc="left")
        ax.tick_params(colors="#8e8e8e", labelsize=8)
        for spine in ax.spines.values():
            spine.set_color("#2c3235")
        drawn = 0
        for t in p["targets"]:
            for key, vals in sorted(evaluate(t["expr"], times, samples).items()):
                if all(v is None for v in vals):
                    continue
                if p["type"] == "stat":
                    last = [v for v in vals if v is not None][-1]
                    ax.text(0.05, 0.65 - 0.35 * drawn, f"{legend(t['legendFormat'], key)}: {last:g}",
                            color="#73bf69", fontsize=14, transform=ax.transAxes)
                    ax.set_xticks([])
                    ax.set_yticks([])
                else:
                    ax.plot(xs, [math.nan if v is None else v for v in vals], linewidth=1.4,
                            label=legend(t["legendFormat"], key))
                drawn += 1
        if drawn == 0:
            ax.text(0.5, 0.5, "no data in this run\n" + p.get("description", ""), ha="center",
                    va="center", color="#8e8e8e", fontsize=8, wrap=True, transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
        elif p["type"] != "stat":
            unit = p["fieldConfig"]["defaults"].get("unit", "")
            ax.set_xlabel(f"seconds into the run   [{unit}]", color="#8e8e8e", fontsize=8)
            ax.legend(fontsize=7, loc="upper left", facecolor="#181b1f", labelcolor="#d8d9da",
                      framealpha=0.6, ncol=2)
            ax.grid(color="#2c3235", linewidth=0.5)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle("tollgate dashboard (deploy/grafana/tollgate.json) — panels drawn by render.py "
                 "from /metrics scraped during a real run (capture.py: Envoy + tollgate debug build "
                 "+ demo upstreams, 4 OpenAI-SDK clients); not a Grafana screenshot",
                 color="#d8d9da", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    out = HERE / "tollgate.png"
    fig.savefig(out, dpi=80, facecolor=fig.get_facecolor())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
