"""Scoring narratives with a trained classifier: the API the streaming scorer calls.

    model = load_model(settings.model)                 # the champion, or version="..."
    scores, typologies, probs = model.predict_batch(narratives, features)
    alerted = scores >= model.alert_threshold

Speed comes from what is *not* computed: narratives are tokenized once, sorted by length and
cut into batches of similar length (length bucketing), each batch padded only to its own
longest member (dynamic padding), and the original order restored at the end. Inference runs
under ``torch.inference_mode``; on CUDA with fp16 autocast and pinned host memory; on CPU with
the intra-op thread count set to the physical cores (hyper-threads share one core's vector
units, so more threads than cores only adds contention) and, optionally, dynamic int8
quantisation of the Linear layers.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from transformers import BertTokenizer

from models.classifier import (
    LEGITIMATE_INDEX,
    TYPOLOGY_ORDER,
    ClassifierConfig,
    RiskClassifier,
    risk_scores,
)
from models.errors import ModelError
from models.registry import Registry
from models.settings import ModelSettings
from models.thresholds import Thresholds
from schemas import Typology

log = logging.getLogger(__name__)

# Narratives per forward pass. On CPU, 32 length-sorted narratives per pass beat 256 in
# bench_model for every model measured (less padding, attention blocks that stay in cache); a
# GPU wants large batches.
CPU_BATCH_SIZE = 32
CUDA_BATCH_SIZE = 256


def default_batch_size(device: torch.device) -> int:
    return CUDA_BATCH_SIZE if device.type == "cuda" else CPU_BATCH_SIZE


class Predictions(NamedTuple):
    """Per narrative, in input order."""

    scores: NDArray[np.float32]
    """Risk probability, 1 − p(legitimate)."""
    typologies: list[Typology]
    """The most likely *suspicious* typology: what the event would be if it is suspicious."""
    typology_probs: NDArray[np.float32]
    """(n, len(TYPOLOGY_ORDER)) class probabilities; column 0 is legitimate."""

    def typology_probability(self) -> NDArray[np.float32]:
        """p(the reported typology) per narrative."""
        columns = np.array([TYPOLOGY_ORDER.index(t) for t in self.typologies], dtype=np.int64)
        rows = np.arange(len(columns))
        return self.typology_probs[rows, columns] if len(columns) else np.zeros(0, np.float32)


def pick_device(setting: str = "auto") -> torch.device:
    if setting == "cuda" and not torch.cuda.is_available():
        raise ModelError("model.device is cuda but no CUDA device is available")
    if setting == "cuda" or (setting == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def physical_cores() -> int:
    """Physical cores this process may run on: distinct (package, core) pairs in
    /proc/cpuinfo, capped by the CPU affinity mask; the logical count where that is unknown."""
    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    logical = logical or os.cpu_count() or 1
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            blocks = cpuinfo.read().split("\n\n")
    except OSError:
        return logical
    cores = set()
    for block in blocks:
        fields = dict(
            (key.strip(), value.strip())
            for key, _, value in (line.partition(":") for line in block.splitlines())
        )
        if "core id" in fields:
            cores.add((fields.get("physical id", "0"), fields["core id"]))
    return max(1, min(len(cores) or logical, logical))


def configure_cpu_threads(threads: int | None) -> int:
    """Set torch's intra-op threads (default: physical cores); return the number set."""
    wanted = threads or physical_cores()
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)
    return wanted


