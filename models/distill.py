"""Distillation: a compact student learns from a fine-tuned MiniLM's soft targets.

The teacher's full distribution over typologies carries more than the hard label: how
suspicious-looking a legitimate event is, which typologies a case resembles. The student is
trained by ``models.train.train`` with the loss

    alpha × weighted cross-entropy(labels) + (1 − alpha) × T² × weighted KL(teacher_T ‖ student_T)

where ``_T`` means softmax at temperature T. Student and teacher share MiniLM's tokenizer, so the
teacher scores exactly the token ids the student reads. Teacher logits are computed once, only
for the training events the student will actually see (after legitimate subsampling): MiniLM
is the expensive part of a distillation run (see docs/models.md#experiments).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from models.examples import NarrativeSet
from models.inference import LoadedModel, predict_logits
from models.train import TrainResult, train
from models.train_config import TrainConfig


def teacher_logits(teacher: LoadedModel, data: NarrativeSet) -> NDArray[np.float32]:
    """The teacher's typology logits for ``data``, in order."""
    return predict_logits(
        teacher.model,
        teacher.tokenizer,
        data.texts,
        data.features if teacher.hybrid else None,
        device=teacher.device,
        max_length=teacher.config.max_length,
        batch_size=teacher.batch_size,
    )


def distill(
    teacher: LoadedModel,
    config: TrainConfig,
    train_set: NarrativeSet,
    validation_set: NarrativeSet,
    feature_names: tuple[str, ...],
    *,
    run_dir: Path | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train the student described by ``config`` against ``teacher``'s soft targets."""
    return train(
        config,
        train_set,
        validation_set,
        feature_names,
        teacher=lambda rows: teacher_logits(teacher, rows),
        run_dir=run_dir,
        progress=progress,
    )
