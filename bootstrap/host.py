"""Where we run: Colab or not, Drive mounted, GPU present, when the VM booted.

Every fact comes from the machine (paths, /proc, environment variables) and every one can be
overridden through the environment, so tests and unusual setups can fake them:

    BOOTSTRAP_COLAB=1|0          force Colab detection on or off
    BOOTSTRAP_CONTENT_DIR=PATH   Colab's /content (its drive/MyDrive is where Drive mounts)
    BOOTSTRAP_MOUNTS_FILE=PATH   the mount table to read instead of /proc/mounts
    BOOTSTRAP_GPU=1|0            force GPU detection on or off
    BOOTSTRAP_BOOT_TIME=EPOCH    when the VM booted (seconds since the epoch)

google.colab is never imported here: a ``!python -m bootstrap`` cell is a child process of the
kernel, where ``drive.mount()`` cannot work anyway.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DRIVE_MOUNT_CELL = "from google.colab import drive; drive.mount('/content/drive')"


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity), or all of them where that is unknown."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity on macOS
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Host:
    on_colab: bool
    content_dir: Path  # /content on Colab
    drive_mounted: bool
    gpu_names: tuple[str, ...]
    boot_time: float  # seconds since the epoch

    @property
    def drive_root(self) -> Path:
        return self.content_dir / "drive" / "MyDrive"

    def on_unmounted_drive(self, path: Path) -> bool:
        """Whether ``path`` is under Colab's Drive mount point while Drive is not mounted there:
        reading it fails, and writing it fills a local folder that the next mount hides."""
        return (
            self.on_colab
            and not self.drive_mounted
            and path.is_relative_to(self.content_dir / "drive")
        )

    @property
    def has_gpu(self) -> bool:
        return bool(self.gpu_names)

    def describe(self) -> str:
        where = "Colab" if self.on_colab else "not Colab"
        drive = ", Drive mounted" if self.drive_mounted else ""
        gpu = f", GPU: {', '.join(self.gpu_names)}" if self.gpu_names else ", no GPU"
        return where + drive + gpu


def detect_host(environ: Mapping[str, str] | None = None) -> Host:
    env = os.environ if environ is None else environ
    content_dir = Path(env.get("BOOTSTRAP_CONTENT_DIR", "/content"))
    on_colab = _flag(env, "BOOTSTRAP_COLAB")
    if on_colab is None:
        on_colab = _looks_like_colab(env, content_dir)
    mounts = Path(env.get("BOOTSTRAP_MOUNTS_FILE", "/proc/mounts"))
    gpu_flag = _flag(env, "BOOTSTRAP_GPU")
    gpus: tuple[str, ...] = _detect_gpus() if gpu_flag is None else ()
    if gpu_flag:
        gpus = ("forced by BOOTSTRAP_GPU",)
    return Host(
        on_colab=on_colab,
        content_dir=content_dir,
        drive_mounted=_drive_mounted(content_dir, mounts),
        gpu_names=gpus,
        boot_time=_boot_time(env),
    )


def _flag(env: Mapping[str, str], name: str) -> bool | None:
    value = env.get(name, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    return None


def _looks_like_colab(env: Mapping[str, str], content_dir: Path) -> bool:
    # The Colab runtime sets COLAB_RELEASE_TAG (and COLAB_GPU on GPU runtimes) in every
    # process it starts; /content alone is not enough (some Docker images have one).
    return "COLAB_RELEASE_TAG" in env or ("COLAB_GPU" in env and content_dir.is_dir())


def _drive_mounted(content_dir: Path, mounts_file: Path) -> bool:
    """True when Drive is mounted at content_dir/drive and MyDrive is visible.

    Colab mounts Drive through a FUSE filesystem listed as ``fuse.drive`` (older runtimes:
    ``fuse``) on ``/content/drive``.
    """
    if not (content_dir / "drive" / "MyDrive").is_dir():
        return False
    try:
        table = mounts_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    mount_point = str(content_dir / "drive")
    for line in table.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[1] == mount_point and fields[2].startswith("fuse"):
            return True
    return False


def _detect_gpus() -> tuple[str, ...]:
    # The NVIDIA driver lists one folder per GPU here; reading it costs nothing, unlike
    # importing torch (which the parent process never does).
    proc_gpus = Path("/proc/driver/nvidia/gpus")
    if proc_gpus.is_dir():
        names = []
        for info in sorted(proc_gpus.glob("*/information")):
            model = next(
                (ln.split(":", 1)[1].strip() for ln in _lines(info) if ln.startswith("Model:")),
                info.parent.name,
            )
            names.append(model)
        if names:
            return tuple(names)
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run(
                [smi, "-L"], capture_output=True, text=True, timeout=10, check=False
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return ()
        return tuple(
            ln.split(":", 1)[1].split("(")[0].strip() for ln in out.splitlines() if ":" in ln
        )
    return ()


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []


def _boot_time(env: Mapping[str, str]) -> float:
    override = env.get("BOOTSTRAP_BOOT_TIME")
    if override:
        try:
            return float(override)
        except ValueError:
            pass
    for line in _lines(Path("/proc/stat")):
        if line.startswith("btime "):
            return float(line.split()[1])
    return time.time()
