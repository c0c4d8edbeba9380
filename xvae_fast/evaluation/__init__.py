"""Evaluation of trained runs (`python -m xvae_fast.evaluate`, docs/evaluation.md):

- `frechet`: the Fréchet distance (pytorch-fid's formula and safeguards) and .npz statistics files;
- `inception`: pytorch-fid's FID Inception-v3, re-implemented (loads its weight file strictly);
- `inception_score`: the Inception Score from class logits;
- `precision_recall`: improved precision / recall of samples (k-NN manifolds);
- `feature_classifier`: the offline feature network (a LeNet-style classifier trained on labels);
- `protocol`: the protocol options, with the paper's defaults;
- `runner` / `report`: evaluating a run folder and writing eval.json / eval.md / figures.
"""
from .frechet import frechet_distance, frechet_distance_from_features, gaussian_stats, load_stats, save_stats
from .inception import (FIDInceptionV3, InceptionWeightsError, inception_outputs, load_inception,
                        resolve_weights)
from .inception_score import inception_score
from .precision_recall import precision_recall
from .protocol import Protocol
from .runner import EvalOptions, evaluate_run

__all__ = ["frechet_distance", "frechet_distance_from_features", "gaussian_stats", "load_stats",
           "save_stats", "FIDInceptionV3", "InceptionWeightsError", "inception_outputs",
           "load_inception", "resolve_weights", "inception_score", "precision_recall", "Protocol",
           "EvalOptions", "evaluate_run"]
