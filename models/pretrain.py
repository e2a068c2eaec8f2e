"""Self-supervised pretraining of a student encoder on unlabelled narratives.

Masked-token modelling, as BERT was pretrained: 15 % of the (non-special) tokens of each
narrative are hidden - 80 % replaced by [MASK], 10 % by a random token, 10 % kept - and the
encoder learns to restore them from the rest. Narratives are a small language (a few hundred
clause shapes), so a few hundred steps teach the student which words go together ("new
device" with "new beneficiary", a story's rhythm) before it sees any label; every event of
the training days can be used, not only the labelled ones. The prediction head is thrown away
afterwards: only the encoder's weights carry over (``models.train`` starts from them when
``TrainConfig.pretrain_steps`` > 0).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 (the conventional name)
from tqdm.auto import tqdm
from transformers import BertModel, BertTokenizer
from transformers.models.bert.modeling_bert import BertOnlyMLMHead

log = logging.getLogger(__name__)

MASK_SHARE = 0.15


def mask_tokens(
    ids: torch.Tensor, attention: torch.Tensor, tokenizer: BertTokenizer, rng: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs with masks applied, labels: the original id where masked, -100 elsewhere)."""
    special = torch.tensor([tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id])
    candidates = attention.bool() & ~torch.isin(ids, special)
    chosen = candidates & (torch.rand(ids.shape, generator=rng) < MASK_SHARE)
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    draw = torch.rand(ids.shape, generator=rng)
    masked = ids.clone()
    masked[chosen & (draw < 0.8)] = int(tokenizer.mask_token_id)
    random_ids = torch.randint(len(tokenizer), ids.shape, generator=rng)
    swap = chosen & (draw >= 0.8) & (draw < 0.9)
    masked[swap] = random_ids[swap]
    return masked, labels


def pretrain_mlm(
    encoder: BertModel,
    tokenizer: BertTokenizer,
    texts: Sequence[str],
    *,
    steps: int,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    max_length: int = 128,
    seed: int = 0,
    device: torch.device | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Pretrain ``encoder`` in place; returns the mean loss of the first and the last fifth of
    the steps."""
    device = device or torch.device("cpu")
    head = BertOnlyMLMHead(encoder.config).to(device)  # type: ignore[no-untyped-call]
    # tie the output projection to the input embeddings, as BERT does
    head.predictions.decoder.weight = encoder.embeddings.word_embeddings.weight
    encoder.to(device)  # type: ignore[arg-type]
    encoder.train()
    head.train()
    params = list(encoder.parameters()) + [
        p for n, p in head.named_parameters() if not n.endswith("decoder.weight")
    ]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.01)
    order = np.random.default_rng(seed).permutation(len(texts))
    rng = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    started = time.perf_counter()
    bar = tqdm(range(steps), desc="pretrain (masked tokens)", disable=not progress)
    for step in bar:
        rows = order[(step * batch_size) % len(order) :][:batch_size]
        if len(rows) < batch_size:
            rows = np.concatenate([rows, order[: batch_size - len(rows)]])
        batch = tokenizer(
            [texts[int(r)] for r in rows],
            truncation=True,
            max_length=max_length,
            padding=True,
            return_tensors="pt",
        )
        inputs, labels = mask_tokens(batch["input_ids"], batch["attention_mask"], tokenizer, rng)
        hidden = encoder(
            input_ids=inputs.to(device), attention_mask=batch["attention_mask"].to(device)
        ).last_hidden_state
        where = labels.to(device) != -100
        if not bool(where.any()):
            continue
        logits = head(hidden[where])
        loss = F.cross_entropy(logits.float(), labels.to(device)[where])
        for group in optimizer.param_groups:  # linear warmup over the first tenth, then flat
            group["lr"] = learning_rate * min(1.0, (step + 1) / max(1, steps // 10))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        losses.append(float(loss.item()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    encoder.eval()  # type: ignore[no-untyped-call]
    fifth = max(1, len(losses) // 5)
    summary = {
        "steps": float(steps),
        "first_loss": float(np.mean(losses[:fifth])) if losses else float("nan"),
        "last_loss": float(np.mean(losses[-fifth:])) if losses else float("nan"),
        "seconds": time.perf_counter() - started,
    }
    log.info("pretrained %d steps: loss %.3f -> %.3f", steps, summary["first_loss"],
             summary["last_loss"])  # fmt: skip
    return summary
