"""`python -m xvae_fast.train`: train X-VAE end to end (stage-1 autoencoder, prior fit, stage-2 VAE,
outputs) and write a run folder. With no arguments it trains on the bundled digits in about a minute
or two on a laptop CPU."""
from __future__ import annotations

import argparse
import functools
import os
import shlex
import sys
from typing import Any, Dict, List, Optional, Tuple

from .config import GROUPS, PER_DATASET, TrainConfig, load_config_file, model_option_owners
from .argv import CommandParser
from .errors import ConfigError, NonFiniteLossError, TrainingInterrupted, XVAEError
from .models.protocol import model_names
from .options import OptionSpec, flag_of, help_line, specs

EPILOG = """\
examples:
  python -m xvae_fast.train                                   # X-VAE (library defaults) on the bundled digits
  python -m xvae_fast.train --preset paper                    # the paper's setup, read literally
  python -m xvae_fast.train --list-models                     # the model families
  python -m xvae_fast.train --model uae --help                # one model's options, its defaults per dataset
  python -m xvae_fast.train --model twostage --print-config   # the resolved options, without training
  python -m xvae_fast.train --dataset clusters --plan full --out runs/clusters-full
  python -m xvae_fast.train --model vamp --pseudo-inputs 50   # a baseline (docs/baselines.md)
  python -m xvae_fast.train --model uae --uae-variant utvae    # Unscented AE ablation (docs/models.md)
  python -m xvae_fast.compare --data digits --out runs/compare-digits   # all baselines + X-VAE
  python -m xvae_fast.train --dataset mnist:data/mnist --download --plan split-1/3 --device cuda
  python -m xvae_fast.train --config my_run.yaml --seed 7     # flags override the file
  python -m xvae_fast.train --resume runs/clusters-full        # continue an interrupted run
  python -m xvae_fast.sample --run runs/clusters-full --n 500 --alpha 1.2 --out samples.png

Every option is in docs/options.md. A flag of another model than --model's is an error. A run folder
holds config.yaml (the full resolved config; pass it back with --config to repeat the run),
checkpoint.pt, metrics.csv/json, curves.png, reconstructions.png, samples.png (X-VAE with a mixture
plan also samples_per_row.png or samples_per_coordinate.png for the other routing, and
samples_expost.png), alpha_sweep.png, samples.npy, prior_fit.json (X-VAE), summary.json and train.log.
"""
TOY2D = ("8gaussians", "2spirals", "checkerboard", "rings")


class _Parser(CommandParser):
    hint = "see --help, or --model M --help for a model's options"


