"""Options owned by models: the declarations, the flags and help generated from them, the refusal of a
flag another model owns, the resolved-config printout, and old flat run folders."""
import dataclasses
import os

import pytest
import torch
import yaml

from xvae_fast.config import MODELS, TrainConfig, model_option_owners, resolve
from xvae_fast.errors import ConfigError
from xvae_fast.models import get_recipe
from xvae_fast.options import defaults, flag_of, specs
from xvae_fast.train import build_parser, main

from train_utils import TINY_CLUSTERS, load_ck, train


def _sample_value(model, name):
    """A valid value of `model`'s option `name` (its default, else its first choice, else 1)."""
    spec = specs(get_recipe(model).Options)[name]
    v = defaults(get_recipe(model).Options)[name]
    if v is None:
        v = spec.choices[0] if spec.choices else {"int": 2, "float": 0.5, "str": "x", "ints": [1],
                                                   "plan": "full", "bool": True}[spec.type]
    return v


OWNED = [(name, owners[0]) for name, owners in model_option_owners().items()]


@pytest.mark.parametrize("name, owner", OWNED)
def test_every_model_option_is_refused_for_every_model_that_does_not_declare_it(name, owner):
    flag = flag_of(name, specs(get_recipe(owner).Options)[name])
    value = _sample_value(owner, name)
    others = [m for m in MODELS if m not in model_option_owners()[name]]
    assert others, name
    for model in others:
        with pytest.raises(ConfigError, match=f"{flag} is an option of --model .*{owner}.*; --model {model} "
                                              "does not use it"):
            resolve(TrainConfig(model=model, **{name: value}))


@pytest.mark.parametrize("model", MODELS)
def test_each_model_resolves_its_own_options_with_their_declared_types(model):
    cfg = resolve(TrainConfig(model=model))
    opts = cfg.model_options
    assert isinstance(opts, get_recipe(model).Options)
    assert set(opts.to_dict()) == set(get_recipe(model).Options.names())
    # the saved form nests them, and reads back equal
    d = cfg.to_dict()
    assert set(d["model_options"]) == set(opts.to_dict())
    assert not set(d) & set(model_option_owners())
    assert TrainConfig.from_saved(d) == cfg


