"""Where we run: Colab, Kaggle or elsewhere, Drive mounted, GPUs present, when the session began.

Every fact comes from the machine (paths, /proc, environment variables) and every one can be
overridden through the environment, so tests and unusual setups can fake them:

    BOOTSTRAP_COLAB=1|0          force Colab detection on or off
    BOOTSTRAP_CONTENT_DIR=PATH   Colab's /content (its drive/MyDrive is where Drive mounts)
    BOOTSTRAP_MOUNTS_FILE=PATH   the mount table to read instead of /proc/mounts
    BOOTSTRAP_KAGGLE=1|0         force Kaggle detection on or off
    BOOTSTRAP_KAGGLE_DIR=PATH    Kaggle's /kaggle (input/, working/ and temp/ are inside it)
    BOOTSTRAP_GPU=1|0|N          force GPU detection on or off, or fake N GPUs (N >= 0)
    BOOTSTRAP_BOOT_TIME=EPOCH    when the VM booted, or on Kaggle the session started (seconds
                                 since the epoch): run.time_limit counts from it

Colab is told by ``COLAB_RELEASE_TAG`` (or ``COLAB_GPU`` with /content); Kaggle by
``KAGGLE_KERNEL_RUN_TYPE`` ("Interactive" or "Batch", set in every process a Kaggle notebook
starts) together with a /kaggle/working folder. Neither google.colab nor kaggle is ever
imported here: a ``!python -m bootstrap`` cell is a child process of the kernel, where
``drive.mount()`` cannot work anyway, and the kaggle package is an API client, not the runtime.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bootstrap.errors import UsageError

DRIVE_MOUNT_CELL = "from google.colab import drive; drive.mount('/content/drive')"
KAGGLE_RUN_TYPE = "KAGGLE_KERNEL_RUN_TYPE"


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
    # Seconds since the epoch when this machine's session began: the VM's boot (Colab, and
    # elsewhere), the start of the session's container on Kaggle (see _session_start).
    boot_time: float
    on_kaggle: bool = False
    kaggle_dir: Path = Path("/kaggle")
    kaggle_run_type: str = ""  # "Interactive" (the editor) or "Batch" (a saved version's run)

    @property
    def drive_root(self) -> Path:
        return self.content_dir / "drive" / "MyDrive"

    @property
    def kaggle_input(self) -> Path:
        """Kaggle's read-only inputs: attached data sets, models and notebook outputs."""
        return self.kaggle_dir / "input"

    @property
    def kaggle_working(self) -> Path:
        """Kaggle's writable folder, saved as the notebook's output with a version."""
        return self.kaggle_dir / "working"

    @property
    def kaggle_temp(self) -> Path:
        """Where Kaggle's notebook template says temporary files go: local disk that is not
        saved with the output and not counted in /kaggle/working's 20 GB."""
        return self.kaggle_dir / "temp"

    def in_kaggle_input(self, path: Path) -> bool:
        """Whether ``path`` lies under /kaggle/input on Kaggle (as written, or once links
        are followed: an input may be a link into another mount)."""
        if not self.on_kaggle:
            return False
        written = Path(os.path.normpath(path))
        followed = Path(os.path.realpath(path))
        root = self.kaggle_input
        return written.is_relative_to(root) or followed.is_relative_to(os.path.realpath(root))

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
        if self.on_kaggle:
            where = f"Kaggle ({self.kaggle_run_type})" if self.kaggle_run_type else "Kaggle"
        else:
            where = "Colab" if self.on_colab else "not Colab"
        drive = ", Drive mounted" if self.drive_mounted else ""
        gpu = f", GPU: {', '.join(self.gpu_names)}" if self.gpu_names else ", no GPU"
        return where + drive + gpu


