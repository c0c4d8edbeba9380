"""Configuration: flags and YAML/JSON files, the saved resolved config, and clear errors."""
import json

import pytest
import yaml

from xvae_fast.models import get_recipe

from xvae_fast.config import TrainConfig, load_config_file, resolve, save_config
from xvae_fast.errors import ConfigError
from xvae_fast.ops.plans import PRESETS
from xvae_fast.train import parse_config

from train_utils import TINY_DIGITS, cli, load_ck, train


def test_resolve_fills_dataset_defaults():
    cfg = resolve(TrainConfig())
    assert cfg.dataset == "digits" and cfg.model == "xvae" and cfg.plan == "matched"
    assert cfg.latent == 10 and cfg.epochs_ae >= 1 and cfg.epochs_vae >= 1
    assert cfg.batch_size == 128 and cfg.lr == 1e-3 and cfg.seed == 42
    mnist = resolve(TrainConfig(dataset="mnist:/data/m"))
    assert (mnist.latent, mnist.epochs_ae, mnist.epochs_vae) == (64, 10, 15)  # paper Table 5
    celeba = resolve(TrainConfig(dataset="celeba:/d"))
    assert (celeba.latent, celeba.image_size, celeba.channels) == (256, 64, 3)
    assert resolve(TrainConfig(dataset="clusters")).latent == 3
    assert resolve(cfg) == cfg  # idempotent


@pytest.mark.parametrize("ext", ["yaml", "json"])
def test_config_round_trip(tmp_path, ext):
    cfg = resolve(TrainConfig(dataset="clusters", plan="split-2/3", latent=3, lr=3e-4, alphas=[0.5, 2.0],
                              hidden=[32, 8], seed=5))
    path = str(tmp_path / f"c.{ext}")
    save_config(cfg, path)
    assert TrainConfig.from_dict(load_config_file(path)) == cfg


def test_run_saves_its_full_resolved_config_and_it_repeats_the_run(tmp_path):
    run = str(tmp_path / "a")
    assert train(*TINY_DIGITS, "--no-outputs", "--out", run) == 0
    saved = load_config_file(f"{run}/config.yaml")
    assert set(saved) == set(TrainConfig.field_names())
    assert saved["latent"] == 4 and saved["limit"] == 160 and saved["model_options"]["plan"] == "matched"
    # the model's own options only, nested
    assert set(saved["model_options"]) == set(get_recipe("xvae").Options.names())
    assert saved["epochs_ae"] == 2 and saved["dataset"] == "digits"
    # the saved file repeats the run (to a new folder): same weights
    run_b = str(tmp_path / "b")
    assert train("--config", f"{run}/config.yaml", "--out", run_b) == 0
    wa, wb = load_ck(run)["models"]["vae"], load_ck(run_b)["models"]["vae"]
    assert all((wa[k] == wb[k]).all() for k in wa)


def test_flags_override_the_config_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"latent": 5, "seed": 3, "epochs-vae": 7, "plan": "interleaved"}))
    cfg, explicit = parse_config(["--config", str(path), "--seed", "9", "--lr", "0.01"])
    assert (cfg.latent, cfg.seed, cfg.epochs_vae, cfg.plan, cfg.lr) == (5, 9, 7, "interleaved", 0.01)
    assert explicit == {"latent", "seed", "epochs_vae", "plan", "lr"}


def test_bad_config_files_and_options(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("latent: 5\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="unknown config option 'learning_rate'"):
        parse_config(["--config", str(path)])
    path.write_text("latent: [unclosed\n")
    with pytest.raises(ConfigError, match="could not parse"):
        parse_config(["--config", str(path)])
    with pytest.raises(ConfigError, match="does not exist"):
        parse_config(["--config", str(tmp_path / "none.yaml")])
    with pytest.raises(ConfigError, match="latent must be an integer >= 1"):
        resolve(TrainConfig(latent=0))
    with pytest.raises(ConfigError, match="--precision"):
        resolve(TrainConfig(precision="fp8"))
    with pytest.raises(ConfigError, match="--precision"):      # the old name, read as the new one
        resolve(TrainConfig.from_dict({"amp": "fp8"}))


def test_unknown_configuration_lists_the_choices():
    with pytest.raises(ConfigError) as info:
        resolve(TrainConfig(plan="transport-everything"))
    msg = str(info.value)
    assert "unknown configuration" in msg and "'transport-everything'" in msg
    assert all(p in msg for p in PRESETS + ("single",))


def test_custom_plans_from_file_and_inline_json(tmp_path):
    coords = [{"route": "prior", "tie": "none", "source": "prior", "mode": "transport"}] * 3
    inline = json.dumps({"name": "mine", "coordinates": coords})
    cfg = resolve(TrainConfig(dataset="clusters", plan=inline))
    assert cfg.plan["name"] == "mine" and cfg.build_plan().name == "mine" and len(cfg.build_plan()) == 3
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump({"coordinates": coords[:2]}))
    with pytest.raises(ConfigError, match="2 coordinates but the latent size .* is 3"):
        resolve(TrainConfig(dataset="clusters", plan=str(path)))
    bad = json.dumps({"coordinates": [{"route": "sideways"}] * 3})
    with pytest.raises(ConfigError, match="invalid custom plan.*route"):
        resolve(TrainConfig(dataset="clusters", plan=bad))


def test_help_is_complete():
    r = cli("xvae_fast.train", "--help")
    assert r.returncode == 0
    for flag in ("--dataset", "--model", "--plan", "--latent", "--epochs-ae", "--epochs-vae", "--batch-size",
                 "--lr", "--seed", "--device", "--out", "--resume", "--config", "--precision",
                 "--channels-last", "--image-output", "--em-backend", "--tensorboard",
                 "mnist:DIR", "celeba:DIR", "images:DIR", "npy:PATH", "split-1/3", "k1-pq-nq"):
        assert flag in r.stdout, flag