def quantize_int8(model: nn.Module) -> nn.Module:
    """Dynamic int8 quantisation of every Linear layer (weights int8, activations quantised on
    the fly), CPU only. torch marks these APIs deprecated in favour of torchao; they remain the
    dependency-free way to do it, so the warning is silenced here rather than in the logs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        quantized: nn.Module = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
            model, {nn.Linear}, dtype=torch.qint8
        )
    return quantized


def _pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = np.full((len(sequences), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), width), dtype=np.int64)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = sequence
        mask[row, : len(sequence)] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


def predict_logits(
    model: nn.Module,
    tokenizer: BertTokenizer,
    narratives: Sequence[str],
    features: NDArray[np.floating] | None,
    *,
    device: torch.device,
    max_length: int,
    batch_size: int | None = None,
) -> NDArray[np.float32]:
    """Typology logits (n, classes) in input order, computed in length-sorted batches."""
    if len(narratives) == 0:
        return np.zeros((0, len(TYPOLOGY_ORDER)), dtype=np.float32)
    token_ids: list[list[int]] = tokenizer(
        list(narratives), truncation=True, max_length=max_length
    )["input_ids"]
    order = np.argsort([len(ids) for ids in token_ids], kind="stable")
    feature_tensor = (
        torch.as_tensor(np.asarray(features, dtype=np.float32)) if features is not None else None
    )
    on_cuda = device.type == "cuda"
    batch_size = batch_size or default_batch_size(device)
    out = np.empty((len(narratives), len(TYPOLOGY_ORDER)), dtype=np.float32)
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            ids, mask = _pad([token_ids[r] for r in rows], tokenizer.pad_token_id or 0)
            batch_features = feature_tensor[rows] if feature_tensor is not None else None
            if on_cuda:
                ids = ids.pin_memory().to(device, non_blocking=True)
                mask = mask.pin_memory().to(device, non_blocking=True)
                if batch_features is not None:
                    batch_features = batch_features.to(device)
            with torch.autocast("cuda", dtype=torch.float16, enabled=on_cuda):
                logits = model(ids, mask, batch_features)
            out[rows] = logits.float().cpu().numpy()
    model.train(was_training)
    return out


def predictions_from_logits(logits: NDArray[np.float32]) -> Predictions:
    scores, probs = risk_scores(torch.from_numpy(logits))
    suspicious = probs.clone()
    suspicious[:, LEGITIMATE_INDEX] = -1.0
    best = suspicious.argmax(dim=-1).tolist()
    return Predictions(
        scores=scores.numpy().astype(np.float32),
        typologies=[TYPOLOGY_ORDER[i] for i in best],
        typology_probs=probs.numpy().astype(np.float32),
    )


@dataclass
class LoadedModel:
    """A registry version ready to score."""

    version: str
    model: nn.Module
    tokenizer: BertTokenizer
    config: ClassifierConfig
    thresholds: Thresholds
    narrative_spec: dict[str, Any]
    narrative_version: str
    metrics: dict[str, Any]
    device: torch.device
    quantized: bool = False
    batch_size: int | None = None
    """Narratives per forward pass; default by device (see CPU_BATCH_SIZE)."""

    @property
    def alert_threshold(self) -> float:
        return self.thresholds.alert_threshold

    @property
    def hybrid(self) -> bool:
        return self.config.hybrid

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.config.feature_names

    def neutral_features(self) -> NDArray[np.float32]:
        """The raw feature vector the side path sees as the training average (scaled to 0
        everywhere): what "the figures set aside" means when explaining a hybrid score."""
        mean = getattr(self.model, "feature_mean", None)
        if not isinstance(mean, torch.Tensor):
            raise ModelError(f"model {self.version} has no numeric side path")
        values = mean.detach().float().cpu()
        return (torch.sign(values) * torch.expm1(values.abs())).numpy().astype(np.float32)

    def predict_batch(
        self, narratives: Sequence[str], features: NDArray[np.floating] | None = None
    ) -> Predictions:
        """Score ``narratives``; ``features`` (n, len(feature_names)) is required by hybrid
        models and ignored by text-only ones."""
        if self.hybrid:
            if features is None:
                raise ModelError(f"model {self.version} is hybrid: pass the context features")
            if np.shape(features) != (len(narratives), len(self.feature_names)):
                raise ModelError(
                    f"features have shape {np.shape(features)}, expected "
                    f"({len(narratives)}, {len(self.feature_names)})"
                )
        logits = predict_logits(
            self.model,
            self.tokenizer,
            narratives,
            features if self.hybrid else None,
            device=self.device,
            max_length=self.config.max_length,
            batch_size=self.batch_size,
        )
        return predictions_from_logits(logits)


def load_model(
    settings: ModelSettings,
    version: str | None = None,
    *,
    quantize: bool | None = None,
    batch_size: int | None = None,
) -> LoadedModel:
    """Load ``version`` (default: the champion) from ``settings.registry_dir`` for scoring.

    ``quantize`` overrides ``settings.quantize_int8``; quantisation applies on CPU only."""
    stored = Registry(settings.registry_dir).load(version)
    device = pick_device(settings.device)
    model: nn.Module = stored.model
    quantized = False
    if device.type == "cpu":
        configure_cpu_threads(settings.cpu_threads)
        if settings.quantize_int8 if quantize is None else quantize:
            model = quantize_int8(model)
            quantized = True
    else:
        model = model.to(device)
    log.info(
        "loaded model %s (%s%s) on %s%s",
        stored.version,
        stored.model.config.backbone,
        ", hybrid" if stored.model.config.hybrid else "",
        device,
        ", int8" if quantized else "",
    )
    return LoadedModel(
        version=stored.version,
        model=model,
        tokenizer=stored.tokenizer,
        config=stored.model.config,
        thresholds=stored.thresholds,
        narrative_spec=stored.narrative_spec,
        narrative_version=stored.narrative_version,
        metrics=stored.metrics,
        device=device,
        quantized=quantized,
        batch_size=batch_size,
    )


def from_classifier(
    model: RiskClassifier,
    tokenizer: BertTokenizer,
    thresholds: Thresholds,
    *,
    version: str = "unregistered",
    narrative_spec: dict[str, Any] | None = None,
    device: torch.device | None = None,
) -> LoadedModel:
    """Wrap a model that is not (yet) in the registry, e.g. right after training."""
    return LoadedModel(
        version=version,
        model=model,
        tokenizer=tokenizer,
        config=model.config,
        thresholds=thresholds,
        narrative_spec=narrative_spec or {},
        narrative_version=str((narrative_spec or {}).get("version", "unknown")),
        metrics={},
        device=device or next(model.parameters()).device,
    )
