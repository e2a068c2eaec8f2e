"""The hybrid student's numeric side path trained alone, before any text.

A hybrid student learns its numeric path (piecewise-linear encoding + MLP,
``models.classifier``) and its text encoder together, from the same 1,500 batches of 32. The
side path alone is a small tabular network: it can see every training row many times over in
seconds, where the text encoder sees each of its examples about twice. Trained alone with
strong dropout it comes level with the trees on the same features on average, with a third of
the hybrid's old spread across seeds (``bench.bench_side_path``; docs/models.md#experiments).
So a run can first train the side path alone (``TrainConfig.side_warmup_epochs``), copy its
head into the model's head with the text's columns at zero - the hybrid then starts out
scoring exactly as the side path alone - and let the hybrid steps add what the text knows.

What the stage learns (``TrainConfig.side_warmup_target``): the typology, as the hybrid does,
or the risk alone - legitimate against any suspicious typology, a head of two classes. Several
typologies have three to five training scenarios, and a softmax over twelve classes spends the
small path's capacity telling them apart; on the risk alone it ranks better (0.80 against 0.77
AP on the quality bench's bank, docs/models.md#experiments), and the hybrid steps learn the
typologies from that start.

Several paths (``TrainConfig.side_members``; eight in the CPU default): each trains with a head
of its own on its own draws of the legitimate rows - an ensemble, members that see different
data and so disagree usefully - and the model starts at their mean logits. The CPU default
then keeps them frozen while the text learns (``side_path_lr_scale`` 0): unfrozen, the hybrid
steps spent the ensemble's gain (0.782 against 0.825 test AP over three seeds,
docs/models.md#experiments).

The stage runs on the CPU whatever the device: a few thousand rows of 80 numbers per step
are too little work to gain from a GPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray
from sklearn.metrics import average_precision_score
from torch import nn

from models.classifier import LEGITIMATE_INDEX, RiskClassifier, class_targets, risk_scores
from models.errors import TrainingError
from models.examples import NarrativeSet, sample_legitimate
from models.train_config import TrainConfig

SIDE_PATH_BATCH = 256
"""Rows per step of the stage: numbers only, so far larger than the hybrid's text batches."""
SIDE_PATH_LR = 1e-3
"""The stage's peak rate, its own: the run's is chosen for its encoder (5e-5 for MiniLM)."""


class SidePathAlone(nn.Module):
    """A hybrid student's numeric paths (their scaling, encodings and MLPs, shared, not
    copied), each with a head of its own over it alone; their mean logits are the score."""

    def __init__(self, student: RiskClassifier, target: Literal["typology", "risk"]) -> None:
        super().__init__()
        if student.side is None:
            raise TrainingError("the side path needs a hybrid model (numeric features)")
        if student.config.fusion_hidden:
            raise TrainingError("a side-path warm-up needs the linear head (fusion_hidden 0)")
        self.student = student  # its scaling buffers and side paths (registered through it)
        self.paths = student.side_paths()
        self.dropout = nn.Dropout(student.config.dropout)
        self.target = target
        classes = 2 if target == "risk" else len(student.config.typologies)
        self.heads = nn.ModuleList(
            nn.Linear(student.config.feature_hidden, classes) for _ in self.paths
        )

    def targets(self, typologies: Sequence[Any]) -> torch.Tensor:
        """Class indices for rows of these typologies: the typology's, or under the risk
        target 0 for legitimate and 1 for any suspicious typology."""
        classes = class_targets(typologies)
        if self.target == "risk":
            classes = (classes != LEGITIMATE_INDEX).astype(np.int64)
        return torch.from_numpy(classes)

    def member_logits(self, index: int, scaled: torch.Tensor) -> torch.Tensor:
        """Path ``index``'s logits through its own head: (batch, classes)."""
        numeric, side = self.paths[index]
        hidden = side(scaled if numeric is None else numeric(scaled))
        logits: torch.Tensor = self.heads[index](self.dropout(hidden))
        return logits

    def forward(self, scaled: torch.Tensor) -> torch.Tensor:
        """Every path's logits for the same rows: (side_members, batch, classes); the score
        is their mean."""
        return torch.stack([self.member_logits(i, scaled) for i in range(len(self.paths))])

    def scores(self, features: NDArray[np.floating]) -> NDArray[np.float32]:
        """Risk scores (1 − p(legitimate)) from raw features, in eval mode."""
        was_training = self.training
        self.eval()
        with torch.no_grad():
            logits = self(self.student._scaled(torch.from_numpy(features))).mean(dim=0)
            if self.target == "risk":
                risk = torch.softmax(logits, dim=-1)[:, 1]
            else:
                risk, _ = risk_scores(logits)
        self.train(was_training)
        return risk.numpy().astype(np.float32)