def _floats(text: str) -> List[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")


def _ints(text: str) -> List[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")


PARSE = {"int": int, "float": float, "str": str, "plan": str, "ints": _ints, "floats": _floats}


def dataset_defaults_text(key: str, model: Optional[str] = None) -> str:
    """`key`'s defaults per dataset kind (data/spec.py), with `model`'s own (or, for None, every
    model's that differ) spelled out."""
    from .data.spec import DEFAULTS
    from .models import get_recipe

    def table(values: Dict[str, Any]) -> str:
        shown = {k: v for k, v in values.items() if k not in TOY2D}
        toy = {_value(values[k]) for k in TOY2D if k in values}
        parts = [f"{k} {_value(v)}" for k, v in shown.items()]
        if len(toy) == 1:
            parts.append(f"2-D sets {toy.pop()}")
        return ", ".join(parts)

    base = {k: d[key] for k, d in DEFAULTS.items() if key in d}
    if model is not None:
        own = {k: d[key] for k, d in get_recipe(model).dataset_defaults.items() if key in d}
        text = table({**base, **own})
        return f"{PER_DATASET}{' for --model ' + model if own else ''}: {text}" if text else "none"
    text = f"{PER_DATASET}: {table(base)}"
    others = []
    for m in model_names():
        own = {k: d[key] for k, d in get_recipe(m).dataset_defaults.items() if key in d}
        if own:
            others.append(f"{m} {table(own)}")
    return text + (f"; models with their own: {'; '.join(others)}" if others else "")


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    return ",".join(map(str, v)) if isinstance(v, list) else (f"{v:g}" if isinstance(v, float) else str(v))


def _add(group, name: str, spec: OptionSpec, default: Any, help_text: str) -> None:
    flag = flag_of(name, spec)
    h = argparse.SUPPRESS if spec.hidden else help_text.replace("%", "%%")
    if spec.type == "bool":
        if spec.bool_flag == "store_true":
            group.add_argument(flag, dest=name, action="store_true", help=h)
        elif spec.bool_flag == "negate":
            group.add_argument("--no-" + flag[2:], dest=name, action="store_false",
                               help=h if h == argparse.SUPPRESS else f"no {help_text}")
        else:
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, help=h)
        return
    kw: Dict[str, Any] = {"dest": name, "type": PARSE[spec.type], "help": h}
    if spec.choices is not None:
        kw["choices"] = list(spec.choices)
    if spec.metavar:
        kw["metavar"] = spec.metavar
    group.add_argument(flag, **kw)


def _help(name: str, spec: OptionSpec, default: Any, model: Optional[str]) -> str:
    if spec.default_text == PER_DATASET:
        return f"{spec.help} (default: {dataset_defaults_text(name, model)})"
    return help_line(name, spec, default)


def build_parser(model: Optional[str] = None) -> argparse.ArgumentParser:
    """The parser of every option (`model` None), or the one `--model M --help` shows: the shared
    options and M's own. Both come from the declarations (config.TrainConfig, each recipe's Options)."""
    from .models import get_recipe
    from .options import defaults
    desc = ("Train a model and write a run folder. The default, X-VAE, trains in two stages: a "
            "deterministic autoencoder, a prior fitted on its latents (single Gaussian or a K-component "
            "Gaussian mixture by EM), then the VAE with that frozen prior and a routed-transport "
            "configuration. Options can also come from a YAML/JSON file (--config); flags win over the file.")
    if model is not None:
        desc = (f"--model {model}: {get_recipe(model).title}; the shared options, then its own. Options can "
                "also come from a YAML/JSON file (--config); flags win over the file.")
    p = _Parser(prog="python -m xvae_fast.train", argument_default=argparse.SUPPRESS,
                usage="%(prog)s [--model M] [options]   (--model M --help: M's options)",
                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG, description=desc)
    p.add_argument("--list-models", action="store_true", help="list the model families and exit")
    p.add_argument("--print-config", action="store_true", help="print the fully resolved configuration "
                   "(YAML, as config.yaml would hold it) and exit without training")
    p.add_argument("--options-markdown", action="store_true", help=argparse.SUPPRESS)   # docs/options.md
    shared = defaults(TrainConfig)
    groups = {name: p.add_argument_group(name) for name in GROUPS}
    for name, spec in specs(TrainConfig).items():
        if name == "model":
            groups[spec.group].add_argument("--model", choices=list(model_names()), dest="model",
                                            help=help_line(name, spec, shared[name]))
            continue
        _add(groups[spec.group], name, spec, shared[name], _help(name, spec, shared[name], model))
    groups[GROUPS[-1]].add_argument("--amp", choices=["none", "bf16"], dest="amp_alias", help=argparse.SUPPRESS)
    owners = model_option_owners()
    added = set()
    for m in ([model] if model is not None else model_names()):
        recipe = get_recipe(m)
        opts = recipe.Options
        if not specs(opts):
            continue
        g = p.add_argument_group(f"--model {m}: {recipe.title}")
        own_defaults = defaults(opts)
        for name, spec in specs(opts).items():
            if name in added:
                continue
            added.add(name)
            text = help_line(name, spec, own_defaults[name])
            if model is None and len(owners[name]) > 1:
                text = f"(--model {', '.join(owners[name])}) {text}"
            _add(g, name, spec, own_defaults[name], text)
    return p


def options_markdown() -> str:
    """docs/options.md: every option's flag, default and help, shared first, then per model; generated
    from the declarations (`python -m xvae_fast.train --options-markdown > docs/options.md`)."""
    from .models import get_recipe
    from .options import defaults

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    def rows(cls, model: Optional[str], names=None):
        out = ["| flag | default | what it sets |", "|---|---|---|"]
        dflt = defaults(cls)
        for name, spec in specs(cls).items():
            if spec.hidden or (names is not None and name not in names):
                continue
            flag = flag_of(name, spec)
            if spec.type == "bool" and spec.bool_flag == "negate":
                flag = "--no-" + flag[2:]
            elif spec.type == "bool" and spec.bool_flag == "both":
                flag = f"{flag} / --no-{flag[2:]}"
            if spec.metavar:
                flag += f" {spec.metavar}"
            elif spec.choices is not None and spec.type != "bool":
                flag += " {" + ",".join(map(str, spec.choices)) + "}"
            if spec.default_text == PER_DATASET:
                d = dataset_defaults_text(name, model)
            else:
                d = help_line(name, spec, dflt[name]).rsplit(" (default: ", 1)[1][:-1]
            out.append(f"| `{flag}` | {cell(d)} | {cell(spec.help)} |")
        return out

    lines = ["# Options", "",
             "Generated from the declarations (`xvae_fast/config.py` for the shared options, each model's "
             "`Options` dataclass next to its recipe in `xvae_fast/models/`) by "
             "`python -m xvae_fast.train --options-markdown > docs/options.md`; a test keeps it current.",
             "`python -m xvae_fast.train --model M --help` shows the same for one model, with its own "
             "per-dataset sizes and budgets. A flag of another model than `--model`'s is an error (exit 2).",
             "In `config.yaml` and `--config` files the model's options sit under `model_options`.", ""]
    for group in GROUPS:
        lines += [f"## {group[0].upper()}{group[1:]}", ""]
        if group == GROUPS[0]:
            lines += [f"- `--model M`: one of {', '.join('`' + m + '`' for m in model_names())} "
                      "(default `xvae`); `--list-models` lists them.", ""]
        names = {n for n, sp in specs(TrainConfig).items() if sp.group == group and n != "model"}
        lines += rows(TrainConfig, None, names) + [""]
    for m in model_names():
        recipe = get_recipe(m)
        lines += [f"## `--model {m}`: {recipe.title}", ""]
        lines += (rows(recipe.Options, m) if specs(recipe.Options) else ["No options of its own."]) + [""]
    return "\n".join(lines).rstrip() + "\n"


def _help_model(argv: List[str]) -> Optional[str]:
    """The --model of a `--help` command line (None: every model's options)."""
    model = None
    for i, a in enumerate(argv):
        if a == "--model" and i + 1 < len(argv):
            model = argv[i + 1]
        elif a.startswith("--model="):
            model = a.split("=", 1)[1]
    return model if model in model_names() else None


def list_models() -> str:
    from .models import get_recipe
    from .config import BASELINES
    rows = []
    for m in model_names():
        r = get_recipe(m)
        kind = "the method" if m == "xvae" else ("baseline" if m in BASELINES else "related system")
        flags = [flag_of(n, s) for n, s in specs(r.Options).items()]
        rows.append(f"{m:<13} {r.title} ({kind}); options: {' '.join(flags) if flags else 'none of its own'}")
    return "\n".join(rows) + "\nsee one model's options and defaults with: python -m xvae_fast.train --model M --help"


def parse_config(argv: Optional[List[str]] = None):
    """(TrainConfig, the set of option names the user gave) from a config file and flags."""
    cfg, explicit, _ = parse_command(argv)
    return cfg, explicit


def parse_command(argv: Optional[List[str]] = None):
    """parse_config's two, and the requests that only print (--list-models, --print-config)."""
    from .argv import attach_number_lists
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        build_parser(_help_model(args)).parse_args(["--help"])
    args = vars(build_parser().parse_args(attach_number_lists(args, ["--alphas", "--introprior-milestones"])))
    given: Dict[str, Any] = {}
    if "config" in args:
        from .config import file_options
        given.update(file_options(load_config_file(args["config"]), f"--config {args['config']}"))
    if "amp_alias" in args:     # --amp none|bf16: the old name of --precision fp32|bf16
        amp = {"none": "fp32", "bf16": "bf16"}[args.pop("amp_alias")]
        if args.get("precision", amp) != amp:
            raise ConfigError(f"--amp is the old name of --precision: --amp gives {amp}, "
                              f"--precision {args['precision']}; pass only --precision")
        args["precision"] = amp
    info = {k: args.pop(k) for k in ("list_models", "print_config", "options_markdown") if k in args}
    given.update(args)
    cfg = TrainConfig.from_dict(given)
    explicit = set(given) - {"config"}
    if not info and not cfg.resume:
        from .config import inapplicable_options
        why = inapplicable_options(cfg, set(args))
        if why:
            raise ConfigError(why)
    return cfg, explicit, info


def applicable_flags(argv: List[str]) -> List[str]:
    """`argv` less the flags its --model does not use (another model's, or a shared one that does not
    apply to it or its --dataset): for tools that pass one set of flags to several models (compare's
    --quick, the experiment sweeps). A command line typed for one model is never filtered: the trainer
    refuses such a flag."""
    from .config import applicable_argv
    argv = [str(a) for a in argv]

    def last(flag: str, default: str) -> str:
        vals = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]
        vals += [a.split("=", 1)[1] for a in argv if a.startswith(flag + "=")]
        return vals[-1] if vals else default
    return applicable_argv(last("--model", "xvae"), last("--dataset", "digits"), argv, takes_value)


