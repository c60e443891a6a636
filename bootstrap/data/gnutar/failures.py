"""What stopped the GNU tar fast path, as the error that the stage reports: tar's logs read here.

A full disk (ENOSPC, EDQUOT, EFBIG, tar's short writes, or tar killed by SIGXFSZ under a file
size limit) becomes an ``OSError`` with that errno, which ``bootstrap.data.stage`` reports as such;
another tar failure a ``DataError`` with tar's first complaint; a corrupt stream the ``corrupt``
error of ``bootstrap.data.extract``, with what the decompressor said about it. Tar's log is
also watched while streaming (``processes.TarInput``), because GNU tar would otherwise read on
to the end.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import signal
from typing import IO

from bootstrap.data.extract import corrupt
from bootstrap.data.gnutar.headers import CorruptTar
from bootstrap.errors import DataError

log = logging.getLogger(__name__)

_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_SHORT_WRITE = re.compile(r": Wrote only \d+ of \d+ bytes$")


def corrupt_stream(name: str, problem: object, detail: str = "") -> DataError:
    """The archive is corrupt: ``problem``, and what the decompressor said of it, if anything."""
    return corrupt(name, CorruptTar(f"{problem}{f' ({detail})' if detail else ''}"))


def tars_failed(name: str, failed: list[tuple[IO[bytes], int]]) -> Exception:
    """Why the tars in ``failed`` (log, exit status) stopped; a full disk first: another tar may
    only have been cut short by it."""
    failed = sorted(failed, key=lambda tar: space_error(log_text(tar[0])) is None)
    return tar_failed(name, *failed[0])


def tar_failed(name: str, tar_log: IO[bytes], returncode: int) -> Exception:
    """Why tar stopped: an OSError for a full disk (the caller says so plainly), else DataError."""
    if returncode == -signal.SIGXFSZ:  # subprocess restores SIGXFSZ's default for tar: death
        log.debug("GNU tar was killed by SIGXFSZ: a file passed the file size limit")
        return OSError(errno.EFBIG, os.strerror(errno.EFBIG))
    full = space_error(log_text(tar_log))
    if full is not None:
        return full
    why = _first_error(tar_log)
    if not why and returncode < 0:
        with contextlib.suppress(ValueError):
            why = f"tar was killed by {signal.Signals(-returncode).name}"
    return DataError(
        f"extracting {name} failed: {why or 'tar stopped with an error'}",
        hint="check the free space on scratch and that the archive is not damaged; then run again",
    )


def space_error(text: str) -> OSError | None:
    """tar's report of a full disk (C locale) as the OSError it met, or None."""
    for line in text.splitlines():
        number = next((n for n in _SPACE_ERRNOS if line.endswith(os.strerror(n))), None)
        if number is None and _SHORT_WRITE.search(line):
            number = errno.ENOSPC  # the write that filled the disk returned short, no errno
        if number is not None:
            log.debug("GNU tar: %s", line)
            return OSError(number, os.strerror(number))
    return None


def log_text(log_file: IO[bytes]) -> str:
    # pread: tar shares this file's offset, so seeking it while tar runs would misplace its writes.
    fd = log_file.fileno()
    return os.pread(fd, os.fstat(fd).st_size, 0).decode("utf-8", "replace")


def last_line(log_file: IO[bytes]) -> str:
    lines = log_text(log_file).strip().splitlines()
    return lines[-1][:300] if lines else ""


def _first_error(log_file: IO[bytes]) -> str:
    """tar's first complaint: its last line only says that there were some."""
    lines = [line for line in log_text(log_file).strip().splitlines() if line.strip()]
    told = [line for line in lines if not line.endswith("due to previous errors")]
    return (told or lines or [""])[0][:300]
