"""The command-line reference, ``docs/cli.md``, generated from the click commands themselves.

Every command in the order ``mlkd-cache --help`` lists them: its usage line, help text, a table of
its arguments and options (names, value type with choices or range, default as click shows it,
help) and its epilog. Nothing depends on the terminal: no click formatter is used, and
paragraphs are rendered the way click splits them, a ``\\b`` paragraph (kept line for line by
click) as prose for its unindented lines and a code block for its indented ones.

Regenerate the page with ``python -m mlkd_cache.cli.reference > docs/cli.md``;
``tests/test_docs.py`` fails while it differs from :func:`cli_reference_markdown`.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import re
import sys
from typing import Iterator, List, Optional, Tuple

import click

from ..errors import missing_dependency
from .main import app

# The generator reads click's help extras (get_help_extra, make_metavar(ctx)), new in click 8.2;
# the CLI itself runs on 8.1. The test extra asks for 8.2 where it can be had (Python >= 3.10).
if not hasattr(click.Option, "get_help_extra"):
    raise missing_dependency("click>=8.2", "regenerating docs/cli.md", installed=importlib.metadata.version("click"))

PROG = "mlkd-cache"
REGENERATE = "python -m mlkd_cache.cli.reference > docs/cli.md"

INTRO = (
    f"Every `{PROG}` command with its usage, help, arguments and options (value, default, meaning) and examples, "
    f"as `{PROG} COMMAND --help` prints them. The page is generated from the click commands in `cli/` "
    f"(`mlkd_cache.cli.reference`), so do not edit it by hand: after changing a command or an option, run "
    f"`{REGENERATE}`; `tests/test_docs.py` fails while the page is stale. The config keys that options override "
    "are described in [configs.md](configs.md)."
)

NO_REWRAP = "\b"  # click's marker line: the paragraph after it is printed as written
HELP_DEFAULT = re.compile(r"\s*\[default: (.+)\]$")  # a default stated in the help text itself
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
BLOCK_START = re.compile(r"^(#{1,6}(?=\s|$)|>|[-+](?=\s|$)|\d{1,9}(?=[.)](\s|$))|=+$)")


def cli_reference_markdown() -> str:
    """The whole of ``docs/cli.md``: title, intro, the group's usage and options, an index of
    the commands and one section per command."""
    root = click.Context(app, info_name=PROG, **app.context_settings)
    names = app.list_commands(root)
    lines = ["# Command-line reference", "", INTRO, "", f"Usage: {_code(_usage(app, root))}", ""]
    lines += _help_text(app.help)
    lines += _params_table(app, root)
    lines += ["| command | what it does |", "|---|---|"]
    commands = [_command(root, name) for name in names]
    lines += [_row(f"[{cmd.name}](#{cmd.name})", _prose(cmd.get_short_help_str(limit=1_000))) for cmd in commands]
    lines.append("")
    for cmd in commands:
        ctx = click.Context(cmd, info_name=cmd.name, parent=root, **cmd.context_settings)
        lines += [f"## {cmd.name}", "", f"Usage: {_code(_usage(cmd, ctx))}", ""]
        lines += _help_text(cmd.help)
        lines += _params_table(cmd, ctx)
        lines += _paragraphs(inspect.cleandoc(cmd.epilog)) if cmd.epilog else []
    while lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def _command(root: click.Context, name: str) -> click.Command:
    cmd = app.get_command(root, name)
    assert cmd is not None, name
    return cmd


def _usage(cmd: click.Command, ctx: click.Context) -> str:
    return " ".join([ctx.command_path, *cmd.collect_usage_pieces(ctx)])


def _help_text(text: Optional[str]) -> List[str]:
    """A command's help as click prints it: dedented, cut at the first form feed."""
    return _paragraphs(inspect.cleandoc(text).partition("\f")[0]) if text else []


def _paragraphs(text: str) -> List[str]:
    """Markdown lines for help text, split into paragraphs as click's ``wrap_text`` splits it."""
    lines: List[str] = []
    for paragraph in _split_paragraphs(text):
        if paragraph[0].strip() == NO_REWRAP:
            for indented, group in _runs(paragraph[1:]):
                lines += _code_block(group) if indented else [_prose(" ".join(line.strip() for line in group))]
                lines.append("")
        else:
            lines += [_prose(" ".join(line.strip() for line in paragraph)), ""]
    return lines


