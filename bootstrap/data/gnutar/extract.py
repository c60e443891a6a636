"""The fast tar path: GNU tar writes the files, fed only members that we validated first.

Why. Python's tarfile is ~7x slower than GNU tar on many small files (per-member Python work
and the ``data`` filter's ``realpath`` calls). The manual way (copy the archive, then ``tar
-xf``) reads the archive twice; this path reads the source once, as a stream, so it can beat it.

How. One pass over the source: the caller's ``SourceReader`` (sha256 and progress on the source
bytes) is read, for gzip, by an ``Inflater`` thread (zlib drops the GIL: 40% less CPU than the
gzip program, and no pipe hop), and for bzip2 and xz by a feeder thread that fills a decompressor
process (``lbzip2``/``pbzip2``/``bzip2``, ``xz``). The main thread reads the plain tar stream, and
``TarRewriter`` (``rewriter`` beside this) checks each member with ``MemberGuard`` and only then
writes it to ``tar -x -f -`` with a header rebuilt from the validated values; with spare cores,
to one of several such tars (``writer_count``). Decompression, validation and file creation run
at once. Measured (tests/bench_staging.py, README): big files stage faster than cp + ``tar
-xf``; 20,000 small files cost about the same, because on 2 vCPUs the Python work per member
(~7 us) and the kernel's file creation (most of tar's time) share the two cores.

A full disk (ENOSPC, EDQUOT, EFBIG, tar's short writes, or tar killed by SIGXFSZ under a file
size limit) becomes an ``OSError`` with that errno, which ``bootstrap.data.stage`` reports as such;
tar's log is watched while streaming because GNU tar would otherwise read on to the end.

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
import errno
import fcntl
import functools
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from bootstrap.data.extract import BUFSIZE, ExtractStats, Readable, corrupt
from bootstrap.data.gnutar.inflate import Inflater, quick_thread_switches
from bootstrap.data.gnutar.rewriter import CorruptTar, NeedsFallback, TarRewriter
from bootstrap.errors import DataError
from bootstrap.host import usable_cpus

__all__ = ["NeedsFallback", "TarTools", "extract_tar_gnu", "tools_for"]

_DECOMPRESSORS = {  # gzip is inflated in-process (inflate.Inflater): faster than both
    "tar.bz2": ("lbzip2", "pbzip2", "bzip2"),
    "tar.xz": ("xz",),
}
log = logging.getLogger(__name__)

_PIPE_SIZE = 1024 * 1024
_C_LOCALE = {"LC_ALL": "C", "LANGUAGE": ""}
_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_SHORT_WRITE = re.compile(r": Wrote only \d+ of \d+ bytes$")


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


class _Feeder(threading.Thread):
    """Copies the source into the decompressor; keeps reading (for the sha256) if it quits."""

    def __init__(self, reader: Readable, out: IO[bytes]):
        super().__init__(name="bootstrap-tar-feeder", daemon=True)
        self.reader, self.out = reader, out
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        out: IO[bytes] | None = self.out
        try:
            while not self.stop.is_set():
                chunk = self.reader.read(BUFSIZE)
                if not chunk:
                    break
                if out is not None:
                    try:
                        out.write(chunk)
                    except (BrokenPipeError, ValueError):
                        out = None  # it ended or was killed; the main thread tells which
        except BaseException as exc:  # re-raised in the main thread, KeyboardInterrupt too
            self.error = exc
        finally:
            with contextlib.suppress(OSError, ValueError):
                self.out.close()

    def reraise(self) -> None:
        self.join()
        if self.error is not None:
            raise self.error


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
    # No --no-overwrite-dir: a folder that another tar made first still gets its own mode.
    command = [tools.tar, "-x", "-f", "-", "-b", "2048", "-B", "-C", str(dest), "-p",
               "--no-same-owner"]  # fmt: skip
    procs: list[subprocess.Popen[bytes]] = []
    feeder: _Feeder | None = None
    unz: subprocess.Popen[bytes] | None = None
    inflater: Inflater | None = None
    with contextlib.ExitStack() as stack:
        tar_logs = [stack.enter_context(tempfile.TemporaryFile()) for _ in range(writer_count())]
        unz_log = stack.enter_context(tempfile.TemporaryFile())
        stack.enter_context(quick_thread_switches())  # the inflater or feeder thread beside us
        try:
            # C locale: tar's messages are matched below ("No space left on device").
            tars = [_start(procs, command, log, stdout=subprocess.DEVNULL, env=_C_LOCALE)
                    for log in tar_logs]  # fmt: skip
            inputs = [_TarInput(tar, log) for tar, log in zip(tars, tar_logs, strict=True)]
            read = reader.read
            if tools.inflate:
                inflater = Inflater(reader)
                inflater.start()
                read = inflater.read
            elif tools.decompress:
                unz = _start(procs, list(tools.decompress), unz_log, stdout=subprocess.PIPE)
                assert unz.stdin is not None and unz.stdout is not None
                feeder = _Feeder(reader, unz.stdin)
                feeder.start()
                read = unz.stdout.read
            rewriter = TarRewriter(
                read,
                [tar_input.write for tar_input in inputs],
                name,
                functools.partial(_make_folder, dest),
            )
            try:
                rewriter.run()
                for tar_input in inputs:
                    tar_input.close()
            except CorruptTar as exc:
                if feeder:
                    feeder.stop.set()
                    feeder.reraise()  # a source read error or an interrupt explains it better
                detail = _last_line(unz_log) if tools.decompress else ""
                if inflater:
                    inflater.stop.set()
                    detail = _inflated(inflater) or ""
                raise corrupt(
                    name, CorruptTar(f"{exc}{f' ({detail})' if detail else ''}")
                ) from None
            except BrokenPipeError:
                broken = next((tar_input for tar_input in inputs if tar_input.broken), inputs[0])
                raise _tar_failed(name, broken.log, broken.tar.wait()) from None
            if feeder:
                while read(BUFSIZE):  # the rest of the decompressed stream: padding, junk
                    pass
                feeder.reraise()
                assert unz is not None  # a feeder feeds the decompressor
                if unz.wait() not in (0, 2):  # gzip's 2: a warning, e.g. trailing junk
                    raise corrupt(name, CorruptTar(_last_line(unz_log) or "decompression failed"))
            if inflater:
                while read(BUFSIZE):  # the rest: padding, and the gzip trailer's CRC check
                    pass
                problem = _inflated(inflater)
                if problem:
                    raise corrupt(name, CorruptTar(problem))
            failed = [tar_input for tar_input in inputs if tar_input.tar.wait() != 0]
            if failed:  # a full disk first: another tar may only have been cut short by it
                failed.sort(key=lambda tar_input: _space_error(_log_text(tar_input.log)) is None)
                raise _tar_failed(name, failed[0].log, failed[0].tar.returncode)
            _set_folder_times(dest, rewriter.folder_times)
            rewriter.guard.finish()
            return rewriter.stats
        finally:
            for thread in (feeder, inflater):
                if thread:
                    thread.stop.set()
            _stop(procs)
            for thread in (feeder, inflater):
                if thread:
                    thread.join()


def _inflated(inflater: Inflater) -> str | None:
    """Wait for the inflating thread; re-raise a source read error, else say what was corrupt."""
    inflater.join()
    if inflater.error is not None:
        raise inflater.error
    return inflater.corrupt


def _start(
    procs: list[subprocess.Popen[bytes]],
    command: list[str],
    log: IO[bytes],
    stdout: Any,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=stdout, stderr=log, env=_environ(env)
    )
    procs.append(proc)
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None and hasattr(fcntl, "F_SETPIPE_SZ"):
            with contextlib.suppress(OSError):  # fewer wake-ups; the default 64 KiB also works
                fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
    return proc


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
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


class _TarInput:
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
            full = _space_error(_log_text(self.log))
            if full is not None:
                raise full

    def close(self) -> None:
        try:
            self._pipe.close()
        except BrokenPipeError:
            self.broken = True
            raise


def _log_text(log: IO[bytes]) -> str:
    # pread: tar shares this file's offset, so seeking it while tar runs would misplace its writes.
    fd = log.fileno()
    return os.pread(fd, os.fstat(fd).st_size, 0).decode("utf-8", "replace")


def _last_line(log: IO[bytes]) -> str:
    lines = _log_text(log).strip().splitlines()
    return lines[-1][:300] if lines else ""


def _first_error(log: IO[bytes]) -> str:
    """tar's first complaint: its last line only says that there were some."""
    lines = [line for line in _log_text(log).strip().splitlines() if line.strip()]
    told = [line for line in lines if not line.endswith("due to previous errors")]
    return (told or lines or [""])[0][:300]


def _space_error(text: str) -> OSError | None:
    """tar's report of a full disk (C locale) as the OSError it met, or None."""
    for line in text.splitlines():
        number = next((n for n in _SPACE_ERRNOS if line.endswith(os.strerror(n))), None)
        if number is None and _SHORT_WRITE.search(line):
            number = errno.ENOSPC  # the write that filled the disk returned short, no errno
        if number is not None:
            log.debug("GNU tar: %s", line)
            return OSError(number, os.strerror(number))
    return None


def _tar_failed(name: str, tar_log: IO[bytes], returncode: int) -> Exception:
    """Why tar stopped: an OSError for a full disk (the caller says so plainly), else DataError."""
    if returncode == -signal.SIGXFSZ:  # subprocess restores SIGXFSZ's default for tar: death
        log.debug("GNU tar was killed by SIGXFSZ: a file passed the file size limit")
        return OSError(errno.EFBIG, os.strerror(errno.EFBIG))
    full = _space_error(_log_text(tar_log))
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
