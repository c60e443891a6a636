"""Host detection from faked facts: Colab, the Drive mount, GPUs, the VM's boot time."""

from __future__ import annotations

from pathlib import Path

from bootstrap.host import detect_host


def _fake_colab(tmp_path: Path, *, mounted: bool) -> dict[str, str]:
    content = tmp_path / "content"
    (content / "drive" / "MyDrive").mkdir(parents=True)
    mounts = tmp_path / "mounts"
    line = f"drive {content / 'drive'} fuse.drive rw,nosuid,nodev 0 0\n" if mounted else ""
    mounts.write_text("proc /proc proc rw 0 0\n" + line)
    return {
        "COLAB_RELEASE_TAG": "release-colab_20260801",
        "BOOTSTRAP_CONTENT_DIR": str(content),
        "BOOTSTRAP_MOUNTS_FILE": str(mounts),
        "BOOTSTRAP_GPU": "0",
        "BOOTSTRAP_BOOT_TIME": "1000.5",
    }


def test_colab_with_drive_mounted(tmp_path: Path) -> None:
    host = detect_host(_fake_colab(tmp_path, mounted=True))
    assert host.on_colab and host.drive_mounted
    assert host.drive_root == tmp_path / "content" / "drive" / "MyDrive"
    assert host.boot_time == 1000.5
    assert not host.has_gpu


def test_drive_folder_without_a_fuse_mount_is_not_mounted(tmp_path: Path) -> None:
    # After a Drive disconnect the folder can linger while the mount is gone.
    host = detect_host(_fake_colab(tmp_path, mounted=False))
    assert host.on_colab and not host.drive_mounted


def test_not_colab_without_its_environment(tmp_path: Path) -> None:
    host = detect_host({"BOOTSTRAP_CONTENT_DIR": str(tmp_path), "BOOTSTRAP_GPU": "1"})
    assert not host.on_colab
    assert host.has_gpu


def test_overrides_win(tmp_path: Path) -> None:
    env = _fake_colab(tmp_path, mounted=True)
    env["BOOTSTRAP_COLAB"] = "0"
    assert not detect_host(env).on_colab
    assert detect_host({"BOOTSTRAP_COLAB": "yes", "BOOTSTRAP_GPU": "0"}).on_colab
