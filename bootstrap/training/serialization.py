"""Serialisation: a checkpoint's bytes in torch.save's format, without the zip CRC32s, and
page-aligned on request. How the bytes then reach the disk is ``diskwrite``'s job.

Imported by training processes only (it imports torch).
"""

from __future__ import annotations

import functools
import inspect
import pickle
from typing import Any, BinaryIO

import torch

from bootstrap.training.diskwrite import PAGE


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
