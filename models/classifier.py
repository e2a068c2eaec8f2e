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

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from transformers import BertModel

from models.backbones import BackboneName, encoder_from_config
from schemas import Typology

TYPOLOGY_ORDER: tuple[Typology, ...] = tuple(Typology)
"""Class index → typology; index 0 is legitimate."""
LEGITIMATE_INDEX = TYPOLOGY_ORDER.index(Typology.LEGITIMATE)

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
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    max_length: int = Field(128, ge=8, le=512, description="Token limit; longer is truncated.")

    @property
    def hybrid(self) -> bool:
        return bool(self.feature_names)


def symlog(values: torch.Tensor) -> torch.Tensor:
    """sign(x)·log(1 + |x|): context features are counts, sums and ratios with long tails (one
    customer's 500 events an hour, a 40× amount); compressing them before standardising keeps
    the side path's inputs on one scale, which a small MLP needs far more than trees do."""
    return torch.sign(values) * torch.log1p(values.abs())


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)


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
        if n_features:
            self.side = nn.Sequential(
                nn.Linear(n_features, config.feature_hidden),
                nn.GELU(),
                nn.Linear(config.feature_hidden, config.feature_hidden),
                nn.GELU(),
            )
            width += config.feature_hidden
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(width, len(config.typologies))

    def fit_feature_scaling(self, train_features: torch.Tensor) -> None:
        """Fix the standardisation from the training split's raw features (std floors at a
        small value so a constant feature does not divide by zero)."""
        compressed = symlog(train_features.float())
        self.feature_mean.copy_(compressed.mean(dim=0))
        self.feature_std.copy_(compressed.std(dim=0, unbiased=False).clamp_min(1e-6))

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
            scaled = (symlog(features.float()) - self.feature_mean) / self.feature_std
            scaled = torch.nan_to_num(scaled, nan=0.0).clamp(-_FEATURE_CLIP, _FEATURE_CLIP)
            side = self.side(scaled.to(pooled.dtype))
            pooled = torch.cat([pooled, side], dim=-1)
        logits: torch.Tensor = self.head(self.dropout(pooled))
        return logits


def risk_scores(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(risk = 1 − p(legitimate), class probabilities) from typology logits."""
    probs = torch.softmax(logits.float(), dim=-1)
    return 1.0 - probs[:, LEGITIMATE_INDEX], probs


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
