"""What a training run is asked to do: :class:`TrainConfig` and the named presets.

Kept apart from the loop (``models.train``) so that a reader, the CLI and the benchmarks can see
every knob and every preset's choices without the training code around them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from models.backbones import BackboneName, StudentSize
from models.bins import BinsTarget
from models.errors import TrainingError


class TrainConfig(BaseModel):
    """Hyper-parameters of one training run (CLI options map onto these fields)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backbone: BackboneName = "student"
    student: StudentSize = StudentSize()
    hybrid: bool = Field(True, description="Feed the numeric context features beside the text.")
    feature_hidden: int = Field(64, ge=8, le=1024)
    numeric: Literal["mlp", "ple"] = Field(
        "ple", description="The side path's numbers: plain MLP, or piecewise-linear encoding."
    )
    numeric_bins: int = Field(16, ge=2, le=64)
    numeric_dim: int = Field(4, ge=1, le=64)
    numeric_bins_target: BinsTarget = Field(
        "typology",
        description="Where the piecewise-linear bins' edges go: where the suspicious rate "
        "changes, or where any typology's rate does, every class (legitimate too) weighted "
        "equally - so a typology of five scenarios places edges as a common one does; data of "
        "a single suspicious typology is binned by the risk either way (models.bins).",
    )
    side_members: int = Field(
        1, ge=1, le=16, description="Side paths in the model, an ensemble (ClassifierConfig)."
    )
    fusion_hidden: int = Field(0, ge=0, le=1024, description="0: a linear head.")
    dropout: float = Field(0.1, ge=0, lt=1)
    max_length: int = Field(
        128, ge=16, le=512, description="Token limit (narratives are built to fit it)."
    )
    batch_size: int = Field(32, ge=1)
    learning_rate: float | None = Field(
        None, gt=0, description="Peak LR; default 1e-3 for a student, 5e-5 for MiniLM."
    )
    weight_decay: float = Field(0.01, ge=0)
    warmup_steps: int = Field(100, ge=0)
    max_steps: int = Field(3000, ge=1)
    eval_every: int = Field(250, ge=1)
    patience: int = Field(4, ge=1, description="Evaluations without improvement before stop.")
    grad_clip: float = Field(1.0, gt=0)
    seed: int = 0
    legit_sample_rate: float = Field(
        1.0, gt=0, le=1, description="Share of legitimate training events kept."
    )
    positive_weight: float | None = Field(
        None, gt=0, description="Loss weight of suspicious events; default sqrt(legit/suspicious)."
    )
    validation_legit_sample_rate: float = Field(
        1.0, gt=0, le=1, description="Share of legitimate validation events scored per eval."
    )
    pretrain_steps: int = Field(
        0,
        ge=0,
        description="Masked-token pretraining steps of a fresh student on the training "
        "narratives (labelled or not) before supervised training; 0: none (models.pretrain).",
    )
    side_warmup_epochs: int = Field(
        0,
        ge=0,
        description="Epochs the numeric side path of a fresh hybrid first trains alone on "
        "every training row, its head then copied into the model's with the text's columns "
        "at zero, before the hybrid steps; 0: none (models.side_path).",
    )
    side_warmup_target: Literal["typology", "risk"] = Field(
        "typology",
        description="What the side-path warm-up learns: the typology, or the risk alone "
        "(legitimate or not, a head of two classes spread over the typologies when copied).",
    )
    side_path_lr_scale: float = Field(
        1.0,
        ge=0,
        le=1,
        description="Learning rate of the numeric side path (its encoding and MLP) in the "
        "hybrid steps, as a share of the rest's; 0 freezes it. Below 1 after a side-path "
        "warm-up, the text learns around numbers already fitted instead of unsettling them.",
    )
    side_head_held: bool = Field(
        False,
        description="In the hybrid steps, keep the head's columns over the side paths at "
        "their starting values (after a warm-up: the side paths' own heads), so the text "
        "learns a correction on top of the numbers' score instead of re-weighing it; needs "
        "the linear head (fusion_hidden 0).",
    )
    distill_alpha: float = Field(
        0.5, ge=0, le=1, description="With a teacher: weight of the hard-label loss."
    )
    distill_temperature: float = Field(2.0, gt=0)
    cpu_threads: int | None = None
    device: str = "auto"

    def peak_lr(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 5e-5 if self.backbone == "minilm" else 1e-3


PRESETS: dict[str, dict[str, Any]] = {
    # The small default the demo trains: ~20k narratives seen, validation on every suspicious
    # event and a quarter of the legitimate ones (weighted back) — about a minute of training
    # on 2 idle cores, a few when they are shared.
    "demo": {
        "legit_sample_rate": 0.05,
        "max_steps": 600,
        "eval_every": 150,
        "warmup_steps": 60,
        "patience": 2,
        "validation_legit_sample_rate": 0.25,
    },
    # Tests: a tiny student, a few hundred steps.
    "tiny": {
        "student": {"layers": 1, "hidden": 64, "heads": 2},
        "max_steps": 300,
        "eval_every": 100,
        "warmup_steps": 30,
        "batch_size": 32,
        "patience": 2,
    },
    # The CPU default's full training (bench_quality): one legitimate event in ten (weighted
    # back), 1,500 steps, validation every 250, dropout 0.5 before the head, after eight side
    # paths each trained alone on the risk for 20 epochs (each on its own draw of rows) and
    # then frozen while the hybrid trains — unfrozen, the hybrid's steps undo what the eight
    # learned alone — and the head's columns over them held too, so the text learns a
    # correction to their score; why these, see docs/models.md#experiments.
    "student": {
        "legit_sample_rate": 0.1,
        "max_steps": 1500,
        "eval_every": 250,
        "patience": 3,
        "dropout": 0.5,
        "side_warmup_epochs": 20,
        "side_warmup_target": "risk",
        "side_members": 8,
        "side_path_lr_scale": 0.0,
        "side_head_held": True,
    },
    # ~19k examples keep a MiniLM fine-tune near 15 min on 2 cores (docs/models.md#experiments).
    "minilm": {
        "backbone": "minilm",
        "batch_size": 16,
        "max_steps": 1200,
        "eval_every": 300,
        "warmup_steps": 100,
        "learning_rate": 8e-5,
        "legit_sample_rate": 0.02,
        "validation_legit_sample_rate": 0.5,
        "patience": 2,
    },
}


def preset(name: str, **overrides: Any) -> TrainConfig:
    if name not in PRESETS:
        raise TrainingError(f"unknown preset {name!r}; one of {', '.join(PRESETS)}")
    return TrainConfig.model_validate({**PRESETS[name], **overrides})
