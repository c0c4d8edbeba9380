"""What a finished run writes next to its checkpoint: loss curves, reconstructions, samples (the run's
--routing in samples.png; a mixture X-VAE also gets the other routing, and the ex-post reference, the
stage-1 autoencoder decoding per-row prior samples), an alpha sweep, the raw samples, for the
synthetic clusters the fraction of samples that land within 3 standard deviations of a mode, and for
the 2-D benchmark (data/toy2d.py) paper 001's histogram KL / JSD and the 8gaussians mode coverage
(measured by evaluation/units.py's ClusterModes and Histogram2D, the units `evaluate` runs)."""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Optional

import numpy as np
import torch

from ..evaluation.units import N_POINTS, ClusterModes, Histogram2D
from ..plots import plot_curves, save_image_grid, save_image_rows, save_scatter

OUTPUT_SEED_OFFSET = 2_000_003
N_RECON = 32
N_SWEEP_IMAGES = 10
N_SWEEP_POINTS = 600
N_CLUSTER_SAMPLES = 2000


def _title(key: str, alpha: float, routed: bool = True, reference=None) -> str:
    if reference is not None:
        routing = f", {reference.default_routing} routing" if reference.routings else ""
        return f"{reference.reference_title}: {reference.reference_label}, alpha={alpha:g}{routing}"
    return f"samples, alpha={alpha:g}, {key} routing" if routed else f"samples, alpha={alpha:g}"


def _generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


@dataclasses.dataclass
class _Drawn:
    """What the figures show: fixed test examples, their reconstructions (stage-1 AE and model), and
    the sample sets (the model's routings, primary first, then its reference samplers)."""
    x: torch.Tensor
    xv: torch.Tensor
    xa: Optional[torch.Tensor]
    rec_label: str
    primary: str
    mixture: bool
    references: Dict[str, Any]
    samples: Dict[str, torch.Tensor]          # data space, by routing or reference name
    primary_model_space: torch.Tensor

    def file_name(self, key: str) -> str:
        return "samples.png" if key == self.primary else f"samples_{key.replace('-', '_')}.png"

    def title(self, key: str, alpha: float) -> str:
        return _title(key, alpha, self.mixture, self.references.get(key))


@torch.no_grad()
def write_outputs(tr) -> Dict[str, Any]:
    """Write the figures and arrays of a trained run (`tr` is the Trainer); returns summary entries."""
    cfg, info, vae, ae = tr.cfg, tr.info, tr.vae, tr.ae
    seed = cfg.seed + OUTPUT_SEED_OFFSET
    vae.eval()
    if ae is not None:
        ae.eval()
    stages = [(s.name, s.label, s.terms) for s in tr.stages if s.kind == "train"]
    plot_curves(tr.history, os.path.join(tr.run_dir, "curves.png"), f"{tr.model_name} on {info.name}", stages)
    files = {"curves": "curves.png"}
    d = _draw(tr, seed)
    np.save(os.path.join(tr.run_dir, "samples.npy"), d.samples[d.primary].numpy())
    files["samples_npy"] = "samples.npy"
    result: Dict[str, Any] = {}
    if info.kind == "image":
        _image_figures(tr, d, seed, files)
    else:
        result.update(_vector_figures(tr, d, seed, files))
    files["reconstructions"] = "reconstructions.png"
    files["alpha_sweep"] = "alpha_sweep.png"
    vae.train()
    if ae is not None:
        ae.train()
    result["files"] = files
    return result


def _draw(tr, seed: int) -> _Drawn:
    cfg, info, vae, ae, dev = tr.cfg, tr.info, tr.vae, tr.ae, tr.device
    primary = tr.primary_routing()
    references = tr.recipe.available_references()
    sample_sets = [primary] + [r for r in vae.routings if r != primary] + list(references)
    # reconstructions of fixed test examples (original / stage-1 AE / VAE)
    n_rec = min(N_RECON if info.kind == "image" else 2000, len(tr.data.test))
    x = tr.data.test.get_batch(torch.arange(n_rec)).to(dev)
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        xv = vae(x)["xhat"].float()
        xa = ae(x)[0].float() if ae is not None else None
    samples, primary_model_space = {}, None
    for key in sample_sets:
        g = _generator(dev, seed + 1)
        n = cfg.n_samples if info.kind == "image" else max(cfg.n_samples, N_CLUSTER_SAMPLES)
        model = references.get(key, vae)
        generated = model.generate(n, cfg.alpha, None if key in references else key, generator=g)
        if key == primary:
            primary_model_space = generated
        samples[key] = info.to_data_space(generated)
    return _Drawn(x, xv, xa, "VAE" if xa is not None else cfg.model,   # X-VAE: AE then VAE; others: the model
                  primary, bool(vae.routings), references, samples, primary_model_space)


