"""Training the narrative classifier: one readable loop, top to bottom.

    seed → tokenizer → model (MiniLM or student, text-only or hybrid) → AdamW + warmup/cosine
    → for each step: weighted cross-entropy (+ distillation) → clip → step
    → every ``eval_every`` steps: validation PR-AUC → keep the best weights → early stop

Class imbalance is handled twice, both visibly: legitimate training events are subsampled
(``legit_sample_rate``; kept ones weigh 1/rate so the loss is still that of the full data), and
suspicious events weigh ``positive_weight`` more in the loss. The subsampling is what matters
at 0.5 % prevalence: a run of a thousand steps sees some tens of thousands of examples, and
without it only a hundred or so of them would be suspicious (see
docs/models.md#experiments). Early stopping is on validation
average precision, the metric the model is judged by; validation may subsample legitimate
events too, with weights that keep the estimate unbiased.

At every evaluation a checkpoint is written (latest model + optimizer state in safetensors, the
best weights so far beside it, config + step in JSON), so a long run can be resumed; nothing is
pickled.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import torch
import torch.nn.functional as F  # noqa: N812 (the conventional name)
from numpy.typing import NDArray
from sklearn.metrics import average_precision_score
from tqdm.auto import tqdm
from transformers import BertTokenizer

from models.backbones import (
    load_tokenizer,
    new_student,
    pretrained_minilm,
)
from models.bins import binning_sample, binning_targets
from models.checkpoints import load_checkpoint, save_checkpoint
from models.classifier import ClassifierConfig, RiskClassifier, class_targets
from models.errors import TrainingError
from models.examples import NarrativeSet, sample_legitimate
from models.inference import (
    configure_cpu_threads,
    pick_device,
    predict_logits,
    predictions_from_logits,
)
from models.side_path import HeldSideColumns, start_from_side_path, train_side_path
from models.thresholds import Thresholds, calibrate
from models.train_config import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    model: RiskClassifier
    tokenizer: BertTokenizer
    config: TrainConfig
    best_step: int
    best_validation_ap: float
    steps: int
    seconds: float
    examples_seen: int
    history: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "best_step": self.best_step,
            "best_validation_average_precision": round(self.best_validation_ap, 6),
            "steps": self.steps,
            "seconds": round(self.seconds, 1),
            "examples_per_second": round(self.examples_seen / max(self.seconds, 1e-9), 1),
        }


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(config: TrainConfig, feature_names: Sequence[str]) -> RiskClassifier:
    encoder = pretrained_minilm() if config.backbone == "minilm" else new_student(config.student)
    classifier_config = ClassifierConfig(
        backbone=config.backbone,
        encoder=encoder.config.to_dict(),
        feature_names=tuple(feature_names) if config.hybrid else (),
        feature_hidden=config.feature_hidden,
        numeric=config.numeric,
        numeric_bins=config.numeric_bins,
        numeric_dim=config.numeric_dim,
        side_members=config.side_members,
        fusion_hidden=config.fusion_hidden if config.hybrid else 0,
        dropout=config.dropout,
        max_length=config.max_length,
    )
    return RiskClassifier(classifier_config, encoder)


def starting_model(
    config: TrainConfig,
    feature_names: Sequence[str],
    train_set: NarrativeSet,
    init_from: RiskClassifier | None = None,
) -> RiskClassifier:
    """The model a run starts from: fresh weights (feature scaling fitted on ``train_set``), or
    a deep copy of ``init_from`` to fine-tune it.

    A copy keeps the parent's architecture and its feature standardisation: the weights were
    learned on inputs scaled that way, so refitting the scaling would shift every input under
    them. ``config``'s architecture fields (backbone, sizes, hybrid) are then ignored."""
    if init_from is None:
        model = build_model(config, feature_names)
        if model.config.hybrid:
            rows = binning_sample(train_set, config.seed)
            classes, weights = binning_targets(train_set, rows, config.numeric_bins_target)
            model.fit_feature_scaling(
                torch.from_numpy(train_set.features),
                torch.from_numpy(classes),
                torch.from_numpy(weights),
                rows=rows,
            )
        return model
    if init_from.config.hybrid and tuple(init_from.config.feature_names) != tuple(feature_names):
        raise TrainingError(
            "cannot fine-tune: the starting model was trained on another feature layout"
        )
    return copy.deepcopy(init_from).cpu()


