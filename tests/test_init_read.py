"""``init`` reading small repos made here, one pattern each: the entry point, its flags in each
framework, the resume flag and its kind, the checkpoint folder and pattern, requirements, data,
GPU use and the smoke profile; with conflicting and missing cases. Nothing is cloned: each test
reads a folder (tests/test_init_command.py covers the clone and the file)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bootstrap.init.command import read_repo
from bootstrap.init.draft import Reading, build_items
from bootstrap.init.render import as_data
from bootstrap.init.source import RepoScan


def read(root: Path, files: dict[str, str | bytes]) -> Reading:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(textwrap.dedent(text), encoding="utf-8")
    return read_repo(RepoScan(root), str(root), "t", None, None, "0" * 40)


ARGPARSE_TRAIN = """
    import argparse, os, torch
    def main():
        p = argparse.ArgumentParser()
        p.add_argument("--out_dir", default="out")
        p.add_argument("--epochs", type=int, default=10)
        p.add_argument("--batch-size", type=int, default=64)
        p.add_argument("-r", "--resume", type=str, default="", metavar="PATH")
        args = p.parse_args()
        if args.resume:
            state = torch.load(args.resume)
        for epoch in range(args.epochs):
            loss.backward()
            torch.save(state, os.path.join(args.out_dir, f"ckpt_{epoch:03d}.pt"))
    if __name__ == "__main__":
        main()
"""


def test_argparse_path_resume_folder_pattern_and_smoke(tmp_path: Path) -> None:
    r = read(tmp_path, {"train.py": ARGPARSE_TRAIN})
    assert r.entry.chosen is not None and r.entry.chosen.value == "train.py"
    assert r.cli.cli is not None and r.cli.cli.framework == "argparse"
    assert (r.resume.kind, r.resume.args) == ("path", ["--resume", "{checkpoint}"])
    assert r.resume.finding.where is not None and str(r.resume.finding.where) == "train.py:8"
    assert r.resume.finding.confidence == "sure"
    ck = r.checkpoints
    assert ck.folder == "{ckpt}" and ck.folder_flag is not None and ck.folder_flag.dest == "out_dir"
    assert ck.match == ["ckpt_*.pt"]
    assert r.smoke.args == ["--epochs", "1", "--batch-size", "8"]


def test_two_entry_points_pick_train_and_list_the_other(tmp_path: Path) -> None:
    r = read(
        tmp_path,
        {
            "train.py": ARGPARSE_TRAIN,
            "main.py": "import sys\nif __name__ == '__main__':\n    print(sys.argv)\n",
            "eval.py": "if __name__ == '__main__':\n    pass\n",
        },
    )
    assert r.entry.chosen is not None and r.entry.chosen.value == "train.py"
    assert [e.value for e in r.entry.others][:2] == ["main.py", "eval.py"]


def test_readme_command_beats_the_file_name(tmp_path: Path) -> None:
    r = read(
        tmp_path,
        {
            "main.py": "if __name__ == '__main__':\n    pass\n",
            "scripts/train_gan.py": ARGPARSE_TRAIN,
            "README.md": "Train:\n\n    python scripts/train_gan.py --epochs 3\n",
        },
    )
    assert r.entry.chosen is not None and r.entry.chosen.value == "scripts/train_gan.py"
    assert "README.md:3" in r.entry.finding.text


def test_project_scripts_entry_is_a_module(tmp_path: Path) -> None:
    r = read(
        tmp_path,
        {
            "pyproject.toml": (
                '[project]\nname = "p"\n[project.scripts]\np-train = "pkg.cli:main"\n'
            ),
            "pkg/__init__.py": "",
            "pkg/cli.py": "def main():\n    pass\nif __name__ == '__main__':\n    main()\n",
        },
    )
    assert r.entry.chosen is not None
    assert (r.entry.chosen.kind, r.entry.chosen.value) == ("module", "pkg.cli")
    assert r.install.requirements == "auto"


def test_no_entry_point(tmp_path: Path) -> None:
    r = read(tmp_path, {"model.py": "class Net:\n    pass\n"})
    assert r.entry.chosen is None
    assert r.entry.finding.text == "no entry point found"


def test_switch_resume_with_click(tmp_path: Path) -> None:
    r = read(
        tmp_path,
        {
            "train.py": """
                import click, torch
                @click.command()
                @click.option("--outdir", default="runs", help="where to save")
                @click.option("--resume", is_flag=True, help="continue from outdir/last.pt")
                @click.option("--max-steps", type=int, default=1000)
                def main(outdir, resume, max_steps):
                    torch.save({}, outdir + "/last.pt")
                if __name__ == "__main__":
                    main()
            """
        },
    )
    assert r.cli.cli is not None and r.cli.cli.framework == "click"
    assert (r.resume.kind, r.resume.args) == ("switch", ["--resume"])
    assert r.checkpoints.folder_flag is not None and r.checkpoints.folder_flag.option == "--outdir"
    assert r.checkpoints.match == ["last.pt"]
    assert r.smoke.args[:2] == ["--max-steps", "50"]


def test_fire_function_parameters(tmp_path: Path) -> None:
    r = read(
        tmp_path,
        {
            "finetune.py": """
                import fire, torch
                def train(base_model: str = "", output_dir: str = "./out", num_epochs: int = 3,
                          resume_from_checkpoint: str = None):
                    if resume_from_checkpoint:
                        torch.load(resume_from_checkpoint)
                    torch.save(model, f"{output_dir}/model-{step}.pth")
                if __name__ == "__main__":
                    fire.Fire(train)
            """
        },
    )
    assert r.cli.cli is not None and r.cli.cli.framework == "fire"
    assert r.resume.args == ["--resume_from_checkpoint", "{checkpoint}"]
    assert r.checkpoints.folder_flag is not None and r.checkpoints.folder_flag.dest == "output_dir"
    assert r.checkpoints.match == ["model-*.pth"]


def test_simple_parsing_dataclass_config(tmp_path: Path) -> None:
    r = read(
        tmp_path,
        {
            "train.py": """
                from dataclasses import dataclass
                import simple_parsing, torch
                @dataclass
                class Config:
                    save_dir: str = "checkpoints"
                    resume: bool = False  # pick up from save_dir/state.pt
                    epochs: int = 5
                if __name__ == "__main__":
                    cfg = simple_parsing.parse(Config)
                    torch.save({}, cfg.save_dir + "/state.pt")
            """
        },
    )
    assert r.cli.cli is not None and r.cli.cli.framework == "simple_parsing"
    assert (r.resume.kind, r.resume.args) == ("switch", ["--resume"])
    assert r.checkpoints.folder_flag is not None and r.checkpoints.folder_flag.dest == "save_dir"


HF_TRAIN = """
    from dataclasses import dataclass, field
    import transformers
    from transformers import HfArgumentParser, Trainer, TrainingArguments
    @dataclass
    class ModelArguments:
        model_name_or_path: str = field(default="gpt2")
    def main():
        parser = HfArgumentParser((ModelArguments, TrainingArguments))
        model_args, training_args = parser.parse_args_into_dataclasses()
        trainer = Trainer(model=None, args=training_args)
        trainer.train({resume})
    if __name__ == "__main__":
        main()
