#!/usr/bin/env python3
"""Installs the Portkey AI gateway (npm `@portkey-ai/gateway`, pinned) into its own directory
for `make bench`, and checks what was installed.

Never run by CI. The directory (default `.bench-portkey/`, git-ignored) gets a package.json
written here and the package-lock.json npm resolves from it. Checks:

* no package's install scripts run (`--ignore-scripts`): the gateway declares a
  `postinstall: patch-package`, which has nothing to apply in the published package (it ships
  no patches/ directory), and nothing else in the tree may run code at install time;
* the lock's sha512 integrity of the gateway and of the one pinned override must equal the
  values below (npm itself checks every other tarball against the lock it writes);
* the tree holds exactly the pinned versions, and the gateway's entry point exists.

Why an override: `@portkey-ai/gateway` 1.15.2 asks for `@hono/node-server ^1.3.3`, which npm
resolves to the newest 1.x; from 1.14 on, node-server's lightweight `Response` keeps the
*immutable* headers of the upstream `fetch` response when a body stream is wrapped, and the
gateway's `updateHeaders` (which appends `x-portkey-*` headers) then throws on every streamed
chat completion ("Something went wrong", 500). 1.13.8, the last release before that change,
streams correctly; non-streamed requests work with either.

    python3 bench/install_portkey.py --dir .bench-portkey
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

VERSION = "1.15.2"
OVERRIDES = {"@hono/node-server": "1.13.8"}
# sha512 integrity strings as npm records them in package-lock.json.
INTEGRITY = {
    "@portkey-ai/gateway": "sha512-OuwwQEJ0rnKQuPgaCqyMpP+X5Uly2h9EBDm5Lx/NYu9MXTzB/nKrKgjd8J3vPGeNpYoyxTzKSzTV2tGv8Dd+fg==",
    "@hono/node-server": "sha512-fsn8ucecsAXUoVxrUil0m13kOEq4mkX4/4QozCqmY+HpGfKl74OYSn8JcMA8GnG0ClfdRI4/ZSeG7zhFaVg+wg==",
}
ENTRY = Path("node_modules/@portkey-ai/gateway/build/start-server.js")


def entry_point(root: Path) -> Path:
    return root / ENTRY


def check_lock(root: Path) -> None:
    lock = json.loads((root / "package-lock.json").read_text())
    pkgs = lock.get("packages", {})
    want = {"@portkey-ai/gateway": VERSION, **OVERRIDES}
    for name, version in want.items():
        p = pkgs.get(f"node_modules/{name}")
        if p is None:
            raise SystemExit(f"{name} missing from the lock")
        if p.get("version") != version:
            raise SystemExit(f"{name}: lock has {p.get('version')}, pinned {version}")
        if p.get("integrity") != INTEGRITY[name]:
            raise SystemExit(f"{name}@{version}: integrity {p.get('integrity')} != pinned {INTEGRITY[name]}")
    # Any other copy of an overridden package (nested node_modules) would defeat the pin.
    for key, p in pkgs.items():
        for name, version in OVERRIDES.items():
            if key.endswith(f"node_modules/{name}") and p.get("version") != version:
                raise SystemExit(f"{key} is {p.get('version')}, pinned {version}")
    scripts = sorted(k for k, p in pkgs.items() if p.get("hasInstallScript"))
    print(f"lock: {len(pkgs) - 1} packages; integrity of {', '.join(want)} matches the pins; "
          f"packages declaring install scripts (not run): {scripts or 'none'}")
    if not entry_point(root).exists():
        raise SystemExit(f"{entry_point(root)} missing after install")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=".bench-portkey")
    args = ap.parse_args()
    root = Path(args.dir).resolve()
    marker = root / f".portkey-{VERSION}"
    if marker.exists():
        print(f"{root}: @portkey-ai/gateway {VERSION} already installed and checked")
        return 0
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise SystemExit("node and npm are needed (node 20 or newer)")
    node_major = int(subprocess.run(["node", "--version"], capture_output=True, text=True,
                                    check=True).stdout.strip().lstrip("v").split(".")[0])
    if node_major < 20:
        raise SystemExit(f"node {node_major} is too old: the gateway needs node 20 or newer")
    root.mkdir(parents=True, exist_ok=True)
    pkg = {"name": "tollgate-bench-portkey", "private": True, "description": "bench/install_portkey.py",
           "dependencies": {"@portkey-ai/gateway": VERSION}, "overrides": OVERRIDES}
    (root / "package.json").write_text(json.dumps(pkg, indent=2) + "\n")
    subprocess.run([npm, "install", "--ignore-scripts", "--no-audit", "--no-fund", "--save-exact",
                    "--loglevel", "error"], cwd=root, check=True)
    check_lock(root)
    marker.write_text("checked\n")
    print(f"{root}: @portkey-ai/gateway {VERSION} installed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
