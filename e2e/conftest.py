"""pytest fixtures: real Envoy + tollgate + two demo upstreams on loopback (see harness.py).

* ``stack``: one stack for the whole session, for tests that only read (they clear the
  upstream recordings they look at, never change config or stop processes).
* ``make_stack``: a factory for fresh, function-scoped stacks (reload, fail-closed, UDS).

Binaries come from ``TOLLGATE_TARGET_DIR`` (default ``target/debug``).  A missing binary is an
error, not a skip: build with ``cargo build --workspace`` first.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

_active: list[harness.Stack] = []


def _start(workdir: Path, **kw: Any) -> harness.Stack:
    s = harness.Stack(workdir, **kw)
    _active.append(s)
    try:
        s.start()
    except harness.StackError as e:
        s.stop()
        pytest.fail(f"could not start the e2e stack: {e}", pytrace=False)
    except BaseException:
        s.stop()
        raise
    return s


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Stack]:
    s = _start(tmp_path_factory.mktemp("shared-stack"))
    yield s
    s.stop()
    _active.remove(s)


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[Callable[..., harness.Stack]]:
    made: list[harness.Stack] = []

    def make(**kw: Any) -> harness.Stack:
        s = _start(tmp_path / f"stack{len(made)}", **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()
        _active.remove(s)


@pytest.fixture
def client(stack: harness.Stack) -> Any:
    return stack.openai()


@pytest.fixture
def clean(stack: harness.Stack) -> harness.Stack:
    """The shared stack with both upstream recordings emptied."""
    stack.clear_upstreams()
    return stack


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and _active:
        for i, s in enumerate(_active):
            rep.sections.append((f"e2e stack {i} logs ({s.workdir})", s.tails(25)))