"""


def test_hugging_face_trainer_resume_passed_on(tmp_path: Path) -> None:
    code = HF_TRAIN.replace(
        "{resume}", "resume_from_checkpoint=training_args.resume_from_checkpoint"
    )
    r = read(tmp_path, {"train.py": code})
    assert r.cli.cli is not None and "TrainingArguments" in r.cli.cli.framework
    assert r.resume.args == ["--resume_from_checkpoint", "{checkpoint}"]
    assert r.checkpoints.folder_flag is not None and r.checkpoints.folder_flag.dest == "output_dir"
    assert r.checkpoints.match == ["checkpoint-*/trainer_state.json"]
    assert r.gpu.gpu == "required"  # the Trainer takes the GPU whenever there is one


def test_hugging_face_flag_that_the_code_ignores_is_no_resume(tmp_path: Path) -> None:
    r = read(tmp_path, {"train.py": HF_TRAIN.replace("{resume}", "")})
    assert r.resume.kind is None
    assert "called without it" in r.resume.finding.note


def test_lightning_cli(tmp_path: Path) -> None:
    r = read(
        tmp_path,
        {
            "main.py": """
                from lightning.pytorch.cli import LightningCLI
                from model import Net, Data
                if __name__ == "__main__":
                    LightningCLI(Net, Data)
            """,
            "model.py": "class Net: pass\nclass Data: pass\n",
        },
    )
    assert r.cli.cli is not None and r.cli.cli.subcommand == "fit"
    assert r.resume.args == ["--ckpt_path", "{checkpoint}"]
    assert r.checkpoints.folder_flag is not None
    assert r.checkpoints.folder_flag.option == "--trainer.default_root_dir"
    assert r.checkpoints.match == ["**/*.ckpt"]
    assert r.smoke.args == ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "10"]


def test_lightning_cli_without_subcommands_has_no_resume(tmp_path: Path) -> None:
    r = read(
        tmp_path,
        {
            "train.py": """
                from pytorch_lightning.cli import LightningCLI
                if __name__ == "__main__":
                    cli = LightningCLI(run=False)
                    cli.trainer.fit(model=cli.model, datamodule=cli.datamodule)
            """
        },
    )
    assert r.resume.kind is None
    assert "run=False" in r.resume.finding.note


CONFIGURATOR_TRAIN = """
    import os, torch
    out_dir = "out"
    max_iters = 5000
    eval_interval = 2000
    init_from = "scratch"  # 'scratch' or 'resume'
    always_save_checkpoint = False
    device = "cuda"
    compile = True
    exec(open("configurator.py").read())
    if init_from == "resume":
        checkpoint = torch.load(os.path.join(out_dir, "ckpt.pt"))
    torch.save(checkpoint, os.path.join(out_dir, "ckpt.pt"))
