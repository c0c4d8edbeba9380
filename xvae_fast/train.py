"""`python -m xvae_fast.train`: train X-VAE end to end (stage-1 autoencoder, prior fit, stage-2 VAE,
outputs) and write a run folder. With no arguments it trains on the bundled digits in about a minute
or two on a laptop CPU."""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import Any, Dict, List, Optional

from .config import MODELS, TrainConfig, load_config_file
from .errors import ConfigError, NonFiniteLossError, TrainingInterrupted, XVAEError

EPILOG = """\
examples:
  python -m xvae_fast.train                                   # X-VAE (library defaults) on the bundled digits
  python -m xvae_fast.train --preset paper                    # the paper's setup, read literally
  python -m xvae_fast.train --dataset clusters --plan full --out runs/clusters-full
  python -m xvae_fast.train --dataset clusters --model vae --out runs/clusters-vae
  python -m xvae_fast.train --model vamp --pseudo-inputs 50   # a baseline (docs/baselines.md)
  python -m xvae_fast.train --model twostage                   # Two-Stage VAE (docs/models.md)
  python -m xvae_fast.train --model uae --uae-variant utvae    # Unscented AE ablation (docs/models.md)
  python -m xvae_fast.train --model avae --batch-size 100 --lr 5e-4   # AVAE (docs/models.md)
  python -m xvae_fast.compare --data digits --out runs/compare-digits   # all baselines + X-VAE
  python -m xvae_fast.train --dataset mnist:data/mnist --download --plan split-1/3 --device cuda
  python -m xvae_fast.train --dataset celeba:data/celeba --plan k1-pq-np --precision bf16 --device cuda
  python -m xvae_fast.train --config my_run.yaml --seed 7     # flags override the file
  python -m xvae_fast.train --resume runs/clusters-full        # continue an interrupted run
  python -m xvae_fast.sample --run runs/clusters-full --n 500 --alpha 1.2 --out samples.png

configurations (--plan, SPEC.md): single, full, interleaved, split-2/3, split-1/3, k1-pp-np,
k1-pq-np, k1-pp-nq, k1-pq-nq, matched, or a JSON/YAML file {"coordinates": [{"route": "prior", "tie":
"none", "source": "prior", "mode": "transport"}, ...]} with one entry per latent coordinate.
models (--model): xvae, vae, vamp, hierarchical, mog, gmvae (docs/baselines.md), twostage, uae, avae
(docs/models.md).
A run folder holds config.yaml (the full resolved config; pass it back with --config to repeat the
run), checkpoint.pt, metrics.csv/json, curves.png, reconstructions.png, samples.png,
samples_per_row.png, alpha_sweep.png, samples.npy, prior_fit.json, summary.json and train.log.
"""


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m xvae_fast.train", argument_default=argparse.SUPPRESS,
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Train X-VAE in two stages: a deterministic autoencoder, a prior fitted on its "
                    "latents (single Gaussian or a K-component Gaussian mixture by EM), then the VAE "
                    "with that frozen prior and a routed-transport configuration. Options can also come "
                    "from a YAML/JSON file (--config); flags win over the file.")
    g = p.add_argument_group("what to train")
    g.add_argument("--config", metavar="FILE", help="YAML or JSON file of options (keys as below, "
                   "with _ or -)")
    g.add_argument("--dataset", metavar="SPEC", help="digits (default, bundled 8x8 digits), clusters "
                   "(bundled synthetic 2-D, 3 modes), 8gaussians, 2spirals, checkerboard, rings (bundled "
                   "2-D benchmark of paper 001, docs/toy2d.md), mnist:DIR (IDX files, gz or not), "
                   "celeba:DIR, images:DIR, npy:PATH (.npy/.npz array of vectors)")
    g.add_argument("--model", choices=list(MODELS), help="xvae (two-stage X-VAE, default), or a baseline "
                   "of the paper trained end to end without stage 1: vae (standard VAE, N(0, I) prior), "
                   "vamp (VampPrior), hierarchical (two-level ladder VAE), mog (learned mixture prior), "
                   "gmvae (Gumbel-Softmax GM-VAE), or a related system: twostage (Two-Stage VAE), uae "
                   "(Unscented Autoencoder), avae (AVAE, KDE aggregate posterior); see docs/baselines.md and "
                   "docs/models.md")
    g.add_argument("--plan", metavar="NAME|FILE", help="X-VAE configuration: single, full, interleaved, "
                   "split-2/3, split-1/3, k1-pp-np, k1-pq-np, k1-pp-nq, k1-pq-nq, matched, or a custom plan "
                   "file (default: from --preset)")
    g.add_argument("--latent", type=int, metavar="K", help="latent size K, shared by AE and VAE "
                   "(default per dataset: digits 10, clusters 3, 2-D benchmark 2, mnist 64, celeba 256)")
    g = p.add_argument_group("stage-2 method (SPEC Revision 2; docs/choosing-defaults.md)")
    g.add_argument("--preset", choices=["default", "paper"], help="default: the library's measured "
                   "choices (plan matched, --kl tight, --stage2-init ae, --routing per-row, likelihood "
                   "per dataset); paper: the paper read literally (plan full, --kl paper, --stage2-init "
                   "random, --routing per-coordinate, --likelihood mse). Flags below override either")
    g.add_argument("--kl", choices=["paper", "tight", "mixture"], help="X-VAE mixture KL: paper (Eq. 18, "
                   "batch pi_q), tight (Lemma 1 at the optimal per-row weights, no logits head), mixture "
                   "(Lemma 1 with the encoder's per-row weights)")
    g.add_argument("--kl-weight", type=float, metavar="BETA", help="xvae, vae: the KL's weight in the "
                   "trained loss (1: the ELBO; the reported objective is always the ELBO; default: X-VAE "
                   "per --preset, the standard VAE 1)")
    g.add_argument("--stage2-init", choices=["ae", "random"], help="X-VAE stage 2: start from the stage-1 "
                   "autoencoder's encoder and decoder (ae) or from random weights (random, the paper)")
    g.add_argument("--routing", choices=["per-row", "per-coordinate"], help="X-VAE generation: one prior "
                   "component per sample (per-row: exact sampling of the fitted mixture) or per "
                   "coordinate (the paper's Eq. 20); used by the run's outputs, sample and evaluate")
    g.add_argument("--likelihood", choices=["mse", "bernoulli", "gaussian"], help="decoder likelihood of "
                   "every model: mse (squared error summed, the paper), bernoulli (cross-entropy, data "
                   "in [0, 1]), gaussian (learned scalar variance, Two-Stage VAE); default per dataset")
    g.add_argument("--gamma-min", type=float, metavar="G", help="gaussian likelihood: floor of the "
                   "learned variance gamma (default 0: none)")
    g.add_argument("--image-output", choices=["linear", "sigmoid"], help="mse / gaussian likelihood on "
                   "images: the pixel mean is the decoder's output (linear; the default for mse in X-VAE "
                   "and the baselines: a squared error through a sigmoid stops training for some seeds) "
                   "or its sigmoid (the default for gaussian and the related systems)")
    g = p.add_argument_group("baselines (docs/baselines.md)")
    g.add_argument("--pseudo-inputs", type=int, metavar="C", help="vamp: learned pseudo-inputs (default "
                   "per dataset: mnist 200, celeba/images 32 (paper Table 5), digits 50, clusters 10, "
                   "2-D benchmark 64, npy 50)")
    g.add_argument("--mog-components", type=int, metavar="C", help="mog: components of the learned "
                   "mixture prior (default 10; clusters 3; 2-D benchmark 64)")
    g.add_argument("--clusters", dest="gmvae_clusters", type=int, metavar="C", help="gmvae: values of "
                   "the discrete cluster variable (default 10; clusters 3; 2-D benchmark 8)")
    g.add_argument("--hier-top", type=int, metavar="K2", help="hierarchical: size of the top latent "
                   "level z2 (default K // 2; the bottom level gets the rest of K)")
    g.add_argument("--hier-hidden", type=int, metavar="H", help="hierarchical: hidden width of the "
                   "conditional prior p(z1|z2) and of the bottom-up layer (default 256)")
    g.add_argument("--gumbel-tau-start", type=float, metavar="T", help="gmvae: Gumbel-Softmax "
                   "temperature at the first step (default 1.0)")
    g.add_argument("--gumbel-tau-end", type=float, metavar="T", help="gmvae: temperature after the "
                   "anneal (default 0.5)")
    g.add_argument("--gumbel-anneal", choices=["exp", "linear", "none"], help="gmvae: temperature "
                   "schedule over the global step (default exp: tau = max(end, start*exp(-r*step)))")
    g.add_argument("--gumbel-anneal-steps", type=int, metavar="N", help="gmvae: steps to reach the end "
                   "temperature (default 0: the whole training)")
    g = p.add_argument_group("related systems (docs/models.md)")
    g.add_argument("--arch", choices=["library", "paper"], help="twostage, uae: the library's nets "
                   "(default) or the paper's architecture (SPEC-related 3.2 / 4.2; 28x28, 32x32, 64x64)")
    g.add_argument("--epochs-stage2", type=int, metavar="N", help="twostage: epochs of the second VAE, "
                   "on the frozen stage-1 codes (default 2x --epochs-vae)")
    g.add_argument("--stage2-latent", type=int, metavar="U", help="twostage: size of the stage-2 latent u "
                   "(default K)")
    g.add_argument("--stage2-width", type=int, metavar="W", help="twostage: width of the stage-2 MLP "
                   "(default 256; the paper 1024)")
    g.add_argument("--stage2-depth", type=int, metavar="L", help="twostage: hidden layers of the "
                   "stage-2 encoder and decoder (default 3)")
    g.add_argument("--stage2-input", choices=["sampled", "mean"], help="twostage: stage 2 trains on "
                   "z ~ q(z|x) redrawn every step (sampled, the paper) or on its mean (the ablation)")
    g.add_argument("--stage2-noise", action=argparse.BooleanOptionalAction, help="twostage: generation "
                   "adds the stage-2 decoder noise (default on, the authors' code)")
    g.add_argument("--uae-variant", choices=["vae", "utvae", "vae-w", "utvae-w", "uae", "rae-gp"],
                   help="uae: the ablation family of paper 003 (default uae: sigma points, mean-image "
                   "reconstruction, Wasserstein term, decoder gradient penalty)")
    g.add_argument("--uae-form", choices=["code", "paper"], help="uae: the authors' code reductions "
                   "(default; MSE mean, unsquared norms) or the paper's Eqs. 8-12")
    g.add_argument("--uae-points", type=int, metavar="K", help="uae: sigma points (or samples) per "
                   "example (default 8)")
    g.add_argument("--uae-heuristic", choices=["random", "random-pairs", "top-pairs"], help="uae: "
                   "which sigma points a step uses (default random)")
    g.add_argument("--uae-kappa", type=float, metavar="KAPPA", help="uae: sigma-point spread (default 1e-3)")
    g.add_argument("--uae-beta", type=float, metavar="B", help="uae: regulariser weight (default "
                   "2.5e-4; rae-gp 1e-4)")
    g.add_argument("--uae-gamma", type=float, metavar="G", help="uae: gradient-penalty weight (default 1e-6)")
    g.add_argument("--expost-components", type=int, metavar="C", help="uae: components of the "
                   "full-covariance GMM fitted on the training means (default 10)")
    g = p.add_argument_group("S-IntroVAE with a learned prior (--model introprior, docs/models.md)")
    g.add_argument("--introprior-prior", choices=["sg", "fixed", "ip"], help="sg: N(0, I); fixed: a "
                   "mixture learned in the VAE warm-up (VampPrior, then converted), frozen in the game; ip "
                   "(default): the mixture also trained in the game (prior-decoder cooperation)")
    g.add_argument("--introprior-weights", choices=["uniform", "learned"], help="mixture weights: "
                   "uniform, or learned (default; the paper's LC)")
    g.add_argument("--introprior-components", type=int, metavar="M", help="mixture components (default: "
                   "2-D sets 64, digits 10, mnist/celeba/images 100)")
    g.add_argument("--introprior-mog-warmup", type=int, metavar="E", help="the last E warm-up epochs use "
                   "the converted mixture instead of the VampPrior (default: 2-D 3, images 5)")
    g.add_argument("--epochs-game", type=int, metavar="N", help="epochs of the adversarial game after "
                   "the --epochs-vae warm-up (0: the warm-up VAE alone; default: 2-D 700, digits 60, "
                   "images 200)")
    g.add_argument("--introprior-beta-rec", type=float, metavar="B", help="b_rec (default per dataset)")
    g.add_argument("--introprior-beta-kl", type=float, metavar="B", help="b_kl (default per dataset)")
    g.add_argument("--introprior-beta-neg", type=float, metavar="B", help="b_neg, the fake KL's weight "
                   "in the encoder loss and the stability knob (default: 2-D per dataset, digits 32, "
                   "mnist 128, celeba/images 256)")
    g.add_argument("--introprior-preset", choices=["paper", "code"], help="2-D betas: the paper's grid "
                   "values (default) or the authors' code configs")
    g.add_argument("--introprior-mc", type=int, metavar="T", help="Monte Carlo draws per KL (default 100)")
    g.add_argument("--introprior-alpha", type=float, metavar="A", help="alpha of the exponential ELBO "
                   "(default 2)")
    g.add_argument("--introprior-gamma", type=float, metavar="G", help="gamma, the fakes' KL weight in the "
                   "decoder loss (default 1)")
    g.add_argument("--introprior-gamma-r", type=float, metavar="G", help="gamma_r, the fakes' "
                   "reconstruction weight in the decoder loss (default 1e-8)")
    g.add_argument("--introprior-entropy", type=float, metavar="R", help="r_ent, weight of the "
                   "responsibility-entropy term (default 0)")
    g.add_argument("--introprior-clip", type=float, metavar="K", help="K of the adaptive soft clip of the "
                   "prior log-variances under ip (default 10; 0: no clip)")
    g.add_argument("--introprior-scale", type=float, metavar="S", help="s, the game's loss scale "
                   "(default 1 / input size)")
    g.add_argument("--introprior-lr-prior", type=float, metavar="LR", help="the prior's Adam learning "
                   "rate (default --lr)")
    g.add_argument("--introprior-milestones", type=_ints, metavar="S1,S2", help="learning rate x0.1 at "
                   "these global steps (default: 2-D 10000,15000 as the code; none elsewhere)")
    g.add_argument("--introprior-code-parity", action="store_true", help="convert the VampPrior's "
                   "learned weights as the authors' code does (softmaxed weights loaded as logits) "
                   "instead of exactly")
    g = p.add_argument_group("AVAE, the aggregate posterior matched by a KDE (--model avae, docs/models.md)")
    g.add_argument("--avae-centres", type=int, metavar="M", help="KDE centres m, redrawn every epoch "
                   "(default: digits 512, mnist 10000, celeba 20000, else 1000; at most half of the "
                   "rows left after the validation part)")
    g.add_argument("--avae-val-fraction", type=float, metavar="F", help="share of the training set held "
                   "out to set beta and the plateau schedule (default 0.1)")
    g.add_argument("--avae-refresh-steps", type=int, metavar="KB", help="k_b: re-encode the centres every "
                   "KB global steps and at each epoch's new subset (default 10)")
    g.add_argument("--avae-beta", metavar="RULE", help="rule (default, paper Eq. 9: mean validation "
                   "||x - D(E(x))||), rms (the authors' trainer: root mean square), rms:V (rms from V at "
                   "epoch 0), const:V (a fixed weight, e.g. const:6.14 for the code's MNIST weight)")
    g.add_argument("--avae-bandwidth", type=float, metavar="H", help="the used KDE bandwidth h in (0, 1) "
                   "(default: h_opt(l, m) estimated, then h = h_opt / sqrt(1 + h_opt^2))")
    g.add_argument("--avae-kde-floor", type=float, metavar="MAX_CDF", help="the authors' code's KL term: "
                   "linear-space KDE plus the floor exp(-chi2_l^-1(MAX_CDF)/2) h^-l, in log10 (e.g. "
                   "0.999999 for MNIST; default: the paper's natural-log logsumexp, no floor)")
    g.add_argument("--avae-lr-plateau", type=int, metavar="P", help="halve the learning rate when the "
                   "validation loss has not improved for P epochs (default: 5, the paper, on mnist, celeba "
                   "and images; 0, off, on the bundled sets; with 0 --lr-schedule applies)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs-ae", type=int, metavar="N", help="stage-1 epochs (default per dataset)")
    g.add_argument("--epochs-vae", type=int, metavar="N", help="stage-2 epochs (default per dataset)")
    g.add_argument("--batch-size", type=int, metavar="B", help="batch size (default 128)")
    g.add_argument("--lr", type=float, help="Adam learning rate (default 1e-3)")
    g.add_argument("--lr-schedule", choices=["none", "cosine"], help="per-stage schedule (default none)")
    g.add_argument("--grad-clip", type=float, metavar="NORM", help="clip gradient norm (0: off)")
    g.add_argument("--seed", type=int, help="seed of initialisation, shuffling and noise (default 42)")
    g = p.add_argument_group("data")
    g.add_argument("--split-seed", type=int, help="seed of the train/test split (default 0)")
    g.add_argument("--test-fraction", type=float, help="test share when a split is made (default 0.2)")
    g.add_argument("--limit", type=int, metavar="N", help="use at most N examples (quick runs)")
    g.add_argument("--binarize", choices=["none", "dynamic"], help="images in [0, 1]: dynamic redraws "
                   "every training batch as x ~ Bernoulli(intensity) and binarises the test images once "
                   "(fixed seed), the likelihood papers' protocol (VampPrior's code); default none")
    g.add_argument("--image-size", type=int, metavar="S", help="images/celeba: centre crop and resize to "
                   "SxS (default 64)")
    g.add_argument("--channels", type=int, choices=[1, 3], help="images/celeba: 1 grey or 3 RGB")
    g.add_argument("--standardize", action=argparse.BooleanOptionalAction,
                   help="z-score vector features with the training split's mean/std (default: on for npy, off for "
                   "clusters)")
    g.add_argument("--hidden", type=_ints, metavar="H1,H2", help="MLP hidden sizes for vector data")
    g.add_argument("--npz-key", metavar="KEY", help="array name inside an .npz file")
    g.add_argument("--download", action="store_true", help="mnist: download the IDX files if missing")
    g = p.add_argument_group("prior fit")
    g.add_argument("--prior-fit", choices=["auto", "em", "single"], help="auto: single for --plan single, "
                   "else EM mixture")
    g.add_argument("--em-backend", choices=["torch", "sklearn"], help="the EM of the mixture prior: "
                   "torch (default: scikit-learn's algorithm in float64 on the run's device, the fused "
                   "E-step; ~4x faster on MNIST) or scikit-learn's GaussianMixture (the reference)")
    g.add_argument("--em-n-init", type=int, metavar="N", help="EM restarts, best kept (default 3)")
    g.add_argument("--em-max-iter", type=int, metavar="N", help="EM iteration cap (default 200)")
    g.add_argument("--em-tol", type=float, help="EM convergence tolerance (default 1e-3)")
    g.add_argument("--em-var-floor", type=float, help="variance floor, relative to the latents' mean "
                   "variance (default 1e-4)")
    g.add_argument("--em-weight-floor", type=float, help="minimum mixture weight before renormalising "
                   "(default 1e-3)")
    g.add_argument("--stage1-from", metavar="RUN_DIR", help="reuse the trained autoencoder of another "
                   "run (same data and latent size) and skip stage 1")
    g = p.add_argument_group("runtime and outputs")
    g.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    g.add_argument("--precision", choices=["fp32", "bf16", "auto"], help="fp32 (default), bf16 (the "
                   "networks under bfloat16 autocast; the fused ops, KL and likelihood sums stay float32) "
                   "or auto (bf16 where the device has bfloat16 units: a GPU with bf16, a CPU with AMX or "
                   "AVX512-BF16); a runtime option, recorded in summary.json")
    g.add_argument("--amp", choices=["none", "bf16"], dest="amp_alias", help=argparse.SUPPRESS)
    g.add_argument("--channels-last", choices=["auto", "on", "off"], help="conv weights and activations "
                   "in NHWC order: auto (default) uses it on CPU and for bf16 on CUDA, where it measures "
                   "faster (bench/paper_scale.py)")
    g.add_argument("--compile", action="store_true", help="torch.compile the training step's loss "
                   "(forward and backward; the fused ops are compile-safe): slower start, faster steps "
                   "on large nets (bench/step.py); a runtime option, so --resume may add or drop it")
    g.add_argument("--threads", type=int, metavar="N", help="CPU threads for torch (default: 1 for the bundled "
                   "digits and clusters, whose nets are tiny; else torch's default)")
    g.add_argument("--num-workers", type=int, metavar="N", help="data-loading workers for large "
                   "image folders (default 0)")
    g.add_argument("--out", metavar="DIR", help="run folder (default runs/<dataset>-<model>-<plan>-"
                   "<time>)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    g.add_argument("--resume", metavar="DIR", help="continue the run in DIR exactly where it stopped")
    g.add_argument("--auto-resume", action="store_true", help="resume --out DIR when it already holds "
                   "a checkpoint, else start it: one command line for torchrun --max-restarts "
                   "(docs/distributed.md)")
    g.add_argument("--checkpoint-every", type=int, metavar="STEPS", help="also checkpoint every N steps "
                   "(always at each epoch end)")
    g.add_argument("--stop-after", type=int, metavar="STEPS", help="stop (with a checkpoint) after this "
                   "many optimizer steps in total; --resume continues")
    g.add_argument("--eval-every", type=int, metavar="EPOCHS", help="test-set evaluation period "
                   "(default 1; 0: only at the end)")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    g.add_argument("--tensorboard", action="store_true", help="also log to DIR/tensorboard (needs the "
                   "tensorboard package)")
    g.add_argument("--no-outputs", dest="outputs", action="store_false", help="skip figures and samples")
    g.add_argument("--n-samples", type=int, metavar="N", help="samples in samples.png (default 64)")
    g.add_argument("--alpha", type=float, help="sampling std scale for samples.png (default 1.0)")
    g.add_argument("--alphas", type=_floats, metavar="A1,A2", help="alpha sweep values "
                   "(default 0.5,0.8,1,1.2,1.5,2)")
    return p


def parse_config(argv: Optional[List[str]] = None):
    """(TrainConfig, the set of option names the user gave) from a config file and flags."""
    from .argv import attach_number_lists
    args = vars(build_parser().parse_args(attach_number_lists(argv, ["--alphas"])))
    given: Dict[str, Any] = {}
    if "config" in args:
        given.update({str(k).replace("-", "_"): v for k, v in load_config_file(args["config"]).items()})
    if "amp_alias" in args:     # --amp none|bf16: the old name of --precision fp32|bf16
        amp = {"none": "fp32", "bf16": "bf16"}[args.pop("amp_alias")]
        if args.get("precision", amp) != amp:
            raise ConfigError(f"--amp is the old name of --precision: --amp gives {amp}, "
                              f"--precision {args['precision']}; pass only --precision")
        args["precision"] = amp
    given.update(args)
    cfg = TrainConfig.from_dict(given)
    return cfg, set(given) - {"config"}


def _rank() -> int:
    try:
        return int(os.environ.get("RANK", "0") or 0)
    except ValueError:
        return 0


def _say(msg: str) -> None:
    """An error line on stderr; under torchrun the other ranks' lines name their rank."""
    print(msg if _rank() == 0 else f"[rank {_rank()}] {msg}", file=sys.stderr)


def main(argv: Optional[List[str]] = None) -> int:
    try:
        cfg, explicit = parse_config(argv)
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
