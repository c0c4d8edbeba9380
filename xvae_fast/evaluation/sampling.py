"""Drawing what an evaluation measures: samples of every alpha from one seeded generator (streamed in
chunks, so memory does not grow with n), reconstructions under a fixed noise seed, and the UAE
family's interpolation midpoints."""
from __future__ import annotations

import torch


def generate_chunks(vae, n: int, alpha: float, routing: str, seed: int, batch: int, device,
                    decoder_noise: bool = False, chunk: int = 0):
    """n samples (model space, CPU float32) as an iterator of chunks of at least `chunk` rows (the
    last may be smaller), drawn in batches of `batch` from one seeded generator, so every alpha sees
    the same noise and memory stays one chunk whatever n; with decoder_noise, x ~ p(x | z) instead of
    its mean."""
    from ..models.likelihood import decoder_likelihood
    g = torch.Generator(device=device).manual_seed(seed)
    parts, rows = [], 0
    for s in range(0, n, batch):
        with torch.no_grad():
            x = vae.generate(min(batch, n - s), alpha, routing, generator=g)   # no routings: ignored
            if decoder_noise:
                x = decoder_likelihood(vae).draw(x, generator=g)
        parts.append(x.float().cpu())
        rows += parts[-1].shape[0]
        if rows >= chunk:
            yield torch.cat(parts)
            parts, rows = [], 0
    if parts:
        yield torch.cat(parts)


def generate(vae, n: int, alpha: float, routing: str, seed: int, batch: int, device,
             decoder_noise: bool = False) -> torch.Tensor:
    """generate_chunks, concatenated in memory."""
    return torch.cat(list(generate_chunks(vae, n, alpha, routing, seed, batch, device, decoder_noise,
                                          chunk=n)))


@torch.no_grad()
def reconstruct(vae, ds_or_x, seed: int, batch: int, device, progress: bool = False, desc: str = ""):
    """(reconstructions of x (CPU), per-example squared errors summed over features) for a tensor, or
    for a whole XDataset when ds_or_x is one (then the reconstructions are not kept)."""
    is_tensor = isinstance(ds_or_x, torch.Tensor)
    n = ds_or_x.shape[0] if is_tensor else len(ds_or_x)
    devices = [device] if torch.device(device).type == "cuda" else []
    recons, sse = [], []
    starts = range(0, n, batch)
    if progress and n > 20 * batch:
        from ..progress import progress_bar
        starts = progress_bar(starts, desc=desc, unit="batch")
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for s in starts:
            x = ds_or_x[s:s + batch] if is_tensor else ds_or_x.get_batch(torch.arange(s, min(n, s + batch)))
            x = x.float().to(device)
            xh = vae(x)["xhat"].float()
            sse.append(((xh - x) ** 2).flatten(1).sum(1).double().cpu())
            if is_tensor:
                recons.append(xh.cpu())
    return (torch.cat(recons) if is_tensor else None), torch.cat(sse)


@torch.no_grad()
def interpolate_pairs(model, x: torch.Tensor, seed: int, batch: int, device) -> torch.Tensor:
    """model.interpolate(x[i], x[perm[i]], 0.5) for a seeded random pairing of the rows of x."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(x.shape[0], generator=g)
    out = []
    for s in range(0, x.shape[0], batch):
        a = x[s:s + batch].float().to(device)
        b = x[perm[s:s + batch]].float().to(device)
        out.append(model.interpolate(a, b, 0.5).float().cpu())
    return torch.cat(out)