def _split_paragraphs(text: str) -> Iterator[List[str]]:
    paragraph: List[str] = []
    for line in text.splitlines():
        if line.strip():
            paragraph.append(line.rstrip())
        elif paragraph:
            yield paragraph
            paragraph = []
    if paragraph:
        yield paragraph


def _runs(lines: List[str]) -> Iterator[Tuple[bool, List[str]]]:
    """Consecutive lines grouped by whether they are indented (examples, aligned lists) or not
    (prose wrapped by hand)."""
    group: List[str] = []
    for line in lines:
        if group and line[:1].isspace() != group[0][:1].isspace():
            yield group[0][:1].isspace(), group
            group = []
        group.append(line)
    if group:
        yield group[0][:1].isspace(), group


def _code_block(lines: List[str]) -> List[str]:
    indent = min(len(line) - len(line.lstrip()) for line in lines)
    body = [line[indent:] for line in lines]
    longest = max((len(run) for line in body for run in re.findall("`+", line)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence, *body, fence]


def _params_table(cmd: click.Command, ctx: click.Context) -> List[str]:
    rows = [_param_row(param, ctx) for param in cmd.get_params(ctx) if not getattr(param, "hidden", False)]
    if not rows:
        return []
    return ["| name | value | default | meaning |", "|---|---|---|---|", *rows, ""]


def _param_row(param: click.Parameter, ctx: click.Context) -> str:
    if not isinstance(param, click.Option):
        default = param.get_default(ctx, call=False)
        shown = "required" if param.required else (_code(str(default)) if default not in (None, ()) else "")
        value = _value(param, ctx, None)
        return _row(_code(param.make_metavar(ctx)), value, shown, "")
    extra = param.get_help_extra(ctx)
    help_text = " ".join((param.help or "").split())
    stated = HELP_DEFAULT.search(help_text)
    if "default" in extra:
        shown = _code(extra["default"])
    elif stated:
        shown, help_text = _prose(stated.group(1)), help_text[: stated.start()]
    else:
        shown = ""
    if "required" in extra:
        shown = "required"
    if "envvars" in extra:
        help_text += f" (environment: {', '.join(extra['envvars'])})"
    names = ", ".join(_code(opt) for opt in sorted(param.opts, key=lambda opt: opt.startswith("--")))
    if param.secondary_opts:
        names += " / " + ", ".join(_code(opt) for opt in param.secondary_opts)
    return _row(names, _value(param, ctx, extra.get("range")), shown, _prose(help_text))


def _value(param: click.Parameter, ctx: click.Context, value_range: Optional[str]) -> str:
    """What the parameter takes: a flag, one of its choices, or click's metavar and range."""
    if isinstance(param, click.Option) and param.count:
        return "count"
    if isinstance(param, click.Option) and param.is_flag:
        return "flag"
    if isinstance(param.type, click.Choice):
        value = "one of " + ", ".join(_code(str(getattr(choice, "name", choice))) for choice in param.type.choices)
    elif isinstance(param, click.Option):
        value = _code(param.make_metavar(ctx))
    else:
        value = _code(param.type.name.upper())
    if value_range:
        value += f" ({_code(value_range)})"
    if param.multiple:
        value += ", repeatable"
    return value


def _row(*cells: str) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def _code(text: str) -> str:
    ticks = "`" * (1 + max((len(run) for run in re.findall("`+", text)), default=0))
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def _prose(text: str) -> str:
    """``text`` as one line of Markdown that renders as written: characters that would start
    emphasis, HTML or a block are escaped; spans in backticks stay code spans."""
    out, start = [], 0
    for span in CODE_SPAN.finditer(text):
        out += [_escape(text[start : span.start()]), span.group(0)]
        start = span.end()
    out.append(_escape(text[start:]))
    line = "".join(out)
    return BLOCK_START.sub(lambda m: "\\" + m.group(0) if not m.group(0)[0].isdigit() else m.group(0) + "\\", line, count=1)


def _escape(text: str) -> str:
    text = re.sub(r"([\\*<`])", r"\\\1", text)
    return re.sub(r"(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])", r"\\_", text)  # inside a word, _ is no emphasis


if __name__ == "__main__":
    sys.stdout.buffer.write(cli_reference_markdown().encode("utf-8"))
