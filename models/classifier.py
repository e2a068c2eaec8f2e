"""The risk classifier: a Transformer reads the narrative; optionally the numeric context
features enter beside it; one head gives logits over the typologies.

    narrative tokens ──► encoder ──► mean pool ─┐
                                                ├─► concat ─► dropout ─► linear ─► typology logits
    context features ─► standardise ─► MLP ─────┘   (side path, "hybrid" models only)

The risk probability is ``1 − p(legitimate)``: one softmax head rather than a separate binary
head, so the score and the typology can never disagree (a high score always comes with a
suspicious typology being the most likely one among the suspicious ones), and every
suspicious example trains the shared "not legitimate" direction. Thresholds are calibrated on
this score afterwards, so class weighting during training does not need to keep it a
calibrated probability.

Mean pooling (not [CLS]) because all-MiniLM-L6-v2 was trained with mean pooling, and the
student learns whatever pooling it is given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from transformers import BertModel

from models.backbones import BackboneName, encoder_from_config
from schemas import Typology

TYPOLOGY_ORDER: tuple[Typology, ...] = tuple(Typology)
"""Class index → typology; index 0 is legitimate."""
LEGITIMATE_INDEX = TYPOLOGY_ORDER.index(Typology.LEGITIMATE)


def class_targets(typologies: Sequence[Any]) -> NDArray[np.int64]:
    """The head's class index of each typology."""
    index = {t: i for i, t in enumerate(TYPOLOGY_ORDER)}
    return np.array([index[t] for t in typologies], dtype=np.int64)


# Standardised features are clipped: one absurd value (a corrupt amount) must not dominate.
_FEATURE_CLIP = 8.0