@dataclass(frozen=True)
class SidePathRun:
    alone: SidePathAlone
    validation_ap: float
    epoch_kept: int
    """1-based; the epoch whose weights were kept (best validation AP)."""


def train_side_path(
    student: RiskClassifier,
    train_set: NarrativeSet,
    validation_set: NarrativeSet,
    config: TrainConfig,
    *,
    epochs: int,
    batch_size: int = SIDE_PATH_BATCH,
) -> SidePathRun:
    """Train ``student``'s side path alone (in place) with a head of its own: ``epochs``
    passes, each over every suspicious row and a fresh ``legit_sample_rate`` draw of the
    legitimate ones (weighted back, suspicious rows up-weighted as the hybrid steps do),
    cosine-decayed from ``SIDE_PATH_LR``; the epoch with the best validation AP is kept."""
    if epochs < 1:
        raise TrainingError("a side-path warm-up needs at least one epoch")
    student.cpu()
    alone = SidePathAlone(student, config.side_warmup_target)
    alone.train()
    rng = np.random.default_rng(config.seed)
    targets = alone.targets(train_set.typologies)
    scaled = student._scaled(torch.from_numpy(train_set.features))
    optimizer = torch.optim.AdamW(
        alone.parameters(), lr=SIDE_PATH_LR, weight_decay=config.weight_decay
    )
    best_ap, best_state, best_epoch = -1.0, dict(alone.state_dict()), 0
    for epoch in range(epochs):
        # Each path its own draw and order: members that saw different legitimate rows in
        # different orders disagree where one draw misleads, which is what their mean averages
        # away (on shared batches eight paths gained little, or lost: docs/models.md).
        draws = [_epoch_draw(train_set, config, rng) for _ in alone.paths]
        steps = max(1, min(len(order) for _, _, order in draws) // batch_size)
        for step in range(steps):
            done = (epoch * steps + step) / (epochs * steps)
            for group in optimizer.param_groups:
                group["lr"] = SIDE_PATH_LR * 0.5 * (1 + math.cos(math.pi * done))
            loss = torch.zeros(())
            for index, (rows, weights, order) in enumerate(draws):
                batch = order[step * batch_size : (step + 1) * batch_size]
                batch_weights = torch.from_numpy(weights[batch])
                losses = nn.functional.cross_entropy(
                    alone.member_logits(index, scaled[rows[batch]]),
                    targets[rows[batch]],
                    reduction="none",
                )
                loss = loss + (losses * batch_weights).sum() / batch_weights.sum()
            loss = loss / len(draws)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            nn.utils.clip_grad_norm_(alone.parameters(), config.grad_clip)
            optimizer.step()
        ap = float(
            average_precision_score(
                validation_set.labels,
                alone.scores(validation_set.features),
                sample_weight=validation_set.row_weights(),
            )
        )
        if ap > best_ap:
            best_ap, best_epoch = ap, epoch + 1
            best_state = {k: v.detach().clone() for k, v in alone.state_dict().items()}
    alone.load_state_dict(best_state)
    alone.eval()
    return SidePathRun(alone=alone, validation_ap=best_ap, epoch_kept=best_epoch)


def _epoch_draw(
    train_set: NarrativeSet, config: TrainConfig, rng: np.random.Generator
) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.intp]]:
    """One path's epoch: every suspicious row and a fresh ``legit_sample_rate`` draw of the
    legitimate ones, as (rows, their loss weights, the order to visit them in); legitimate
    rows weighted back, suspicious ones up-weighted as the hybrid steps do."""
    labels = train_set.labels
    rows, weights = sample_legitimate(labels, config.legit_sample_rate, rng)
    weights = (weights * train_set.row_weights()[rows]).astype(np.float32)
    boost = config.positive_weight or math.sqrt(weights[~labels[rows]].sum() / labels.sum())
    weights = np.where(labels[rows], weights * boost, weights).astype(np.float32)
    return rows, weights, rng.permutation(len(rows))


