"""State capture and file I/O behind Checkpointer.

RNG state in a form ``torch.load(weights_only=True)`` accepts, the reusable CPU buffers that
async saves copy into, and the serialiser (torch.save's format, without the zip CRC32s). How
the bytes then reach the disk is ``diskwrite``'s job.
Imported by training processes only (it imports torch).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import inspect
import logging
import mmap
import pickle
import random
import threading
from collections.abc import Mapping
from typing import Any, BinaryIO

import torch

from bootstrap.host import usable_cpus
from bootstrap.training.diskwrite import DIRECT_MIN, PAGE

log = logging.getLogger(__name__)


# -- RNG state, in a form torch.load(weights_only=True) accepts --------------------------------


def capture_rng() -> dict[str, Any]:
    state: dict[str, Any] = {"python": _python_rng_to_list(random.getstate())}
    with contextlib.suppress(ImportError):
        import numpy as np

        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64).copy()),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        }
    state["torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    if "python" in state:
        random.setstate(_python_rng_from_list(state["python"]))
    if "numpy" in state:
        with contextlib.suppress(ImportError):
            import numpy as np

            saved = state["numpy"]
            np.random.set_state(
                (
                    saved["kind"],
                    saved["keys"].numpy().astype(np.uint32),
                    saved["pos"],
                    saved["has_gauss"],
                    saved["cached_gaussian"],
                )
            )
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        saved_cuda = list(state["cuda"])
        count = torch.cuda.device_count()
        if len(saved_cuda) != count:
            log.warning(
                "checkpoint has CUDA RNG state for %d device(s), this machine has %d; "
                "restoring the ones that match",
                len(saved_cuda),
                count,
            )
        for index, rng in enumerate(saved_cuda[:count]):
            torch.cuda.set_rng_state(rng, index)


def _python_rng_to_list(state: tuple[Any, ...]) -> list[Any]:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _python_rng_from_list(state: list[Any]) -> tuple[Any, ...]:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


class GeneratorState:
    """Saves a ``torch.Generator`` (e.g. the one a DataLoader shuffles with) like a module."""

    def __init__(self, generator: torch.Generator):
        self.generator = generator

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.generator.set_state(state["state"])


def refuse_what_restore_cannot_load(value: Any, where: str) -> None:
    """Raise TypeError, naming the place, for NumPy values in a state to be saved.

    ``restore`` loads with ``torch.load(weights_only=True)``, which refuses NumPy scalars and
    arrays (the usual way a ``float(loss)`` that was not called ends up in a state): finding out
    at the first save beats a checkpoint that no resume can load. Other types torch refuses are
    reported by ``restore``, which names them.
    """
    if isinstance(value, torch.Tensor):
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            refuse_what_restore_cannot_load(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        if all(type(item) in _PLAIN for item in value):
            return  # e.g. an optimizer's param_groups "params": one int per parameter
        for index, item in enumerate(value):
            refuse_what_restore_cannot_load(item, f"{where}[{index}]")
    elif type(value).__module__.partition(".")[0] == "numpy" and not _numpy_allowed():
        kind = f"{type(value).__module__}.{type(value).__qualname__}"
        raise TypeError(
            f"cannot checkpoint {where}: it is a {kind}, which torch.load(weights_only=True) "
            "(what restore uses) refuses; store a plain value instead: float(x), int(x), "
            "x.tolist() or torch.from_numpy(x)"
        )


_PLAIN = frozenset({int, float, bool, str, type(None)})


def _numpy_allowed() -> bool:
    """Whether the user allowlisted NumPy for weights-only loads (add_safe_globals)."""
    safe: list[Any] = getattr(torch.serialization, "get_safe_globals", list)()
    return any(
        getattr(g[0] if isinstance(g, tuple) else g, "__module__", "").startswith("numpy")
        for g in safe
    )


# -- serialising: torch.save's file, without the zip CRC32s ----------------------------------


def serialize(obj: Any, file: BinaryIO, *, page_aligned: bool = False) -> None:
    """Write ``obj`` to ``file`` as ``torch.save`` does, but skip the zip's CRC32 of each record.

    The CRC32s cost as much CPU as the copy into the page cache (measured, 200 MB: 0.09 s
    each), and nothing we use reads them: ``torch.load`` does not check them (a flipped byte
    in a tensor loads silently with or without them). The bytes are exactly those of
    ``torch.save`` under ``torch.serialization.set_crc32_options(False)``, a documented torch
    setting; the files load with plain ``torch.load``, only ``unzip -t`` reports the zeroed
    CRCs. That setting is global, so flipping it here would also strip the CRCs from a
    ``torch.save`` the training makes on another thread meanwhile: we build torch's zip writer
    ourselves instead. Where this torch lacks those pieces, plain ``torch.save``.

    ``page_aligned`` starts each tensor's bytes at a multiple of 4096 in the file (torch pads
    the zip's local headers; 64 is its default), so that ``DirectWrites`` can send them with
    O_DIRECT. The file is then torch.save's under ``storage_alignment = 4096``.
    """
    if _crc_free_parts_present():
        alignment = getattr(torch.serialization, "_get_storage_alignment", None)
        if alignment is None:  # a torch whose zip writer takes no alignment
            extra: tuple[int, ...] = ()
        else:
            extra = (PAGE if page_aligned else alignment(),)
        try:
            writer = torch._C.PyTorchFileWriter(file, False, *extra)
        except TypeError:  # a torch whose zip writer always computes CRC32s
            writer = None
        if writer is not None:
            records = _AlignmentRecord(writer, extra[0]) if extra else writer
            torch.serialization._save(
                obj, records, pickle, torch.serialization.DEFAULT_PROTOCOL, False
            )
            writer.write_end_of_file()
            file.flush()
            return
    torch.save(obj, file)


class _AlignmentRecord:
    """torch's zip writer, but the file's ``.storage_alignment`` record tells the writer's own
    alignment. torch's ``_save`` writes that record from the global setting, not from the
    writer it is given; a loader that computes offsets from it (torch's
    ``config.load.calculate_storage_offsets``) would read wrong bytes from a page-aligned file
    that says 64. Setting the global instead would change a ``torch.save`` the training makes
    on another thread meanwhile."""

    def __init__(self, writer: Any, alignment: int):
        self._writer = writer
        self._alignment = str(alignment)

    def write_record(self, name: str, data: Any, size: int) -> None:
        if name == ".storage_alignment":
            data, size = self._alignment, len(self._alignment)
        self._writer.write_record(name, data, size)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._writer, name)


@functools.cache
def _crc_free_parts_present() -> bool:
    """torch.save's inner function and zip writer, in the shape torch 2.x has them."""
    inner = getattr(torch.serialization, "_save", None)
    if inner is None or not hasattr(torch._C, "PyTorchFileWriter"):
        return False
    try:
        parameters = tuple(inspect.signature(inner).parameters)
    except (TypeError, ValueError):
        return False
    return parameters == (
        "obj",
        "zip_file",
        "pickle_module",
        "pickle_protocol",
        "_disable_byteorder_record",
    )


# -- copying state off the accelerator for async saves -------------------------------------


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
