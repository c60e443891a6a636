"""``python -m bootstrap``: parse argv, call the library, map errors to exit codes.

This is the one place that prints errors and exits. The library raises BootstrapError; here it
becomes one line (plus a hint), and the traceback goes to the debug log (or the console with
--verbose).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bootstrap.errors import BootstrapError, ExitCode, RecipeError, UsageError

if TYPE_CHECKING:  # imported lazily below so that --help starts fast
    from bootstrap.options import Options
    from bootstrap.plan import Plan
    from bootstrap.runner.supervise import Outcome
    from bootstrap.ui import ConsoleReporter

log = logging.getLogger("bootstrap")

EPILOG = """\
no recipe yet? `python -m bootstrap init URL` reads a repo and writes one (init --help).

exit codes: 0 finished · 2 recipe or usage error · 3 a setup step failed ·
4 training failed after its restarts · 5 stopped at the time limit (resumable) ·
130 interrupted (resumable). Re-running the same command continues a stopped run.
"""

# A recipe problem says its own fix where it has one ("did you mean 'gpu'?"); this line says
# what to do with the list as a whole, so that every error ends with a `fix:` line.
RECIPE_FIX = (
    "correct the recipe where each problem points, then run again "
    "(--dry-run checks it and changes nothing)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bootstrap",
        description="Take a training repo from a YAML recipe to a supervised, resumable run. "
        "`python -m bootstrap init URL` writes a recipe for a repo.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("recipe", type=Path, help="the recipe file (YAML)")
    parser.add_argument("--profile", metavar="NAME", help="apply the recipe's profile NAME")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="apply the 'smoke' profile and run CPU-only, without Drive (for CI), "
        "as a run of its own under smoke/ in the storage roots",
    )
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe key, e.g. --set run.restarts=5 (VALUE is read as YAML)",
    )
    parser.add_argument("--persist", metavar="PATH", help="storage that survives the VM")
    parser.add_argument("--scratch", metavar="PATH", help="fast local storage")
    parser.add_argument(
        "--resume-from",
        metavar="PATH",
        help="a read-only earlier run's persist (e.g. a Kaggle notebook's output attached as "
        "input): its checkpoints are restored when persist holds none",
    )
    again = parser.add_mutually_exclusive_group()
    again.add_argument(
        "--fresh",
        action="store_true",
        help="train again from scratch (earlier checkpoints are set aside)",
    )
    again.add_argument(
        "--extend",
        action="store_true",
        help="train on from the newest checkpoint of a run that finished, e.g. after raising "
        "its epochs with --set",
    )
    parser.add_argument(
        "--status",
        action="store_true",
        help="show this recipe's run: attempts, the last checkpoint, the logs",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the resolved plan and change nothing"
    )
    cloud = parser.add_argument_group("run on cloud machines, with SkyPilot")
    cloud.add_argument(
        "--export",
        choices=["skypilot"],
        help="print a SkyPilot task (YAML) that runs this recipe on cloud machines, persist "
        "on a bucket, instead of running it here",
    )
    cloud.add_argument(
        "--bucket",
        metavar="NAME",
        help="the bucket that holds persist: a name (made when missing) or a URI, gs://NAME",
    )
    cloud.add_argument(
        "--accelerators",
        metavar="GPU[:N]",
        help="GPUs per machine, e.g. A100:8 (default: T4, one per torchrun process)",
    )
    cloud.add_argument(
        "--nodes", type=int, default=1, metavar="N", help="machines (run.launcher: torchrun)"
    )
    cloud.add_argument("--spot", action="store_true", help="spot (preemptible) machines")
    noise = parser.add_mutually_exclusive_group()
    noise.add_argument(
        "-q", "--quiet", action="store_true", help="the training's output, warnings and the outcome"
    )
    noise.add_argument(
        "-v", "--verbose", action="store_true", help="debug messages and tracebacks on the console"
    )
    return parser


def _setup_console_logging(reporter: ConsoleReporter, verbose: bool, quiet: bool) -> None:
    from bootstrap.ui import ConsoleLogHandler

    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    root = logging.getLogger("bootstrap")
    root.setLevel(logging.DEBUG)
    root.addHandler(ConsoleLogHandler(reporter.console, level))
    root.propagate = False


def _add_debug_log(logs_dir: Path) -> Path | None:
    path = logs_dir / f"bootstrap-{time.strftime('%Y%m%d-%H%M%S')}.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Opened at the first record: a re-run that only finds the run finished leaves no file.
        handler = logging.FileHandler(path, encoding="utf-8", delay=True)
    except OSError:
        return None
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("bootstrap").addHandler(handler)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["init"]:  # a command of its own: write a recipe from a repo URL
        from bootstrap.init.cli import main as init_main

        return init_main(words[1:])
    args = build_parser().parse_args(words)

    from bootstrap.options import Options
    from bootstrap.runner.pipeline import execute, make_plan
    from bootstrap.ui import ConsoleReporter

    reporter = ConsoleReporter(quiet=args.quiet)
    _setup_console_logging(reporter, args.verbose, args.quiet)
    options = Options(
        recipe=args.recipe,
        profile=args.profile,
        smoke=args.smoke,
        sets=tuple(args.sets),
        persist=args.persist,
        scratch=args.scratch,
        resume_from=args.resume_from,
        fresh=args.fresh,
        extend=args.extend,
    )
    debug_log: Path | None = None
    try:
        # Before make_plan: the recipe runs on the cloud machines, so this one's GPU and
        # Drive are beside the point (gpu: required exports from a laptop).
        if args.export or _cloud_options(args):
            return _export(args, options)
        plan = make_plan(options)
        if args.status:
            from bootstrap.runner.status import describe_status

            sys.stdout.write("\n".join(describe_status(plan)) + "\n")
            return int(ExitCode.FINISHED)
        if args.dry_run:
            from bootstrap.runner.dryrun import describe_plan

            sys.stdout.write("\n".join(describe_plan(plan, options)) + "\n")
            return int(ExitCode.FINISHED)
        debug_log = _add_debug_log(plan.logs_dir)
        if not args.quiet:
            reporter.message(
                f"{plan.name}: persist {plan.persist} · scratch {plan.scratch} · "
                f"{plan.host.describe()}",
                style="dim",
            )
        outcome = execute(plan, options, reporter)
    except BootstrapError as exc:
        log.debug("error", exc_info=True)
        _print_error(reporter, exc, args.verbose, debug_log)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        reporter.message(
            "interrupted before the training started; re-run the same command to continue",
            style="yellow",
        )
        return int(ExitCode.INTERRUPTED)
    _print_summary(reporter, plan, outcome)
    return int(outcome.exit_code)


def _cloud_options(args: argparse.Namespace) -> bool:
    return bool(args.bucket or args.accelerators or args.spot or args.nodes != 1)


def _export(args: argparse.Namespace, options: Options) -> int:
    """--export skypilot: print the task that runs the recipe on cloud machines."""
    if not args.export:
        raise UsageError(
            "--bucket, --accelerators, --nodes and --spot describe cloud machines, for "
            "--export skypilot",
            hint="add --export skypilot to print the SkyPilot task, or leave them out",
        )
    from bootstrap.export.skypilot import SkyPilotChoices, export_skypilot

    choices = SkyPilotChoices(
        bucket=args.bucket, accelerators=args.accelerators, nodes=args.nodes, spot=args.spot
    )
    sys.stdout.write(export_skypilot(options, choices))
    return int(ExitCode.FINISHED)


def _print_error(
    reporter: ConsoleReporter, exc: BootstrapError, verbose: bool, debug_log: Path | None
) -> None:
    reporter.message(f"error: {exc.message}", style="bold red")
    if exc.details:  # e.g. the installer's last lines; indented so they read as quoted
        reporter.message("\n".join(f"  | {line}" for line in exc.details.rstrip().splitlines()))
    hint = exc.hint or (RECIPE_FIX if isinstance(exc, RecipeError) else None)
    if hint:
        reporter.message(f"fix: {hint}", style="yellow")
    if verbose:
        import traceback

        reporter.message("".join(traceback.format_exception(exc)))
    elif debug_log is not None:
        reporter.message(f"details: {debug_log}", style="dim")


def _print_summary(reporter: ConsoleReporter, plan: Plan, outcome: Outcome) -> None:
    style = {
        ExitCode.FINISHED: "bold green",
        ExitCode.TIME_LIMIT: "bold yellow",
        ExitCode.INTERRUPTED: "bold yellow",
    }.get(outcome.exit_code, "bold red")
    reporter.message(f"{plan.name}: {outcome.message}", style=style)
    if outcome.resumed_from is not None:
        reporter.message(f"  resumed from  {outcome.resumed_from}")
    if outcome.last_checkpoint is not None:
        reporter.message(f"  checkpoint    {outcome.last_checkpoint}")
    reporter.message(f"  mirrored to   {plan.mirror_dir}")
    reporter.message(f"  logs          {plan.logs_dir}")
