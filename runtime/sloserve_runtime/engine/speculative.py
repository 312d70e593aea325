"""Speculative decoding: propose k tokens cheaply, verify them all in one batched forward of the target model.

Proposers:
- n-gram prompt lookup (`ngram_lookup`): for n from prompt_lookup_max down to prompt_lookup_min, find the most
  recent earlier occurrence of the sequence's last n tokens and propose the k tokens that followed it. Free to
  compute; pays off when the output quotes or rewrites the context.
- draft model (`DraftModelProposer`): a smaller model with the same tokenizer proposes k tokens one forward at
  a time. It keeps its own KV pool indexed by the target's block tables (same slots), so no extra allocator.

Verification (`Speculator.run`, the engine's public hook `EngineCore.speculator`): every decoding sequence that got proposals is
scheduled as a (1 + k)-token chunk [last token, d1..dk] in the same forward as the other sequences' decodes and
prefills (continuous batching: sequences with and without drafts share the step), and logits are taken at all
1 + k positions. Greedy requests accept drafts while they equal the target's argmax, then take the target's
token, so the output is exactly the non-speculative greedy output. Sampled requests use the rejection rule of
Leviathan et al. 2023 / Chen et al. 2023: accept d with probability min(1, p(d)/q(d)), on rejection sample from
max(0, p - q) renormalised, after k acceptances sample a bonus token from p: the output follows the target's
distribution p exactly (q is one-hot for n-gram proposals). KV blocks that only held rejected tokens go back to
the pool at once; blocks with draft tokens are never published to the prefix cache.

Metrics follow vLLM: drafts = sequences that proposed in a step, draft tokens = proposed, accepted = accepted.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from sloserve_runtime.engine.sampler import adjust_logits, sample
from sloserve_runtime.engine.sampling_params import SamplingParams
from sloserve_runtime.engine.scheduler import ScheduledSequence, SchedulerOutput
from sloserve_runtime.engine.sequence import Sequence

if TYPE_CHECKING:
    from sloserve_runtime.engine.engine_config import EngineConfig
    from sloserve_runtime.engine.kv_cache import BlockAllocator
    from sloserve_runtime.engine.observer import EngineObserver
    from sloserve_runtime.engine.outputs import RequestOutput
    from sloserve_runtime.engine.scheduler import Scheduler
    from sloserve_runtime.model.llama import PagedLlama, StepInput
    from sloserve_runtime.model.tokenizer import Tokenizer

log = logging.getLogger(__name__)


class EngineCore(Protocol):
    """What the speculator uses of the engine core (engine/core.py's EngineCore satisfies it). Declared here,
    by the consumer, so that this module does not import the core that imports it."""

    model: PagedLlama
    tokenizer: Tokenizer
    allocator: BlockAllocator
    scheduler: Scheduler
    sequences: dict[str, Sequence]
    observer: EngineObserver
    block_size: int
    max_model_len: int
    eos_ids: set[int]
    device: torch.device
    generator: torch.Generator

    def build_step(self, plan: SchedulerOutput) -> StepInput: ...

    def append_token(self, seq: Sequence, token: int, now: float) -> RequestOutput: ...


# ---- proposals ------------------------------------------------------------------------------------------
def ngram_lookup(tokens: list[int] | np.ndarray, k: int, n_min: int, n_max: int) -> list[int]:
    """Continuation (up to k tokens) of the most recent earlier match of the longest suffix n-gram."""
    arr = np.asarray(tokens, dtype=np.int64)
    length = len(arr)
    for n in range(min(n_max, length - 1), n_min - 1, -1):
        pattern = arr[length - n:]
        windows = np.lib.stride_tricks.sliding_window_view(arr[:length - 1], n)  # starts 0..length-n-1
        hits = np.flatnonzero((windows == pattern).all(axis=1))
        if hits.size:
            start = int(hits[-1]) + n
            return arr[start:start + k].tolist()
    return []


@dataclass
class Proposal:
    tokens: list[int]
    probs: torch.Tensor | None = None  # [len(tokens), V] the proposer's q; None means one-hot (deterministic)


class Proposer(Protocol):
    def propose(self, core: EngineCore, seqs: list[Sequence], ks: list[int]) -> list[Proposal]: ...

    def forget(self, request_id: str) -> None: ...

    def verified(self, seq: Sequence) -> None: ...


class NgramProposer:
    def __init__(self, n_min: int, n_max: int) -> None:
        if not 1 <= n_min <= n_max:
            raise ValueError(f"prompt lookup n-gram sizes must satisfy 1 <= min <= max, got {n_min}..{n_max}")
        self.n_min, self.n_max = n_min, n_max

    def propose(self, core: EngineCore, seqs: list[Sequence], ks: list[int]) -> list[Proposal]:
        return [Proposal(ngram_lookup(seq.all_token_ids(), k, self.n_min, self.n_max)) for seq, k in zip(seqs, ks, strict=True)]

    def forget(self, request_id: str) -> None:
        pass

    def verified(self, seq: Sequence) -> None:
        pass


class DraftModelProposer:
    """A small model drafting autoregressively; its KV lives in its own pool at the target's slot numbers.

    `computed[request_id]` counts the leading tokens whose draft KV is valid; it starts at 0 (the draft
    catches up on the whole context in its first forward), shrinks to the target's num_computed after
    verification (rejected positions hold stale KV) and is dropped on preemption (the blocks went away)."""

    def __init__(self, model: PagedLlama) -> None:
        self.model = model
        self.computed: dict[str, int] = {}

    def propose(self, core: EngineCore, seqs: list[Sequence], ks: list[int]) -> list[Proposal]:
        contexts = [seq.all_token_ids() for seq in seqs]
        drafts: list[list[int]] = [[] for _ in seqs]
        probs: list[list[torch.Tensor]] = [[] for _ in seqs]
        for j in range(max(ks, default=0)):
            items: list[tuple[int, ScheduledSequence]] = []
            for i, seq in enumerate(seqs):
                if ks[i] <= j:
                    continue
                tokens = contexts[i] + drafts[i]
                start = min(self.computed.get(seq.request_id, 0), len(tokens) - 1) if j == 0 else len(tokens) - 1
                view = Sequence(seq.request_id, tokens, seq.params, 0.0)
                view.block_ids = seq.block_ids
                view.num_computed = start
                items.append((i, ScheduledSequence(view, len(tokens) - start)))
            items.sort(key=lambda it: it[1].num_new_tokens != 1)  # the step layout wants decodes first
            step = core.build_step(SchedulerOutput(scheduled=[item for _, item in items]))
            logits = self.model.forward(step)
            for (i, _), row in zip(items, logits, strict=True):
                seq = seqs[i]
                row = adjust_logits(row, seq, core.eos_ids)
                if seq.params.greedy:
                    drafts[i].append(int(row.argmax()))
                    continue
                q = target_probs(row[None], seq.params)[0]
                drafts[i].append(int(torch.multinomial(q, 1, generator=seq.generator or core.generator)))
                probs[i].append(q)
        out = []
        for i, seq in enumerate(seqs):
            if drafts[i]:  # the context and all drafts but the last went through the draft model
                self.computed[seq.request_id] = len(contexts[i]) + len(drafts[i]) - 1
            out.append(Proposal(drafts[i], torch.stack(probs[i]) if probs[i] else None))
        if len(self.computed) > 4 * max(len(core.sequences), 16):  # drop requests that ended (finish/abort)
            self.computed = {r: n for r, n in self.computed.items() if r in core.sequences}
        return out

    def forget(self, request_id: str) -> None:
        self.computed.pop(request_id, None)

    def verified(self, seq: Sequence) -> None:
        if seq.request_id in self.computed:
            self.computed[seq.request_id] = min(self.computed[seq.request_id], seq.num_computed)


# ---- verification ---------------------------------------------------------------------------------------
def target_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """[R, V] logits -> [R, V] probabilities under temperature, top-k and top-p (as sampler.py samples)."""
    logits = logits / params.temperature
    vocab = logits.shape[-1]
    if 0 < params.top_k < vocab:
        kth = torch.topk(logits, params.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        drop = sorted_probs.cumsum(-1) - sorted_probs > params.top_p
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs.masked_fill(drop, 0.0))
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def verify_greedy(target_tokens: list[int], drafts: list[int]) -> list[int]:
    """Accepted drafts plus one token from the target (its correction, or the bonus after all k)."""
    out: list[int] = []
    for target, draft in zip(target_tokens, drafts, strict=False):
        out.append(target)
        if target != draft:
            return out
    out.append(target_tokens[len(drafts)])
    return out


def rejection_sample(p: torch.Tensor, drafts: list[int], q: torch.Tensor | None,
                     generator: torch.Generator | None) -> list[int]:
    """p [k+1, V] target probabilities, q [k, V] proposal probabilities (None: one-hot on the drafts)."""
    out: list[int] = []
    device = p.device
    for j, draft in enumerate(drafts):
        q_draft = 1.0 if q is None else float(q[j, draft])
        u = float(torch.rand((), generator=generator, device=device))
        if u * q_draft < float(p[j, draft]):
            out.append(draft)
            continue
        residual = p[j].clone()
        if q is None:
            residual[draft] = 0.0  # max(0, p - onehot): p(draft) - 1 <= 0
        else:
            residual = (residual - q[j]).clamp(min=0.0)
        if float(residual.sum()) <= 0.0:
            residual = p[j]
        out.append(int(torch.multinomial(residual, 1, generator=generator)))
        return out
    out.append(int(torch.multinomial(p[len(drafts)], 1, generator=generator)))
    return out


# ---- the engine hook ------------------------------------------------------------------------------------
class Speculator:
    """The hook set as EngineCore.speculator: the core calls run() with each step's plan before its plain path;
    None means nothing to speculate this step (the plain path runs). It uses only the EngineCore Protocol
    above, the scheduler's public methods and the model runner (core.build_step)."""

    def __init__(self, proposer: Proposer, num_tokens: int) -> None:
        self.proposer = proposer
        self.num_tokens = num_tokens

    def run(self, core: EngineCore, plan: SchedulerOutput) -> list[RequestOutput] | None:
        for seq in plan.preempted:
            self.proposer.forget(seq.request_id)
        seqs, ks = self._candidates(core, plan)
        if not seqs:
            return None
        ks = [self._reserve(core, seq, k) for seq, k in zip(seqs, ks, strict=True)]
        proposals = self.proposer.propose(core, seqs, ks)
        drafted: dict[int, tuple[Sequence, Proposal]] = {}
        for seq, proposal in zip(seqs, proposals, strict=True):
            _trim_blocks(core, seq, seq.num_tokens + len(proposal.tokens))
            if proposal.tokens:
                drafted[id(seq)] = (seq, proposal)
        if not drafted:
            return None
        return self._verify_step(core, plan, drafted)

    def _candidates(self, core: EngineCore, plan: SchedulerOutput) -> tuple[list[Sequence], list[int]]:
        seqs, ks = [], []
        for item in plan.scheduled:
            seq = item.seq
            n_out = len(seq.output_token_ids)
            if item.num_new_tokens != 1 or not n_out or seq.num_computed + 1 != seq.num_tokens:
                continue  # prefilling (or recomputing after preemption)
            if n_out < seq.params.min_tokens:
                continue  # EOS is still banned position by position; keep it simple and exact
            k = min(self.num_tokens, seq.params.max_tokens - n_out - 1, core.max_model_len - seq.num_tokens)
            if k > 0:
                seqs.append(seq)
                ks.append(k)
        return seqs, ks

    @staticmethod
    def _reserve(core: EngineCore, seq: Sequence, k: int) -> int:
        """Blocks for positions up to num_tokens - 1 + k; fewer drafts when the pool is short."""
        bs = core.block_size
        needed = -(-(seq.num_tokens + k) // bs) - len(seq.block_ids)
        for _ in range(min(max(needed, 0), core.allocator.num_free)):
            seq.block_ids.append(core.allocator.allocate())
        return max(0, min(k, len(seq.block_ids) * bs - seq.num_tokens))

    def _verify_step(self, core: EngineCore, plan: SchedulerOutput,
                     drafted: dict[int, tuple[Sequence, Proposal]]) -> list[RequestOutput]:
        plain_decodes, chunks, rest = [], [], []
        for item in plan.scheduled:
            if id(item.seq) in drafted:
                seq, proposal = drafted[id(item.seq)]
                chunks.append(ScheduledSequence(seq, 1 + len(proposal.tokens)))
            elif item.num_new_tokens == 1:
                plain_decodes.append(item)
            else:
                rest.append(item)
        order = plain_decodes + chunks + rest
        # Each of a drafting sequence's 1 + k tokens becomes its own decode row (same block table, context
        # length one longer than the previous row's): all K/V are written before attention, so row j sees the
        # drafts before it, and every row goes through the one batched decode-attention call instead of a
        # per-sequence prefill attention.
        step_items: list[ScheduledSequence] = []
        rows: list[int] = []
        row = 0
        for item in order:
            seq = item.seq
            if id(seq) in drafted:
                tokens = seq.all_token_ids() + drafted[id(seq)][1].tokens
                for j in range(item.num_new_tokens):
                    view = Sequence(seq.request_id, tokens, seq.params, 0.0)
                    view.block_ids = seq.block_ids
                    view.num_computed = seq.num_computed + j
                    step_items.append(ScheduledSequence(view, 1))
                    rows.append(row)
                    row += 1
                continue
            if seq.num_computed + item.num_new_tokens == seq.num_tokens:
                rows.append(row + item.num_new_tokens - 1)
            step_items.append(item)
            row += item.num_new_tokens
        step = core.build_step(SchedulerOutput(scheduled=step_items))
        step.logits_indices = torch.tensor(rows, dtype=torch.long, device=core.device)
        logits = core.model.forward(step)

        sampling_rows: list[int] = []
        verified: list[tuple[Sequence, list[int]]] = []
        num_drafts = num_draft_tokens = num_accepted = 0
        plain: list[ScheduledSequence] = []
        index = 0
        for item in order:
            seq = item.seq
            if id(seq) in drafted:
                proposal = drafted[id(seq)][1]
                k = len(proposal.tokens)
                tokens = self._accept(core, seq, logits[index:index + k + 1], proposal)
                index += k + 1
                seq.num_computed += len(tokens)  # the last token and the accepted drafts now have KV
                _trim_blocks(core, seq, seq.num_tokens + len(tokens))
                self.proposer.verified(seq)
                verified.append((seq, tokens))
                num_drafts += 1
                num_draft_tokens += k
                num_accepted += len(tokens) - 1
                continue
            plain.append(item)
            if seq.num_computed + item.num_new_tokens == seq.num_tokens:
                sampling_rows.append(index)
                index += 1
        sampling = core.scheduler.postprocess(plain)
        core.observer.on_speculation(num_drafts, num_draft_tokens, num_accepted)
        outputs: list[RequestOutput] = []
        now = time.monotonic()
        if sampling:
            tokens = sample(logits[sampling_rows], sampling, core.eos_ids, core.generator)
            outputs.extend(core.append_token(seq, token, now) for seq, token in zip(sampling, tokens, strict=True))
        for seq, tokens in verified:
            # Tokens of one step reach the client together: each is charged an equal share of the gap.
            share = max(now - (seq.last_token_time or now), 0.0) / len(tokens)
            for token in tokens:
                seq.last_token_time = now - share
                out = core.append_token(seq, token, now)
                outputs.append(out)
                if out.finished:
                    break
            else:
                core.scheduler.register_full_blocks(seq)
        return outputs

    @staticmethod
    def _accept(core: EngineCore, seq: Sequence, logits: torch.Tensor, proposal: Proposal) -> list[int]:
        params = seq.params
        if params.logit_bias:
            logits = torch.stack([adjust_logits(row, seq, core.eos_ids) for row in logits])
        if params.greedy:
            return verify_greedy(logits.argmax(dim=-1).tolist(), proposal.tokens)
        return rejection_sample(target_probs(logits, params), proposal.tokens, proposal.probs,
                                seq.generator or core.generator)


def _trim_blocks(core: EngineCore, seq: Sequence, num_tokens: int) -> None:
    """Return the blocks past num_tokens (they held only rejected or unused draft positions)."""
    keep = max(-(-num_tokens // core.block_size), 1)
    if len(seq.block_ids) > keep:
        extra = seq.block_ids[keep:]
        del seq.block_ids[keep:]
        core.allocator.free_all(extra)


def build_speculator(config: EngineConfig, core: EngineCore) -> Speculator | None:
    """From --speculative-method; the draft model is loaded here (same device, dtype and quantization)."""
    method = config.speculative_method
    if method == "none":
        return None
    if config.num_speculative_tokens < 1:
        raise ValueError("--num-speculative-tokens must be at least 1")
    if method == "ngram":
        proposer: Proposer = NgramProposer(config.prompt_lookup_min, config.prompt_lookup_max)
    elif method == "draft":
        proposer = DraftModelProposer(load_draft_model(config, core))
    else:
        raise ValueError(f"--speculative-method {method!r}: choose none, ngram or draft")
    log.info("speculative decoding: %s, %d tokens per step", method, config.num_speculative_tokens)
    return Speculator(proposer, config.num_speculative_tokens)


def load_draft_model(config: EngineConfig, core: EngineCore) -> PagedLlama:
    from sloserve_runtime.model import load_model
    from sloserve_runtime.model.llama import PagedLlama
    from sloserve_runtime.model.model_files import resolve_model_path
    from sloserve_runtime.model.quantization import quantize_model

    if not config.draft_model:
        raise ValueError("--speculative-method draft needs --draft-model PATH")
    loaded = load_model(resolve_model_path(config.draft_model))
    target = core.model
    if loaded.args.vocab_size != target.args.vocab_size or \
            loaded.tokenizer.vocab_size != core.tokenizer.vocab_size:
        raise ValueError(f"--draft-model {config.draft_model}: its vocabulary ({loaded.args.vocab_size}) differs "
                         f"from the target's ({target.args.vocab_size}); the draft must share the tokenizer")
    draft = PagedLlama(loaded.args, loaded.state, target.device, target.dtype, max_positions=core.max_model_len)
    del loaded.state
    quantize_model(draft, config.quantization)
    draft.allocate_kv_cache(core.allocator.num_blocks, core.block_size)
    log.info("draft model %s: %d layers", config.draft_model, loaded.args.num_layers)
    return draft
