"""Training checkpoints: safetensors for tensors (never a pickle), JSON for everything else.

A run directory holds the latest model and optimizer state (to resume after an interruption)
and the best weights seen so far (resuming must not forget them).
"""

from __future__ import annotations

from pathlib import Path

import orjson
import torch
from pydantic import BaseModel
from safetensors.torch import load_file, save_file

from models.classifier import RiskClassifier


def save_checkpoint(
    directory: Path,
    model: RiskClassifier,
    optimizer: torch.optim.Optimizer,
    config: BaseModel,
    step: int,
    best_step: int,
    best_ap: float,
    best_state: dict[str, torch.Tensor] | None,
) -> None:
    """The latest model + optimizer state (to resume), and the best weights when they changed
    (resuming must not forget the best model seen so far)."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    optimizer_state = optimizer.state_dict()
    for param_index, state in optimizer_state["state"].items():
        for key, value in state.items():
            tensor = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"optim.{param_index}.{key}"] = tensor.detach().cpu().contiguous()
    _save_atomically(tensors, directory / "checkpoint.safetensors")
    if best_state is not None:
        _save_atomically(best_state, directory / "best_model.safetensors")
    meta = {
        "step": step,
        "best_step": best_step,
        "best_validation_average_precision": best_ap,
        "train_config": config.model_dump(mode="json"),
        "classifier_config": model.config.model_dump(mode="json"),
        "param_groups": optimizer_state["param_groups"],
    }
    (directory / "checkpoint.json").write_bytes(orjson.dumps(meta, option=orjson.OPT_INDENT_2))


def _save_atomically(tensors: dict[str, torch.Tensor], path: Path) -> None:
    temporary = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(temporary))
    temporary.replace(path)


def load_checkpoint(
    directory: Path, model: RiskClassifier, optimizer: torch.optim.Optimizer
) -> tuple[int, int, float, dict[str, torch.Tensor]]:
    """Restore model and optimizer from ``directory``; return (step, best step, best
    validation AP, best weights)."""
    meta = orjson.loads((directory / "checkpoint.json").read_bytes())
    tensors = load_file(str(directory / "checkpoint.safetensors"))
    model.load_state_dict(
        {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    )
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    best_state = load_file(str(directory / "best_model.safetensors"))
    return (
        int(meta["step"]),
        int(meta["best_step"]),
        float(meta["best_validation_average_precision"]),
        best_state,
    )
