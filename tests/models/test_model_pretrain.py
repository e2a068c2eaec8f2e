"""Masked-token pretraining of a student on unlabelled narratives."""

from __future__ import annotations

import torch

from models.backbones import StudentSize, load_tokenizer, new_student
from models.pretrain import MASK_SHARE, mask_tokens, pretrain_mlm
from tests.models.conftest import split_data


def test_masking_hides_a_share_of_real_tokens_and_labels_exactly_those() -> None:
    tokenizer = load_tokenizer()
    batch = tokenizer(
        ["card payment in store; amount small; merchant known for months"] * 64,
        padding="max_length",
        max_length=32,
        return_tensors="pt",
    )
    ids, attention = batch["input_ids"], batch["attention_mask"]
    masked, labels = mask_tokens(ids, attention, tokenizer, torch.Generator().manual_seed(1))
    chosen = labels != -100
    real = attention.bool() & (ids != tokenizer.cls_token_id) & (ids != tokenizer.sep_token_id)
    assert not (chosen & ~real).any()  # never [CLS], [SEP] or padding
    assert abs(chosen.sum().item() / real.sum().item() - MASK_SHARE) < 0.05
    assert torch.equal(labels[chosen], ids[chosen])
    assert (masked[chosen] == tokenizer.mask_token_id).float().mean() > 0.6
    assert torch.equal(masked[~chosen], ids[~chosen])


def test_pretraining_learns_to_restore_masked_words() -> None:
    texts = split_data(n=400).train.texts
    tokenizer = load_tokenizer()
    encoder = new_student(StudentSize(layers=1, hidden=64, heads=2))
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    summary = pretrain_mlm(
        encoder, tokenizer, texts, steps=100, batch_size=16, seed=0, progress=False
    )
    assert summary["last_loss"] < 0.6 * summary["first_loss"]
    changed = [k for k, v in encoder.state_dict().items() if not torch.equal(v, before[k])]
    assert changed  # the encoder itself learnt (the head is thrown away)
