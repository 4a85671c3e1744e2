"""What a sweep tunes: a search space over config keys, and a config with a trial's values.

A space maps dotted config keys to distributions, written as text in the config's own style::

    search_space = {
        "lr_s": "log:1e-4:1e-2",                                         # log-uniform
        "criterion_t2s_para.para.lambda_logits": "log:1:100",
        "criterion_t2s_para.para.le_dis.para.lambda_cd": "float:1:100",  # uniform
        "batch_size": "choice:16,32,64",
        "max_epoch_s": "int:20:80",
    }

The config key ``search_space`` holds one (``{}``: :func:`default_space`); ``sweep --space
KEY=SPEC`` items go over it. The keys a space may name are :func:`tunable_keys`: the student's
optimisation keys (:data:`STUDENT_KEYS`) and every weight and numeric parameter of the loss
terms the config's distiller builds. A trial's values become a config with :func:`apply_params`.
No optuna here: :meth:`SearchParam.suggest` takes any object with optuna's ``suggest_*`` calls.
"""

from __future__ import annotations

import ast
import copy
import inspect
from dataclasses import dataclass
from numbers import Real
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from ..config import FIELDS, Config
from ..errors import ConfigError
from ..losses.distiller import CONTEXT_KEYS, plan
from ..registry import did_you_mean

__all__ = [
    "SPACE_KINDS",
    "DEFAULT_SPAN",
    "STUDENT_KEYS",
    "SearchParam",
    "tunable_keys",
    "default_space",
    "build_space",
    "apply_params",
    "parse_space_item",
]

# The distributions a space entry names: log-uniform, uniform, integers (uniform), a list of values.
SPACE_KINDS = ("log", "float", "int", "choice")
# The default space spans from the config's value divided by this to the value times this.
DEFAULT_SPAN = 10.0
# The top-level keys of a student's optimisation a space may tune (each a number in FIELDS).
STUDENT_KEYS = ("lr_s", "weight_decay", "pct_start", "batch_size", "max_epoch_s")
CRITERION = "criterion_t2s_para"


