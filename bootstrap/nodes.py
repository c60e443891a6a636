"""A training on several machines: how many nodes, which one this is, and where torchrun's
ranks meet, read from the environment that whatever starts the tool on each node sets.

Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bootstrap.errors import UsageError

# Set by whatever starts the tool on each node of a cluster (the SkyPilot task that
# bootstrap.export.skypilot writes sets them from SkyPilot's own variables). Read from the
# environment rather than the command line because the recipe and the command line are the
# same on every node: only the node's place in the group differs.
NNODES, NODE_RANK = "BOOTSTRAP_NNODES", "BOOTSTRAP_NODE_RANK"
MASTER_ADDR, MASTER_PORT = "BOOTSTRAP_MASTER_ADDR", "BOOTSTRAP_MASTER_PORT"
DEFAULT_MASTER_PORT = 29500  # torchrun's own default


def rendezvous_options(environ: Mapping[str, str]) -> list[str]:
    """How torchrun's ranks find each other: ``--standalone`` on one machine; with
    BOOTSTRAP_NNODES above 1, torchrun's static rendezvous on node BOOTSTRAP_NODE_RANK, whose
    rank-0 node listens at BOOTSTRAP_MASTER_ADDR:BOOTSTRAP_MASTER_PORT. Raises UsageError,
    naming the variable, when they are incomplete or not numbers."""
    nnodes, rank = _place(environ, need=(NODE_RANK, MASTER_ADDR))
    if nnodes == 1:
        return ["--standalone"]
    port = _whole_number(environ, MASTER_PORT, DEFAULT_MASTER_PORT, minimum=1, maximum=65535)
    return [
        "--nnodes", str(nnodes), "--node-rank", str(rank),
        "--master-addr", environ[MASTER_ADDR].strip(), "--master-port", str(port),
    ]  # fmt: skip


def node_rank(environ: Mapping[str, str]) -> int:
    """This machine's place in a group of several (BOOTSTRAP_NODE_RANK), 0 on a machine alone.
    Only node 0 writes persist; the others read it (``Plan.node_rank``)."""
    return _place(environ, need=(NODE_RANK,))[1]


def _place(environ: Mapping[str, str], need: Sequence[str]) -> tuple[int, int]:
    """(the number of nodes, this node's rank); UsageError, naming the variable, when a
    group of several lacks one of ``need`` or a number is wrong."""
    nnodes = _whole_number(environ, NNODES, 1, minimum=1)
    if nnodes == 1:
        return 1, 0
    missing = [name for name in need if not environ.get(name, "").strip()]
    if missing:
        raise UsageError(
            f"{NNODES} is {nnodes}, but {' and '.join(missing)} is not set: torchrun cannot "
            "tell this node's place in the group",
            hint=f"set {NODE_RANK} (0 to {nnodes - 1}) and {MASTER_ADDR} (the address of "
            f"node 0) on every node, or unset {NNODES} to train on this machine alone",
        )
    rank = _whole_number(environ, NODE_RANK, 0, minimum=0)
    if rank >= nnodes:
        raise UsageError(
            f"{NODE_RANK} is {rank}, but {NNODES} is {nnodes}",
            hint=f"number the nodes 0 to {nnodes - 1}",
        )
    return nnodes, rank


def _whole_number(
    environ: Mapping[str, str], name: str, default: int, *, minimum: int, maximum: int = 2**31
) -> int:
    text = environ.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or not minimum <= int(text) <= maximum:
        within = f"{minimum} or more" if maximum == 2**31 else f"{minimum} to {maximum}"
        raise UsageError(
            f"{name} is {text!r}, not a whole number of {within}",
            hint=f"set {name} to a number, or unset it",
        )
    return int(text)
