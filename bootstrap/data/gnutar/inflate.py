"""Inflate a gzip stream in a thread of its own: ``Inflater``, and ``quick_thread_switches``.

Used by the GNU tar path (``decompress`` beside this): the inflater thread runs beside the thread
that parses the tar stream, as a gzip process would, without a pipe hop.
"""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
import zlib
from collections.abc import Iterator
from typing import Any

from bootstrap.data.extract import BUFSIZE, Readable

_INFLATED_PIECE = 2 * 1024 * 1024  # bytes of inflated output per piece
_INFLATED_QUEUE = 8  # pieces waiting to be read


@contextlib.contextmanager
def quick_thread_switches(interval: float = 0.0002) -> Iterator[None]:
    """Let a waiting thread take the GIL within ``interval`` instead of the default 5 ms.

    The Inflater (and a decompressor's feeder) drop the GIL while zlib works but must take it
    back between output blocks; at 5 ms they wait behind the tar-parsing thread most of the
    time (a gzip stream inflated 4x slower beside a busy thread; 1.3x at 0.2 ms).
    """
    old = sys.getswitchinterval()
    sys.setswitchinterval(interval)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


class Inflater(threading.Thread):
    """Inflates a gzip stream read from ``reader`` in this thread; another thread ``read``s it.

    zlib lets go of the GIL while it inflates, so this runs beside the tar parsing as a gzip
    process would, without a pipe hop, and CPython's zlib inflates faster than the gzip program.
    As gzip does, concatenated members read as one stream and bytes after the last member that
    start no new one are ignored; a truncated stream or a bad CRC is ``corrupt``. Output comes
    in pieces of at most 2 MiB, a few at a time, so a small bomb never fills the memory.
    """

    def __init__(self, reader: Readable):
        super().__init__(name="bootstrap-inflate", daemon=True)
        self._reader = reader
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=_INFLATED_QUEUE)
        self._ended = False
        self.stop = threading.Event()
        self.error: BaseException | None = None  # reading the source failed: re-raise it
        self.corrupt: str | None = None  # what was wrong with the gzip stream

    def read(self, size: int = -1, /) -> bytes:
        """The next piece of the inflated stream (any length), b"" at its end."""
        if self._ended:
            return b""
        piece = self._queue.get()
        if piece is None:
            self._ended = True
            return b""
        return piece

    def run(self) -> None:
        try:
            self._inflate()
        except BaseException as exc:  # re-raised in the reading thread
            self.error = exc
        finally:
            self._put(None)

    def _put(self, piece: bytes | None) -> None:
        while not self.stop.is_set():
            try:
                self._queue.put(piece, timeout=0.1)
                return
            except queue.Full:
                continue

    def _inflate(self) -> None:
        inflater: Any = zlib.decompressobj(31)  # None after the last member
        fresh, carry = True, b""  # at the start of a member; bytes that may start one
        while not self.stop.is_set():
            data = self._reader.read(BUFSIZE)
            if not data:
                break
            if inflater is None:
                continue  # trailing bytes: read for the sha256 only
            data, carry = carry + data if carry else data, b""
            while data:
                if fresh:
                    if len(data) < 2:
                        carry = data
                        break
                    if data[:2] != b"\x1f\x8b":
                        inflater = None  # not another member: ignored, as gzip does
                        break
                    fresh = False
                try:
                    out = inflater.decompress(data, _INFLATED_PIECE)
                except zlib.error as exc:
                    self.corrupt = f"gzip: {exc}"
                    return
                if out:
                    self._put(out)
                if inflater.eof:
                    data, inflater, fresh = inflater.unused_data, zlib.decompressobj(31), True
                else:
                    data = inflater.unconsumed_tail
        if inflater is not None and not fresh and not self.stop.is_set():
            try:
                out = inflater.flush()  # at most a few hundred bytes held back by max_length
            except zlib.error as exc:
                self.corrupt = f"gzip: {exc}"
                return
            if out:
                self._put(out)
            if not inflater.eof:
                self.corrupt = "gzip: unexpected end of file"
