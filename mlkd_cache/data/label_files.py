"""Multi-label files in the shapes they are published in, read without a conversion script.

One :class:`LabelFormat` (the ``csv`` dataset's ``dataset_para``) describes a file:

* ``image_column`` (default ``image``; header names match case-blind) and ``image_pattern``
  (``"Images/{}.jpg"`` turns an ``Id`` cell without extension into a path);
* the labels, in one of two forms:

  - ``labels_column`` (default ``labels``): class names separated by ``label_sep`` (default
    ``;`` or whitespace; any string such as ``|``), or a Python/JSON list literal
    (``"['Comedy', 'Drama']"``), recognised by its brackets and parsed as a literal, never run;
  - ``label_columns``: a list of class columns holding 0/1, or ``"one-hot"``: every column whose
    cells are all 0 or 1. Other columns are ignored and named (:attr:`LabelRows.ignored`);

* ``negative_label``: a name meaning "no positive class" (``No Finding``): such a row has no
  label, and the name is no class.

Class names are taken verbatim (``N/A``, ``Sci-Fi``). Files: ``.csv``/``.txt`` (comma),
``.tsv`` (tab), ``.json`` (a list of objects with the same two keys). Every error names the file,
the line and the fix.
"""

from __future__ import annotations

import ast
import csv
import json
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ..errors import ConfigError, DataError

__all__ = ["LabelFormat", "LabelRows", "read_label_file", "ONE_HOT", "CSV_EXTENSIONS"]

log = logging.getLogger("mlkd_cache")

ONE_HOT = "one-hot"
CSV_EXTENSIONS = (".csv", ".tsv", ".txt")
_DEFAULT_SEP = re.compile(r"[;\s]+")
_SEPARATOR_CHARS = ",|;/"  # a "class" holding one of these, and rare, suggests a wrong label_sep


@dataclass(frozen=True)
class LabelFormat:
    """How a label file is laid out (module docstring); built from ``dataset_para`` by :meth:`from_params`."""

    image_column: str = "image"
    image_pattern: Optional[str] = None
    labels_column: str = "labels"
    label_sep: Optional[str] = None
    label_columns: Union[None, str, Tuple[str, ...]] = None
    negative_label: Optional[str] = None

    def __post_init__(self) -> None:
        for key in ("image_column", "labels_column"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key).strip():
                raise ConfigError(f"dataset csv: param {key} must be a column name, got {getattr(self, key)!r}")
        if self.image_pattern is not None and (not isinstance(self.image_pattern, str) or self.image_pattern.count("{}") != 1):
            raise ConfigError(
                f"dataset csv: param image_pattern must hold one {{}} for the cell, like 'Images/{{}}.jpg'; got {self.image_pattern!r}"
            )
        if self.label_sep is not None and (not isinstance(self.label_sep, str) or not self.label_sep):
            raise ConfigError(f"dataset csv: param label_sep must be a non-empty string, got {self.label_sep!r}")
        cols = self.label_columns
        if cols is not None and cols != ONE_HOT:
            if isinstance(cols, str) or not all(isinstance(c, str) and c.strip() for c in cols) or not cols:
                raise ConfigError(f"dataset csv: param label_columns must be a list of column names or '{ONE_HOT}', got {cols!r}")
            object.__setattr__(self, "label_columns", tuple(c.strip() for c in cols))
        if self.negative_label is not None and (not isinstance(self.negative_label, str) or not self.negative_label.strip()):
            raise ConfigError(f"dataset csv: param negative_label must be a class name, got {self.negative_label!r}")
        if self.negative_label is not None:
            object.__setattr__(self, "negative_label", self.negative_label.strip())
        if self.image_pattern is not None:
            try:
                self.image_pattern.format("x")
            except (IndexError, KeyError, ValueError):
                raise ConfigError(
                    f"dataset csv: param image_pattern must hold one {{}} and no other braces, like 'Images/{{}}.jpg'; got {self.image_pattern!r}"
                ) from None

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "LabelFormat":
        return cls(**{k: params[k] for k in cls.__dataclass_fields__ if k in params and params[k] is not None})

    @property
    def one_hot(self) -> bool:
        return self.label_columns is not None


@dataclass
class LabelRows:
    """What one file holds: image paths, each row's class names, the line each came from, the
    class columns of a one-hot file (in file order) and the columns that were ignored."""

    images: List[str]
    names: List[List[str]]
    lines: List[int]
    class_columns: Optional[List[str]] = None
    ignored: List[str] = field(default_factory=list)


