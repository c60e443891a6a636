"""A folder checkpoint torn on the same VM (a crash mid-save) is set aside before a restart.

The training below finds its checkpoint as a Hugging Face Trainer's get_last_checkpoint does:
the highest ``checkpoint-N`` folder, whole or not, and it refuses one without its
``trainer_state.json`` ("Can't find a valid checkpoint"). Its first attempt saves one whole
folder, starts a second and crashes halfway. The restart must resume from the whole one.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Sandbox, write_recipe

TRAIN = """\
import json, pathlib, re, sys
out = pathlib.Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
found = sorted(
    (int(m.group(1)), p) for p in out.iterdir() if (m := re.fullmatch(r"checkpoint-(\\d+)", p.name))
)
step = 0
if found:
    last = found[-1][1]
    state = last / "trainer_state.json"
    if not state.is_file():
        sys.exit(f"Can't find a valid checkpoint at {last}")
    step = json.loads(state.read_text())["global_step"]
    print("resumed from step", step, flush=True)
for step in range(step + 1, 4):
    folder = out / f"checkpoint-{step}"
    folder.mkdir()
    (folder / "model.bin").write_bytes(b"weights %d" % step)
    if step == 2 and not (out / "crashed").exists():
        (out / "crashed").write_text("once")
        sys.exit("crash mid-save")  # checkpoint-2 has its weights, not its trainer_state.json
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
print("trained to step 3", flush=True)
"""


def test_a_restart_skips_a_folder_checkpoint_a_crash_left_without_its_marker(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "train.py").write_text(TRAIN)
    recipe = write_recipe(
        tmp_path / "torn.yaml",
        f"name: torn\nrepo: {{url: '{repo}'}}\ninstall: {{requirements: []}}\n"
        "run: {script: train.py, args: ['{ckpt}'], checkpoints: '{ckpt}',"
        " match: 'checkpoint-*/trainer_state.json', restarts: 2}\n",
    )
    result = sandbox.cli(recipe)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "resumed from step 1" in result.stdout
    assert "trained to step 3" in result.stdout
    assert "checkpoint-2 has no trainer_state.json: a save cut short" in result.stderr
    local = sandbox.scratch / "checkpoints" / "torn"
    assert (local / ".torn-checkpoint-2" / "model.bin").is_file()  # kept for a look
    mirrored = sandbox.persist / "runs" / "torn" / "checkpoints"
    for step in (1, 2, 3):  # the redone checkpoint-2 is whole, and mirrored
        state = json.loads((mirrored / f"checkpoint-{step}" / "trainer_state.json").read_text())
        assert state["global_step"] == step
    assert not (mirrored / ".torn-checkpoint-2").exists()
