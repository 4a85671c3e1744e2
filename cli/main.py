"""The ``mlkd-cache`` command: a click group whose commands live one per module.

Any :class:`~mlkd_cache.errors.MlkdError` a command raises becomes one line on stderr and exit
code 2 (no traceback), the way click reports usage errors.
"""
from __future__ import annotations

import logging
import sys

import click

from .. import __version__
from ..errors import MlkdError, one_line
from .common import CONTEXT_SETTINGS


class MlkdGroup(click.Group):
    """A group that reports library errors in one line with exit code 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MlkdError as exc:
            click.echo(f"error: {one_line(exc)}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


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
    from .inspect_cache import inspect_command
    from .teacher_train import teacher_train
    from .verify import verify

    for command in (teacher_train, dump_targets, distill_student, inspect_command, verify, evaluate, demo):
        app.add_command(command)


_register()


def main() -> None:
    """Console-script entry point."""
    app(prog_name="mlkd-cache")


if __name__ == "__main__":
    main()