def detect_host(environ: Mapping[str, str] | None = None) -> Host:
    env = os.environ if environ is None else environ
    content_dir = Path(env.get("BOOTSTRAP_CONTENT_DIR", "/content"))
    kaggle_dir = Path(env.get("BOOTSTRAP_KAGGLE_DIR", "/kaggle"))
    colab_flag, kaggle_flag = _flag(env, "BOOTSTRAP_COLAB"), _flag(env, "BOOTSTRAP_KAGGLE")
    if colab_flag and kaggle_flag:
        raise UsageError(
            "BOOTSTRAP_COLAB and BOOTSTRAP_KAGGLE are both on: a machine is one or the other",
            hint="unset one of them (or set it to 0)",
        )
    # A forced answer for one platform rules the other out: tests fake one at a time.
    on_kaggle = kaggle_flag
    if on_kaggle is None:
        on_kaggle = not colab_flag and _looks_like_kaggle(env, kaggle_dir)
    on_colab = colab_flag
    if on_colab is None:
        on_colab = not on_kaggle and _looks_like_colab(env, content_dir)
    mounts = Path(env.get("BOOTSTRAP_MOUNTS_FILE", "/proc/mounts"))
    return Host(
        on_colab=on_colab,
        content_dir=content_dir,
        drive_mounted=_drive_mounted(content_dir, mounts),
        gpu_names=_gpus(env),
        boot_time=_session_start(env, on_kaggle),
        on_kaggle=on_kaggle,
        kaggle_dir=kaggle_dir,
        kaggle_run_type=env.get(KAGGLE_RUN_TYPE, "") if on_kaggle else "",
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


def _looks_like_kaggle(env: Mapping[str, str], kaggle_dir: Path) -> bool:
    # Kaggle's notebook runtime sets KAGGLE_KERNEL_RUN_TYPE in every process it starts; the
    # writable /kaggle/working is checked too, since Kaggle's Docker image run elsewhere has
    # /kaggle but no such variable, and a variable copied into another shell has no /kaggle.
    return bool(env.get(KAGGLE_RUN_TYPE)) and (kaggle_dir / "working").is_dir()


def _gpus(env: Mapping[str, str]) -> tuple[str, ...]:
    """The GPUs the training may use: BOOTSTRAP_GPU's answer, or those the driver lists,
    narrowed to CUDA_VISIBLE_DEVICES when that is set (torchrun's nproc: auto counts them)."""
    raw = env.get("BOOTSTRAP_GPU", "").strip()
    if raw.isdigit() and raw not in ("0", "1"):
        return tuple(f"GPU {i} (forced by BOOTSTRAP_GPU)" for i in range(int(raw)))
    flag = _flag(env, "BOOTSTRAP_GPU")
    if flag is not None:
        return ("forced by BOOTSTRAP_GPU",) if flag else ()
    return _visible(_detect_gpus(), env.get("CUDA_VISIBLE_DEVICES"))


def _visible(names: tuple[str, ...], visible: str | None) -> tuple[str, ...]:
    """``names`` as CUDA_VISIBLE_DEVICES narrows them: indices pick GPUs (CUDA stops at the
    first one that is not there); UUIDs or MIG names cannot be matched here, so they count."""
    if visible is None:
        return names
    entries = [entry.strip() for entry in visible.split(",")]
    if not entries[0]:
        return ()  # "" hides every GPU (as --smoke does for the training)
    if not all(entry.lstrip("-").isdigit() for entry in entries):
        return names[: len(entries)]
    chosen: list[str] = []
    for entry in entries:
        index = int(entry)
        if not 0 <= index < len(names):
            break
        chosen.append(names[index])
    return tuple(chosen)


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


def _session_start(env: Mapping[str, str], on_kaggle: bool) -> float:
    override = env.get("BOOTSTRAP_BOOT_TIME")
    if override:
        try:
            return float(override)
        except ValueError:
            pass
    boot = _boot_time()
    if on_kaggle:
        # A Kaggle session is a container on a shared machine: the kernel's boot time
        # (/proc/stat) is the machine's, maybe days old, while the 12-hour limit counts from
        # the session. The container's first process (PID 1 in its own PID namespace) starts
        # with the session, and, unlike the notebook kernel, a kernel restart leaves it alone.
        started = _process_start(1, boot)
        if started is not None:
            return started
    return boot


def _boot_time() -> float:
    for line in _lines(Path("/proc/stat")):
        if line.startswith("btime "):
            return float(line.split()[1])
    return time.time()


def _process_start(pid: int, boot: float) -> float | None:
    """When process ``pid`` started (epoch seconds), from /proc; None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses; starttime is the
        # 22nd field, the 20th after comm, in clock ticks since boot.
        ticks = int(stat[stat.rindex(")") + 2 :].split()[19])
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