@dataclass(frozen=True)
class SearchParam:
    """One tuned config key: ``kind`` in :data:`SPACE_KINDS`, bounds ``low < high`` (inclusive)
    or ``choices``; ``integer`` when the key holds an int."""

    key: str
    kind: str
    low: Optional[float] = None
    high: Optional[float] = None
    choices: Tuple[Any, ...] = ()
    integer: bool = False

    def spec(self) -> str:
        """The entry as written: ``log:0.0001:0.01``, ``choice:16,32``."""
        if self.kind == "choice":
            return "choice:" + ",".join(repr(c) if isinstance(c, str) else str(c) for c in self.choices)
        return f"{self.kind}:{self.low:g}:{self.high:g}"

    def suggest(self, trial: Any) -> Any:
        """The trial's value of this key (optuna's ``trial.suggest_*``; a retried or enqueued
        trial gets its fixed value back)."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.kind == "log")  # type: ignore[arg-type]
        return trial.suggest_float(self.key, float(self.low), float(self.high), log=self.kind == "log")  # type: ignore[arg-type]


def _loss_numbers(factory: Any, para: Mapping[str, Any]) -> Dict[str, float]:
    """The numeric parameters of a loss: its factory's numeric defaults with ``para`` over them
    (booleans and the trainer's context arguments excluded)."""
    numbers: Dict[str, float] = {}
    for p in inspect.signature(factory).parameters.values():
        if p.name in CONTEXT_KEYS or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        value = para.get(p.name, p.default)
        if isinstance(value, Real) and not isinstance(value, bool):
            numbers[p.name] = float(value)
    return numbers


def _criterion_keys(criterion: Mapping[str, Any]) -> List[Tuple[str, float, bool]]:
    """``(dotted key, value, is the term's own weight)`` for every weight and numeric loss
    parameter of the distiller's active terms: ``para.lambda_<slot>`` and ``para.<slot>_dis.para.<name>``."""
    keys: List[Tuple[str, float, bool]] = []
    for slot, lam, _name, factory, para in plan(criterion):
        keys.append((f"{CRITERION}.para.lambda_{slot}", lam, True))
        keys.extend((f"{CRITERION}.para.{slot}_dis.para.{k}", v, False) for k, v in _loss_numbers(factory, para).items())
    return keys


def tunable_keys(cfg: Config) -> Dict[str, Any]:
    """Every key a space may name, with its value in ``cfg``: :data:`STUDENT_KEYS` and the
    weights and numeric parameters of the distiller's active terms (dotted keys)."""
    values: Dict[str, Any] = {key: getattr(cfg, key) for key in STUDENT_KEYS}
    values.update({key: value for key, value, _ in _criterion_keys(cfg.criterion_t2s_para)})
    return values


def default_space(cfg: Config, no_kd: bool = False) -> Dict[str, SearchParam]:
    """``lr_s`` and, unless ``no_kd``, each active loss term's weight: a loss with weights of its
    own (LED's ``lambda_cd``/``lambda_id``, MPSCD's ``lambda_pcrd``/``lambda_pcsd``) is tuned
    through those, another (MLD) through its slot's ``lambda_<slot>``; each log-uniform from its
    value / :data:`DEFAULT_SPAN` to its value x :data:`DEFAULT_SPAN`."""

    def around(key: str, value: float) -> SearchParam:
        return SearchParam(key, "log", value / DEFAULT_SPAN, value * DEFAULT_SPAN)

    space = {"lr_s": around("lr_s", cfg.lr_s)}
    if no_kd:
        return space
    for slot, lam, _name, factory, para in plan(cfg.criterion_t2s_para):
        own = {k: v for k, v in _loss_numbers(factory, para).items() if k.startswith("lambda_") and v > 0}
        if own:
            for name, value in own.items():
                key = f"{CRITERION}.para.{slot}_dis.para.{name}"
                space[key] = around(key, value)
        else:
            key = f"{CRITERION}.para.lambda_{slot}"
            space[key] = around(key, lam)
    return space


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return text.strip()


def parse_space_item(item: str) -> Tuple[str, str]:
    """``KEY=SPEC`` of ``--space`` as ``(key, spec)``; :class:`ConfigError` without ``=``."""
    if "=" not in item:
        raise ConfigError(f"--space expects KEY=SPEC (lr_s=log:1e-4:1e-2), got {item!r}")
    key, spec = item.split("=", 1)
    return key.strip(), spec.strip()


def parse_param(key: str, spec: Any, valid: Mapping[str, Any]) -> SearchParam:
    """The entry ``key: spec`` of a space, checked against the tunable keys ``valid``
    (:func:`tunable_keys`); :class:`ConfigError` naming the valid keys or the form of ``spec``."""
    if key not in valid:
        raise ConfigError(
            f"search space key {key!r} is not tunable in this config{did_you_mean(key, valid)}; valid keys: {', '.join(valid)}"
        )
    forms = "log:LO:HI, float:LO:HI, int:LO:HI or choice:A,B,..."
    if not isinstance(spec, str) or ":" not in spec:
        raise ConfigError(f"search space {key}={spec!r}: write {forms}")
    kind, rest = spec.split(":", 1)
    kind = kind.strip()
    if kind not in SPACE_KINDS:
        raise ConfigError(f"search space {key}={spec!r}: unknown kind {kind!r}{did_you_mean(kind, SPACE_KINDS)}; write {forms}")
    integer = isinstance(valid[key], int) and not isinstance(valid[key], bool)
    if kind == "choice":
        choices = tuple(_literal(c) for c in rest.split(",") if c.strip())
        if not choices:
            raise ConfigError(f"search space {key}={spec!r}: choice needs at least one value (choice:16,32)")
        return SearchParam(key, kind, choices=choices, integer=integer)
    bounds = [_literal(x) for x in rest.split(":")]
    numbers = len(bounds) == 2 and all(isinstance(b, Real) and not isinstance(b, bool) for b in bounds)
    if not numbers or not bounds[0] < bounds[1]:
        raise ConfigError(f"search space {key}={spec!r}: {kind} needs two numbers LO < HI ({kind}:LO:HI)")
    low, high = float(bounds[0]), float(bounds[1])
    if kind == "log" and low <= 0:
        raise ConfigError(
            f"search space {key}={spec!r}: log needs 0 < LO < HI; use float:{bounds[0]}:{bounds[1]} for a range from 0"
        )
    if kind == "int" and not integer:
        raise ConfigError(f"search space {key}={spec!r}: {key} holds a float; use float:LO:HI or log:LO:HI")
    if integer and not (low.is_integer() and high.is_integer()):
        raise ConfigError(f"search space {key}={spec!r}: {key} holds an int; give whole-number bounds")
    return SearchParam(key, kind, low, high, integer=integer)


def build_space(cfg: Config, items: Iterable[Tuple[str, str]] = (), no_kd: bool = False) -> Dict[str, SearchParam]:
    """The space a sweep of ``cfg`` tunes: the config's ``search_space`` (else :func:`default_space`),
    with ``items`` (``--space`` pairs) over it; every entry checked (:func:`parse_param`)."""
    valid = tunable_keys(cfg)
    given = dict(cfg.search_space)
    space = {k: parse_param(k, v, valid) for k, v in given.items()} if given else default_space(cfg, no_kd)
    for key, spec in items:
        space[key] = parse_param(key, spec, valid)
    if no_kd:
        kd_keys = [k for k in space if k.startswith(CRITERION + ".")]
        if kd_keys:
            raise ConfigError(
                f"search space key {kd_keys[0]!r} weights a distillation loss, which --no-kd does not train; drop it"
            )
    for param in space.values():  # every value a trial may draw must make a valid config: checked now, not hours in
        for value in param.choices or (param.low, param.high):
            value = int(value) if param.integer and not param.choices else value
            try:
                apply_params(cfg, {param.key: value})
            except ConfigError as exc:
                raise ConfigError(f"search space {param.key}={param.spec()}: the value {value!r} is refused ({exc})") from None
    return space


def apply_params(cfg: Config, params: Mapping[str, Any], **changes: Any) -> Config:
    """``cfg`` with each dotted key of ``params`` set to its value (and ``changes``, top-level
    keys), validated again."""
    values = cfg.to_dict()
    for key, value in params.items():
        *path, leaf = key.split(".")
        node = values
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = copy.deepcopy(value)
    values.update(changes)
    return Config(values, cfg.source)


if set(STUDENT_KEYS) - set(FIELDS):  # pragma: no cover - a renamed key fails at import, not in a sweep
    raise AssertionError(f"STUDENT_KEYS names keys the config has not: {sorted(set(STUDENT_KEYS) - set(FIELDS))}")
