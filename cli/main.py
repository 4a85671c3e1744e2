"""The ``mlkd-cache`` command: a click group whose commands live one per module.

Any :class:`~mlkd_cache.errors.MlkdError` a command raises becomes one line on stderr and exit
code 2 (no traceback); :func:`main` reports click's own usage errors (unknown option, missing
option, value out of range) the same way, in one line that points at ``--help``. Under torchrun a
rank that fails leaves at once (:func:`~mlkd_cache.distributed.exit_process`), so torchrun stops
the other ranks within seconds; a rank whose collective failed because another rank is gone
says so in one line.
"""

from __future__ import annotations

import errno
import logging
import sys
import traceback
from typing import NoReturn, Optional, Sequence

import click

from .._version import __version__
from ..errors import MlkdError, one_line
from .common import CONTEXT_SETTINGS

DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)  # a write the disk refused: the user's to fix


def _exit(code: int) -> NoReturn:
    """:func:`~mlkd_cache.distributed.exit_process` once torch is loaded (a process group may be
    open); before that (``--help``, ``--version``, a usage error) a plain exit, and torch stays
    unloaded."""
    if "torch" in sys.modules:
        from ..distributed import exit_process

        exit_process(code)
    sys.exit(code)


class MlkdGroup(click.Group):
    """A group that reports library errors in one line with exit code 2. It imports nothing heavy:
    each command imports what it runs when it runs, so ``--help`` and ``--version`` answer at once."""

    def invoke(self, ctx: click.Context):
        try:
            result = super().invoke(ctx)
            if "torch" in sys.modules:  # a command ran: leave its process group, if any
                from ..distributed import close_process_group

                close_process_group()
            return result
        except MlkdError as exc:
            click.echo(f"error: {one_line(exc)}", err=True)
            _exit(2)  # under torchrun: leave at once, so torchrun stops the other ranks
        except OSError as exc:
            if exc.errno not in DISK_FULL:
                raise
            where = f" {exc.filename}" if exc.filename else ""
            click.echo(f"error: cannot write{where}: {exc.strerror}; free space or choose another --out", err=True)
            _exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            _exit(130)


@click.group(cls=MlkdGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="mlkd-cache")
def app() -> None:
    """Offline multi-label knowledge distillation: train a teacher once, cache what it knows
    about every training image, train many students from the cache."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)


def _register() -> None:
    from .demo import demo
    from .distill_student import distill_student
    from .dump_targets import dump_targets
    from .evaluate import evaluate
    from .export import export
    from .import_teacher import import_teacher
    from .inspect_cache import inspect_command
    from .plot import plot
    from .predict import predict
    from .sweep import sweep
    from .teacher_train import teacher_train
    from .tune_thresholds import tune_thresholds
    from .verify import verify

    for command in (
        teacher_train,
        import_teacher,
        dump_targets,
        distill_student,
        sweep,
        inspect_command,
        verify,
        evaluate,
        tune_thresholds,
        predict,
        plot,
        demo,
        export,
    ):
        app.add_command(command)


_register()


# click >= 8.2 raises this for a bare ``mlkd-cache``; 8.1 prints the help and exits 0 itself.
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


def usage_line(exc: click.ClickException, argv: Sequence[str] = ()) -> str:
    """``exc`` as one line: ``error: <message> (see 'mlkd-cache <cmd> --help')``. Errors raised
    while options are parsed carry no context; their command is then read from ``argv``."""
    message = " ".join(exc.format_message().split()).rstrip(".")
    if isinstance(exc, click.UsageError):
        ctx = getattr(exc, "ctx", None)
        if ctx is not None:
            path = ctx.command_path
        else:
            command = next((a for a in argv if a in app.commands), None)
            path = f"mlkd-cache {command}" if command else "mlkd-cache"
        message += f" (see '{path} --help')"
    return f"error: {message}"


def main(args: Optional[Sequence[str]] = None) -> None:
    """Console-script entry point: runs the group and exits with its code (0, 1 for a failed
    ``verify``, 2 for bad input, 130 when interrupted); click's usage errors become one line."""
    try:
        code = app.main(args=args, prog_name="mlkd-cache", standalone_mode=False)
    except _NO_ARGS_IS_HELP as exc:  # bare ``mlkd-cache``: the help, as click shows it
        exc.show()
        sys.exit(exc.exit_code)
    except click.ClickException as exc:  # usage errors and bad parameter values
        click.echo(usage_line(exc, sys.argv[1:] if args is None else args), err=True)
        sys.exit(2)
    except click.Abort:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # under torchrun a failing rank must end at once, whatever the error
        if "torch" not in sys.modules:
            raise
        import torch.distributed

        from ..distributed import exit_process, lost_peer, process_group_active

        if not process_group_active():
            raise
        if lost_peer(exc):  # the rank that failed reports why; this one only stopped waiting for it
            rank = torch.distributed.get_rank()
            click.echo(
                f"error: rank {rank}: another rank failed or was killed while this one waited for it; see its message", err=True
            )
        else:
            traceback.print_exc()
        exit_process(1)
    code = code if isinstance(code, int) else 0
    if "torch" not in sys.modules:  # --help, --version: no process group can be open
        sys.exit(code)
    from ..distributed import finish_process

    finish_process(code)


if __name__ == "__main__":
    main()