class ClassifierConfig(BaseModel):
    """Everything needed to rebuild the network before its weights are loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backbone: BackboneName = Field(description="minilm (fine-tuned) or student.")
    encoder: dict[str, Any] = Field(description="transformers BertConfig as a dict.")
    typologies: tuple[Typology, ...] = Field(TYPOLOGY_ORDER, description="Output classes.")
    feature_names: tuple[str, ...] = Field(
        (), description="Numeric context features of the side path; empty: text only."
    )
    feature_hidden: int = Field(64, ge=8, le=1024, description="Width of the side-path MLP.")
    numeric: Literal["mlp", "ple"] = Field(
        "mlp",
        description="How the side path reads numbers: standardised floats into an MLP, or each "
        "feature's piecewise-linear encoding over its own bins (edges fitted on the training "
        "data where the label changes, so a threshold is as sharp as a tree's) first.",
    )
    numeric_bins: int = Field(16, ge=2, le=64, description="PLE: bins per feature.")
    numeric_dim: int = Field(4, ge=1, le=64, description="PLE: embedding width per feature.")
    side_members: int = Field(
        1,
        ge=1,
        le=16,
        description="Side paths side by side, each its own encoding weights and MLP over the "
        "same bins (an ensemble inside the model: the head reads them all, and a side-path "
        "warm-up trains each with a head of its own and starts the model at their mean).",
    )
    fusion_hidden: int = Field(
        0,
        ge=0,
        le=1024,
        description="Width of a hidden layer where the pooled text and the side path meet "
        "before the head; 0: a linear head on their concatenation.",
    )
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    max_length: int = Field(128, ge=8, le=512, description="Token limit; longer is truncated.")

    @property
    def hybrid(self) -> bool:
        return bool(self.feature_names)


class PiecewiseLinear(nn.Module):
    """Each feature encoded over its own bins, then mapped to ``dim`` numbers.

    For bin k with edges (a_k, b_k] the encoding is (x - a_k) / (b_k - a_k) clipped to [0, 1] -
    1 for bins wholly below x, 0 above, a fraction in its own - except that the first bin is
    not clipped below and the last not above (Gorishniy et al., "On Embeddings for Numerical
    Features in Tabular Deep Learning", 2022). With edges placed where the label changes, a
    rule such as "amount above 220" is one bin boundary: the network reads it as sharply as a
    tree split. Edges are a buffer, saved with the weights."""

    edges: torch.Tensor

    def __init__(self, n_features: int, n_bins: int, dim: int) -> None:
        super().__init__()
        grid = torch.linspace(-3.0, 3.0, n_bins + 1)
        self.register_buffer("edges", grid.repeat(n_features, 1))
        self.weight = nn.Parameter(torch.randn(n_features, n_bins, dim) / math.sqrt(n_bins))
        self.bias = nn.Parameter(torch.zeros(n_features, dim))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, features) -> (batch, features, bins)."""
        left, right = self.edges[:, :-1], self.edges[:, 1:]
        t = (x.unsqueeze(-1) - left) / (right - left).clamp_min(1e-6)
        first = t[..., :1].clamp(max=1.0)
        middle = t[..., 1:-1].clamp(0.0, 1.0)
        last = t[..., -1:].clamp(min=0.0)
        return torch.cat([first, middle, last], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        encoded = torch.einsum("bfk,fkd->bfd", self.encode(x), self.weight) + self.bias
        return encoded.flatten(1)


def fit_bin_edges(
    scaled: torch.Tensor, labels: torch.Tensor | None, weights: torch.Tensor, n_bins: int
) -> torch.Tensor:
    """Per feature, ``n_bins + 1`` increasing edges: the split points of a small decision tree
    fitted to the labels on that feature alone (target-aware: edges sit where the label rate
    changes), topped up with quantiles where the tree needs fewer bins; without labels (a
    model prepared before any training data is labelled) quantiles only. A feature with a
    single value gets an even grid around it."""
    from sklearn.tree import DecisionTreeClassifier

    x = scaled.double().numpy()
    y = None if labels is None else labels.numpy()
    w = weights.double().numpy()
    rows = []
    for j in range(x.shape[1]):
        column = x[:, j]
        low, high = float(column.min()), float(column.max())
        if high - low < 1e-9:
            rows.append(np.linspace(low - 1.0, high + 1.0, n_bins + 1))
            continue
        splits = np.empty(0)
        if y is not None:
            tree = DecisionTreeClassifier(
                max_leaf_nodes=n_bins,
                min_samples_leaf=max(20, len(column) // 2000),
                random_state=0,
            ).fit(column.reshape(-1, 1), y, sample_weight=w)
            splits = tree.tree_.threshold[tree.tree_.feature >= 0]
        edges = np.unique(np.concatenate([[low, high], splits]))
        if len(edges) < n_bins + 1:
            quantiles = np.quantile(column, np.linspace(0, 1, 4 * n_bins + 1))
            extra = np.setdiff1d(np.unique(quantiles), edges)
            take = extra[np.linspace(0, len(extra) - 1, min(len(extra), n_bins + 1 - len(edges)))
                         .round().astype(int)] if len(extra) else extra  # fmt: skip
            edges = np.unique(np.concatenate([edges, take]))
        while len(edges) < n_bins + 1:  # too few distinct values: pad past the top
            edges = np.append(edges, edges[-1] + 1.0)
        rows.append(edges[: n_bins + 1] if len(edges) > n_bins + 1 else edges)
    return torch.tensor(np.stack(rows), dtype=torch.float32)


def symlog(values: torch.Tensor) -> torch.Tensor:
    """sign(x)·log(1 + |x|): context features are counts, sums and ratios with long tails (one
    customer's 500 events an hour, a 40× amount); compressing them before standardising keeps
    the side path's inputs on one scale, which a small MLP needs far more than trees do."""
    return torch.sign(values) * torch.log1p(values.abs())


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)


class SideMember(nn.Module):
    """One more side path of a model with ``side_members`` > 1: its own piecewise-linear
    encoding (or none) and MLP, named as the model's first side path's are."""

    def __init__(self, numeric: PiecewiseLinear | None, side: nn.Module) -> None:
        super().__init__()
        self.numeric, self.side = numeric, side


# Each side path's (encoding, MLP), as RiskClassifier.side_paths lists them.
SidePaths = list[tuple[PiecewiseLinear | None, nn.Module]]


def _side_mlp(inputs: int, hidden: int) -> nn.Module:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU())


class RiskClassifier(nn.Module):
    """Encoder + optional numeric side path + typology head (see the module docstring)."""

    feature_mean: torch.Tensor
    feature_std: torch.Tensor

    def __init__(self, config: ClassifierConfig, encoder: BertModel | None = None) -> None:
        super().__init__()
        self.config = config
        self.encoder = encoder if encoder is not None else encoder_from_config(config.encoder)
        width = int(self.encoder.config.hidden_size)
        n_features = len(config.feature_names)
        # Standardisation statistics are buffers: they are saved in model.safetensors with the
        # weights, so a registry version can never be served with another version's scaling.
        self.register_buffer("feature_mean", torch.zeros(n_features))
        self.register_buffer("feature_std", torch.ones(n_features))
        self.side: nn.Module | None = None
        self.numeric: PiecewiseLinear | None = None
        # The first side path keeps the names it had before there could be several, so models
        # saved then load unchanged; the others follow it.
        self.more_sides = nn.ModuleList()
        if n_features:
            inputs = n_features
            if config.numeric == "ple":
                inputs = n_features * config.numeric_dim

            def numeric() -> PiecewiseLinear | None:
                if config.numeric != "ple":
                    return None
                return PiecewiseLinear(n_features, config.numeric_bins, config.numeric_dim)

            self.numeric = numeric()
            self.side = _side_mlp(inputs, config.feature_hidden)
            for _ in range(config.side_members - 1):
                self.more_sides.append(
                    SideMember(numeric(), _side_mlp(inputs, config.feature_hidden))
                )
            width += config.feature_hidden * config.side_members
        self.dropout = nn.Dropout(config.dropout)
        self.head: nn.Module = nn.Linear(width, len(config.typologies))
        if config.fusion_hidden:
            # text and numbers meet in a hidden layer, not only in a sum of logits
            self.head = nn.Sequential(
                nn.Linear(width, config.fusion_hidden),
                nn.GELU(),
                nn.Dropout(config.dropout),
                nn.Linear(config.fusion_hidden, len(config.typologies)),
            )

    def fit_feature_scaling(
        self,
        train_features: torch.Tensor,
        labels: torch.Tensor | None = None,
        weights: torch.Tensor | None = None,
        rows: NDArray[np.intp] | None = None,
    ) -> None:
        """Fix the standardisation from the training split's raw features (std floors at a
        small value so a constant feature does not divide by zero), and for a PLE side path
        the bins, where the training ``labels`` change, or at quantiles without labels
        (``labels`` and ``weights`` are those of ``rows`` of the features, default all)."""
        compressed = symlog(train_features.float())
        self.feature_mean.copy_(compressed.mean(dim=0))
        self.feature_std.copy_(compressed.std(dim=0, unbiased=False).clamp_min(1e-6))
        if self.numeric is not None:
            chosen = train_features if rows is None else train_features[torch.from_numpy(rows)]
            scaled = self._scaled(chosen)
            weights = torch.ones(len(scaled)) if weights is None else weights
            edges = fit_bin_edges(scaled, labels, weights, self.config.numeric_bins)
            for numeric, _ in self.side_paths():  # one set of bins, every path's
                if numeric is not None:
                    numeric.edges.copy_(edges)

    def side_paths(self) -> SidePaths:
        """Each side path's (encoding, MLP), the first one first; none for a text-only model."""
        if self.side is None:
            return []
        members = [(self.numeric, self.side)]
        members.extend((m.numeric, m.side) for m in self.more_sides if isinstance(m, SideMember))
        return members

    def side_hidden(self, scaled: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Every side path's output, side by side: (batch, side_members × feature_hidden);
        ``dtype``: the MLPs' input type (the encoder's, under a half-precision model)."""
        paths = self.side_paths()
        if len(paths) > 1 and _fusable(paths):
            return _fused_paths_hidden(paths, scaled, dtype)
        return _each_path_hidden(paths, scaled, dtype)

    def _scaled(self, features: torch.Tensor) -> torch.Tensor:
        scaled = (symlog(features.float()) - self.feature_mean) / self.feature_std
        return torch.nan_to_num(scaled, nan=0.0).clamp(-_FEATURE_CLIP, _FEATURE_CLIP)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = mean_pool(hidden, attention_mask)
        if self.side is not None:
            if features is None:
                raise ValueError("this is a hybrid model: features are required")
            side = self.side_hidden(self._scaled(features), pooled.dtype)
            pooled = torch.cat([pooled, side], dim=-1)
        logits: torch.Tensor = self.head(self.dropout(pooled))
        return logits


def _each_path_hidden(
    paths: SidePaths, scaled: torch.Tensor, dtype: torch.dtype | None
) -> torch.Tensor:
    outputs = []
    for numeric, side in paths:
        encoded = scaled if numeric is None else numeric(scaled)
        outputs.append(side(encoded if dtype is None else encoded.to(dtype)))
    return torch.cat(outputs, dim=-1)


def _fusable(paths: SidePaths) -> bool:
    """Paths that can run as one: every one piecewise-linear over the same bins (as
    ``fit_feature_scaling`` sets them) with the MLP ``_side_mlp`` builds."""
    first = paths[0][0]
    return first is not None and all(
        numeric is not None
        and torch.equal(numeric.edges, first.edges)
        and isinstance(side, nn.Sequential)
        and len(side) == 4
        and isinstance(side[1], nn.GELU)
        and isinstance(side[3], nn.GELU)
        for numeric, side in paths
    )


def _fused_paths_hidden(
    paths: SidePaths, scaled: torch.Tensor, dtype: torch.dtype | None
) -> torch.Tensor:
    """``_each_path_hidden`` for fusable paths in a handful of batched operations: the bins are
    encoded once (the paths share them) and each layer runs for every path in one batched
    matrix product. Path by path, eight paths took 3.4 ms of a ~37 ms CPU pass of 32
    narratives, fused 1.2 ms (BENCHMARKS.md, "Throughput"); the same arithmetic, so the same
    outputs and gradients (a unit test compares both). An int8 model's layers hold packed
    weights that cannot be stacked: they run path by path, after the shared encoding."""
    first = paths[0][0]
    assert first is not None  # _fusable
    numerics = [numeric for numeric, _ in paths if numeric is not None]
    bins = first.encode(scaled)  # (batch, features, bins)
    weight = torch.stack([numeric.weight for numeric in numerics])  # (paths, f, bins, dim)
    bias = torch.stack([numeric.bias for numeric in numerics])  # (paths, f, dim)
    hidden = (torch.einsum("bfk,mfkd->mbfd", bins, weight) + bias.unsqueeze(1)).flatten(2)
    if dtype is not None:
        hidden = hidden.to(dtype)
    for layer in (0, 2):  # Linear, GELU, Linear, GELU
        linears = [side[layer] for _, side in paths]  # type: ignore[index]
        if all(type(linear) is nn.Linear for linear in linears):
            w = torch.stack([linear.weight for linear in linears])  # (paths, out, in)
            b = torch.stack([linear.bias for linear in linears])  # (paths, out)
            hidden = torch.baddbmm(b.unsqueeze(1), hidden, w.transpose(1, 2))
        else:  # int8 layers (quantize_int8) hold packed weights: one path at a time
            hidden = torch.stack([linear(h) for linear, h in zip(linears, hidden, strict=True)])
        hidden = nn.functional.gelu(hidden)
    return hidden.transpose(0, 1).flatten(1)  # (batch, paths × out), the paths in order


def risk_scores(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(risk = 1 − p(legitimate), class probabilities) from typology logits."""
    probs = torch.softmax(logits.float(), dim=-1)
    return 1.0 - probs[:, LEGITIMATE_INDEX], probs
