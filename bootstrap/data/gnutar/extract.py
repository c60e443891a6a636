"""The fast tar path: GNU tar writes the files, fed only members that we validated first.

This module is its entry point: ``tools_for`` (can it run here), ``writer_count`` (how many
tars) and ``extract_tar_gnu``, which starts the parts (listed in ``bootstrap.data.gnutar``),
feeds the validated members through them and maps what stops them to the error to report.

Why. Python's tarfile is ~7x slower than GNU tar on many small files (per-member Python work
and the ``data`` filter's ``realpath`` calls). The manual way (copy the archive, then ``tar
-xf``) reads the archive twice; this path reads the source once, as a stream, so it can beat it.

How. One pass over the source: the caller's ``SourceReader`` (sha256 and progress on the source
bytes) is read (``decompress``), for gzip, by an ``Inflater`` thread (zlib drops the GIL: 40%
less CPU than the gzip program, and no pipe hop), and for bzip2 and xz by a feeder thread that
fills a decompressor process (``lbzip2``/``pbzip2``/``bzip2``, ``xz``). The main thread reads the
plain tar stream, and ``TarRewriter`` (``rewriter``) checks each member with ``MemberGuard`` and
only then writes it to ``tar -x -f -`` (``processes``) with a header rebuilt from the validated
values; with spare cores, to one of several such tars (``writer_count``). Decompression,
validation and file creation run at once. Measured (tests/bench_staging.py, README): big files
stage faster than cp + ``tar -xf``; 20,000 small files cost about the same, because on 2 vCPUs
the Python work per member (~7 us) and the kernel's file creation (most of tar's time) share the
two cores.

A full disk (ENOSPC, EDQUOT, EFBIG, tar's short writes, or tar killed by SIGXFSZ under a file
size limit) becomes an ``OSError`` with that errno, which ``bootstrap.data.stage`` reports as such
(``failures``: every way this path stops, as the error to report).

Threat model. The archive is hostile; the work folder (``-C``, an empty private folder inside
the stage's work folder, see ``bootstrap.data.landing``) is ours. Nothing outside it may be written,
and nothing of a rejected archive may reach ``dest``. (1) Validate before write: GNU tar
receives a member only after the guard accepted it, so no absolute path, no ``..``, no path
through an earlier symlink, no link replacing a member, no hardlink to anything but an earlier
regular file, no symlink whose target leaves the folder lexically, no device or fifo ever reaches
it; a rejection stops the stream there and kills tar. (2) No parser differential: tar parses
only headers we wrote (GNU format, normalised names), never the archive's own. (3) Defence in
depth: GNU tar itself (1.34 here and on Colab) strips leading ``/``, skips ``..`` members and
creates symlinks with an absolute or ``..`` target only as placeholders until the end, and runs
with ``--no-same-owner`` (we are root on Colab); modes are those we wrote (``-p``): no setuid,
setgid, sticky or group/other write. (4) Symlinks that only escape through a chain of links are
caught by ``MemberGuard.finish`` after tar is done and before the caller merges; a failure of
any kind leaves the work folder to be removed, so ``dest`` never sees a rejected archive.
Where GNU tar or the decompressor is missing (``tools_for`` returns None), or an archive holds
GNU sparse files (``NeedsFallback``), the caller uses tarfile (``bootstrap.data.extract``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from bootstrap.data.extract import ExtractStats, Readable
from bootstrap.data.gnutar.decompress import Inflated, Piped, Stream
from bootstrap.data.gnutar.failures import corrupt_stream, tar_failed, tars_failed
from bootstrap.data.gnutar.headers import CorruptTar
from bootstrap.data.gnutar.inflate import quick_thread_switches
from bootstrap.data.gnutar.processes import TarInput, start_writers, stop_all
from bootstrap.data.gnutar.rewriter import TarRewriter
from bootstrap.host import usable_cpus

__all__ = ["TarTools", "extract_tar_gnu", "tools_for", "writer_count"]

_DECOMPRESSORS = {  # gzip is inflated in-process (inflate.Inflater): faster than both
    "tar.bz2": ("lbzip2", "pbzip2", "bzip2"),
    "tar.xz": ("xz",),
}


@dataclass(frozen=True)
class TarTools:
    tar: str
    decompress: tuple[str, ...] | None  # the command, or None for a plain tar
    inflate: bool = False  # gzip, inflated by zlib in a thread


def tools_for(kind: str) -> TarTools | None:
    """GNU tar and a decompressor for ``kind`` found on PATH, or None (use tarfile)."""
    return _tools(kind, os.environ.get("PATH", ""))


@functools.lru_cache(maxsize=16)
def _tools(kind: str, path: str) -> TarTools | None:
    tar = shutil.which("tar", path=path)
    if tar is None or not _is_gnu(tar):
        return None
    if kind in ("tar", "tar.gz"):
        return TarTools(tar, None, inflate=kind == "tar.gz")
    for program in _DECOMPRESSORS.get(kind, ()):
        found = shutil.which(program, path=path)
        if found:
            return TarTools(tar, (found, "-d", "-c"))
    return None


@functools.lru_cache(maxsize=4)
def _is_gnu(tar: str) -> bool:
    try:
        out = subprocess.run([tar, "--version"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.stdout.startswith(b"tar (GNU tar)")


def writer_count() -> int:
    """How many GNU tar processes write the files: ``BOOTSTRAP_TAR_WRITERS``, else half the
    CPUs this process may use, 1 to 4.

    Creating many small files is the kernel's work, done on whichever core asks, so spare
    cores make it faster: two tars create 20,000 files in ~70% of the time one takes. But this
    process parses the stream (and inflates gzip) on one core of its own, and on 2 vCPUs a
    second tar only competed with it (tests/bench_staging.py --writers, README).
    """
    wanted = os.environ.get("BOOTSTRAP_TAR_WRITERS", "").strip()
    if wanted.isdigit() and int(wanted) > 0:
        return min(int(wanted), 16)
    return max(1, min(usable_cpus() // 2, 4))


def extract_tar_gnu(
    reader: Readable, kind: str, dest: Path, *, name: str, tools: TarTools
) -> ExtractStats:
    """Extract a tar of ``kind`` read from ``reader`` into the empty folder ``dest``.

    Reads the whole source for a compressed tar, and up to the end-of-archive block for a
    plain one (the caller drains the rest for the sha256). ``writer_count()`` GNU tar
    processes share the members; see ``TarRewriter``.
    """
    procs: list[subprocess.Popen[bytes]] = []  # the tars, then any decompressor
    stream: Stream | None = None
    with contextlib.ExitStack() as stack:
        tar_logs = [stack.enter_context(tempfile.TemporaryFile()) for _ in range(writer_count())]
        unz_log = stack.enter_context(tempfile.TemporaryFile())
        stack.enter_context(quick_thread_switches())  # the inflater or feeder thread beside us
        try:
            inputs = start_writers(procs, tools.tar, dest, tar_logs)
            stream = _open_stream(reader, tools, procs, unz_log)
            rewriter = TarRewriter(
                stream.read,
                [tar_input.write for tar_input in inputs],
                name,
                functools.partial(_make_folder, dest),
            )
            _feed(rewriter, stream, inputs, name)
            _finish(stream, inputs, name)
            _set_folder_times(dest, rewriter.folder_times)
            rewriter.guard.finish()
            return rewriter.stats
        finally:
            # Stopped before the processes are killed, joined after: a feeder may be blocked
            # writing to the decompressor until then.
            if stream is not None:
                stream.stop()
            stop_all(procs)
            if stream is not None:
                stream.join()


def _open_stream(
    reader: Readable, tools: TarTools, procs: list[subprocess.Popen[bytes]], log: IO[bytes]
) -> Stream:
    if tools.inflate:
        return Inflated(reader)
    if tools.decompress:
        return Piped(reader, tools.decompress, procs, log)
    return Stream(reader)


def _feed(rewriter: TarRewriter, stream: Stream, inputs: list[TarInput], name: str) -> None:
    """Pass every validated member on to the tars, then close their inputs; a corrupt stream,
    or a tar that quit reading, raises the error to report."""
    try:
        rewriter.run()
        for tar_input in inputs:
            tar_input.close()
    except CorruptTar as exc:
        raise corrupt_stream(name, exc, stream.why_corrupt()) from None
    except BrokenPipeError:
        broken = next((tar_input for tar_input in inputs if tar_input.broken), inputs[0])
        raise tar_failed(name, broken.log, broken.tar.wait()) from None


def _finish(stream: Stream, inputs: list[TarInput], name: str) -> None:
    """Check the rest of the compressed stream, then wait for the tars; raise what went wrong."""
    problem = stream.end()
    if problem:
        raise corrupt_stream(name, problem)
    failed = [tar_input for tar_input in inputs if tar_input.tar.wait() != 0]
    if failed:
        raise tars_failed(name, [(tar_input.log, tar_input.tar.returncode) for tar_input in failed])


def _make_folder(dest: Path, path: str) -> None:
    """Create a member's folder (a path the guard approved) ahead of the tars."""
    with contextlib.suppress(OSError):  # a file in the way: the tar that meets it says so
        os.makedirs(dest / path, exist_ok=True)


def _set_folder_times(dest: Path, times: dict[str, int]) -> None:
    """Give folders their mtimes from the archive once every writer is done with them."""
    for path, mtime in times.items():
        target = dest / path
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISDIR(target.lstat().st_mode):  # a later member may have replaced it
                os.utime(target, (mtime, mtime), follow_symlinks=False)
