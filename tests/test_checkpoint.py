"""Checkpointer on CPU with real torch: round trips, RNG, retention, torn files, async saves."""

from __future__ import annotations

import io
import logging
import os
import random
import signal
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bootstrap.training import diskwrite, serialization
from bootstrap.training.checkpoint import Checkpointer, list_generations


def _model_and_optimizer(seed: int = 0) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    return model, torch.optim.Adam(model.parameters(), lr=0.01)


def _train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    optimizer.zero_grad()
    model(torch.randn(16, 4)).pow(2).mean().backward()
    optimizer.step()


def test_round_trip_restores_objects_rng_and_step(tmp_path: Path) -> None:
    model, optimizer = _model_and_optimizer()
    _train_step(model, optimizer)
    ckpt = Checkpointer(tmp_path)
    random.seed(1)
    np.random.seed(2)
    ckpt.save(7, model=model, optimizer=optimizer)
    expected = (random.random(), float(np.random.rand()), torch.rand(3))

    fresh_model, fresh_optimizer = _model_and_optimizer(seed=99)
    random.seed(5)
    np.random.seed(5)
    assert ckpt.restore(model=fresh_model, optimizer=fresh_optimizer) == 8
    assert (random.random(), float(np.random.rand())) == expected[:2]
    assert torch.equal(torch.rand(3), expected[2])
    for a, b in zip(model.parameters(), fresh_model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert fresh_optimizer.state_dict()["state"][0]["step"] == 1


def test_files_load_with_plain_torch_load_weights_only(tmp_path: Path) -> None:
    model, _ = _model_and_optimizer()
    path = Checkpointer(tmp_path).save(3, model=model)
    assert path is not None
    payload = torch.load(path, weights_only=True)
    assert payload["step"] == 3 and payload["format"] == "colab-bootstrap/1"
    assert set(payload["objects"]["model"]) == set(model.state_dict())


def test_files_are_torch_save_bytes_without_the_crc32s(tmp_path: Path) -> None:
    # The writer skips the zip CRC32s (CPU nobody reads back) and must write nothing else
    # differently: the bytes are torch.save's under torch's own no-CRC setting.
    state = _Tensors({"big": torch.randn(3_000_000), "bf16": torch.randn(5).bfloat16()})
    ours = io.BytesIO()
    serialization.serialize({"objects": state.state_dict(), "step": 3}, ours)
    assert torch.serialization.get_crc32_options()  # the global setting was left alone
    try:
        torch.serialization.set_crc32_options(False)
        reference = io.BytesIO()
        torch.save({"objects": state.state_dict(), "step": 3}, reference)
    finally:
        torch.serialization.set_crc32_options(True)
    assert ours.getvalue() == reference.getvalue()

    path = Checkpointer(tmp_path).save(3, state=state)
    assert path is not None
    with zipfile.ZipFile(path) as archive:  # the Checkpointer writes this way on this torch
        assert {entry.CRC for entry in archive.infolist()} == {0}
    saved = torch.load(path, weights_only=True)["objects"]["state"]
    assert torch.equal(saved["big"], state.tensors["big"])


def test_async_saves_send_big_tensors_direct_in_torch_save_s_format(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Async saves lay tensors out on page boundaries and send the big ones with O_DIRECT; the
    # file is still torch.save's (under its own alignment and no-CRC settings), byte for byte.
    sent: list[int] = []
    write_direct = diskwrite.DirectWrites._write_direct

    def spy(self: diskwrite.DirectWrites, view: memoryview, offset: int) -> int:
        sent.append(write_direct(self, view, offset))
        return sent[-1]

    monkeypatch.setattr(diskwrite.DirectWrites, "_write_direct", spy)
    state = _Tensors({"big": torch.randn(1_000_003), "small": torch.arange(10)})
    ckpt = Checkpointer(tmp_path, async_save=True)
    path = ckpt.save(3, state=state)
    ckpt.close()
    assert path is not None
    payload = torch.load(path, weights_only=True)
    config = torch.utils.serialization.config.save
    alignment = config.storage_alignment
    try:
        torch.serialization.set_crc32_options(False)
        config.storage_alignment = 4096
        reference = io.BytesIO()
        torch.save(payload, reference)
    finally:
        torch.serialization.set_crc32_options(True)
        config.storage_alignment = alignment
    assert path.read_bytes() == reference.getvalue()
    # A loader that trusts the file's alignment record to find the tensors (mmap=True with
    # calculate_storage_offsets); torch's debug setting checks each offset it computes.
    monkeypatch.setenv("TORCH_SERIALIZATION_DEBUG", "1")
    offsets_from_alignment = torch.utils.serialization.config.load
    try:
        offsets_from_alignment.calculate_storage_offsets = True
        loaded = torch.load(path, weights_only=True, mmap=True)["objects"]["state"]
    finally:
        offsets_from_alignment.calculate_storage_offsets = False
    assert torch.equal(loaded["big"], state.tensors["big"])
    assert torch.equal(loaded["small"], torch.arange(10))
    with open(path, "rb") as probe:
        direct_fd = diskwrite._open_direct(probe)
    if direct_fd is None:
        pytest.skip(f"the file system under {tmp_path} refuses O_DIRECT: nothing went direct")
    os.close(direct_fd)
    assert sent == [4_000_012 - 4_000_012 % 4096]  # the big tensor's whole pages, nothing else


def test_a_torch_of_another_shape_gets_plain_torch_save(monkeypatch: pytest.MonkeyPatch) -> None:
    # As if a torch release changed the inner function we drive: we must not guess.
    inner = torch.serialization._save

    def reshaped(
        obj: Any,
        zip_file: Any,
        pickle_module: Any,
        pickle_protocol: int,
        _disable_byteorder_record: bool,
        new_option: bool = False,
    ) -> None:
        inner(obj, zip_file, pickle_module, pickle_protocol, _disable_byteorder_record)

    monkeypatch.setattr(torch.serialization, "_save", reshaped)
    serialization._crc_free_parts_present.cache_clear()
    try:
        target = io.BytesIO()
        serialization.serialize({"x": torch.arange(4)}, target)
    finally:
        monkeypatch.undo()
        serialization._crc_free_parts_present.cache_clear()
    target.seek(0)
    with zipfile.ZipFile(target) as archive:
        assert archive.testzip() is None  # torch.save's CRC32s are there and right
    target.seek(0)
    assert torch.equal(torch.load(target, weights_only=True)["x"], torch.arange(4))


def test_keeps_newest_generations_only(tmp_path: Path) -> None:
    model, _ = _model_and_optimizer()
    ckpt = Checkpointer(tmp_path, keep=2)
    for step in range(5):
        ckpt.save(step, model=model)
    assert [s for s, _ in list_generations(tmp_path)] == [4, 3]
    assert not list(tmp_path.glob(".*"))  # no temp files left behind


def test_torn_newest_falls_back_to_previous(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model, _ = _model_and_optimizer()
    ckpt = Checkpointer(tmp_path)
    ckpt.save(1, model=model)
    newest = ckpt.save(2, model=model)
    assert newest is not None
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    assert Checkpointer(tmp_path).restore(model=model) == 2  # step 1 + 1
    assert "skipping unreadable checkpoint" in caplog.text


def test_nothing_to_restore_returns_zero(tmp_path: Path) -> None:
    model, _ = _model_and_optimizer()
    assert Checkpointer(tmp_path / "empty").restore(model=model) == 0


def test_async_save_snapshots_state_before_returning(tmp_path: Path) -> None:
    model, optimizer = _model_and_optimizer()
    ckpt = Checkpointer(tmp_path, async_save=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ckpt.save(1, model=model)
    with torch.no_grad():  # the training goes on changing the weights at once
        for p in model.parameters():
            p.add_(1.0)
    ckpt.close()
    saved = torch.load(tmp_path / "step-000000001.pt", weights_only=True)["objects"]["model"]
    for key, value in before.items():
        assert torch.equal(saved[key], value)


def test_async_error_surfaces_on_next_call(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    model, _ = _model_and_optimizer()
    ckpt = Checkpointer(blocker, async_save=True)
    ckpt.save(1, model=model)
    with pytest.raises(RuntimeError, match="background checkpoint write failed"):
        ckpt.wait()


def test_should_stop_at_deadline(tmp_path: Path) -> None:
    now = [100.0]
    ckpt = Checkpointer(tmp_path, deadline=150.0, clock=lambda: now[0])
    assert not ckpt.should_stop
    now[0] = 150.0
    assert ckpt.should_stop


class _Tensors:
    """A state_dict() holder with tensors of the awkward kinds an async save must copy right."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        self.tensors = tensors

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.tensors)


def _awkward_tensors() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    return {
        "transposed": base.t(),  # not contiguous
        "offset_view": base[1:3],  # contiguous, but not at the start of its storage
        "bf16": torch.randn(7).to(torch.bfloat16),
        "int64": torch.arange(5),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.5),
        "empty": torch.empty(0, 3),
        "conj": torch.randn(3, dtype=torch.complex64).conj(),  # a lazy conjugate bit
        "large": torch.randn(3_000_000),  # over one copy chunk: several threads share it
        # 1 MB or more: page-aligned buffers, written with O_DIRECT where the disk takes it
        "large_transposed": torch.randn(1024, 512).t(),
        "large_bool": torch.rand(3_000_001) > 0.5,
        "large_bf16": torch.randn(1_000_001).to(torch.bfloat16),
        "large_conj": torch.randn(300_001, dtype=torch.complex64).conj(),
    }


def test_async_save_copies_every_kind_of_tensor_exactly(tmp_path: Path) -> None:
    tensors = _awkward_tensors()
    ckpt = Checkpointer(tmp_path, async_save=True)
    path = ckpt.save(1, state=_Tensors(tensors))
    assert path is not None
    for value in tensors.values():  # the training changes them as soon as save returns
        value.zero_()
    ckpt.close()
    saved = torch.load(path, weights_only=True)["objects"]["state"]
    expected = _awkward_tensors()
    assert set(saved) == set(expected)
    for key, value in expected.items():
        assert saved[key].dtype == value.dtype and saved[key].shape == value.shape, key
        assert torch.equal(saved[key], value.resolve_conj()), key


def test_async_save_snapshots_lists_the_training_changes_in_place(tmp_path: Path) -> None:
    """Lists of plain values (a loss history, Python's RNG state) are copied, not shared."""
    weight, history, inner = torch.ones(3), [0.5, 0.25], [1, 2]
    state: dict[str, Any] = {"history": history, "pairs": [(weight, 1)], "nested": [inner, (3, 4)]}
    ckpt = Checkpointer(tmp_path, async_save=True)
    path = ckpt.save(1, state=_Tensors(state))  # type: ignore[arg-type]
    assert path is not None
    history.append(0.125)
    inner.append(9)
    weight.zero_()
    ckpt.close()
    saved = torch.load(path, weights_only=True)["objects"]["state"]
    assert saved["history"] == [0.5, 0.25]
    assert saved["nested"] == [[1, 2], (3, 4)]
    assert torch.equal(saved["pairs"][0][0], torch.ones(3)) and saved["pairs"][0][1] == 1


def test_async_saves_reuse_buffers_without_mixing_generations(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    ckpt = Checkpointer(tmp_path, keep=5, async_save=True)
    snapshots = []
    for step in range(3):
        # Step 0 is saved before the optimizer has state, step 2 after the model changed shape:
        # the buffers must follow the state, not the other way round.
        if step == 2:
            model[2] = torch.nn.Linear(8, 3)
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        ckpt.save(step, model=model, optimizer=optimizer)
        if step < 2:
            _train_step(model, optimizer)
    ckpt.close()
    for step, expected in enumerate(snapshots):
        saved = torch.load(tmp_path / f"step-{step:09d}.pt", weights_only=True)
        assert set(saved["objects"]["model"]) == set(expected)
        for key, value in expected.items():
            assert torch.equal(saved["objects"]["model"][key], value), (step, key)
    assert saved["objects"]["optimizer"]["state"], "the optimizer's moments were saved"


def test_async_save_keeps_tied_weights_tied(tmp_path: Path) -> None:
    def tied() -> tuple[torch.nn.Module, torch.nn.Embedding]:
        embed, head = torch.nn.Embedding(10, 4), torch.nn.Linear(4, 10, bias=False)
        head.weight = embed.weight
        return torch.nn.Sequential(embed, head), embed

    torch.manual_seed(0)
    model, embed = tied()
    ckpt = Checkpointer(tmp_path, async_save=True)
    path = ckpt.save(1, model=model)
    ckpt.close()
    assert path is not None
    saved = torch.load(path, weights_only=True)["objects"]["model"]
    assert saved["0.weight"].data_ptr() == saved["1.weight"].data_ptr()
    fresh, fresh_embed = tied()
    assert Checkpointer(tmp_path).restore(model=fresh) == 2
    assert torch.equal(fresh_embed.weight, embed.weight)


def test_large_blocking_save_round_trips(tmp_path: Path) -> None:
    # Over the 16 MB slices the writer hands to the disk one by one.
    state = _Tensors({"big": torch.randn(5_000_000), "small": torch.arange(3)})
    path = Checkpointer(tmp_path).save(4, state=state)
    assert path is not None
    saved = torch.load(path, weights_only=True)["objects"]["state"]
    assert torch.equal(saved["big"], state.tensors["big"])
    assert torch.equal(saved["small"], state.tensors["small"])


def test_temp_files_of_a_killed_save_are_swept_at_the_next_save(tmp_path: Path) -> None:
    model, _ = _model_and_optimizer()
    stale = tmp_path / ".step-000000004.pt.abc123.tmp"  # what a SIGKILL mid-save leaves
    stale.write_bytes(b"half a checkpoint")
    assert Checkpointer(tmp_path).restore(model=model) == 0  # never loaded
    Checkpointer(tmp_path).save(5, model=model)
    assert not stale.exists()
    assert [s for s, _ in list_generations(tmp_path)] == [5]


class _Stats:
    """User state with a NumPy scalar in it: a float(loss) that was never called."""

    def __init__(self, best: Any):
        self.best = best

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "history": [1.0, 2.0]}


def test_numpy_values_are_refused_at_save_naming_where(tmp_path: Path) -> None:
    ckpt = Checkpointer(tmp_path)
    for blocking in (True, False):
        with pytest.raises(TypeError) as caught:
            ckpt.save(1, stats=_Stats(np.float64(0.5)), blocking=blocking)
        message = str(caught.value)
        assert message.startswith("cannot checkpoint stats['best']: it is a numpy.float64")
        assert "float(x)" in message
    ckpt.close()
    assert list_generations(tmp_path) == []  # nothing written that restore could not load


def test_a_checkpoint_restore_cannot_load_is_an_error_not_a_restart(tmp_path: Path) -> None:
    # made outside Checkpointer (an older version, or torch.save by hand): both generations
    # hold the type, so skipping them as torn would restart the training from step 0
    for step in (4, 5):
        payload = {"format": "colab-bootstrap/1", "step": step, "rng": {}}
        payload["objects"] = {"stats": {"best": np.float64(0.5)}}
        torch.save(payload, tmp_path / f"step-{step:09d}.pt")
    with pytest.raises(RuntimeError) as caught:
        Checkpointer(tmp_path).restore(stats=_Stats(0.0))
    message = str(caught.value)
    assert "step-000000005.pt holds a type that torch.load(weights_only=True) refuses" in message
    assert "(numpy._core.multiarray.scalar)" in message and "add_safe_globals" in message


def test_steps_must_be_whole_and_not_negative(tmp_path: Path) -> None:
    model, _ = _model_and_optimizer()
    ckpt = Checkpointer(tmp_path)
    with pytest.raises(TypeError, match=r"save\(step=...\) must be an int, got 3.0"):
        ckpt.save(3.0, model=model)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"must be 0 or more, got -1"):
        ckpt.save(-1, model=model)
    ckpt.save(np.int64(2), model=model)  # type: ignore[arg-type]
    assert [s for s, _ in list_generations(tmp_path)] == [2]
    with pytest.raises(ValueError, match="keep must be an int of at least 1, got '3'"):
        Checkpointer(tmp_path, keep="3")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cannot checkpoint best: a float has no state_dict"):
        ckpt.save(3, best=0.25)


def test_a_step_below_one_in_the_folder_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model, _ = _model_and_optimizer()
    Checkpointer(tmp_path).save(200, model=model)
    ckpt = Checkpointer(tmp_path)  # a second run in the same folder, counting from 0
    with caplog.at_level(logging.WARNING, logger="bootstrap.training.checkpoint"):
        ckpt.save(0, model=model)
        ckpt.save(1, model=model)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert warnings[0].startswith(f"saving step 0 into {tmp_path}, which holds step 200")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bootstrap.training.checkpoint"):
        ckpt.save(201, model=model)
    assert not caplog.records


def test_a_dataloader_generator_is_saved_and_restored(tmp_path: Path) -> None:
    data = torch.arange(20)
    generator = torch.Generator().manual_seed(7)
    loader = torch.utils.data.DataLoader(data, batch_size=5, shuffle=True, generator=generator)
    list(loader)  # epoch 0
    Checkpointer(tmp_path).save(0, loader_rng=generator)
    epoch1 = [b.tolist() for b in loader]
    fresh = torch.Generator().manual_seed(7)  # a new process builds it from the same seed
    again = torch.utils.data.DataLoader(data, batch_size=5, shuffle=True, generator=fresh)
    assert Checkpointer(tmp_path).restore(loader_rng=fresh) == 1
    assert [b.tolist() for b in again] == epoch1  # epoch 1's order, not epoch 0's


def test_close_gives_back_the_signal_handlers(tmp_path: Path) -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with Checkpointer(tmp_path) as ckpt:
        assert not ckpt.should_stop  # installs its handlers
        assert all(signal.getsignal(s) is not h for s, h in before.items())
    assert all(signal.getsignal(s) is h for s, h in before.items())


def test_a_failed_background_write_is_logged_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    model, _ = _model_and_optimizer()
    ckpt = Checkpointer(blocker, async_save=True)
    with caplog.at_level(logging.ERROR, logger="bootstrap.training.checkpoint"):
        ckpt.save(1, model=model)
        assert ckpt._writer is not None
        ckpt._writer.join()  # a script that ends here never calls wait() or close()
    assert "background checkpoint write of step-000000001.pt failed" in caplog.text
    with pytest.raises(RuntimeError):
        ckpt.close()


def _restore_on_rank(rank: int, store: str, folders: list[str], errors: Any) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        Checkpointer(folders[rank]).restore(model=torch.nn.Linear(2, 1))
        errors.put((rank, None))
    except RuntimeError as error:
        errors.put((rank, str(error)))
    finally:
        dist.destroy_process_group()


def test_ranks_that_find_different_checkpoints_refuse_to_train_on(tmp_path: Path) -> None:
    """Two gloo ranks, rank 0's folder with a generation, rank 1's empty (a folder on each
    node's own disk): restore raises on both, naming the steps, instead of training on from
    different weights."""
    import torch.multiprocessing as mp

    shared, own = tmp_path / "rank0", tmp_path / "rank1"
    Checkpointer(shared).save(4, model=torch.nn.Linear(2, 1))
    context = mp.get_context("spawn")
    errors = context.Queue()
    args = (str(tmp_path / "store"), [str(shared), str(own)], errors)
    workers = [context.Process(target=_restore_on_rank, args=(r, *args)) for r in (0, 1)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    found = dict(errors.get(timeout=5) for _ in workers)
    for rank in (0, 1):
        assert found[rank] is not None, found
        assert "the ranks restored different checkpoints" in found[rank]
        assert "steps from none to 4" in found[rank]
    assert "rank 1 found nothing" in found[1] and "rank 0 found step 4" in found[0]
