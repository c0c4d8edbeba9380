"""`python -m xvae_fast.evaluate --run DIR`: evaluate a trained run.

Reports the reconstruction error on the test set (the paper's Rec), the Fréchet distance of
generated samples and of reconstructions to real test data, precision and recall of the samples,
and the alpha sweep (distance, precision and recall per alpha, a plot and sample grids). Offline by
default, in the features of a small classifier trained on the dataset's labels ("FD-LeNet"; not
Inception FID); `--metrics inception` (or `--inception-weights PATH`) adds pytorch-fid's FID and the
Inception Score under the paper's protocol. Writes eval.json and eval.md into the run folder (or
--out). See docs/evaluation.md."""
from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import List, Optional

from .argv import CommandParser
from .errors import ConfigError, XVAEError

EPILOG = """\
examples:
  python -m xvae_fast.evaluate --run runs/digits                      # offline: Rec, FD-LeNet, P/R, sweep
  python -m xvae_fast.evaluate --run runs/digits --alpha 0.5,0.75,1,1.25,1.5
  python -m xvae_fast.evaluate --run runs/mnist --metrics all --inception-weights pt_inception.pth
  python -m xvae_fast.evaluate --run runs/mnist --metrics rec,fid,is --fid-stats-out mnist_test.npz
  python -m xvae_fast.evaluate --run runs/other --metrics fid --fid-stats-in mnist_test.npz
  python -m xvae_fast.evaluate --run runs/mnist --nll --nll-binarize --metrics rec   # + the NLL

metrics (--metrics, comma-separated): rec (test reconstruction error), fd (offline Fréchet distance:
FD-LeNet for images, FD-MLP for vectors, features of a classifier trained on the dataset's labels;
FD-data for unlabelled vectors), pr (precision / recall, k-NN manifolds, in the same features),
fid (Fréchet Inception Distance, pytorch-fid's network), is (Inception Score); aliases: default =
offline = rec,fd,pr; inception = fid,is; all. Inception weights: --inception-weights PATH, the torch
hub cache (pytorch-fid's download), or a download when online.

--nll adds the importance-sampled negative log-likelihood -log p(x) (nats per example, mean and
standard error over the test examples) for models with an encoder density and a decoder density
(--likelihood bernoulli or gaussian; mse is a squared error, not a density). See docs/evaluation.md.
"""