def test_a_flag_of_another_model_exits_2_naming_the_model_and_the_flag(tmp_path, capsys):
    assert main(["--model", "vae", "--plan", "full", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "--plan is an option of --model xvae; --model vae does not use it" in err
    assert not (tmp_path / "r").exists()
    # shared options that do not apply to the chosen model or data are refused too
    assert main(["--model", "vamp", "--epochs-ae", "3", "--out", str(tmp_path / "r")]) == 2
    assert "--model vamp has no stage 1" in capsys.readouterr().err
    assert main(["--dataset", "clusters", "--npz-key", "x", "--out", str(tmp_path / "r")]) == 2
    assert "--npz-key" in capsys.readouterr().err


@pytest.mark.parametrize("model", MODELS)
def test_model_help_shows_its_options_and_no_other_models(model, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--model", model, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out.split("examples:")[0]     # the options, not the epilog's examples
    own = {flag_of(n, s) for n, s in specs(get_recipe(model).Options).items()}
    shown = set(build_parser(model)._option_string_actions)
    for m in MODELS:
        for n, s in specs(get_recipe(m).Options).items():
            f = flag_of(n, s)
            assert (f in shown) == (f in own), (model, f)
    assert all(f in out for f in own)
    assert "--epochs-vae" in out and "default: per dataset" in out
    # every shown option states its default
    for n, s in specs(TrainConfig).items():
        if not s.hidden:
            assert flag_of(n, s) in out or f"--no-{n.replace('_', '-')}" in out


def test_full_help_spells_out_the_per_dataset_epochs_and_lists_every_model(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "digits 30" in out and "twostage digits 300" in out
    for m in MODELS:
        assert f"--model {m}" in out or m in out


def test_list_models(capsys):
    assert main(["--list-models"]) == 0
    out = capsys.readouterr().out
    for m in MODELS:
        assert any(line.startswith(m + " ") for line in out.splitlines()), m


def test_print_config_is_the_resolved_config_and_trains_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--model", "twostage", "--dataset", "clusters", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert TrainConfig.from_saved(printed) == resolve(TrainConfig(model="twostage", dataset="clusters"))
    assert printed["model_options"]["epochs_stage2"] == 2 * printed["epochs_vae"] == 400
    assert not os.path.exists(tmp_path / "runs")


def test_argparse_errors_end_with_the_useful_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--latent", "ten"])
    assert exc.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) <= 3 and "--latent" in lines[-1] and "invalid int value" in lines[-1]


def test_device_must_exist(tmp_path, capsys):
    assert main([*TINY_CLUSTERS, "--device", "cpu:1", "--out", str(tmp_path / "r")]) == 2
    assert "the CPU takes no device index" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main([*TINY_CLUSTERS, "--device", "cuda:0", "--out", str(tmp_path / "r2")]) == 2
        assert "no usable CUDA" in capsys.readouterr().err


def _flatten_like_before(run):
    """Rewrite a run folder's checkpoint and config.yaml in the flat form that runs saved before the
    model options were nested: every model's options at the top level, the other models' at their
    defaults."""
    ck = load_ck(run)
    nested = ck["config"]
    flat = {k: v for k, v in nested.items() if k != "model_options"}
    for m in MODELS:
        flat.update({k: v for k, v in defaults(get_recipe(m).Options).items()})
    flat.update(nested["model_options"])
    ck["config"] = flat
    from xvae_fast.checkpoint_file import atomic_save, seal
    seal(ck)
    atomic_save(ck, os.path.join(run, "checkpoint.pt"))
    with open(os.path.join(run, "config.yaml"), "w") as f:
        yaml.safe_dump(flat, f, sort_keys=False)
    return flat


@pytest.mark.parametrize("model", ["xvae", "vamp"])
def test_an_old_flat_run_folder_resumes_exactly_samples_and_repeats(tmp_path, model):
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    args = [*TINY_CLUSTERS, "--model", model, "--no-outputs"]
    assert train(*args, "--out", full) == 0
    assert train(*args, "--out", part, "--stop-after", "7") == 0
    flat = _flatten_like_before(part)
    assert "pseudo_inputs" in flat and "plan" in flat and "uae_variant" in flat
    assert train("--resume", part) == 0
    wa, wb = load_ck(full)["models"]["vae"], load_ck(part)["models"]["vae"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # the resumed run writes the nested form
    saved = load_ck(part)["config"]
    assert set(saved["model_options"]) == set(get_recipe(model).Options.names())
    # an old flat config.yaml still repeats a run with --config
    old_yaml = tmp_path / "old.yaml"
    old_yaml.write_text(yaml.safe_dump(flat))
    again = str(tmp_path / "again")
    assert train("--config", str(old_yaml), "--out", again, "--stop-after", "0") == 0
    assert load_ck(again)["config"]["model_options"] == saved["model_options"]
    from xvae_fast.sample import main as sample_main
    assert sample_main(["--run", part, "--n", "8", "--out", str(tmp_path / "s.png")]) == 0


def test_a_flat_config_file_with_another_models_option_set_is_refused(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model": "vae", "pseudo_inputs": 7, "plan": None}))
    assert main(["--config", str(path), "--out", str(tmp_path / "r")]) == 2
    assert "--pseudo-inputs is an option of --model vamp" in capsys.readouterr().err


def test_options_dataclasses_hold_only_declared_fields():
    for m in MODELS:
        Options = get_recipe(m).Options
        assert dataclasses.is_dataclass(Options)
        assert [f.name for f in dataclasses.fields(Options)] == list(specs(Options)), m
    parser = build_parser()
    for name, owners in model_option_owners().items():
        flag = flag_of(name, specs(get_recipe(owners[0]).Options)[name])
        assert flag in parser._option_string_actions, flag


def test_docs_options_table_is_generated_from_the_declarations():
    from xvae_fast.train import options_markdown
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "options.md")
    with open(path, encoding="utf-8") as f:
        assert f.read() == options_markdown(), ("docs/options.md is stale: regenerate it with "
                                                "python -m xvae_fast.train --options-markdown > docs/options.md")


def test_compare_passes_each_row_the_extra_flags_its_model_uses(tmp_path):
    from xvae_fast.compare import _argv, run_comparison
    argv = _argv("digits", 1, "vae", None, None, True, ["--pseudo-inputs", "7"], str(tmp_path / "r"))
    assert "--pseudo-inputs" not in argv and "--epochs-ae" not in argv and "--em-n-init" not in argv
    argv = _argv("digits", 1, "vamp", None, None, True, ["--pseudo-inputs", "7"], str(tmp_path / "r"))
    assert argv[argv.index("--pseudo-inputs") + 1] == "7"
    with pytest.raises(ConfigError, match="--pseudo-inputs is used by none of the selected rows"):
        run_comparison(models=["vae", "mog"], extra=["--pseudo-inputs", "7"], out=str(tmp_path / "c"))
    assert not (tmp_path / "c").exists()


def test_print_config_refuses_a_bad_value_with_exit_2(capsys):
    assert main(["--model", "vamp", "--pseudo-inputs", "0", "--print-config"]) == 2
    assert "--pseudo-inputs must be an integer >= 1, got 0" in capsys.readouterr().err


def test_evaluate_references_are_the_models_declared_ones(tmp_path, capsys):
    from xvae_fast.evaluate import main as evaluate_main
    run = str(tmp_path / "vae")
    assert train(*TINY_CLUSTERS, "--model", "vae", "--no-outputs", "--out", run) == 0
    args = ["--run", run, "--n-fake", "200", "--metrics", "rec", "--quiet", "--out", str(tmp_path / "ev")]
    assert evaluate_main(args + ["--references"]) == 2
    assert "--references: --model vae has no reference samplers" in capsys.readouterr().err
    assert evaluate_main(args) == 0          # by default: those the run provides (none)
    assert not (tmp_path / "ev" / "eval_expost.json").exists()