def _list_literal(text: str, where: str) -> Optional[List[str]]:
    """``['a', 'b']`` or ``["a", "b"]`` as a list of names (a literal, never evaluated), else None."""
    text = text.strip()
    if not re.match(r"^\[\s*(['\"]|\])", text) or not text.endswith("]"):  # ['a', ...], ["a", ...] or []
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        try:
            value = json.loads(text)
        except ValueError:
            raise DataError(f"{where}: labels {text[:60]!r} look like a list but do not parse; quote each name") from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataError(f"{where}: labels {text[:60]!r} must be a list of class names")
    return [v.strip() for v in value if v.strip()]


def _split(text: str, fmt: LabelFormat, where: str) -> List[str]:
    literal = _list_literal(text, where)
    if literal is not None:
        return literal
    parts = text.split(fmt.label_sep) if fmt.label_sep is not None else _DEFAULT_SEP.split(text)
    return [p.strip() for p in parts if p.strip()]


def _negative(names: List[str], fmt: LabelFormat, where: str) -> List[str]:
    if fmt.negative_label is None or fmt.negative_label not in names:
        return names
    if len(names) > 1:
        raise DataError(
            f"{where}: {fmt.negative_label!r} (negative_label, no positive class) comes with other labels {names}; fix the row"
        )
    return []


def _binary(cell: str) -> str:
    """A one-hot cell as "0" or "1" (``1``, ``1.0``, `` 0 ``), else the stripped cell."""
    cell = cell.strip()
    try:
        value = float(cell)
    except ValueError:
        return cell
    return "1" if value == 1.0 else "0" if value == 0.0 else cell


def _column(header: List[str], name: str, path: str, what: str) -> int:
    lowered = [h.strip().lower() for h in header]
    if name.strip().lower() not in lowered:
        raise DataError(
            f"{path}: no column {name!r} for the {what} (the header has {', '.join(h.strip() for h in header)}); "
            f"set the param {'image_column' if what == 'images' else 'labels_column or label_columns'}"
        )
    return lowered.index(name.strip().lower())


def _image(cell: str, fmt: LabelFormat, where: str) -> str:
    cell = cell.strip()
    if not cell:
        raise DataError(f"{where}: empty image cell; fill it or drop the row")
    return fmt.image_pattern.format(cell) if fmt.image_pattern else cell