def takes_value(flag: str) -> Optional[bool]:
    """Whether a trainer flag reads a value (None: not a trainer flag); for tools that filter argv."""
    return _flag_arity(model_names()).get(flag)


@functools.lru_cache(maxsize=8)
def _flag_arity(models: Tuple[str, ...]) -> Dict[str, bool]:
    """Every trainer flag -> whether it reads a value, for the registered `models` (one parser built)."""
    return {flag: action.nargs != 0 for flag, action in build_parser()._option_string_actions.items()}


def _rank() -> int:
    try:
        return int(os.environ.get("RANK", "0") or 0)
    except ValueError:
        return 0


def _say(msg: str) -> None:
    """An error line on stderr; under torchrun the other ranks' lines name their rank."""
    print(msg if _rank() == 0 else f"[rank {_rank()}] {msg}", file=sys.stderr)


def _resolved_yaml(cfg: TrainConfig) -> str:
    """The configuration a new run with these options would train with and save as config.yaml."""
    import yaml
    from .config import resolve
    if cfg.resume:
        raise ConfigError("--print-config shows the configuration of a new run; a run folder's own is in "
                          f"{os.path.join(cfg.resume, 'config.yaml')}")
    return yaml.safe_dump(resolve(cfg).to_dict(), sort_keys=False).rstrip()


