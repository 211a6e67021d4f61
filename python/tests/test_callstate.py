"""The original host's behaviours, through the binding."""

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import callring
from callring import AuditEventType, CallEnded, CallState, Limits

NOTE_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] (.*)$")


def texts(call):
    notes = call.get_all_notes()
    if not notes:
        return []
    out = []
    for line in notes.split("\n"):
        m = NOTE_LINE.match(line)
        assert m, f"badly formatted note line: {line!r}"
        out.append(m.group(1))
    return out


def test_1100_notes_keep_the_newest_1000_in_order():
    call = CallState("c")
    for i in range(1100):
        call.append_call_notes(f"note {i} ✓")
    assert texts(call) == [f"note {i} ✓" for i in range(100, 1100)]
    assert call.metrics()["notes"]["retained"] == 1000


def test_600_events_keep_500_and_write_all_600_through(tmp_path):
    archive = callring.Archiver(str(tmp_path))
    call = CallState("c", archive=archive)
    for i in range(600):
        seq = call.log_event(AuditEventType.TOOL_INVOKED, agent_id="tools", i=i, amount=i / 11)
        assert seq == i
    events = call.audit_events()
    assert [e["seq"] for e in events] == list(range(100, 600))
    assert events[-1]["details"] == {"i": 599, "amount": 599 / 11}
    assert events[-1]["event_type"] == "tool_invoked"
    outcome = call.end()
    assert outcome["closed_record"] and outcome["audit_refused"] == 0
    archive.stop()
    report = callring.verify(str(tmp_path))
    trail = report["calls"]["c"]
    assert (trail["status"], trail["events"], trail["issued"]) == ("complete", 600, 600)


def test_custom_event_types_and_durable_logging(tmp_path):
    archive = callring.Archiver(str(tmp_path))
    call = CallState("c", archive=archive)
    assert call.log_event_durable("refund_issued", agent_id=None, amount=12.5) == 0
    handed_over, durable = archive.durability()
    assert durable == handed_over == 1
    assert call.audit_events()[0]["event_type"] == "refund_issued"
    call.end()
    archive.stop()


def test_threads_append_while_readers_read():
    call = CallState("c", max_notes=5000, max_audit_log=5000)
    per_thread = 500
    stop = threading.Event()
    errors = []

    def agent(t):
        for i in range(per_thread):
            call.append_call_notes(f"agent {t} note {i} " + "x" * (i % 50))
            if i % 5 == 0:
                call.log_event(AuditEventType.DATA_ACCESSED, agent_id=f"agent-{t}", i=i)

    def reader():
        while not stop.is_set():
            try:
                for text in texts(call):
                    m = re.fullmatch(r"agent (\d) note (\d+) (x*)", text)
                    assert m and len(m.group(3)) == int(m.group(2)) % 50, text
                assert "notes" in call.summarize()
            except AssertionError as e:  # pragma: no cover - reported below
                errors.append(e)
                return

    r = threading.Thread(target=reader)
    r.start()
    agents = [threading.Thread(target=agent, args=(t,)) for t in range(8)]
    for a in agents:
        a.start()
    for a in agents:
        a.join()
    stop.set()
    r.join()
    assert not errors, errors[0]
    assert len(texts(call)) == 8 * per_thread
    m = call.metrics()
    assert m["notes"]["appended"] == 8 * per_thread
    assert m["audit_seqs_issued"] == 8 * per_thread // 5
    assert sorted(e["seq"] for e in call.audit_events()) == list(range(8 * per_thread // 5))


def test_bad_input_is_refused_with_clear_errors():
    call = CallState("c")
    with pytest.raises(TypeError, match="note must be str, not int"):
        call.append_call_notes(42)
    with pytest.raises(ValueError, match="longer than"):
        call.append_call_notes("x" * (10 << 20))
    with pytest.raises(ValueError):
        CallState("c", max_notes=0)
    with pytest.raises(TypeError):
        call.log_event(3.5)
    call.end()
    with pytest.raises(CallEnded, match="call c has ended"):
        call.append_call_notes("late")
    with pytest.raises(CallEnded):
        call.log_event(AuditEventType.CALL_ENDED)
    assert call.end() == {"ended": False}


@pytest.mark.parametrize("value", ["", "abc", "0", "-3", "1000001"])
def test_bad_env_limits_are_value_errors(monkeypatch, value):
    monkeypatch.setenv("CALLRING_MAX_NOTES", value)
    with pytest.raises(ValueError, match="CALLRING_MAX_NOTES"):
        Limits.from_env()


def test_env_limits_and_script_overrides(monkeypatch):
    monkeypatch.setenv("CALLRING_MAX_NOTES", "20")
    monkeypatch.setenv("CALLRING_MAX_AUDIT_LOG__COLLECTIONS", "7")
    limits = Limits.from_env("collections")
    assert (limits.max_notes, limits.max_audit_log) == (20, 7)
    call = CallState("c", limits=limits)
    for i in range(30):
        call.append_call_notes(str(i))
    assert texts(call) == [str(i) for i in range(10, 30)]


def test_a_stopped_archive_refuses_and_the_call_keeps_the_events(tmp_path):
    archive = callring.Archiver(str(tmp_path))
    registry = callring.CallRegistry(archive=archive)
    call = registry.start("c")
    call.log_event(AuditEventType.CALL_STARTED)
    archive.stop()  # the wrong order: before the call ends
    with pytest.raises(callring.NotArchived):
        call.log_event(AuditEventType.ESCALATED, agent_id="supervisor")
    ended = registry.end("c")
    assert [e["seq"] for e in ended["refused_audit"]] == [1]
    assert ended["outcome"]["closed_record"] is False
    assert len(registry) == 0


def test_summary_is_a_dict_and_yaml():
    call = CallState("call-7")
    call.append_call_notes("hello")
    call.log_event(AuditEventType.IDENTITY_VERIFIED, agent_id="speech", method="dob")
    s = call.summary()
    assert s["call_id"] == "call-7" and s["notes"]["retained"] == 1
    assert "identity_verified" in call.summarize()


def test_the_readme_example_runs():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Python", 1)[1]
    code = section.split("```python", 1)[1].split("```", 1)[0]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.environ.get("TMPDIR", "/tmp"))
