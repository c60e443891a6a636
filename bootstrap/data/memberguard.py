"""Decide, member by member, whether an archive may be extracted: ``MemberGuard``.

Every member passes the guard before anything is written: no absolute paths, no ``..``, no NUL
bytes or over-long names, no member whose path is or passes through an earlier symlink, no link
that replaces an earlier member, no hardlink to anything but a regular file already extracted,
and no symlink whose target leaves the folder. The last is checked twice: lexically as each link
arrives, and in ``finish`` by resolving every link through the archive's own links in memory (a
later link can change where an earlier one points, and an in-memory walk does not depend on
PATH_MAX as ``os.path.realpath`` does).
"""

from __future__ import annotations

import os
import re

from bootstrap.errors import DataError

MAX_PATH = 3072  # bytes, leaving room under PATH_MAX for the destination's own path
_MAX_COMPONENT = 255  # bytes, the usual NAME_MAX
_MAX_LINK_HOPS = 40  # as the kernel's ELOOP limit
_DRIVE = re.compile(r"^[A-Za-z]:")


def _plain(path: str) -> bool:
    """True for a path that ``_split`` would return unchanged, joined: short ASCII, relative,
    and without an empty, ``.`` or ``..`` part, or a NUL. A shortcut only: a path that fails
    it goes the long way, which decides."""
    return (
        len(path) <= _MAX_COMPONENT  # so no length limit can apply, for ASCII
        and path.isascii()
        and path[:1] not in ("", ".", "/")
        and "/." not in path
        and "//" not in path
        and not path.endswith("/")
        and "\x00" not in path
    )


class MemberGuard:
    """Checks members in archive order, remembering what was extracted before them.

    ``check`` returns the member's normalised relative path (and link target), or None for the
    archive's root entry; it raises DataError for anything unsafe. Call ``finish`` after the
    last member to verify every symlink with the whole archive known.
    """

    def __init__(self, archive: str, *, backslash_separators: bool = False):
        self.archive = archive
        self._backslash = backslash_separators
        self._seen: set[str] = set()  # member paths and their parent folders
        self._files: set[str] = set()  # regular files, the only valid hardlink targets
        self._links: dict[str, str] = {}  # symlink path -> raw target

    def reject(self, member: str, reason: str) -> DataError:
        return DataError(
            f"{self.archive}: refusing unsafe member {member!r}: {reason}",
            hint="the archive is broken or malicious; nothing from it was placed in the "
            "destination. Rebuild it with relative paths and links that stay inside it",
        )

    def check(self, name: str, kind: str, link: str = "") -> tuple[str, str] | None:
        if kind == "file" and not self._links and not self._backslash:
            # The usual member, decided without splitting its path (a data set's 20,000 small
            # files pass here, and per member this is most of the guard's cost).
            path = name[2:] if name.startswith("./") else name
            if _plain(path):
                parent = path.rpartition("/")[0]
                if not parent or parent in self._seen:
                    self._files.add(path)
                    self._seen.add(path)
                    return path, ""
        parts = self._split(name, name)
        if not parts:
            if kind == "dir":
                return None
            raise self.reject(name, "it has an empty name")
        path = "/".join(parts)
        if self._links:
            for i in range(1, len(parts) + 1):
                through = "/".join(parts[:i])
                if through in self._links:
                    how = "would overwrite" if through == path else "goes through"
                    raise self.reject(name, f"it {how} the symlink {through!r}")
        if kind in ("symlink", "hardlink") and path in self._seen:
            raise self.reject(name, "a link may not replace an earlier member")
        if kind == "symlink":
            link = self._check_symlink(name, parts, link)
            self._links[path] = link
        elif kind == "hardlink":
            target = "/".join(self._split(link, name, f"its target {link!r}"))
            if target not in self._files:
                raise self.reject(name, f"hardlink to {link!r}, not a file extracted before it")
            link = target
        if kind in ("file", "hardlink"):
            self._files.add(path)
        parent = path.rpartition("/")[0]
        if not parent or parent in self._seen:  # its own parents were added with it
            self._seen.add(path)
        else:
            self._seen.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
        return path, link if kind in ("symlink", "hardlink") else ""  # only links have one

    def finish(self) -> None:
        for path, target in self._links.items():
            problem = self._resolves_outside(path, target)
            if problem:
                raise self.reject(path, problem)

    def _split(self, text: str, member: str, what: str = "its path") -> list[str]:
        if "\x00" in text:
            raise self.reject(member, f"{what} contains a NUL byte")
        if self._backslash:
            text = text.replace("\\", "/")
            if _DRIVE.match(text):
                raise self.reject(member, f"{what} starts with a drive letter")
        if text.startswith("/"):
            raise self.reject(member, f"{what} is absolute")
        parts = [p for p in text.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise self.reject(member, f"{what} contains '..'")
        size = len(text) if text.isascii() else len(os.fsencode(text))
        if size > MAX_PATH:
            raise self.reject(member, f"{what} is longer than {MAX_PATH} bytes")
        if size > _MAX_COMPONENT and any(len(os.fsencode(p)) > _MAX_COMPONENT for p in parts):
            raise self.reject(member, f"{what} has a name longer than {_MAX_COMPONENT} bytes")
        return parts

    def _check_symlink(self, name: str, parts: list[str], target: str) -> str:
        if not target or "\x00" in target or len(os.fsencode(target)) > MAX_PATH:
            raise self.reject(name, f"symlink with an invalid target {target[:80]!r}")
        if self._backslash:
            target = target.replace("\\", "/")
        if target.startswith("/") or (self._backslash and _DRIVE.match(target)):
            raise self.reject(name, f"symlink to the absolute path {target!r}")
        depth = len(parts) - 1
        for part in target.split("/"):
            if part == "..":
                depth -= 1
                if depth < 0:
                    raise self.reject(name, f"symlink to {target!r}, outside the archive")
            elif part not in ("", "."):
                depth += 1
        return target

    def _resolves_outside(self, path: str, target: str) -> str | None:
        """Resolve ``target`` as the kernel would, through the archive's own symlinks."""
        resolved = path.split("/")[:-1]
        todo = list(reversed(target.split("/")))
        hops = 0
        while todo:
            part = todo.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if not resolved:
                    return f"symlink to {target!r}, which leads outside the archive"
                resolved.pop()
                continue
            resolved.append(part)
            inner = self._links.get("/".join(resolved))
            if inner is not None:
                hops += 1
                if hops > _MAX_LINK_HOPS:
                    return f"symlink to {target!r} loops"
                resolved.pop()
                todo.extend(reversed(inner.split("/")))
        return None
