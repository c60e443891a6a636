"""Three kinds of value that several steps meet, each with one rule: URLs, SHA-256 digests and
byte counts.

The recipe check, the plan, the steps and the console all ask here, so that they never
disagree about what a value is or how it is shown: a data source the plan takes for a path
while the stager takes it for a URL, or a digest one check accepts and the next refuses.
"""

from __future__ import annotations

import re

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")  # RFC 3986 scheme, then "//"
_SCP = re.compile(r"^([^@/\s]+)@([^:/\s]+):")  # git's scp-like form: git@github.com:me/repo.git
_SHA256 = re.compile(r"[0-9a-f]{64}")


def url_scheme(text: str) -> str | None:
    """The scheme of a ``scheme://...`` URL, lower-cased; None for anything else."""
    match = _SCHEME.match(text)
    return match.group(1).lower() if match else None


def is_url(text: str) -> bool:
    """Whether ``text`` is a ``scheme://`` URL (of any scheme) rather than a path."""
    return url_scheme(text) is not None


def is_http_url(text: str) -> bool:
    """An http or https URL, in any case (``HTTPS://`` too): what a download can fetch."""
    return url_scheme(text) in ("http", "https")


def is_scp_like(text: str) -> bool:
    """git's ``user@host:path`` form of an ssh URL."""
    return _SCP.match(text) is not None


def sha256_digest(value: str) -> str:
    """``value`` as a SHA-256 digest: 64 hexadecimal digits in either case, with or without a
    ``sha256:`` prefix (as some sites print them), returned lower-cased without the prefix.
    Raises ValueError saying what is wrong."""
    digest = value.strip().lower().removeprefix("sha256:")
    if not _SHA256.fullmatch(digest):
        raise ValueError(f"expected 64 hexadecimal characters (a SHA-256), got {value!r}")
    return digest


def format_bytes(count: float) -> str:
    """A byte count as people read it: 512 bytes, 1.5 kB, 3.2 GB.

    Powers of 1000 with SI names, the convention of the progress bars (tqdm's default), so a
    size in a message and the bar above it read the same."""
    size = float(count)
    for unit in ("bytes", "kB", "MB", "GB"):
        if abs(size) < 1000:
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"
