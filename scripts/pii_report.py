"""Precision/recall of tollgate's built-in PII and secret detectors on a generated, labelled corpus.

    make pii-report            # or: .venv/bin/python scripts/pii_report.py --n 500 --seed 1

The corpus (e2e/pii_corpus.py) is generated with Faker and random digits and labelled by
python-stdnum, phonenumbers and ipaddress, with near-misses (bad checksums, impossible dates,
version strings, timestamps, order numbers); secrets are generated to their published
formats with one-rule-broken near-misses (see pii_corpus.py).  "own" counts a detector only
on its own samples; "all" also counts findings on other entities' samples (e.g. a Luhn-valid
card number inside an IBAN with a bad checksum, or a phone-like digit group inside a
near-miss Slack token).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "e2e"))

import pii_corpus  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=500, help="values per generator")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tollgate", default=str(ROOT / "target" / "debug" / "tollgate"))
    args = ap.parse_args()

    corpus = pii_corpus.samples(seed=args.seed, n=args.n)
    results = pii_corpus.scan(Path(args.tollgate), [s.text for s in corpus])
    own = pii_corpus.score(corpus, results, own_only=True)
    every = pii_corpus.score(corpus, results)
    positives = Counter(s.entity for s in corpus if s.positive)
    negatives = Counter(s.entity for s in corpus if not s.positive)

    print(f"tollgate PII and secret detectors: {len(corpus)} samples (seed {args.seed}), labelled\n")
    w = max(len(e) for e in set(own) | set(every))
    head = f"{'entity':<{w}} {'pos':>5} {'neg':>5} {'TP':>5} {'FP':>4} {'FN':>4} {'precision':>9} {'recall':>7} {'precision(all)':>14}"
    print(head)
    print("-" * len(head))
    for entity in sorted(set(own) | set(every)):
        o, a = own.get(entity, pii_corpus.Score()), every.get(entity, pii_corpus.Score())
        print(f"{entity:<{w}} {positives[entity]:>5} {negatives[entity]:>5} {o.tp:>5} {o.fp:>4} {o.fn:>4} "
              f"{o.precision:>9.3f} {o.recall:>7.3f} {a.precision:>14.3f}")
    kinds = Counter((s.entity, s.kind) for s in corpus if not s.positive)
    print("\nnear-miss kinds:", ", ".join(f"{e}/{k}={n}" for (e, k), n in sorted(kinds.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
