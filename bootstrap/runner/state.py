"""The run's record on persist ({run}/state.json): status, attempts, the resolved commit.

It is what makes re-running the same cell continue the run: a finished run is reported as
finished, a stopped one resumes. Written atomically; a failing persist is logged, not fatal,
because losing a state update is better than killing a training that is making progress.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bootstrap.fsutil import atomic_write_json, read_json

log = logging.getLogger(__name__)

RUNNING, FINISHED, STOPPED, INTERRUPTED, FAILED = (
    "running",
    "finished",
    "stopped at time limit",
    "interrupted",
    "failed",
)
# run.stop_after ended the session: resumable like STOPPED, but it exits 0.
PAUSED = "stopped after run.stop_after"


@dataclass
class AttemptRecord:
    number: int
    started: float
    log: str
    resumed_from: str | None = None
    ended: float | None = None
    exit_code: int | None = None


@dataclass
class RunState:
    name: str
    status: str = "new"
    commit: str | None = None
    attempts: list[AttemptRecord] = field(default_factory=list)
    updated: float = 0.0

    @classmethod
    def load(cls, path: Path, name: str) -> RunState:
        raw = read_json(path)
        if not isinstance(raw, dict):
            return cls(name=name)
        attempts = [AttemptRecord(**a) for a in raw.get("attempts", []) if isinstance(a, dict)]
        return cls(
            name=name,
            status=str(raw.get("status", "new")),
            commit=raw.get("commit"),
            attempts=attempts,
            updated=float(raw.get("updated", 0.0)),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: Path) -> None:
        self.updated = time.time()
        try:
            atomic_write_json(path, self.to_json())
        except OSError as exc:
            log.warning("could not record the run state in %s (%s)", path, exc)
