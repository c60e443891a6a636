"""Whether the training uses CUDA (``gpu:``), and the flags that pick its device.

Code that uses CUDA gets ``gpu: required``, also when it falls back to the CPU: on Colab that
stops a run on a CPU runtime before hours are spent, and ``--smoke`` skips the check. A device
flag whose default is the CPU is given ``cuda`` for the real run; the smoke run gets ``cpu``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from bootstrap.init.commandline import Cli, Flag, norm
from bootstrap.init.source import Finding, PyFile, Where

_CUDA = re.compile(
    r"\.cuda\(|device\s*=\s*['\"]cuda|torch\.device\(\s*['\"]cuda|['\"]cuda(:\d+)?['\"]|"
    r"accelerator\s*=\s*['\"](gpu|cuda)|\bgpus\s*=|load_in_(8|4)bit|bitsandbytes|"
    r"device_map\s*=\s*['\"]auto"
)
# Trainers that take the GPU whenever there is one, without a word about CUDA in the code.
_TRAINERS = re.compile(r"\bTrainer\(|LightningCLI|\bAccelerator\(")
_GUARD = re.compile(r"cuda\.is_available\(\)")
_CPU_SWITCHES = ("cpu", "no_cuda", "no_gpu", "use_cpu", "no_accel", "force_cpu")


@dataclass
class GpuPlan:
    gpu: Literal["required", "optional"]
    finding: Finding
    args: list[str] = field(default_factory=list)  # for the real run
    smoke_args: list[str] = field(default_factory=list)  # for --smoke, on a CPU
    device_flag: Flag | None = None
    cpu_switch: Flag | None = None


def plan_gpu(cli: Cli | None, files: list[PyFile]) -> GpuPlan:
    use: Where | None = None
    guarded = False
    for py in files:
        match = _CUDA.search(py.text)
        if match is not None and use is None:
            use = py.at(py.text[: match.start()].count("\n") + 1)
        guarded = guarded or bool(_GUARD.search(py.text))
    device = _device_flag(cli)
    cpu_switch = next(
        (f for f in (cli.flags if cli else ()) if f.switch and norm(f.dest) in _CPU_SWITCHES), None
    )
    trainer: Where | None = None
    for py in files:
        match = _TRAINERS.search(py.text)
        if match is not None:
            trainer = py.at(py.text[: match.start()].count("\n") + 1)
            break
    plan = GpuPlan("optional", Finding("no CUDA use found", None, "likely"))
    if use is None and trainer is not None:
        note = "a Trainer takes the GPU when there is one"
        plan = GpuPlan("required", Finding("trains with a Trainer", trainer, "likely", note))
    default = str(device.default) if device is not None else ""
    if use is not None or "cuda" in default:
        note = (
            "falls back to the CPU without one; required stops a CPU runtime early"
            if guarded
            else ""
        )
        plan = GpuPlan(
            "required",
            Finding("uses CUDA", use or (device.where if device else None), "sure", note),
        )
    plan.device_flag, plan.cpu_switch = device, cpu_switch
    if device is not None and cli is not None:
        if (
            plan.gpu == "required"
            and not default.startswith("cuda")
            and default not in ("", "None")
        ):
            plan.args = cli.args(device, "cuda")
        plan.smoke_args = cli.args(device, "cpu")
    elif cpu_switch is not None and cli is not None:
        plan.smoke_args = cli.args(cpu_switch)
    return plan


def _device_flag(cli: Cli | None) -> Flag | None:
    if cli is None:
        return None
    for flag in cli.flags:
        if norm(flag.dest) == "device" and not flag.switch and not flag.positional:
            return flag
    return None