def _image_figures(tr, d: _Drawn, seed: int, files: Dict[str, str]) -> None:
    cfg, info, vae, out = tr.cfg, tr.info, tr.vae, tr.run_dir
    rows = [d.x.cpu(), d.xv.cpu().clamp(0, 1)]
    labels = ["data", d.rec_label]
    if d.xa is not None:
        rows.insert(1, d.xa.cpu().clamp(0, 1))
        labels.insert(1, "AE")
    save_image_rows([r[:16] for r in rows], labels, os.path.join(out, "reconstructions.png"),
                    "test reconstructions")
    for key in d.samples:
        save_image_grid(d.samples[key], os.path.join(out, d.file_name(key)), nrow=8, title=d.title(key, cfg.alpha))
        files[f"samples_{key}"] = d.file_name(key)
    sweep = []
    for a in cfg.alphas:
        g = _generator(tr.device, seed + 2)
        sweep.append(info.to_data_space(vae.generate(N_SWEEP_IMAGES, a, d.primary, g)))
    save_image_rows(sweep, [f"alpha={a:g}" for a in cfg.alphas], os.path.join(out, "alpha_sweep.png"),
                    "alpha sweep (same noise" + (f", {d.primary} routing)" if d.mixture else ")"))


def _vector_figures(tr, d: _Drawn, seed: int, files: Dict[str, str]) -> Dict[str, Any]:
    """The scatter plots of vector data, and the metrics of the synthetic sets: the cluster modes and
    the 2-D benchmark's histograms (evaluation's metric units)."""
    cfg, info, vae, out, dev = tr.cfg, tr.info, tr.vae, tr.run_dir, tr.device
    result: Dict[str, Any] = {}
    data_np = info.to_data_space(d.x).numpy()
    sets = [data_np, info.to_data_space(d.xv).numpy()]
    labels = ["data (test)", d.rec_label]
    if d.xa is not None:
        sets.insert(1, info.to_data_space(d.xa).numpy())
        labels.insert(1, "AE")
    save_scatter(sets, labels, os.path.join(out, "reconstructions.png"), "test reconstructions",
                 panels=True, reference=data_np)
    for key in d.samples:
        save_scatter([data_np, d.samples[key].numpy()], ["data (test)", "samples"],
                     os.path.join(out, d.file_name(key)), d.title(key, cfg.alpha))
        files[f"samples_{key}"] = d.file_name(key)
    # the model's density: the same decoded means with the likelihood's noise added
    noise = _generator(dev, seed + 3)
    noisy = info.to_data_space(vae.likelihood.draw(d.primary_model_space, generator=noise)).numpy()
    save_scatter([data_np, noisy], ["data (test)", "samples"], os.path.join(out, "samples_decoder_noise.png"),
                 f"x ~ p(x | z) (with decoder noise), alpha={cfg.alpha:g}, {d.primary}")
    files["samples_decoder_noise"] = "samples_decoder_noise.png"
    sweep = []
    for a in cfg.alphas:
        g = _generator(dev, seed + 2)
        sweep.append(info.to_data_space(vae.generate(N_SWEEP_POINTS, a, d.primary, g)).numpy())
    save_scatter(sweep, [f"alpha={a:g}" for a in cfg.alphas], os.path.join(out, "alpha_sweep.png"),
                 "alpha sweep" + (f" ({d.primary} routing)" if d.mixture else ""), panels=True, reference=data_np)
    modes = ClusterModes()
    if modes.fits(info):
        result["clusters"] = {
            "within_3std_data": modes.within(info, data_np),
            "within_3std_samples": {r: modes.within(info, d.samples[r].numpy()) for r in d.samples},
            "samples_per_mode": {r: modes.counts(info, d.samples[r].numpy()) for r in d.samples},
            "within_3std_reconstructions": modes.within(info, info.to_data_space(d.xv).numpy()),
            "recon_mse_data_units": float(((info.to_data_space(d.xv) - info.to_data_space(d.x)) ** 2)
                                          .sum(1).mean()),
            "n_samples": int(d.samples[d.primary].shape[0]), "routing": d.primary,
            "within_3std_samples_decoder_noise": modes.within(info, noisy),
        }
    if Histogram2D().fits(info):   # the 2-D benchmark: paper 001's histogram metrics of 5,000 samples
        g = _generator(dev, seed + 4)
        xs = info.to_data_space(vae.generate(N_POINTS, cfg.alpha, d.primary, generator=g)).numpy()
        result["toy2d"] = Histogram2D.entry(info, xs, alpha=cfg.alpha, routing=d.primary)
    return result