def main(argv: Optional[List[str]] = None) -> int:
    try:
        cfg, explicit, info = parse_command(argv)
        if info.get("list_models"):
            print(list_models())
            return 0
        if info.get("options_markdown"):
            print(options_markdown(), end="")
            return 0
        if info.get("print_config"):
            print(_resolved_yaml(cfg))
            return 0
        from .training import train
        result = train(cfg, explicit=explicit)
    except NonFiniteLossError as exc:
        _say(f"error: {exc}")
        return 1
    except XVAEError as exc:
        _say(f"error: {exc}")
        return 2
    except TrainingInterrupted as exc:
        if exc.resumable:
            print(f"interrupted; the last checkpoint is kept: continue with python -m xvae_fast.train "
                  f"--resume {shlex.quote(exc.run_dir)}", file=sys.stderr)
        else:
            print(f"interrupted before the first checkpoint of {exc.run_dir!r}; nothing to resume: "
                  "start the run again (with --overwrite, or with --auto-resume, which also continues "
                  "it after a later interruption)", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted before training started; nothing was trained", file=sys.stderr)
        return 130
    except Exception as exc:
        # a full disk outside the atomic writes (train.log, a figure): one line, not a traceback
        from .atomic_file import disk_full_error
        full = disk_full_error(exc)
        if full is None:
            raise
        _say(f"error: {full}")
        return 2
    if _rank() != 0:            # under torchrun rank 0 reports for the run
        return 0
    if result.status == "stopped":
        print(f"stopped at step {result.step}; continue with: python -m xvae_fast.train --resume "
              f"{shlex.quote(result.run_dir)}")
    else:
        untrained = (result.summary or {}).get("untrained_stages")
        if untrained:
            print(f"warning: the run is untrained ({', '.join(untrained)}: 0 epochs)", file=sys.stderr)
        print(f"done: {result.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
