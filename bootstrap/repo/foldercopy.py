"""Copy a plain folder (not a git repository) into the repo's destination, incrementally.

New and changed files (by size and mtime) are copied again; nothing in ``dest`` is ever deleted,
because the training may write its own files there. ``COPY_MARKER`` in ``dest`` records which
source it is a copy of, so a copy interrupted half-way is recognised and resumed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from bootstrap.errors import RepoError
from bootstrap.fsutil import atomic_write_json, read_json
from bootstrap.progress import ProgressFactory

COPY_MARKER = ".bootstrap-copy"  # in a copied folder: which source it is a copy of


def copy_folder(
    src: Path, dest: Path, progress: ProgressFactory
) -> tuple[str, Literal["copied", "unchanged"]]:
    """Copy new and changed files (by size and mtime) of ``src`` into ``dest``; delete nothing.

    Returns a digest of the source's file list (sizes, mtimes) and whether anything was copied.
    """
    marker = dest / COPY_MARKER
    fix = f"delete or move {dest} and run again"
    if dest.exists() and not dest.is_dir():
        raise RepoError(f"{dest} is a file, not a folder to copy {src} into", hint=fix)
    if dest.is_dir() and any(dest.iterdir()):
        recorded = read_json(marker)
        if not isinstance(recorded, dict) or recorded.get("source") != str(src):
            what = (
                f"a copy of {recorded['source']}" if isinstance(recorded, dict) else "other files"
            )
            raise RepoError(f"{dest} already holds {what}, not a copy of {src}", hint=fix)
    try:
        # The marker goes first so that a copy interrupted half-way is recognised and resumed.
        atomic_write_json(marker, {"source": str(src)})
        digest, todo = hashlib.sha1(), []
        for rel, stat, link in _walk(src, skip=dest):
            digest.update(f"{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\0{link}\n".encode())
            if not _same_file(dest / rel, stat, link):
                todo.append((rel, stat.st_size, link))
        bar = progress(f"copy {src.name}", total=sum(size for _, size, _ in todo), unit="B")
        for rel, size, link in todo:
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink() or (link is not None and target.exists()):
                target.unlink()
            if link is not None:
                os.symlink(link, target)
            else:
                shutil.copy2(src / rel, target)
            bar.advance(size)
        bar.close()
    except OSError as exc:
        raise RepoError(f"could not copy {src} into {dest}: {exc}", hint=fix) from exc
    return digest.hexdigest(), "copied" if todo else "unchanged"


def _walk(src: Path, skip: Path) -> Iterator[tuple[Path, os.stat_result, str | None]]:
    """(relative path, lstat, link target or None) of every file and symlink under ``src``."""
    for root, dirs, files in os.walk(src):
        here = Path(root)
        links = [d for d in dirs if (here / d).is_symlink()]  # copied as links, not followed
        dirs[:] = sorted(d for d in dirs if d not in links and here / d != skip)
        for name in sorted(files + links):
            path = here / name
            if here == src and name == COPY_MARKER:
                continue
            stat = path.lstat()
            link = os.readlink(path) if path.is_symlink() else None
            yield path.relative_to(src), stat, link


def _same_file(target: Path, stat: os.stat_result, link: str | None) -> bool:
    try:
        have = target.lstat()
    except FileNotFoundError:
        return False
    if link is not None:
        return target.is_symlink() and os.readlink(target) == link
    return have.st_size == stat.st_size and have.st_mtime_ns == stat.st_mtime_ns
