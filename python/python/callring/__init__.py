"""callring: the voice-agent host's ``CallState``, on lock-free rings.

A drop-in for the original host's ``CallState`` (``append_call_notes``,
``get_all_notes``, ``log_event``, ``MAX_NOTES = 1000``, ``MAX_AUDIT_LOG =
500``): appends never copy the list or take a lock, readers never block
appenders, memory stays bounded, and with an ``Archiver`` every audit event
is written through to a durable archive as it is logged.

    >>> import callring, tempfile
    >>> archive = callring.Archiver(tempfile.mkdtemp())
    >>> call = callring.CallState("call-1", archive=archive)
    >>> call.append_call_notes("caller asked about the invoice")
    >>> call.log_event(callring.AuditEventType.CONSENT_GIVEN, agent_id="speech", channel="voice")
    0
"""

from __future__ import annotations

import enum
import json
from typing import Any, Dict, List, Optional, Tuple, Union

from . import _callring
from ._callring import ArchiveFailure, CallEnded, Limits, NotArchived

__all__ = [
    "ArchiveFailure",
    "Archiver",
    "AuditEventType",
    "CallEnded",
    "CallRegistry",
    "CallState",
    "Limits",
    "NotArchived",
    "verify",
]

MAX_NOTES = 1000
MAX_AUDIT_LOG = 500


class AuditEventType(str, enum.Enum):
    """What happened; the values are the names stored in the archive."""

    CALL_STARTED = "call_started"
    CALL_ENDED = "call_ended"
    IDENTITY_VERIFIED = "identity_verified"
    IDENTITY_FAILED = "identity_failed"
    CONSENT_GIVEN = "consent_given"
    CONSENT_WITHDRAWN = "consent_withdrawn"
    DATA_ACCESSED = "data_accessed"
    PAYMENT_ARRANGED = "payment_arranged"
    ESCALATED = "escalated"
    TOOL_INVOKED = "tool_invoked"
    AGENT_HANDOFF = "agent_handoff"
    NOTE_EDITED = "note_edited"


def _type_name(event_type: Union[AuditEventType, str]) -> str:
    if isinstance(event_type, AuditEventType):
        return event_type.value
    if isinstance(event_type, str):
        return event_type
    raise TypeError(
        f"event_type must be an AuditEventType or str, not {type(event_type).__name__}"
    )


class Archiver:
    """The durable JSON Lines audit archive in ``dir`` (group commit: fsync
    every 1024 records or 20 ms). End calls first, then ``stop()``."""

    def __init__(self, dir: str, fsync_interval_ms: Optional[int] = None) -> None:
        self._inner = _callring.Archiver(str(dir), fsync_interval_ms)

    @property
    def dir(self) -> str:
        return self._inner.dir

    def flush(self, timeout: Optional[float] = None) -> None:
        """Waits until every event handed over so far is durable."""
        self._inner.flush(timeout)

    def durability(self) -> Tuple[int, int]:
        """``(handed_over, durable)``: the durable watermark."""
        return self._inner.durability()

    def stop(self) -> Dict[str, Any]:
        """Makes everything durable, stops the thread, returns its counters."""
        return json.loads(self._inner.stop())


class CallState:
    """One live call's notes and audit trail, shared by its agent threads."""

    MAX_NOTES = MAX_NOTES
    MAX_AUDIT_LOG = MAX_AUDIT_LOG

    def __init__(
        self,
        call_id: str,
        max_notes: int = MAX_NOTES,
        max_audit_log: int = MAX_AUDIT_LOG,
        archive: Optional[Archiver] = None,
        *,
        limits: Optional[Limits] = None,
        _inner: Any = None,
    ) -> None:
        if _inner is not None:
            self._inner = _inner
            return
        if limits is None:
            limits = Limits(max_notes, max_audit_log)
        self._inner = _callring.CallState(
            call_id, limits, archive._inner if archive is not None else None
        )

    @property
    def call_id(self) -> str:
        return self._inner.call_id

    @property
    def is_ended(self) -> bool:
        return self._inner.is_ended

    def append_call_notes(self, note: str) -> None:
        """Appends a note stamped with the current time (UTC)."""
        self._inner.append_call_notes(note)

    def get_all_notes(self) -> str:
        """All notes, oldest first: ``[%Y-%m-%d %H:%M:%S] note`` lines."""
        return self._inner.get_all_notes()

    def log_event(
        self,
        event_type: Union[AuditEventType, str],
        agent_id: Optional[str] = None,
        **details: Any,
    ) -> int:
        """Logs an audit event; returns its seq (0, 1, 2, ... no gaps). With
        an archive, the event is handed to it before this returns."""
        return self._inner.log_event(_type_name(event_type), agent_id, json.dumps(details))

    def log_event_durable(
        self,
        event_type: Union[AuditEventType, str],
        agent_id: Optional[str] = None,
        **details: Any,
    ) -> int:
        """``log_event``, then waits until the event is on disk."""
        return self._inner.log_event(
            _type_name(event_type), agent_id, json.dumps(details), True
        )

    def audit_events(self) -> List[Dict[str, Any]]:
        """The retained audit events (the newest ``max_audit_log``)."""
        return json.loads(self._inner.audit_events())

    def take_refused_audit(self) -> List[Dict[str, Any]]:
        """Events a stopped archive refused; each is returned once."""
        return json.loads(self._inner.take_refused_audit())

    def summarize(self) -> str:
        """The call's summary as YAML text."""
        return self._inner.summarize()

    def summary(self) -> Dict[str, Any]:
        """The call's summary as a dict."""
        return json.loads(self._inner.summary_json())

    def metrics(self) -> Dict[str, Any]:
        return json.loads(self._inner.metrics())

    def end(self) -> Dict[str, Any]:
        """Ends the call: later appends raise ``CallEnded``; the archive gets
        the closed record. A second ``end`` waits for the first."""
        return json.loads(self._inner.end())


class CallRegistry:
    """The live calls of a host, looked up from any thread without a lock."""

    def __init__(
        self, limits: Optional[Limits] = None, archive: Optional[Archiver] = None
    ) -> None:
        self._inner = _callring.CallRegistry(
            limits, archive._inner if archive is not None else None
        )

    def start(self, call_id: str, script_type: str = "default") -> CallState:
        return CallState(call_id, _inner=self._inner.start(call_id, script_type))

    def get(self, call_id: str) -> Optional[CallState]:
        inner = self._inner.get(call_id)
        return None if inner is None else CallState(call_id, _inner=inner)

    def end(self, call_id: str) -> Dict[str, Any]:
        """Ends a call: ``{"summary", "outcome", "refused_audit"}``."""
        summary, outcome, refused = self._inner.end(call_id)
        return {
            "summary": json.loads(summary),
            "outcome": json.loads(outcome),
            "refused_audit": json.loads(refused),
        }

    def live(self) -> List[str]:
        return self._inner.live()

    def __len__(self) -> int:
        return len(self._inner)


def verify(dir: str) -> Dict[str, Any]:
    """Verifies an archive: per call complete / open / incomplete / duplicated."""
    return json.loads(_callring.verify(str(dir)))
