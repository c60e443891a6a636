"""The child processes of the fast path: the GNU tar writers (each fed through a ``TarInput``) and
a decompressor; started with big pipes, and always stopped.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from bootstrap.data.gnutar.failures import log_text, space_error

_PIPE_SIZE = 1024 * 1024
_C_LOCALE = {"LC_ALL": "C", "LANGUAGE": ""}
# The archive's modes, never its owners: as root, tar would otherwise chown every file to
# whoever made the archive. (The benchmark's plain tar takes the same options.)
OWNERSHIP = ("-p", "--no-same-owner")


def start_writers(
    procs: list[subprocess.Popen[bytes]], program: str, dest: Path, logs: Sequence[IO[bytes]]
) -> list[TarInput]:
    """Start ``program`` (GNU tar) once per log, each extracting its stdin into ``dest``."""
    # No --no-overwrite-dir: a folder that another tar made first still gets its own mode.
    command = [program, "-x", "-f", "-", "-b", "2048", "-B", "-C", str(dest), *OWNERSHIP]
    # C locale: tar's messages are matched (failures.space_error: "No space left on device").
    tars = [start(procs, command, log, stdout=subprocess.DEVNULL, env=_C_LOCALE) for log in logs]
    return [TarInput(tar, log) for tar, log in zip(tars, logs, strict=True)]


def start(
    procs: list[subprocess.Popen[bytes]],
    command: list[str],
    log: IO[bytes],
    stdout: Any,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``command`` with its stdin a pipe and its stderr ``log``; added to ``procs``."""
    proc = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=stdout, stderr=log, env=_environ(env)
    )
    procs.append(proc)
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None and hasattr(fcntl, "F_SETPIPE_SZ"):
            with contextlib.suppress(OSError):  # fewer wake-ups; the default 64 KiB also works
                fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
    return proc


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    """Kill what still runs, close the pipes, and reap every process."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError, ValueError):
                    pipe.close()
        proc.wait()


def _environ(extra: dict[str, str] | None) -> dict[str, str] | None:
    return {**os.environ, **extra} if extra else None


class TarInput:
    """One tar's stdin. On a full disk GNU tar says so and reads on to the end of the archive,
    which may be gigabytes more from Drive; its log is looked at after each batch (a stat),
    so the stage stops at once instead."""

    def __init__(self, tar: subprocess.Popen[bytes], log: IO[bytes]):
        assert tar.stdin is not None
        self.tar, self.log = tar, log
        self._pipe = tar.stdin
        self._seen = 0
        self.broken = False  # this tar quit reading: it failed, and says why in its log

    def write(self, data: bytes) -> None:
        try:
            self._pipe.write(data)
        except BrokenPipeError:
            self.broken = True
            raise
        size = os.fstat(self.log.fileno()).st_size
        if size != self._seen:
            self._seen = size
            full = space_error(log_text(self.log))
            if full is not None:
                raise full

    def close(self) -> None:
        try:
            self._pipe.close()
        except BrokenPipeError:
            self.broken = True
            raise
