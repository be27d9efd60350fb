"""The ``robust-kd`` command: one verb per job.

Every failure the user can fix (a wrong name, a missing file, a bad value) ends as one line on
stderr and exit code 2; tracebacks are kept for real bugs.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any, Sequence

import click

from ..errors import UserError
from .attack_cmd import attack, transfer
from .data_cmd import data
from .distill_cmd import distill
from .fs_errors import user_path_problem
from .models_cmd import models
from .quickstart_cmd import quickstart
from .report_cmd import report
from .rsa_cmd import rsa, rsa_adversarial, rsa_models
from .study_cmd import study
from .train_cmd import train


@click.group(
    name="robust-kd",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
def cli() -> None:
    """Train, distil, attack and compare compact image classifiers.

    Run 'robust-kd VERB --help' for the options and an example of each verb.
    """


for command in (models, data, train, distill, attack, transfer, rsa, rsa_adversarial, rsa_models, report, quickstart,
                study):
    cli.add_command(command)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# verbs that split their work across torchrun's processes
DISTRIBUTED_VERBS = ("attack", "train", "distill")


def _join_torchrun(args: list[str]) -> None:
    """Under torchrun: join the process group; ranks other than 0 print nothing but errors."""
    from .. import console, distributed

    verb = next((a for a in args if not a.startswith("-")), None)
    if verb not in DISTRIBUTED_VERBS:
        raise UserError(f"'robust-kd {verb}' does not run under torchrun; run it as one process "
                        f"(verbs that do: {', '.join(DISTRIBUTED_VERBS)})")
    distributed.init_from_env()
    if not distributed.is_main():
        import os

        sys.stdout = open(os.devnull, "w")   # tables, JSON and results lines come from rank 0 only
        console.stdout().quiet = True
        console.stderr().quiet = True        # progress too; errors still reach stderr


_RESUME_NOTES = {  # what an interrupted verb keeps
    "train": "finished epochs are saved, rerun the same command to resume",
    "distill": "finished epochs are saved, rerun the same command to resume",
    "attack": "finished batches and the last snapshot of the one in flight are saved, rerun the same command to resume",
    "quickstart": "finished steps are saved, rerun the same command to resume",
    "study": "finished jobs are saved, rerun the same command to resume",
    "transfer": "finished batches of examples are saved, rerun the same command to resume",
}


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a cluster job's time limit or preemption): it unwinds like Ctrl-C, so every
    verb saves what it has finished (atomically) before the process exits."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


_NOT_INSTALLED = object()


def _on_sigterm(handler: Any) -> Any:
    """Install ``handler`` for SIGTERM and return the previous one; off the main thread, where
    Python cannot handle signals, install nothing and return ``_NOT_INSTALLED``."""
    if threading.current_thread() is not threading.main_thread():
        return _NOT_INSTALLED
    return signal.signal(signal.SIGTERM, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``robust-kd`` script; returns (and, from the shell, exits with) the exit code."""
    from ..distributed import launched_by_torchrun

    args = list(sys.argv[1:] if argv is None else argv)
    previous_sigterm = _on_sigterm(_raise_terminated)
    try:
        code = _run(args)
    finally:
        if previous_sigterm is not _NOT_INSTALLED:
            _on_sigterm(signal.SIG_DFL if previous_sigterm is None else previous_sigterm)
    if launched_by_torchrun():
        from ..distributed import shutdown

        shutdown()
    if argv is None:
        sys.exit(code)
    return code


def _run(args: list[str]) -> int:
    """The verb's exit code; every failure a user can fix becomes one line on stderr."""
    from ..distributed import launched_by_torchrun

    try:
        if launched_by_torchrun():
            _join_torchrun(args)
        result = cli.main(args=args, prog_name="robust-kd", standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except UserError as err:
        from ..distributed import say_once

        line = f"robust-kd: error: {_one_line(str(err))}"
        say_once(err, lambda: print(line, file=sys.stderr, flush=True))
        code = err.exit_code
    except OSError as err:      # a full disk, a read-only folder, a name too long: one line; others are bugs
        line = user_path_problem(err, args[0] if args else "")
        if line is None:
            raise
        print(f"robust-kd: error: {_one_line(line)}", file=sys.stderr, flush=True)
        code = 2
    except click.exceptions.NoArgsIsHelpError as err:
        print(err.ctx.get_help() if err.ctx else "", file=sys.stderr)
        code = 0
    except click.UsageError as err:
        verb = err.ctx.command_path if err.ctx is not None else "robust-kd"
        print(f"robust-kd: error: {_one_line(err.format_message())} (see '{verb} --help')", file=sys.stderr)
        code = 2
    except click.ClickException as err:
        print(f"robust-kd: error: {_one_line(err.format_message())}", file=sys.stderr)
        code = err.exit_code
    except click.exceptions.Exit as err:
        code = err.exit_code
    except (KeyboardInterrupt, click.exceptions.Abort) as err:
        note = _RESUME_NOTES.get(args[0] if args else "")
        terminated = isinstance(err, Terminated) or isinstance(err.__cause__, Terminated)  # click wraps it in Abort
        print(f"robust-kd: {'terminated (SIGTERM)' if terminated else 'interrupted'}" + (f"; {note}" if note else ""),
              file=sys.stderr)
        code = 143 if terminated else 130
    return code
