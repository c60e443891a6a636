"""``python -m bootstrap init URL [-o recipe.yaml] [--ref REF]``: the command line of ``init``.

``bootstrap.cli.main`` hands argv here when its first word is ``init``. Like the main CLI, this
is an adapter: it parses, calls ``init_recipe``, prints a summary and maps errors to exit codes.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from bootstrap.errors import BootstrapError, ExitCode

log = logging.getLogger("bootstrap")

DESCRIPTION = """\
Write a recipe for a training repo: clone it (shallow, into scratch), read it without running
any of its code, and write a recipe with a comment on each inferred value (the file and line it
came from, and how sure it is) and {TODO} where init could not decide. Then check it:
  python -m bootstrap RECIPE --dry-run
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bootstrap init",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("url", help="the repo: a git URL (https, ssh, file) or a local folder")
    parser.add_argument(
        "-o", "--output", metavar="PATH", help="the recipe to write (default: ./NAME.yaml)"
    )
    parser.add_argument("--ref", help="branch or tag to read (default: the remote's HEAD)")
    parser.add_argument(
        "--path", metavar="SUBDIR", help="the subfolder the training runs in (repo.path)"
    )
    parser.add_argument("--name", help="the recipe's name (default: the repo's)")
    parser.add_argument(
        "--force", action="store_true", help="overwrite a recipe that was edited since init"
    )
    parser.add_argument("--scratch", metavar="PATH", help="fast local storage for the clone")
    parser.add_argument(
        "--token-env",
        metavar="NAME",
        help="environment variable with a token for a private https repo (repo.token_env)",
    )
    noise = parser.add_mutually_exclusive_group()
    noise.add_argument("-q", "--quiet", action="store_true", help="only errors and the path")
    noise.add_argument("-v", "--verbose", action="store_true", help="tracebacks on errors")
    return parser


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)

    from bootstrap.init.command import init_recipe
    from bootstrap.ui import ConsoleReporter

    reporter = ConsoleReporter(quiet=args.quiet)
    try:
        with reporter.step("init") as step:
            result = init_recipe(
                args.url,
                output=args.output,
                ref=args.ref,
                path=args.path,
                name=args.name,
                force=args.force,
                scratch=args.scratch,
                token_env=args.token_env,
                progress=reporter.progress,
            )
            step.note(f"{result.commit[:10]} in {result.clone}")
    except BootstrapError as exc:
        reporter.message(f"error: {exc.message}", style="bold red")
        if exc.hint:
            reporter.message(f"fix: {exc.hint}", style="yellow")
        if args.verbose:
            import traceback

            reporter.message("".join(traceback.format_exception(exc)))
        return int(exc.exit_code)
    except KeyboardInterrupt:
        reporter.message("interrupted; nothing was written", style="yellow")
        return int(ExitCode.INTERRUPTED)
    for line in summary(result):
        if not args.quiet:
            reporter.message(line)
    sys.stdout.write(f"{result.path}\n")
    return int(ExitCode.FINISHED)


def summary(result: object) -> list[str]:
    """What init decided, one line per part, and what is left to do."""
    from bootstrap.init.command import InitResult

    assert isinstance(result, InitResult)
    r = result.reading
    verb = {"written": "wrote", "replaced": "replaced", "unchanged": "unchanged:"}[result.action]
    lines = [f"{verb} {result.path}"]

    def row(label: str, text: str) -> None:
        lines.append(f"  {label:<12}{text}")

    row("entry", r.entry.finding.comment())
    for finding in r.cli.findings:
        row("flags", finding.comment())
    row("resume", r.resume.finding.comment())
    if r.checkpoints.finding is not None:
        row("checkpoints", r.checkpoints.finding.comment())
    for finding in r.install.findings:
        row("install", finding.comment())
    row("data", r.data.finding.comment())
    row("gpu", f"{r.gpu.gpu}: {r.gpu.finding.comment()}")
    if r.smoke.finding is not None:
        row("smoke", r.smoke.finding.comment())
    if result.blockers:
        lines.append("blocking (the loader and --dry-run refuse the recipe until they are set):")
        lines += [f"  line {b.line}: {b.key}: {b.why}" for b in result.blockers]
    for todo in result.todos:
        lines.append(f"  TODO {todo}")
    name = result.path.name
    first = "edit the {TODO} lines, then " if result.blockers else ""
    lines.append(f"next: {first}python -m bootstrap {name} --dry-run")
    if r.gpu.gpu == "required":
        lines.append("  (gpu: required: on a machine without a GPU, add --smoke to check it there)")
    return lines