def start_from_side_path(student: RiskClassifier, run: SidePathRun) -> None:
    """Give ``student``'s head the side path's head on the side columns and zeros on the
    text's: the hybrid then scores exactly as the side path alone until the text's weights
    move (its numeric path already is the trained one - they share modules).

    A risk-target head (legitimate, suspicious) gives its suspicious row to every suspicious
    typology, each bias lowered by log(n) for n of them: their n equal probabilities then
    sum to the one suspicious probability, and the hybrid's steps start telling them apart."""
    head = student.head
    if not isinstance(head, nn.Linear):
        raise TrainingError("a side-path warm-up needs the linear head (fusion_hidden 0)")
    heads = [h for h in run.alone.heads if isinstance(h, nn.Linear)]
    width = heads[0].in_features
    text_width = head.in_features - width * len(heads)
    # The alone heads' row for each of the model's classes, and what each row's bias loses.
    if run.alone.target == "typology":
        rows, bias_offset = torch.arange(head.out_features), torch.zeros(head.out_features)
    else:
        rows = torch.ones(head.out_features, dtype=torch.long)
        rows[LEGITIMATE_INDEX] = 0
        bias_offset = rows * math.log(head.out_features - 1)
    # Several paths: each gets its own head's rows over its own columns, divided by their
    # number, so the model's logits start as the mean of the paths' - the score they were
    # validated with.
    with torch.no_grad():
        head.weight.zero_()
        for index, alone in enumerate(heads):
            start = text_width + index * width
            head.weight[:, start : start + width] = alone.weight[rows] / len(heads)
        bias = torch.stack([alone.bias for alone in heads]).mean(dim=0)
        head.bias.copy_(bias[rows] - bias_offset)


class HeldSideColumns:
    """The columns of a hybrid's linear head over its side paths, kept at the values they had
    when this was made (``TrainConfig.side_head_held``).

    After a warm-up those columns are the side paths' own heads, and with the paths frozen
    the numbers' logits are then exactly the score the paths were validated with; the text's
    columns alone learn, a correction added on top. Left free, the hybrid's steps re-weigh
    the numbers' evidence on batches of 32 - a few hundred suspicious events - and what eight
    paths learned from every row is partly unlearnt (0.849 +- 0.005 against 0.839 +- 0.016 test
    AP over three seeds, docs/models.md#experiments).

    An optimizer cannot skip part of a tensor (AdamW's decay moves every element), so the run
    puts the columns back after each step (:meth:`restore`): the other columns' updates are
    those of a run where these had not moved."""

    def __init__(self, student: RiskClassifier) -> None:
        head = student.head
        if not isinstance(head, nn.Linear) or not student.config.hybrid:
            raise TrainingError("holding the side columns needs a hybrid with the linear head")
        # the side paths' outputs come last in the head's input (RiskClassifier.forward)
        width = student.config.feature_hidden * student.config.side_members
        self._head = head
        self._columns = slice(head.in_features - width, head.in_features)
        self._held = head.weight[:, self._columns].detach().clone()

    def restore(self) -> None:
        with torch.no_grad():
            self._head.weight[:, self._columns] = self._held