"""


def test_configurator_value_resume(tmp_path: Path) -> None:
    r = read(tmp_path, {"train.py": CONFIGURATOR_TRAIN, "configurator.py": "import sys\n"})
    cli = r.cli.cli
    assert cli is not None and cli.equals
    assert (r.resume.kind, r.resume.args) == ("value", ["--init_from=resume"])
    assert str(r.resume.finding.where) == "train.py:11"
    assert r.checkpoints.folder_flag is not None and r.checkpoints.match == ["ckpt.pt"]
    assert r.gpu.gpu == "required"
    assert r.gpu.smoke_args == ["--device=cpu"] and r.gpu.args == []
    assert "--max_iters=50" in r.smoke.args and "--compile=False" in r.smoke.args
    # It saves only when the loss improves: init asks it to save at every evaluation.
    run = as_data(build_items(r))["run"]
    assert run["args"] == ["--out_dir={ckpt}", "--always_save_checkpoint=True"]


def test_no_resume_flag_points_to_loop_mode(tmp_path: Path) -> None:
    r = read(
        tmp_path,
        {
            "train.py": """
                import argparse, torch
                p = argparse.ArgumentParser()
                p.add_argument("--lr", type=float, default=0.1)
                p.add_argument("--pretrained", default="")
                args = p.parse_args()
                torch.save(model.state_dict(), "model.pt")
            """
        },
    )
    assert r.resume.kind is None and r.resume.args == []
    from bootstrap.init.render import render

    text = "\n".join(render(build_items(r))[0])
    assert "loop mode" in text and "bootstrap.Checkpointer" in text
    assert any("run.resume" in todo for todo in r.todos)


def test_literal_save_path_in_the_working_folder(tmp_path: Path) -> None:
    r = read(
        tmp_path,
        {
            "main.py": """
                import torch
                def save_checkpoint(state, is_best, filename="checkpoint.pth.tar"):
                    torch.save(state, filename)
                if __name__ == "__main__":
                    torch.save(net, "./checkpoint/ckpt.pth")
            """
        },
    )
    assert r.checkpoints.folder == "{repo}" and r.checkpoints.match == ["checkpoint.pth.tar"]
    assert "./checkpoint/ckpt.pth" in " ".join(r.checkpoints.others) or r.checkpoints.others


def test_save_into_an_unknown_run_folder_under_the_out_flag(tmp_path: Path) -> None:
    r = read(
        tmp_path,
        {
            "train.py": """
                import click, os, pickle
                from loop import run
                @click.command()
                @click.option("--outdir", required=True)
                def main(outdir):
                    run(os.path.join(outdir, "00001-run"))
                if __name__ == "__main__":
                    main()
            """,
            "loop.py": """
                import os, pickle
                def run(run_dir="."):
                    path = os.path.join(run_dir, f"network-snapshot-{step:06d}.pkl")
                    with open(path, "wb") as f:
                        pickle.dump(snapshot, f)
            """,
        },
    )
    assert r.checkpoints.folder_flag is not None and r.checkpoints.folder_flag.dest == "outdir"
    assert r.checkpoints.match == ["**/network-snapshot-*.pkl"]


def test_requirements_pins_that_colab_has(tmp_path: Path) -> None:
    r = read(
        tmp_path,
        {
            "train.py": ARGPARSE_TRAIN,
            "requirements.txt": "numpy==1.23.5\ntqdm==4.10.0\ntorch==2.0.1\nnot-on-colab==1.0\n",
        },
    )
    assert r.install.requirements == "auto"
    assert r.install.keep == ["torch", "torchvision", "torchaudio", "numpy"]
    pins = "\n".join(r.install.pins)
    assert "numpy==1.23.5 (requirements.txt:1): held at Colab's" in pins
    assert "tqdm==4.10.0 (requirements.txt:2): would replace Colab's" in pins
    assert "not-on-colab" not in pins


def test_requirements_from_imports_and_conda(tmp_path: Path) -> None:
    r = read(
        tmp_path,
        {"train.py": "import torch, einops, zzz_not_on_colab\n" + textwrap.dedent(ARGPARSE_TRAIN)},
    )
    assert r.install.requirements == [] and r.install.packages == ["zzz_not_on_colab"]
    assert r.install.todo is not None
    conda = (
        "dependencies:\n  - python=3.10\n  - pytorch=2.1\n  - scipy=1.11\n  - pip:\n    - wandb\n"
    )
    r = read(tmp_path / "c", {"train.py": ARGPARSE_TRAIN, "environment.yml": conda})
    assert r.install.packages == ["torch==2.1", "scipy==1.11", "wandb"]


def test_data_downloaded_by_the_code(tmp_path: Path) -> None:
    code = ARGPARSE_TRAIN.replace(
        "args = p.parse_args()",
        "args = p.parse_args()\n        ds = CIFAR10(root='./data', download=True)",
    )
    r = read(tmp_path, {"train.py": code})
    assert r.data.kind == "downloads"


def test_data_flag_without_a_default_needs_an_archive(tmp_path: Path) -> None:
    code = ARGPARSE_TRAIN.replace(
        'p.add_argument("--epochs"',
        'p.add_argument("--data_root", required=True)\n        p.add_argument("--epochs"',
    )
    r = read(tmp_path, {"train.py": code})
    assert r.data.kind == "needs" and r.data.flag is not None and r.data.to == "{scratch}/data"


def test_literal_data_path_and_shipped_data(tmp_path: Path) -> None:
    code = "import numpy as np\nif __name__ == '__main__':\n    x = np.memmap('data/train.bin')\n"
    r = read(tmp_path / "a", {"train.py": code})
    assert (r.data.kind, r.data.to) == ("needs", "{repo}/data")
    r = read(tmp_path / "b", {"train.py": code, "data/train.bin": "x"})
    assert r.data.kind == "ships"


def test_device_flag_and_cpu_only_code(tmp_path: Path) -> None:
    code = ARGPARSE_TRAIN.replace(
        'p.add_argument("--epochs"',
        'p.add_argument("--device", default="cpu", help="cpu or cuda")\n'
        '        p.add_argument("--epochs"',
    )
    r = read(tmp_path / "a", {"train.py": code.replace("torch.load", "x.cuda(); torch.load")})
    assert r.gpu.gpu == "required"
    assert (r.gpu.args, r.gpu.smoke_args) == (["--device", "cuda"], ["--device", "cpu"])
    r = read(tmp_path / "b", {"train.py": ARGPARSE_TRAIN})
    assert r.gpu.gpu == "optional"


@pytest.mark.parametrize(
    "bad",
    [b"\xff\xfe not utf-8 \x00", "print 'python 2'\n", "x = 1\n" + "#" * 1_100_000],
    ids=["not-utf8", "python2", "huge"],
)
def test_files_that_cannot_be_read_are_skipped_with_a_note(
    tmp_path: Path, bad: str | bytes
) -> None:
    r = read(tmp_path, {"train.py": ARGPARSE_TRAIN, "legacy/old.py": bad})
    assert r.entry.chosen is not None and r.entry.chosen.value == "train.py"
    assert any(note.startswith("legacy/old.py") for note in r.notes)


def test_a_subfolder_names_its_requirements_from_the_repo_root(tmp_path: Path) -> None:
    """install.requirements is relative to the repo root, where `auto` looks: with repo.path,
    the subfolder's own file is named."""
    sub = tmp_path / "imagenet"
    sub.mkdir()
    (sub / "main.py").write_text(textwrap.dedent(ARGPARSE_TRAIN))
    (sub / "requirements.txt").write_text("torchvision\n")
    r = read_repo(RepoScan(sub), str(tmp_path), "t", None, "imagenet", "0" * 40)
    assert r.install.requirements == ["imagenet/requirements.txt"]
