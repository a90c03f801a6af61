"""requirements/runtime.txt, the image's hash-locked dependencies (hack/lock-runtime.sh):
every package pinned with hashes, at the dev lock's version, and exactly the packages the
four components need with every CLI extra; the Dockerfile installs from it with hashes."""

from __future__ import annotations

import re
from importlib.metadata import distribution
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "requirements" / "runtime.txt"
CLI_EXTRAS = ("ledger", "operator", "serving", "postgres")  # what requirements/runtime.in installs


def locked() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes), from the lock's requirement blocks."""
    text = re.sub(r"\\\n\s*", " ", LOCK.read_text())  # join continued lines
    pins: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        head, *options = line.split()
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([^\s;]+)", head)
        assert match, f"not an exact pin: {line[:80]}"
        hashes = [o.removeprefix("--hash=") for o in options if o.startswith("--hash=sha256:")]
        assert hashes, f"{head}: no --hash"
        assert len(hashes) == len(options), f"{head}: options other than hashes"
        pins[canonicalize_name(match.group(1))] = (match.group(2), hashes)
    return pins


def constraints() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (REPO / "requirements" / "constraints.txt").read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep and not line.startswith("#"):
            pins[canonicalize_name(name)] = version.strip()
    return pins


def needed() -> set[str]:
    """Third-party distributions the four components require (CLI with its extras), walked
    through the installed metadata of this environment (make install)."""
    todo: list[tuple[str, frozenset[str]]] = [("modeltrust-cli", frozenset(CLI_EXTRAS))]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        for text in distribution(name).requires or []:
            req = Requirement(text)
            if req.marker is not None and not any(
                req.marker.evaluate({"extra": e}) for e in (extras or {""})
            ):
                continue
            todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    return {name for name, _ in seen if not name.startswith("modeltrust-")}


def test_every_package_is_pinned_with_sha256_hashes() -> None:
    pins = locked()
    assert len(pins) > 20
    assert not [n for n in pins if n.startswith("modeltrust-")], "components are built, not locked"
    assert "file://" not in LOCK.read_text()


def test_the_lock_has_the_dev_lock_versions() -> None:
    dev = constraints()
    differ = {n: (v, dev[n]) for n, (v, _) in locked().items() if n in dev and dev[n] != v}
    assert not differ, f"runtime.txt and constraints.txt disagree (run make lock-runtime): {differ}"


def test_the_lock_holds_exactly_what_the_components_need() -> None:
    pins, need = set(locked()), needed()
    assert need - pins == set(), "missing from the lock (make lock-runtime)"
    assert pins - need == set(), "locked but needed by nothing (make lock-runtime)"


def test_the_dockerfile_installs_the_lock_with_hashes() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert "COPY requirements/runtime.txt requirements/runtime.txt" in text
    download = re.search(r"pip download [^\n]*", text)
    assert download, "the builder downloads the locked wheels"
    assert "--require-hashes" in download.group(0)
    assert "-r requirements/runtime.txt" in download.group(0)
    install = re.search(r"pip install --no-index [^\n]*-r \"\$WHEELS/runtime.txt\"", text)
    assert install, "the runtime installs the lock"
    assert "--require-hashes" in install.group(0)
    assert "constraints.txt" not in text, "the image uses the runtime lock, not the dev lock"
