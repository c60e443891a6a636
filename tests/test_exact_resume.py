"""Exact resume: SIGKILLed at random moments and during saves, a training ends bit-identical.

Eleven kills in all, over a loop-mode run and a script that uses Checkpointer directly, both
compared with one uninterrupted loop-mode run. The harness and the training live in
tests/stress_exact_resume.py, which runs the same with more kills from the command line.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Sandbox
from tests.stress_exact_resume import (
    KilledRun,
    differences,
    final_state,
    reference_run,
    sandbox_env,
    write_recipe,
    write_repo,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds processes in /proc"),
]

EPOCHS = 36
SEED = random.randrange(1 << 30)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("reference")
    (root / "persist").mkdir()
    (root / "scratch").mkdir()
    write_repo(root)
    yield reference_run(root, sandbox_env(root / "persist", root / "scratch"), EPOCHS)


@pytest.mark.parametrize(
    ("mode", "kinds"),
    [
        ("loop", ["save", "moment", "save", "tool-save", "moment", "save"]),
        ("script", ["save", "moment", "tool", "save", "moment"]),
    ],
)
def test_killed_training_ends_bit_identical(
    sandbox: Sandbox, reference: dict[str, Any], mode: str, kinds: list[str]
) -> None:
    rng = random.Random(SEED)
    write_repo(sandbox.root)
    recipe = write_recipe(sandbox.root, mode, mode, EPOCHS)
    run = KilledRun(recipe, mode, mode, sandbox.env, sandbox.root)
    report = run.run(kinds, rng)
    context = f"(seed {SEED}) output:\n" + "\n----\n".join(report.outputs)
    assert report.exit_code == 0, context
    assert report.kills == kinds
    assert report.torn >= 1, "no kill landed during a save " + context
    # Every attempt after a kill resumed: none started over from epoch 0.
    restored = sum(o.count("restored step") for o in report.outputs)
    assert restored >= len(kinds) - kinds.count("tool"), context
    assert run.problems() == [], context  # never a torn load, a traceback, a KeyboardInterrupt
    assert differences(reference, final_state(run.ckpt, EPOCHS)) == [], context
