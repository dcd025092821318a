#!/usr/bin/env python3
"""Installs LiteLLM proxy (pinned) into its own venv for `make bench`, after checking the wheel.

Never run by CI. The pin is 1.100.5 (installs from the registry here; 1.107.0 was reported
compromised and is refused outright). Checks before anything is installed:

* the downloaded wheel's SHA-256 is printed and, when `LITELLM_SHA256` is set, must match;
* every file in the wheel is listed in its RECORD with a matching hash (nothing slipped in);
* the wheel ships no ``.pth`` file (code run at every interpreter start) and no top-level
  package other than ``litellm``.

After installing the dependencies, every ``.pth`` file in the venv's site-packages is listed
and anything beyond the known ones (setuptools' ``distutils-precedence.pth``) stops the run.

    python3 bench/install_litellm.py --venv .venv-bench
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

VERSION = "1.100.5"
REFUSED = {"1.107.0"}
KNOWN_PTH = {"distutils-precedence.pth", "_virtualenv.pth"}


def check_wheel(whl: Path) -> None:
    digest = hashlib.sha256(whl.read_bytes()).hexdigest()
    print(f"{whl.name}: sha256 {digest}")
    want = os.environ.get("LITELLM_SHA256")
    if want and want != digest:
        raise SystemExit(f"sha256 mismatch: expected {want}")
    z = zipfile.ZipFile(whl)
    names = z.namelist()
    record = next(n for n in names if n.endswith(".dist-info/RECORD"))
    listed = set()
    for row in csv.reader(io.StringIO(z.read(record).decode())):
        if not row:
            continue
        listed.add(row[0])
        if not row[1]:
            continue
        algo, want_hash = row[1].split("=", 1)
        got = base64.urlsafe_b64encode(hashlib.new(algo, z.read(row[0])).digest()).rstrip(b"=").decode()
        if got != want_hash:
            raise SystemExit(f"RECORD hash mismatch for {row[0]}")
    unlisted = [n for n in names if n not in listed and not n.endswith("/")]
    if unlisted:
        raise SystemExit(f"files not in RECORD: {unlisted[:10]}")
    pth = [n for n in names if n.endswith(".pth")]
    if pth:
        raise SystemExit(f"wheel ships .pth files: {pth}")
    tops = {n.split("/", 1)[0] for n in names}
    odd = tops - {"litellm", f"litellm-{VERSION}.dist-info"}
    if odd:
        raise SystemExit(f"unexpected top-level entries: {sorted(odd)}")
    native = [n for n in names if n.endswith(".so")]
    print(f"RECORD: {len(listed)} entries, all hashes match; no .pth; native modules: {native}")


def check_venv(venv: Path) -> None:
    site = next(venv.glob("lib/python3*/site-packages"))
    pth = sorted(p.name for p in site.glob("*.pth"))
    print(f"site-packages .pth files: {pth or 'none'}")
    odd = [p for p in pth if p not in KNOWN_PTH]
    if odd:
        raise SystemExit(f"unexpected .pth files after install: {odd} (inspect {site})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--venv", default=".venv-bench")
    ap.add_argument("--version", default=VERSION)
    args = ap.parse_args()
    if args.version in REFUSED:
        raise SystemExit(f"litellm {args.version} was reported compromised: refusing")
    venv = Path(args.venv)
    marker = venv / f".litellm-{args.version}"
    if marker.exists():
        print(f"{venv}: litellm {args.version} already installed and checked")
        return 0
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--disable-pip-version-check", "--only-binary=:all:",
                        f"litellm=={args.version}", "-d", d], check=True)
        whl = next(Path(d).glob("litellm-*.whl"))
        check_wheel(whl)
        if not (venv / "bin" / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "--quiet"]
        # The checked wheel file itself, with the proxy extra's dependencies from the index.
        subprocess.run(pip + ["install", f"{whl}[proxy]"], check=True)
    check_venv(venv)
    marker.write_text("checked\n")
    print(f"{venv}: litellm {args.version} installed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