def _read_table(path: str, fmt: LabelFormat) -> LabelRows:
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f, delimiter="\t" if path.lower().endswith(".tsv") else ","))
    if not rows:
        raise DataError(f"{path} is empty; expected a header line such as {fmt.image_column},{fmt.labels_column}")
    header, body = [h.strip() for h in rows[0]], rows[1:]
    ii = _column(header, fmt.image_column, path, "images")
    numbered = [(n, row) for n, row in enumerate(body, start=2) if row and any(c.strip() for c in row)]
    out = LabelRows([], [], [])
    if fmt.one_hot:
        candidates = [k for k in range(len(header)) if k != ii]

        def cells(k: int) -> List[str]:
            return [_binary(row[k]) if len(row) > k else "" for _, row in numbered]

        if fmt.label_columns == ONE_HOT:
            classes = []
            for k in candidates:
                values = cells(k)
                odd = [c for c in values if c not in ("0", "1")]
                filled = [c for c in odd if c]
                if not odd:
                    classes.append(k)
                elif (not filled and len(odd) < len(values)) or (filled and len(odd) <= max(1, len(values) // 100)):
                    # 0/1 but for empty cells, or for a few other values: a mistake in a class column
                    n, cell = next((n, c) for (n, _), c in zip(numbered, values) if c not in ("0", "1"))
                    raise DataError(
                        f"{path}:{n}: class column {header[k]!r} holds {cell or 'an empty cell'!r}; one-hot class columns hold "
                        f"0 or 1 (or list the class columns in label_columns)"
                    )
            if not classes:
                raise DataError(f"{path}: no column holds only 0 and 1; give label_columns=[...] or use a labels column")
            for k in classes:
                if re.fullmatch(r"(fold|split|set|is_.*|has_.*|flag.*)", header[k].strip().lower()):
                    log.warning(
                        "csv: %s: column %r holds only 0 and 1 and is read as a class; list label_columns if it is not one",
                        path,
                        header[k],
                    )
        else:
            classes = [_column(header, c, path, f"class {c!r}") for c in fmt.label_columns]  # type: ignore[union-attr]
        for n, row in numbered:
            where = f"{path}:{n}"
            if len(row) > len(header):
                raise DataError(f"{where}: {len(row)} cells, the header has {len(header)}; quote cells holding a comma")
            names = []
            for k in classes:
                cell = _binary(row[k]) if len(row) > k else ""
                if cell not in ("0", "1"):
                    raise DataError(f"{where}: class column {header[k]!r} holds {cell!r}; one-hot class columns hold 0 or 1")
                if cell == "1":
                    names.append(header[k])
            if len(row) <= ii:
                raise DataError(f"{where}: no cell for the column {header[ii]}; fill the row")
            out.images.append(_image(row[ii], fmt, where))
            out.names.append(_negative(names, fmt, where))
            out.lines.append(n)
        out.class_columns = [header[k] for k in classes if header[k] != fmt.negative_label]
        used = {ii, *classes}
    else:
        li = _column(header, fmt.labels_column, path, "labels")
        for n, row in numbered:
            where = f"{path}:{n}"
            if len(row) > len(header):
                raise DataError(
                    f"{where}: {len(row)} cells, the header has {len(header)}; quote the labels cell or set label_sep"
                )
            if len(row) <= max(ii, li):
                if len(row) == li and ii < li:  # trailing empty labels column omitted
                    row = row + [""]
                else:
                    raise DataError(f"{where}: expected the columns {header[ii]} and {header[li]}")
            out.images.append(_image(row[ii], fmt, where))
            out.names.append(_negative(_split(row[li], fmt, where), fmt, where))
            out.lines.append(n)
        used = {ii, li}
    out.ignored = [h for k, h in enumerate(header) if k not in used]
    return out


def _read_json(path: str, fmt: LabelFormat) -> LabelRows:
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"malformed JSON in {path}: {e}") from None
    if not isinstance(data, list):
        raise DataError(f'{path}: expected a JSON list of {{"{fmt.image_column}": ..., "{fmt.labels_column}": [...]}}')
    out = LabelRows([], [], [])
    for n, entry in enumerate(data):
        where = f"{path}: entry {n}"
        if not isinstance(entry, dict) or fmt.image_column not in entry or fmt.labels_column not in entry:
            raise DataError(
                f'{where} needs "{fmt.image_column}" and "{fmt.labels_column}" keys (params image_column, labels_column)'
            )
        labels = entry[fmt.labels_column]
        if isinstance(labels, str):
            labels = _split(labels, fmt, where)
        elif not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise DataError(f'{where}: "{fmt.labels_column}" must be a list of class names')
        out.images.append(_image(str(entry[fmt.image_column]), fmt, where))
        out.names.append(_negative([x.strip() for x in labels if x.strip()], fmt, where))
        out.lines.append(n)
    return out


def read_label_file(path: str, fmt: LabelFormat = LabelFormat()) -> LabelRows:
    """The rows of one label file (format by extension, layout by ``fmt``)."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".json":
        if fmt.one_hot:
            raise ConfigError("dataset csv: label_columns needs a .csv/.tsv file; a .json file lists labels per entry")
        return _read_json(path, fmt)
    if ext in CSV_EXTENSIONS:
        return _read_table(path, fmt)
    raise DataError(f"unsupported label file {path}: use a .csv/.tsv (a header line) or a .json list")


def warn_suspect_classes(path: str, names: Sequence[Sequence[str]], fmt: LabelFormat) -> List[str]:
    """Class names that look like several glued together by a separator character the file's
    label_sep did not split on: rare ones (in at most 0.1 % of the rows, or one row) holding such
    a character, and any whose pieces on such a character are all classes of their own
    (``Sci-Fi|N/A`` beside ``Sci-Fi`` and ``N/A``). Each is logged as a warning; returns them."""
    counts: Dict[str, int] = {}
    for row in names:
        for name in row:
            counts[name] = counts.get(name, 0) + 1
    rare = max(1, int(0.001 * len(names)))
    seps = [c for c in _SEPARATOR_CHARS if c != fmt.label_sep]

    def glued(name: str) -> bool:
        for c in seps:
            pieces = [p.strip() for p in name.split(c)]
            if len(pieces) > 1 and all(p in counts for p in pieces):
                return True
        return False

    suspect = sorted(n for n, k in counts.items() if any(c in n for c in seps) and (k <= rare or glued(n)))
    for name in suspect[:5]:
        char = next(c for c in seps if c in name)
        log.warning("csv: %s: class %r is in %d row(s) and holds %r: is label_sep right?", path, name, counts[name], char)
    return suspect