def _optimizer(model: RiskClassifier, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over four groups: the side path's and the rest's parameters, each with and
    without weight decay (none on biases and LayerNorm gains: decaying them only hurts). Each
    group's ``lr_scale`` multiplies the schedule's rate (``config.side_path_lr_scale`` for the
    side paths': their numeric encodings and MLPs)."""
    side_path = {
        id(p) for path in model.side_paths() for m in path if m is not None for p in m.parameters()
    }
    groups = []
    for side, scale in ((False, 1.0), (True, config.side_path_lr_scale)):
        for decay in (True, False):
            params = [
                p
                for p in model.parameters()
                if (id(p) in side_path) == side and (p.ndim >= 2) == decay
            ]
            if params:
                groups.append(
                    {
                        "params": params,
                        "weight_decay": config.weight_decay if decay else 0.0,
                        "lr_scale": scale,
                    }
                )
    return torch.optim.AdamW(groups, lr=config.peak_lr())


def _set_learning_rate(optimizer: torch.optim.Optimizer, rate: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = rate * group.get("lr_scale", 1.0)


@dataclass(frozen=True)
class AutocastPlan:
    """How a training step runs: its forward pass under autocast to ``dtype`` (None: plain
    fp32), and whether the loss is scaled before backward - needed for fp16 only, whose narrow
    exponent range flushes small gradients to zero."""

    dtype: torch.dtype | None
    scale_gradients: bool


def autocast_plan(device: torch.device, *, bf16_supported: bool | None = None) -> AutocastPlan:
    """fp32 off CUDA; on CUDA bf16 where the GPU has it (fp32's exponent range: no scaler),
    fp16 with a gradient scaler where it does not. ``bf16_supported`` None asks the GPU."""
    if device.type != "cuda":
        return AutocastPlan(dtype=None, scale_gradients=False)
    if bf16_supported is None:
        bf16_supported = torch.cuda.is_bf16_supported()
    if bf16_supported:
        return AutocastPlan(dtype=torch.bfloat16, scale_gradients=False)
    return AutocastPlan(dtype=torch.float16, scale_gradients=True)


def _autocast(plan: AutocastPlan) -> contextlib.AbstractContextManager[Any]:
    if plan.dtype is None:
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=plan.dtype)


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warmup to the peak, then cosine decay to a tenth of it at ``max_steps``."""
    peak = config.peak_lr()
    if step < config.warmup_steps:
        return peak * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps)
    return peak * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))


def validation_metrics(
    model: RiskClassifier,
    tokenizer: BertTokenizer,
    data: NarrativeSet,
    device: torch.device,
    max_length: int,
) -> tuple[float, float]:
    """Average precision of ``model`` on ``data`` (weighted when ``data`` is a subsample), and
    the log-loss of its risk scores: the tie-break when the AP saturates (a small, easy
    validation set - a fine-tune's - reads 1.0 after a hundred steps, and keeping the first
    1.0 kept weights that had barely learned)."""
    scores = score(model, tokenizer, data, device=device, max_length=max_length)
    ap = float(average_precision_score(data.labels, scores, sample_weight=data.weights))
    clipped = np.clip(scores.astype(np.float64), 1e-7, 1 - 1e-7)
    losses = -np.where(data.labels, np.log(clipped), np.log1p(-clipped))
    weights = np.ones(len(losses)) if data.weights is None else np.asarray(data.weights)
    return ap, float(np.average(losses, weights=weights))


def improves(ap: float, loss: float, best_ap: float, best_loss: float) -> bool:
    """Whether an evaluation beats the best so far: a higher validation AP, or the same AP
    (within float noise) at a lower validation log-loss."""
    return ap > best_ap + 1e-9 or (ap >= best_ap - 1e-9 and loss < best_loss)


def score(
    model: RiskClassifier,
    tokenizer: BertTokenizer,
    data: NarrativeSet,
    *,
    device: torch.device,
    max_length: int,
) -> NDArray[np.float32]:
    logits = predict_logits(
        model,
        tokenizer,
        data.texts,
        data.features if model.config.hybrid else None,
        device=device,
        max_length=max_length,
    )
    return predictions_from_logits(logits).scores


def train(
    config: TrainConfig,
    train_set: NarrativeSet,
    validation_set: NarrativeSet,
    feature_names: Sequence[str],
    *,
    teacher: Callable[[NarrativeSet], NDArray[np.float32]] | None = None,
    run_dir: Path | None = None,
    resume: bool = False,
    progress: bool = True,
    init_from: RiskClassifier | None = None,
) -> TrainResult:
    """Train a classifier; return it with the weights of its best validation evaluation.

    ``teacher`` turns this into distillation: it is called once with the training events
    actually used (after legitimate subsampling) and returns the teacher's logits for them; the
    loss then mixes the hard labels with the teacher's softened distribution
    (see ``models.distill``).
    ``run_dir`` receives ``run_log.jsonl`` and checkpoints (latest state, best weights).
    ``init_from`` fine-tunes: training starts from a copy of that model (see
    :func:`starting_model`) instead of fresh weights; the model passed in is not modified."""
    _check_splits(train_set, validation_set)
    seed_everything(config.seed)
    device = pick_device(config.device)
    if device.type == "cpu":
        configure_cpu_threads(config.cpu_threads)
    rng = np.random.default_rng(config.seed)

    tokenizer = load_tokenizer()
    model = _model_on_device(
        config, feature_names, train_set, validation_set, init_from, tokenizer, device, progress
    )
    optimizer = _optimizer(model, config)
    plan = autocast_plan(device)
    # Disabled (fp32, bf16) it passes everything through: the step is a plain one.
    scaler = torch.amp.GradScaler("cuda", enabled=plan.scale_gradients)
    rows = _training_rows(config, train_set, tokenizer, model.config.max_length, rng, teacher)
    valid = validation_set.sample_legitimate(config.validation_legit_sample_rate, rng)

    run_log = None
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        run_log = (run_dir / "run_log.jsonl").open("ab")
    best = _Best(state={k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
    start_step = 0
    if resume and run_dir is not None and (run_dir / "checkpoint.json").is_file():
        start_step, best.step, best.ap, best.state = load_checkpoint(run_dir, model, optimizer)
        log.info("resumed at step %d (best validation AP %.4f)", start_step, best.ap)
    held = _held_side_columns(model, config)
    history: list[dict[str, Any]] = []
    examples_seen = 0
    order = rng.permutation(len(rows))
    cursor = 0
    started = time.perf_counter()
    bar = tqdm(
        range(start_step, config.max_steps), desc=f"train {config.backbone}", disable=not progress
    )
    model.train()
    step = start_step
    try:
        for step in bar:
            if cursor + config.batch_size > len(order):
                order, cursor = rng.permutation(len(rows)), 0
            batch = order[cursor : cursor + config.batch_size]
            cursor += config.batch_size
            _set_learning_rate(optimizer, learning_rate(step, config))
            loss = _train_step(model, optimizer, scaler, plan, rows, batch, config, device)
            if held is not None:
                held.restore()
            examples_seen += len(batch)
            bar.set_postfix(loss=f"{loss:.4f}", best_ap=f"{max(best.ap, 0):.3f}")

            last = step + 1 == config.max_steps
            if (step + 1) % config.eval_every and not last:
                continue
            ap, valid_loss = validation_metrics(
                model, tokenizer, valid, device, model.config.max_length
            )
            model.train()
            entry = {
                "step": step + 1,
                "loss": round(loss, 6),
                "lr": learning_rate(step, config),
                "validation_average_precision": round(ap, 6),
                "validation_log_loss": round(valid_loss, 6),
                "seconds": round(time.perf_counter() - started, 2),
            }
            history.append(entry)
            if run_log is not None:
                run_log.write(orjson.dumps(entry) + b"\n")
                run_log.flush()
            log.info("step %d: loss %.4f, validation AP %.4f", step + 1, loss, ap)
            improved = best.update(model, step + 1, ap, valid_loss)
            if run_dir is not None:
                save_checkpoint(
                    run_dir, model, optimizer, config, step + 1, best.step, best.ap,
                    best.state if improved else None,
                )  # fmt: skip
            if not improved and best.stale >= config.patience:
                log.info("early stop at step %d: best AP %.4f at %d", step + 1, best.ap, best.step)
                break
    finally:
        bar.close()
        if run_log is not None:
            run_log.close()

    model.load_state_dict(best.state)
    model.eval()
    return TrainResult(
        model=model,
        tokenizer=tokenizer,
        config=config,
        best_step=best.step,
        best_validation_ap=best.ap,
        steps=step + 1,
        seconds=time.perf_counter() - started,
        examples_seen=examples_seen,
        history=history,
    )


def _held_side_columns(model: RiskClassifier, config: TrainConfig) -> HeldSideColumns | None:
    """The head's side columns to hold through the steps, when the config asks for it (a
    text-only model has none: the setting is moot there, as the side path's others are)."""
    return HeldSideColumns(model) if config.side_head_held and model.config.hybrid else None


def _check_splits(train_set: NarrativeSet, validation_set: NarrativeSet) -> None:
    labels = train_set.labels
    if not labels.any() or labels.all():
        raise TrainingError("the train split needs both suspicious and legitimate events")
    if not validation_set.labels.any():
        raise TrainingError(
            "the validation split has no suspicious events: early stopping on "
            "PR-AUC is impossible; simulate more days or customers"
        )


def _model_on_device(
    config: TrainConfig,
    feature_names: Sequence[str],
    train_set: NarrativeSet,
    validation_set: NarrativeSet,
    init_from: RiskClassifier | None,
    tokenizer: BertTokenizer,
    device: torch.device,
    progress: bool,
) -> RiskClassifier:
    """The starting model, its fresh student encoder first pretrained on the training
    narratives when ``pretrain_steps`` asks for it, its fresh side path first trained alone
    when ``side_warmup_epochs`` asks for it, moved to ``device``."""
    model = starting_model(config, feature_names, train_set, init_from)
    if config.side_warmup_epochs and init_from is None and model.config.hybrid:
        run = train_side_path(
            model,
            train_set,
            validation_set,
            config,
            epochs=config.side_warmup_epochs,
        )
        log.info(
            "side path alone: validation AP %.4f (epoch %d of %d)",
            run.validation_ap, run.epoch_kept, config.side_warmup_epochs,
        )  # fmt: skip
        start_from_side_path(model, run)
    if config.pretrain_steps and init_from is None and config.backbone == "student":
        from models.pretrain import pretrain_mlm

        pretrain_mlm(
            model.encoder,
            tokenizer,
            train_set.texts,
            steps=config.pretrain_steps,
            max_length=model.config.max_length,
            seed=config.seed,
            device=device,
            progress=progress,
        )
    return model.to(device)


@dataclass
class _TrainingRows:
    """The training examples a run draws its batches from, tokenized once."""

    token_ids: list[list[int]]
    targets: torch.Tensor
    features: torch.Tensor
    weights: torch.Tensor
    soft_targets: torch.Tensor | None
    """The teacher's logits, when distilling."""

    def __len__(self) -> int:
        return len(self.token_ids)


def _training_rows(
    config: TrainConfig,
    train_set: NarrativeSet,
    tokenizer: BertTokenizer,
    max_length: int,
    rng: np.random.Generator,
    teacher: Callable[[NarrativeSet], NDArray[np.float32]] | None,
) -> _TrainingRows:
    """The rows kept by legitimate subsampling, with their loss weights (see the module
    docstring)."""
    labels = train_set.labels
    rows, weights = sample_legitimate(labels, config.legit_sample_rate, rng)
    weights = weights * train_set.row_weights()[rows].astype(np.float32)
    n_legit_true = float(np.sum(weights[~labels[rows]]))
    positive_weight = config.positive_weight or math.sqrt(n_legit_true / labels.sum())
    weights = np.where(labels[rows], weights * positive_weight, weights).astype(np.float32)
    token_ids: list[list[int]] = tokenizer(
        [train_set.texts[r] for r in rows], truncation=True, max_length=max_length
    )["input_ids"]
    return _TrainingRows(
        token_ids=token_ids,
        targets=torch.from_numpy(class_targets([train_set.typologies[r] for r in rows])),
        features=torch.from_numpy(train_set.features[rows].astype(np.float32)),
        weights=torch.from_numpy(weights),
        soft_targets=torch.from_numpy(teacher(train_set.subset(rows))) if teacher else None,
    )


def _train_step(
    model: RiskClassifier,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    plan: AutocastPlan,
    rows: _TrainingRows,
    batch: NDArray[np.intp],
    config: TrainConfig,
    device: torch.device,
) -> float:
    """One optimizer step on the rows ``batch``; returns the batch's loss."""
    ids, mask = _pad_batch([rows.token_ids[i] for i in batch])
    ids, mask = ids.to(device), mask.to(device)
    batch_features = rows.features[batch].to(device) if model.config.hybrid else None
    with _autocast(plan):
        logits = model(ids, mask, batch_features).float()
    batch_weights = rows.weights[batch].to(device)
    per_example = F.cross_entropy(logits, rows.targets[batch].to(device), reduction="none")
    loss = (per_example * batch_weights).sum() / batch_weights.sum()
    if rows.soft_targets is not None:
        loss = config.distill_alpha * loss + (1 - config.distill_alpha) * distill_loss(
            logits,
            rows.soft_targets[batch].to(device),
            batch_weights,
            config.distill_temperature,
        )
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
    scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    scaler.step(optimizer)  # skipped when fp16 gradients overflowed
    scaler.update()
    return float(loss.item())


@dataclass
class _Best:
    """The best evaluation so far, its weights, and the evaluations since."""

    state: dict[str, torch.Tensor]
    ap: float = -1.0
    step: int = 0
    loss: float = float("inf")
    stale: int = 0

    def update(self, model: RiskClassifier, step: int, ap: float, loss: float) -> bool:
        """Record an evaluation; whether it improved on the best (see :func:`improves`)."""
        if not improves(ap, loss, self.ap, self.loss):
            self.stale += 1
            return False
        self.ap, self.step, self.loss, self.stale = max(ap, self.ap), step, loss, 0
        self.state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        return True


def distill_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    weights: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Weighted KL(teacher ‖ student) of temperature-softened distributions, × T² so its
    gradients keep their scale as T changes (Hinton et al.)."""
    student = F.log_softmax(student_logits / temperature, dim=-1)
    target = F.softmax(teacher_logits.float() / temperature, dim=-1)
    per_example = F.kl_div(student, target, reduction="none").sum(dim=-1)
    return (per_example * weights).sum() / weights.sum() * temperature**2


def _pad_batch(sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.zeros((len(sequences), width), dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = torch.tensor(sequence)
        mask[row, : len(sequence)] = 1
    return ids, mask


def calibrate_on(
    model: RiskClassifier,
    tokenizer: BertTokenizer,
    data: NarrativeSet,
    *,
    target: str = "alert_rate",
    alert_rate: float = 0.01,
    precision: float = 0.5,
) -> Thresholds:
    """Thresholds from the model's scores on ``data`` (the validation split)."""
    device = next(model.parameters()).device
    scores = score(model, tokenizer, data, device=device, max_length=model.config.max_length)
    return calibrate(
        scores,
        data.labels,
        target="precision" if target == "precision" else "alert_rate",
        alert_rate=alert_rate,
        precision=precision,
        weights=data.weights,
    )