def build_parser() -> argparse.ArgumentParser:
    from .evaluation.protocol import Protocol
    d = Protocol()
    p = CommandParser(prog="python -m xvae_fast.evaluate", epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Evaluate a trained run: Rec, Fréchet distances (offline "
                                "classifier features or Inception), precision / recall, Inception "
                                "Score, and the diversity-fidelity (alpha) sweep.")
    p.add_argument("--run", required=True, metavar="DIR", help="run folder written by xvae_fast.train")
    p.add_argument("--metrics", default=None, metavar="LIST",
                   help="comma-separated: rec, fd, pr, fid, is (aliases default, offline, inception, "
                   "all); default rec,fd,pr (+ fid,is when --inception-weights is given)")
    p.add_argument("--alpha", default=None, metavar="LIST",
                   help="alphas of the sweep, e.g. 0.5,0.75,1,1.25,1.5 (the default); none: no sweep")
    p.add_argument("--sample-alpha", type=float, default=None, metavar="A",
                   help="alpha of the headline sample metrics (default: the run's --alpha, 1.0)")
    g = p.add_argument_group("protocol (defaults: the paper's Table 6)")
    g.add_argument("--n-real", type=int, metavar="N", default=d.n_real, help=f"real images (default {d.n_real})")
    g.add_argument("--n-fake", type=int, metavar="N", default=d.n_fake,
                   help=f"generated images per alpha (default {d.n_fake})")
    g.add_argument("--real-split", choices=["test", "train"], default=d.real_split,
                   help="split the real images come from (default test)")
    g.add_argument("--batch-size", type=int, metavar="N", default=d.batch_size,
                   help=f"feature-extractor batch (default {d.batch_size}, pytorch-fid's)")
    g.add_argument("--gen-batch-size", type=int, metavar="N", default=d.gen_batch_size,
                   help=f"generation / reconstruction batch (default {d.gen_batch_size})")
    g.add_argument("--routing", choices=["per-row", "per-coordinate"], default=d.routing,
                   help="mixture priors: one component per sample (per-row) or per coordinate (the "
                   "paper's Eq. 20); default: the run's --routing")
    g.add_argument("--decoder-noise", action="store_true", help="generate x ~ p(x | z) (the "
                   "likelihood's noise added to the decoded mean) instead of the mean")
    g.add_argument("--seed", type=int, metavar="N", default=d.seed, help="real-subset, generation and "
                   "reconstruction seed (default 0)")
    g.add_argument("--png-protocol", action="store_true", help="the paper's PNG round trip: images "
                   "are written as 8-bit PNG files (under OUT/eval_png) and read back as pytorch-fid "
                   "reads them")
    g.add_argument("--inception-size", type=int, metavar="N", default=d.inception_size,
                   help="Inception input side (default 299, the protocol; smaller only for quick checks)")
    g.add_argument("--fid-dims", type=int, default=d.fid_dims, choices=[64, 192, 768, 2048],
                   metavar="{64,192,768,2048}",
                   help="Inception features of the FID (default 2048, pool3: the protocol; smaller "
                   "ones as pytorch-fid's --dims)")
    g.add_argument("--is-splits", type=int, metavar="N", default=d.is_splits, help="Inception Score splits (default 10)")
    g.add_argument("--pr-k", type=int, metavar="N", default=d.pr_k, help="k of the precision / recall manifolds "
                   "(default 3)")
    from .evaluation.nll import DEFAULT_K, DEFAULT_N, PAPER_K
    g = p.add_argument_group("negative log-likelihood")
    g.add_argument("--nll", action="store_true",
                   help="add the importance-sampled NLL -log p(x) on the test set (nats per example; "
                   "VAE, X-VAE with a plan routed by pi_p or home, VampPrior, MoG, hierarchical, GM-VAE; "
                   "--likelihood bernoulli or gaussian)")
    g.add_argument("--nll-k", type=int, metavar="K", default=None,
                   help=f"importance samples per test example (default {DEFAULT_K}: about 90 s for 1,000 "
                   f"MNIST images on a 2-core CPU; the papers use {PAPER_K}, which lowered the NLL of "
                   "digits runs by a further 0.02-0.07 nats; docs/evaluation.md)")
    g.add_argument("--nll-n", type=int, metavar="N", default=None,
                   help=f"test examples of the NLL (default {DEFAULT_N}: the seeded subset --n-real "
                   "takes; the whole split when it is smaller)")
    g.add_argument("--nll-binarize", action="store_true",
                   help="binarise the test images once (torch.bernoulli of the intensities, fixed "
                   "seed 0), the papers' protocol for a Bernoulli decoder; images in [0, 1] only")
    g = p.add_argument_group("feature networks")
    g.add_argument("--inception-weights", metavar="PATH", default=None,
                   help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth (else: torch hub cache, "
                   "else download)")
    g.add_argument("--no-download", action="store_true", help="never download the Inception weights")
    g.add_argument("--fid-stats-out", metavar="FILE.npz", default=None,
                   help="save the real images' Inception statistics (mu, sigma; pytorch-fid format)")
    g.add_argument("--fid-stats-in", metavar="FILE.npz", default=None,
                   help="use these real-image Inception statistics (e.g. from pytorch-fid --save-stats)")
    g.add_argument("--cache-dir", metavar="DIR", default=None,
                   help="feature-classifier cache (default $XVAE_FAST_CACHE/feature_classifiers or "
                   "~/.cache/xvae_fast/feature_classifiers)")
    g.add_argument("--classifier-steps", type=int, metavar="N", default=None,
                   help="training steps of the feature classifier (default: 3 epochs, 1000-4000 steps)")
    g = p.add_argument_group("runtime and output")
    g.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    g.add_argument("--threads", type=int, metavar="N", default=None,
                   help="CPU threads (default: the run's setting; 1 for the bundled datasets)")
    g.add_argument("--out", metavar="DIR", default=None,
                   help="folder for eval.json, eval.md and the figures (default: the run folder)")
    g.add_argument("--grid-size", type=int, metavar="N", default=64, help="samples per alpha in the grids (default 64)")
    g.add_argument("--no-figures", action="store_true", help="write no plot or sample grids")
    g.add_argument("--references", "--expost", dest="references", action=argparse.BooleanOptionalAction,
                   default=None,
                   help="also evaluate the run's reference samplers, each to eval_<name>.json/.md: X-VAE's "
                   "ex-post reference (expost: its stage-1 autoencoder decoding per-row samples of the "
                   "fitted prior, the row every two-stage model must beat), the Two-Stage VAE's "
                   "stage-1-only sampling (stage1), the AVAE's decoder on N(0, I) (normal). Default: "
                   "those the run provides; --references: all its model declares, an error where one is "
                   "missing; --no-references (or its old name --no-expost) skips them")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    g.add_argument("--quiet", action="store_true", help="print only the result table")
    return p


def options_from_args(args):
    from .evaluation.protocol import Protocol
    from .evaluation.runner import EvalOptions
    proto = Protocol(n_real=args.n_real, n_fake=args.n_fake, real_split=args.real_split,
                     batch_size=args.batch_size, gen_batch_size=args.gen_batch_size,
                     routing=args.routing, seed=args.seed, decoder_noise=args.decoder_noise,
                     png=args.png_protocol,
                     inception_size=args.inception_size, fid_dims=args.fid_dims,
                     is_splits=args.is_splits, pr_k=args.pr_k)
    nll = None
    if args.nll:
        from .evaluation.nll import NLLOptions
        nll = NLLOptions(binarize=args.nll_binarize)
        if args.nll_k is not None:
            nll.k = args.nll_k
        if args.nll_n is not None:
            nll.n = args.nll_n
        nll.validate()
    elif args.nll_k is not None or args.nll_n is not None or args.nll_binarize:
        raise ConfigError("--nll-k, --nll-n and --nll-binarize set up the NLL; add --nll")
    log = None if args.quiet else (lambda msg: print(f"[xvae_fast.evaluate] {msg}", flush=True))
    return EvalOptions(metrics=args.metrics, alphas=args.alpha, sample_alpha=args.sample_alpha,
                       protocol=proto, inception_weights=args.inception_weights,
                       download=not args.no_download, fid_stats_in=args.fid_stats_in,
                       fid_stats_out=args.fid_stats_out, cache_dir=args.cache_dir,
                       classifier_steps=args.classifier_steps, device=args.device,
                       threads=args.threads, out=args.out, grid_size=args.grid_size,
                       figures=not args.no_figures, progress=not args.no_progress, log=log, nll=nll)


def _references(run: str, required: bool) -> List[str]:
    """The reference samplers to evaluate beside a run: those its recipe declares and its checkpoint
    provides; `required`: every declared one (evaluate_run then says why one is missing), and at
    least one."""
    from .run_loading import load_recipe
    cfg, _, recipe, _ = load_recipe(run)
    if required:
        if not recipe.reference_samplers:
            raise ConfigError(f"--references: --model {cfg.model} has no reference samplers (X-VAE has "
                              "expost, twostage stage1, avae normal)")
        return list(recipe.reference_samplers)
    return list(recipe.available_references())


def main(argv: Optional[List[str]] = None) -> int:
    from .argv import attach_number_lists
    args = build_parser().parse_args(attach_number_lists(argv, ["--alpha"]))
    try:
        from .evaluation.report import markdown_row, write_report
        from .evaluation.runner import evaluate_run
        opts = options_from_args(args)
        report = evaluate_run(args.run, opts)
        paths = write_report(report, figures=opts.figures)
        references = []
        if args.references is not False:
            for name in _references(args.run, required=bool(args.references)):
                ref = evaluate_run(args.run, dataclasses.replace(opts, model=name, figures=False,
                                                                 nll=None))
                write_report(ref, figures=False, json_name=f"eval_{name}.json", md_name=f"eval_{name}.md")
                references.append(ref)
    except XVAEError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(markdown_row(report, *references))
    if not args.quiet:
        for note in report["notes"]:
            print(f"note: {note}")
        print(f"wrote {paths['json']} and {paths['markdown']} "
              f"({report['seconds']['total']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
