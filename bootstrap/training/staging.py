"""Staging: the snapshot an async save takes, copied into reusable CPU buffers (pinned for
CUDA, page-aligned for big tensors) that a background writer then serialises.

Imported by training processes only (it imports torch).
"""

from __future__ import annotations

import ctypes
import mmap
import threading
from typing import Any

import torch

from bootstrap.host import usable_cpus
from bootstrap.training.diskwrite import DIRECT_MIN


class Staging:
    """Reusable CPU buffers that async saves copy the state into.

    The copy is the only part of an async save that the training waits for, so it is made
    cheap: buffers are kept from one save to the next (same key, shape and dtype), which saves
    allocating and faulting in fresh memory each time (that costs more than the copy), and
    contiguous CPU tensors are copied as plain memcpy chunks shared among a few threads. CUDA
    tensors go to pinned buffers, with one synchronisation at the end. Nobody may stage again
    while a writer still reads the buffers: ``Checkpointer.save`` waits for the writer first.
    """

    def __init__(self) -> None:
        self._buffers: dict[tuple[Any, ...], torch.Tensor] = {}
        self._fresh: dict[tuple[Any, ...], torch.Tensor] = {}
        # Tied weights are one storage in the live state; keep them one in the file too.
        self._seen: dict[tuple[Any, ...], torch.Tensor] = {}
        self._chunks: list[tuple[int, int, int]] = []
        self._cuda: set[torch.device] = set()

    def copy(self, value: Any) -> Any:
        """A copy of ``value`` whose tensors are CPU buffers owned by this object."""
        try:
            result = self._copy(value, ())
            _memcpy_chunks(self._chunks)
            for device in self._cuda:
                torch.cuda.synchronize(device)
            self._buffers = self._fresh  # buffers no longer in the state are freed here
        finally:
            self._fresh, self._seen, self._chunks, self._cuda = {}, {}, [], set()
        return result

    def release(self) -> None:
        self._buffers = {}

    def _copy(self, value: Any, key: tuple[Any, ...]) -> Any:
        if isinstance(value, torch.Tensor):
            return self._copy_tensor(value, key)
        if isinstance(value, dict):
            return type(value)((k, self._copy(v, (*key, k))) for k, v in value.items())
        if isinstance(value, (list, tuple)):
            # Python's RNG state alone is 625 ints: walking them one by one cost 0.3 ms a save.
            if not any(isinstance(v, _HOLDS_TENSORS) for v in value):
                return list(value) if isinstance(value, list) else tuple(value)
            items = (self._copy(v, (*key, i)) for i, v in enumerate(value))
            return list(items) if isinstance(value, list) else tuple(items)
        return value

    def _copy_tensor(self, tensor: torch.Tensor, key: tuple[Any, ...]) -> torch.Tensor:
        tensor = tensor.detach()
        plain = type(tensor) is torch.Tensor and tensor.layout == torch.strided
        if not plain or tensor.is_quantized or tensor.device.type not in ("cpu", "cuda"):
            return tensor.to("cpu", copy=True)  # rare kinds: a one-off copy, no buffer
        identity = (tensor.data_ptr(), tensor.device, tensor.dtype, tensor.shape, tensor.stride())
        if tensor.data_ptr() and identity in self._seen:
            return self._seen[identity]
        buffer = self._buffers.get(key)
        if buffer is None or buffer.shape != tensor.shape or buffer.dtype != tensor.dtype:
            buffer = _new_buffer(tensor)
        if _byte_copy_is_exact(buffer, tensor):
            # Copied later, all at once; the chunks keep a slow thread from delaying the end
            # by more than one chunk (torch's copy_ waits for its slowest intra-op thread).
            dst, src, size = buffer.data_ptr(), tensor.data_ptr(), tensor.nbytes
            self._chunks += [
                (dst + at, src + at, min(_CHUNK, size - at)) for at in range(0, size, _CHUNK)
            ]
        else:
            buffer.copy_(tensor, non_blocking=tensor.is_cuda)
            if tensor.is_cuda:
                self._cuda.add(tensor.device)
        self._fresh[key] = self._seen[identity] = buffer
        return buffer


def _new_buffer(tensor: torch.Tensor) -> torch.Tensor:
    """An empty CPU tensor like ``tensor``: pinned for a CUDA one (fast copies), page-aligned
    for a big CPU one, so that its bytes can go to the disk with O_DIRECT (``DirectWrites``).
    torch's own allocator aligns to 64 bytes only; an anonymous mmap starts on a page."""
    if tensor.is_cuda or tensor.nbytes < DIRECT_MIN:
        return torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=tensor.is_cuda)
    region = mmap.mmap(-1, tensor.nbytes)  # freed when the last tensor using it is
    # Bytes first, then the dtype: a view works for every dtype, frombuffer may not.
    return torch.frombuffer(region, dtype=torch.uint8).view(tensor.dtype).view(tensor.shape)


_HOLDS_TENSORS = (torch.Tensor, dict, list, tuple)
_CHUNK = 8 << 20
_MAX_COPY_THREADS = 4  # memory bandwidth, not cores, bounds a copy beyond a few threads


def _byte_copy_is_exact(buffer: torch.Tensor, tensor: torch.Tensor) -> bool:
    return (
        tensor.device.type == "cpu"
        and tensor.is_contiguous()
        and not tensor.is_conj()
        and not tensor.is_neg()
        and buffer.is_contiguous()
        and buffer.nbytes == tensor.nbytes
    )


def _memcpy_chunks(chunks: list[tuple[int, int, int]]) -> None:
    """memcpy every (dst, src, size) chunk, on this thread and a few helpers.

    ctypes calls release the GIL, so the helpers copy in parallel. Each thread takes the next
    chunk from a shared counter: a helper the OS does not schedule costs at most one chunk.
    As many threads as this process may use CPUs (up to 4), not torch's thread count: the
    training waits for this copy, so its cores are free meanwhile (with torch on 1 of 2 CPUs,
    201 MB took 39 ms on one thread and 20 ms on two).
    """
    threads = min(len(chunks), usable_cpus(), _MAX_COPY_THREADS)
    lock = threading.Lock()
    taken = 0

    def work() -> None:
        nonlocal taken
        while True:
            with lock:
                index, taken = taken, taken + 1
            if index >= len(chunks):
                return
            ctypes.memmove(*chunks[index])

    helpers = [threading.Thread(target=work, name="checkpoint-copy") for _ in range(threads - 1)]
    for helper in helpers:
        helper.start()
    work()
    for helper in helpers:
        helper.join()
