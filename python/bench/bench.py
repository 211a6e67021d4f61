"""Times the binding against a faithful pure-Python copy of the original
host's CallState, alternately in one process, and prints medians of the
per-round ratios (binding time / original time):

    py-ratio-summary: append=<x> all_notes=<x> append_4threads=<x> log_event=<x>
    py-ratio-extra: all_notes_poll=<x>

`all_notes` re-reads a call nothing is appended to (the binding returns its
cached string); `all_notes_poll` appends one note before each read, so the
call's notes view renders the new note, drops the overwritten one, and the
binding copies the whole text into a new Python string.

Run through `python/run-tests --bench`. Threads outnumber cores on 2-core
machines in the 4-thread case.
"""

import statistics
import threading
import time
from datetime import datetime
from enum import Enum

import callring

ROUNDS = 7
NOTE = "caller confirmed the payment plan and asked for a written summary by email"


class EventType(Enum):
    TOOL_INVOKED = "tool_invoked"


class OriginalCallState:
    """The original: lists under a threading.Lock, trimmed by slicing (a copy)
    on every append once full, a strftime per note, the lock held while
    joining."""

    MAX_NOTES = 1000
    MAX_AUDIT_LOG = 500

    def __init__(self, call_id):
        self.call_id = call_id
        self.notes = []
        self.audit_log = []
        self._lock = threading.Lock()

    def append_call_notes(self, note):
        with self._lock:
            timestamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
            self.notes.append(f"[{timestamp}] {note}")
            if len(self.notes) > self.MAX_NOTES:
                self.notes = self.notes[-self.MAX_NOTES:]

    def get_all_notes(self):
        with self._lock:
            return "\n".join(self.notes)

    def log_event(self, event_type, agent_id=None, **details):
        with self._lock:
            self.audit_log.append(
                {
                    "timestamp": datetime.now().isoformat(),
                    "event_type": event_type.value,
                    "agent_id": agent_id,
                    "details": details,
                }
            )
            if len(self.audit_log) > self.MAX_AUDIT_LOG:
                self.audit_log = self.audit_log[-self.MAX_AUDIT_LOG:]


def full(make):
    call = make()
    for i in range(1000):
        call.append_call_notes(f"{NOTE} {i}")
    for i in range(500):
        call.log_event(EventType.TOOL_INVOKED if isinstance(call, OriginalCallState)
                       else callring.AuditEventType.TOOL_INVOKED, agent_id="tools", i=i)
    return call


def timed(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def append(call):
    for i in range(20_000):
        call.append_call_notes(NOTE)


def all_notes(call):
    for _ in range(300):
        call.get_all_notes()


def all_notes_poll(call):
    """A supervisor re-reading after every new note: the cache never hits."""
    for i in range(300):
        call.append_call_notes(NOTE)
        call.get_all_notes()


def append_4threads(call):
    threads = [threading.Thread(target=append_n, args=(call, 5_000)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def append_n(call, n):
    for _ in range(n):
        call.append_call_notes(NOTE)


def log_event(call):
    kind = (EventType.TOOL_INVOKED if isinstance(call, OriginalCallState)
            else callring.AuditEventType.TOOL_INVOKED)
    for i in range(20_000):
        call.log_event(kind, agent_id="tools", tool="crm.lookup", i=i)


def main():
    cases = {
        "append": append,
        "all_notes": all_notes,
        "append_4threads": append_4threads,
        "log_event": log_event,
        "all_notes_poll": all_notes_poll,
    }
    ratios = {name: [] for name in cases}
    for _ in range(ROUNDS):
        for name, case in cases.items():
            original = full(lambda: OriginalCallState("bench"))
            binding = full(lambda: callring.CallState("bench"))
            a = timed(lambda: case(original))
            b = timed(lambda: case(binding))
            ratios[name].append(b / a)
    for name, rs in ratios.items():
        print(f"{name:16} median ratio {statistics.median(rs):.3f} (rounds: "
              + ", ".join(f"{r:.3f}" for r in rs) + ")")
    summary = ("append", "all_notes", "append_4threads", "log_event")
    print("py-ratio-summary: " + " ".join(
        f"{name}={statistics.median(ratios[name]):.3f}" for name in summary))
    print(f"py-ratio-extra: all_notes_poll={statistics.median(ratios['all_notes_poll']):.3f}")


if __name__ == "__main__":
    main()
