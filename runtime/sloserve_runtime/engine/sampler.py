"""Next-token selection from logits: logit_bias, min_tokens, temperature, top-k, top-p, per-request seeds.

Greedy rows with no bias are one batched argmax; only rows that need per-request work are handled singly.
"""

from __future__ import annotations

import torch

from sloserve_runtime.engine.sequence import Sequence


def adjust_logits(logits: torch.Tensor, seq: Sequence, eos_ids: set[int]) -> torch.Tensor:
    """logit_bias added, EOS and stop tokens banned before min_tokens: the speculator verifies drafts on the
    same adjusted rows as sample() draws from."""
    p = seq.params
    if p.logit_bias:
        ids = torch.tensor(list(p.logit_bias.keys()), device=logits.device)
        vals = torch.tensor(list(p.logit_bias.values()), device=logits.device, dtype=logits.dtype)
        logits = logits.index_add(0, ids, vals)
    if len(seq.output_token_ids) < p.min_tokens:
        banned = list(eos_ids | set(p.stop_token_ids))
        if banned:
            logits = logits.index_fill(0, torch.tensor(banned, device=logits.device), float("-inf"))
    return logits


def _sample_row(logits: torch.Tensor, seq: Sequence, generator: torch.Generator | None) -> int:
    p = seq.params
    if p.greedy:
        return int(logits.argmax())
    logits = logits / p.temperature
    if p.top_k > 0 and p.top_k < logits.shape[-1]:
        kth = torch.topk(logits, p.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if p.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        cumulative = sorted_probs.cumsum(-1)
        drop = cumulative - sorted_probs > p.top_p  # keep the smallest head reaching top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))


def sample(logits: torch.Tensor, seqs: list[Sequence], eos_ids: set[int],
           default_generator: torch.Generator) -> list[int]:
    """logits [len(seqs), V] float32 -> one token id per sequence."""
    special = [i for i, s in enumerate(seqs)
               if not s.params.greedy or s.params.logit_bias or len(s.output_token_ids) < s.params.min_tokens]
    tokens = logits.argmax(dim=-1).tolist() if len(special) < len(seqs) else [0] * len(seqs)
    for i in special:
        seq = seqs[i]
        row = adjust_logits(logits[i], seq, eos_ids)
        tokens[i] = _sample_row(row, seq, seq.generator or default_generator)
    return tokens
