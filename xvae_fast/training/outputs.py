"""What a finished run writes next to its checkpoint: loss curves, reconstructions, samples (the run's
--routing in samples.png; a mixture X-VAE also gets the other routing, and the ex-post reference, the
stage-1 autoencoder decoding per-row prior samples), an alpha sweep, the raw samples, for the
synthetic clusters the fraction of samples that land within 3 standard deviations of a mode, and for
the 2-D benchmark (data/toy2d.py) paper 001's histogram KL / JSD and the 8gaussians mode coverage
(measured by evaluation/units.py's ClusterModes and Histogram2D, the units `evaluate` runs)."""
from __future__ import annotations

import os
from typing import Any, Dict

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


@torch.no_grad()
def write_outputs(tr) -> Dict[str, Any]:
    """Write the figures and arrays of a trained run (`tr` is the Trainer); returns summary entries."""
    cfg, info, vae, ae, dev = tr.cfg, tr.info, tr.vae, tr.ae, tr.device
    out = tr.run_dir
    seed = cfg.seed + OUTPUT_SEED_OFFSET
    files = {}
    vae.eval()
    if ae is not None:
        ae.eval()
    title = f"{tr.model_name} on {info.name}"
    stages = [(s.name, s.label, s.terms) for s in tr.stages if s.kind == "train"]
    plot_curves(tr.history, os.path.join(out, "curves.png"), title, stages)
    files["curves"] = "curves.png"

    mixture = bool(vae.routings)
    primary = tr.primary_routing()
    routings = [primary] + [r for r in vae.routings if r != primary]
    references = tr.recipe.available_references()
    sample_sets = list(routings) + list(references)     # the model's routings, then its references

    def file_name(key):
        if key == primary:
            return "samples.png"
        return f"samples_{key.replace('-', '_')}.png"
    devices = [dev] if dev.type == "cuda" else []
    result: Dict[str, Any] = {}

    # reconstructions of fixed test examples (original / stage-1 AE / VAE)
    n_rec = min(N_RECON if info.kind == "image" else 2000, len(tr.data.test))
    x = tr.data.test.get_batch(torch.arange(n_rec)).to(dev)
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        xv = vae(x)["xhat"].float()
        xa = ae(x)[0].float() if ae is not None else None
    rec_label = "VAE" if xa is not None else cfg.model      # X-VAE: AE then VAE; others: the model

    samples, primary_model_space = {}, None
    for key in sample_sets:
        g = _generator(dev, seed + 1)
        n = cfg.n_samples if info.kind == "image" else max(cfg.n_samples, N_CLUSTER_SAMPLES)
        model = references.get(key, vae)
        routing = None if key in references else key
        generated = model.generate(n, cfg.alpha, routing, generator=g)
        if key == primary:
            primary_model_space = generated
        samples[key] = info.to_data_space(generated)
    np.save(os.path.join(out, "samples.npy"), samples[primary].numpy())
    files["samples_npy"] = "samples.npy"

    if info.kind == "image":
        rows = [x.cpu(), xv.cpu().clamp(0, 1)]
        labels = ["data", rec_label]
        if xa is not None:
            rows.insert(1, xa.cpu().clamp(0, 1))
            labels.insert(1, "AE")
        chunks = []
        for r in rows:
            chunks.append(r[:16])
        save_image_rows(chunks, labels, os.path.join(out, "reconstructions.png"),
                        "test reconstructions")
        for key in sample_sets:
            name = file_name(key)
            save_image_grid(samples[key], os.path.join(out, name), nrow=8,
                            title=_title(key, cfg.alpha, mixture, references.get(key)))
            files[f"samples_{key}"] = name
        sweep = []
        for a in cfg.alphas:
            g = _generator(dev, seed + 2)
            sweep.append(info.to_data_space(vae.generate(N_SWEEP_IMAGES, a, primary, g)))
        save_image_rows(sweep, [f"alpha={a:g}" for a in cfg.alphas], os.path.join(out, "alpha_sweep.png"),
                        "alpha sweep (same noise" + (f", {primary} routing)" if mixture else ")"))
    else:
        data_np = info.to_data_space(x).numpy()
        sets = [data_np, info.to_data_space(xv).numpy()]
        labels = ["data (test)", rec_label]
        if xa is not None:
            sets.insert(1, info.to_data_space(xa).numpy())
            labels.insert(1, "AE")
        save_scatter(sets, labels, os.path.join(out, "reconstructions.png"), "test reconstructions",
                     panels=True, reference=data_np)
        for key in sample_sets:
            name = file_name(key)
            save_scatter([data_np, samples[key].numpy()], ["data (test)", "samples"],
                         os.path.join(out, name), _title(key, cfg.alpha, mixture, references.get(key)))
            files[f"samples_{key}"] = name
        # the model's density: the same decoded means with the likelihood's noise added
        noise = _generator(dev, seed + 3)
        noisy = info.to_data_space(vae.likelihood.draw(primary_model_space, generator=noise)).numpy()
        save_scatter([data_np, noisy], ["data (test)", "samples"],
                     os.path.join(out, "samples_decoder_noise.png"),
                     f"x ~ p(x | z) (with decoder noise), alpha={cfg.alpha:g}, {primary}")
        files["samples_decoder_noise"] = "samples_decoder_noise.png"
        sweep = []
        for a in cfg.alphas:
            g = _generator(dev, seed + 2)
            sweep.append(info.to_data_space(vae.generate(N_SWEEP_POINTS, a, primary, g)).numpy())
        save_scatter(sweep, [f"alpha={a:g}" for a in cfg.alphas], os.path.join(out, "alpha_sweep.png"),
                     "alpha sweep" + (f" ({primary} routing)" if mixture else ""), panels=True, reference=data_np)
        modes = ClusterModes()
        if modes.fits(info):
            result["clusters"] = {
                "within_3std_data": modes.within(info, data_np),
                "within_3std_samples": {r: modes.within(info, samples[r].numpy()) for r in sample_sets},
                "samples_per_mode": {r: modes.counts(info, samples[r].numpy()) for r in sample_sets},
                "within_3std_reconstructions": modes.within(info, info.to_data_space(xv).numpy()),
                "recon_mse_data_units": float(((info.to_data_space(xv) - info.to_data_space(x)) ** 2)
                                              .sum(1).mean()),
                "n_samples": int(samples[primary].shape[0]), "routing": primary,
                "within_3std_samples_decoder_noise": modes.within(info, noisy),
            }
        if Histogram2D().fits(info):   # the 2-D benchmark: paper 001's histogram metrics of 5,000 samples
            g = _generator(dev, seed + 4)
            xs = info.to_data_space(vae.generate(N_POINTS, cfg.alpha, primary, generator=g)).numpy()
            result["toy2d"] = Histogram2D.entry(info, xs, alpha=cfg.alpha, routing=primary)
    files["reconstructions"] = "reconstructions.png"
    files["alpha_sweep"] = "alpha_sweep.png"
    vae.train()
    if ae is not None:
        ae.train()
    result["files"] = files
    return result
