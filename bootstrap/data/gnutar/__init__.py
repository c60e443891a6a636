"""The GNU tar fast path: we parse and check every member, and GNU tar writes the files.

Modules, each with one job:

- ``extract``: the entry point: ``tools_for`` (GNU tar and a decompressor on PATH),
  ``writer_count`` and ``extract_tar_gnu``, which runs the parts below and feeds them.
- ``decompress``: the plain tar stream, read as it is, inflated or piped through a decompressor.
- ``inflate``: the gzip ``Inflater`` thread, and ``quick_thread_switches``.
- ``processes``: the GNU tar writer processes (and a decompressor's): start, feed, stop.
- ``failures``: tar's logs, and every way this path stops mapped to the error to report.
- ``rewriter``: ``TarRewriter``, the state machine that validates and re-emits each member.
- ``headers``: tar header fields: parsing (octal, base-256, pax) and writing GNU headers.
- ``routing``: which writer tar gets each member, and the batched writes to it.
"""
