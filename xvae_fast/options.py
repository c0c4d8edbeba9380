"""Declared options: every training option is declared once, as a dataclass field made by `option()`
(its type, default, per-dataset defaults, allowed values, bounds and help).

The trainer's shared options are TrainConfig's fields (config.py); each model family declares its own
in a `ModelOptions` dataclass next to its recipe (models/*.py). From these declarations come the
command-line flags and their help (train.py), the value checks, the nested `model_options` block of
config.yaml and --config files, and the option tables of docs/options.md. This module sits at the
bottom: it imports nothing of the library but its errors.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Mapping, Optional, Tuple

from .errors import ConfigError

TYPES = ("int", "float", "str", "bool", "ints", "floats", "plan")
BOOL_FLAGS = ("store_true", "negate", "both")   # --name | --no-name | --name / --no-name
ANY_KIND = "*"                                   # per_dataset key: every other dataset kind


@dataclasses.dataclass(frozen=True)
class OptionSpec:
    help: str
    type: str                                     # one of TYPES
    group: str = ""                               # shared options: their help group
    flag: Optional[str] = None                    # the command-line flag (default --name-with-dashes)
    metavar: Optional[str] = None
    choices: Optional[Tuple[Any, ...]] = None
    minimum: Optional[float] = None               # inclusive lower bound (int, float)
    above: Optional[float] = None                 # exclusive lower bound (float)
    below: Optional[float] = None                 # exclusive upper bound (float)
    optional: bool = False                        # None is a valid resolved value
    per_dataset: Optional[Mapping[str, Any]] = None   # None resolves to this per dataset kind
    default_text: Optional[str] = None            # the help's default, where it is computed
    bool_flag: str = "both"                       # bool options: how the flag reads (BOOL_FLAGS)
    hidden: bool = False                          # accepted in files, not shown on the command line
    cli: bool = True                              # False: a config-file key only (no flag)

    def __post_init__(self):
        if self.type not in TYPES:
            raise ValueError(f"option type must be one of {TYPES}, got {self.type!r}")
        if self.bool_flag not in BOOL_FLAGS:
            raise ValueError(f"bool_flag must be one of {BOOL_FLAGS}, got {self.bool_flag!r}")


def option(default: Any = None, help: str = "", *, type: Optional[str] = None, **spec) -> Any:
    """A declared option: a dataclass field whose metadata is its OptionSpec."""
    if type is None:
        type = _infer_type(default)
    meta = {"option": OptionSpec(help=help, type=type, **spec)}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _infer_type(default: Any) -> str:
    for t, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str")):
        if isinstance(default, t):
            return name
    raise ValueError(f"option() needs type= when the default ({default!r}) does not show it")


def specs(cls_or_obj) -> Dict[str, OptionSpec]:
    """The declared options of a dataclass (class or instance), by field name, in declaration order."""
    return {f.name: f.metadata["option"] for f in dataclasses.fields(cls_or_obj) if "option" in f.metadata}


def defaults(cls) -> Dict[str, Any]:
    out = {}
    for f in dataclasses.fields(cls):
        if "option" in f.metadata:
            out[f.name] = f.default_factory() if f.default is dataclasses.MISSING else f.default
    return out


def flag_of(name: str, spec: OptionSpec) -> str:
    return spec.flag or "--" + name.replace("_", "-")


def per_dataset_default(spec: OptionSpec, kind: str) -> Any:
    if spec.per_dataset is None:
        return None
    return spec.per_dataset.get(kind, spec.per_dataset.get(ANY_KIND))


def _number(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


def check_value(name: str, spec: OptionSpec, v: Any) -> None:
    """Raise ConfigError naming the flag when `v` is not a valid value of the option."""
    flag = flag_of(name, spec)
    if v is None:
        if spec.optional:
            return
        raise ConfigError(f"{flag} needs a value")
    if spec.choices is not None:
        if v not in spec.choices:
            raise ConfigError(f"{flag} must be one of {', '.join(map(str, spec.choices))}, got {v!r}")
        return
    t = spec.type
    if t == "bool":
        if not isinstance(v, bool):
            raise ConfigError(f"{flag} must be true or false, got {v!r}")
    elif t == "int":
        lo = spec.minimum
        if isinstance(v, bool) or not isinstance(v, int) or (lo is not None and v < lo):
            raise ConfigError(f"{flag} must be an integer{'' if lo is None else f' >= {lo:g}'}, got {v!r}")
    elif t == "float":
        bounds = [f">= {spec.minimum:g}" if spec.minimum is not None else "",
                  f"> {spec.above:g}" if spec.above is not None else "",
                  f"< {spec.below:g}" if spec.below is not None else ""]
        ok = _number(v) and (spec.minimum is None or v >= spec.minimum) \
            and (spec.above is None or v > spec.above) and (spec.below is None or v < spec.below)
        if not ok:
            rule = " and ".join(b for b in bounds if b)
            raise ConfigError(f"{flag} must be a finite number{' ' + rule if rule else ''}, got {v!r}")
    elif t == "str":
        if not isinstance(v, str):
            raise ConfigError(f"{flag} must be a string, got {v!r}")
    elif t in ("ints", "floats"):
        item = int if t == "ints" else (int, float)
        if not (isinstance(v, list) and all(isinstance(x, item) and not isinstance(x, bool) for x in v)):
            raise ConfigError(f"{flag} must be a list of {'integers' if t == 'ints' else 'numbers'}, "
                              f"got {v!r}")


def check_all(obj) -> None:
    """Check every declared option of `obj` (check_value); a None that the declaration allows, or
    whose default is computed later (default_text), is left alone."""
    for name, spec in specs(obj).items():
        value = getattr(obj, name)
        if value is None and (spec.optional or spec.default_text is not None):
            continue
        check_value(name, spec, value)


def default_help(name: str, spec: OptionSpec, default: Any) -> str:
    """The default as the help shows it."""
    if spec.default_text is not None:
        return spec.default_text
    if spec.per_dataset is not None:
        rest = spec.per_dataset.get(ANY_KIND)
        parts = [f"{k} {_show(v)}" for k, v in spec.per_dataset.items() if k != ANY_KIND]
        return "per dataset: " + ", ".join(parts) + (f", else {_show(rest)}" if rest is not None else "")
    if spec.type == "bool":
        return "on" if default else "off"
    if default is None:
        return "none"
    return _show(default)


def _show(v: Any) -> str:
    if isinstance(v, list):
        return ",".join(_show(x) for x in v)
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def help_line(name: str, spec: OptionSpec, default: Any) -> str:
    return f"{spec.help} (default: {default_help(name, spec, default)})"


class ModelOptions:
    """Base of a model family's options dataclass (declare the fields with `option()`).

    `resolve(cfg, kind)` fills the per-dataset defaults, checks every value against its declaration,
    then calls the family's `finish(cfg, kind)` for what a declaration cannot say (defaults computed
    from other options, checks across options). `cfg` is the TrainConfig with its shared options
    resolved."""

    def replace(self, **changes) -> "ModelOptions":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def names(cls) -> Tuple[str, ...]:
        return tuple(specs(cls))

    def resolve(self, cfg, kind: str) -> "ModelOptions":
        fill = {}
        for name, spec in specs(self).items():
            if getattr(self, name) is None:
                d = per_dataset_default(spec, kind)
                if d is not None:
                    fill[name] = list(d) if isinstance(d, list) else d
        opts = self.replace(**fill) if fill else self
        check_all(opts)
        opts = opts.finish(cfg, kind)
        check_all(opts)             # what finish() computed is checked too
        return opts

    def finish(self, cfg, kind: str) -> "ModelOptions":
        return self


@dataclasses.dataclass
class NoOptions(ModelOptions):
    """A model family without options of its own."""
