"""The operator's log lines carry a timestamp, the level and the object on every line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any, cast

import kopf
import pytest

from modeltrust.operator import handlers, logs
from modeltrust.operator.deps import Deps

pytestmark = pytest.mark.unit

_SCRIPT = """
import asyncio, logging, sys
from modeltrust.operator import logs
logs.configure(sys.argv[1], verbose=False)
log = logging.getLogger("modeltrust.operator.reverify")

async def handler():
    with logs.about("team-a", "resnet"):
        log.warning("could not re-verify: ledger at http://l did not answer")
        async def task():
            log.info("in a task too")
        await asyncio.gather(task())
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")

asyncio.run(handler())
kopf_ref = {"k8s_ref": {"namespace": "b", "name": "m"}}
logging.LoggerAdapter(logging.getLogger("kopf.objects"), kopf_ref).info("kopf says")
log.info("about no object")
"""


def _run(fmt: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT, fmt], capture_output=True, text=True, timeout=60, check=True
    )
    return out.stderr.splitlines()


def test_plain_lines_have_time_level_and_object_on_every_line() -> None:
    lines = _run("plain")
    line = re.compile(
        r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO|WARNING|ERROR) \[(?P<obj>[^\]]+)\] "
    )
    objects = []
    for text in lines:
        m = line.match(text)
        assert m, text
        objects.append(m["obj"])
    assert objects[:2] == ["team-a/resnet", "team-a/resnet"]
    assert lines[0].endswith(
        "modeltrust.operator.reverify: could not re-verify: ledger at http://l did not answer"
    )
    # The traceback's lines are the failing object's lines too.
    traceback = [t for t in lines if "| " in t]
    assert traceback
    assert all("[team-a/resnet] | " in t for t in traceback)
    assert any("ValueError: boom" in t for t in traceback)
    assert "[b/m] kopf.objects: kopf says" in lines[-2]
    assert "[-] modeltrust.operator.reverify: about no object" in lines[-1]


def test_json_lines_name_the_object() -> None:
    docs = [json.loads(t) for t in _run("json")]
    assert docs[0]["object"] == {"namespace": "team-a", "name": "resnet"}
    assert docs[0]["message"].startswith("could not re-verify")
    assert all("timestamp" in d and "severity" in d for d in docs)
    assert docs[-2]["object"] == {"namespace": "b", "name": "m"}
    assert "object" not in docs[-1]


async def test_every_object_handler_names_its_object(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []

    async def record(*args: Any, **kwargs: Any) -> None:
        seen.append(logs._OBJECT.get())

    for name in ("reconcile", "recheck", "audit_deletion", "on_pod_change", "on_policy_event"):
        monkeypatch.setattr(handlers, name, record)
    monkeypatch.setattr(handlers, "handle_policy", record)
    monkeypatch.setattr(handlers, "_deps", lambda memo: None)
    monkeypatch.setattr(handlers, "_config", lambda memo: None)
    body = kopf.Body({"metadata": {"namespace": "ns", "name": "md", "uid": "u"}})
    memo: Any = kopf.Memo(deps=Deps.__new__(Deps))
    await handlers.model_deployment_changed(body=body, retry=0, memo=memo)
    await handlers.periodic_reverify(body=body, memo=memo, policies={})
    await handlers.model_deployment_deleted(body=body, retry=0, memo=memo)
    await handlers.owned_pod_event(body=body, memo=memo)
    policy = kopf.Body({"metadata": {"name": "default"}})
    event = cast(kopf.RawEvent, {"type": "MODIFIED", "object": dict(policy)})
    await handlers.policy_event(event=event, body=policy, memo=memo)
    md = {"namespace": "ns", "name": "md"}
    policy_ref = {"namespace": "", "name": "default"}
    assert seen == [md, md, md, md, policy_ref, policy_ref]  # on_policy_event, handle_policy
    assert logs._OBJECT.get() is None
