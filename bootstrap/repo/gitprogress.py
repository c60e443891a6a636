"""GitPython's transfer progress shown through a ``ProgressFactory``, one bar per stage."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from bootstrap.progress import ProgressBar, ProgressFactory


@contextlib.contextmanager
def git_progress(factory: ProgressFactory, label: str) -> Iterator[Any]:
    """A GitPython RemoteProgress that opens one ``factory`` bar per stage of the transfer."""
    from git import GitCommandError, RemoteProgress

    rp = RemoteProgress
    stages = {
        rp.COUNTING: "counting objects", rp.COMPRESSING: "compressing objects",
        rp.RECEIVING: "receiving objects", rp.RESOLVING: "resolving deltas",
        rp.WRITING: "writing objects", rp.FINDING_SOURCES: "finding sources",
        rp.CHECKING_OUT: "checking out files",
    }  # fmt: skip

    class Bridge(RemoteProgress):
        bar: ProgressBar | None = None
        stage = -1
        done = 0

        def update(
            self, op_code: int, cur_count: Any, max_count: Any = None, message: str = ""
        ) -> None:
            stage = op_code & self.OP_MASK
            if stage != self.stage or self.bar is None:
                self.close()
                self.stage, self.done = stage, 0
                total = int(max_count) if max_count else None
                name = stages.get(stage, "working")
                self.bar = factory(f"{label}: {name}", total=total, unit="objects")
            count = int(cur_count or 0)
            if count > self.done:
                self.bar.advance(count - self.done)
                self.done = count
            if op_code & self.END:
                self.close()

        def close(self) -> None:
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    bridge = Bridge()
    try:
        yield bridge
    except GitCommandError as exc:
        # With progress on, GitPython reads git's stderr itself: give the error what git said.
        exc.stderr = exc.stderr or "\n".join(bridge.other_lines + bridge.error_lines)
        raise
    finally:
        bridge.close()
