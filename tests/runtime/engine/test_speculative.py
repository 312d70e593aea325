"""Speculative decoding: n-gram lookup, the rejection sampler's distribution, and the engine path (greedy output
identical with and without speculation, drafts counted, no KV block left behind after rejected drafts)."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from sloserve_runtime.engine.core import AsyncEngine
from sloserve_runtime.engine.engine_config import EngineConfig
from sloserve_runtime.engine.observer import EngineObserver
from sloserve_runtime.engine.sampling_params import SamplingParams
from sloserve_runtime.engine.speculative import ngram_lookup, rejection_sample, verify_greedy
from sloserve_runtime.model import LoadedModel, load_model
from sloserve_runtime.model.model_args import ModelArgs
from sloserve_runtime.model.model_files import default_model_path
from sloserve_runtime.testing import random_state


class SpecCounter(EngineObserver):
    def __init__(self) -> None:
        self.drafts = self.draft_tokens = self.accepted = self.preemptions = 0

    def on_preemption(self, request_id: str) -> None:
        self.preemptions += 1

    def on_speculation(self, drafts: int, draft_tokens: int, accepted_tokens: int) -> None:
        self.drafts += drafts
        self.draft_tokens += draft_tokens
        self.accepted += accepted_tokens


# ---- pure parts ---------------------------------------------------------------------------------------------
def test_ngram_lookup_takes_longest_most_recent_match():
    tokens = [1, 2, 3, 9, 1, 2, 3, 4, 5, 7, 2, 3]
    # suffix [2, 3] occurs at 1 and 5; the most recent earlier match (5) is followed by 4, 5, 7
    assert ngram_lookup(tokens, 3, 1, 3) == [4, 5, 7]
    # the longest suffix wins over a more recent shorter one: [5, 6, 7] at 0 beats [6, 7] at 5
    assert ngram_lookup([5, 6, 7, 8, 0, 6, 7, 1, 5, 6, 7], 2, 1, 3) == [8, 0]
    assert ngram_lookup([1, 2, 3, 4], 3, 2, 3) == []  # no earlier match
    assert ngram_lookup([4, 4, 4], 5, 1, 2) == [4]  # the continuation may run up to the end


def test_verify_greedy_accepts_prefix_then_corrects():
    assert verify_greedy([5, 6, 7, 8], [5, 6, 7]) == [5, 6, 7, 8]  # all accepted + bonus
    assert verify_greedy([5, 9, 7, 8], [5, 6, 7]) == [5, 9]  # second rejected, corrected by the target
    assert verify_greedy([1, 2], [3]) == [1]


@pytest.mark.parametrize("one_hot", [False, True])
def test_rejection_sampler_outputs_the_target_distribution(one_hot):
    """Chi-square test (fixed seed, df=4, threshold at p=0.001) of the first emitted token against p."""
    g = torch.Generator().manual_seed(1234)
    p = torch.tensor([[0.05, 0.40, 0.25, 0.20, 0.10], [0.2, 0.2, 0.2, 0.2, 0.2]])
    q = torch.tensor([[0.30, 0.10, 0.30, 0.05, 0.25]])
    n = 20000
    counts = Counter()
    accepted = 0
    for _ in range(n):
        draft = int(torch.multinomial(q[0], 1, generator=g))
        out = rejection_sample(p, [draft], None if one_hot else q, g)
        counts[out[0]] += 1
        accepted += len(out) == 2
    expected = p[0] * n
    chi2 = sum((counts[i] - float(expected[i])) ** 2 / float(expected[i]) for i in range(5))
    assert chi2 < 18.47, (chi2, counts)
    # acceptance rate is sum_x min(p, q) for a sampled q (0.6 here), E_q[p(d)] for one-hot proposals
    rate = float(torch.minimum(p[0], q[0]).sum()) if not one_hot else float((p[0] * q[0]).sum())
    assert abs(accepted / n - rate) < 0.02


# ---- the engine ---------------------------------------------------------------------------------------------
def copy_with_weights(source: Path, target: Path, seed: int, vocab_cut: int = 0) -> Path:
    """Another tiny model with the same tokenizer files (new random weights; optionally a smaller vocab)."""
    target.mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(source / name, target / name)
    config = json.loads((source / "config.json").read_text())
    config["vocab_size"] -= vocab_cut
    (target / "config.json").write_text(json.dumps(config))
    state = random_state(ModelArgs.from_hf_config(config), seed)
    save_file({k: v.contiguous() for k, v in state.items()}, str(target / "model.safetensors"))
    return target


@pytest.fixture(scope="module")
def tiny_models(tiny_model_dir: Path, tmp_path_factory) -> tuple[Path, Path]:
    return tiny_model_dir, copy_with_weights(tiny_model_dir, tmp_path_factory.mktemp("spec") / "other", seed=7)


def prompts(n: int) -> list[list[int]]:
    """Mixed prompts: repetitive ones (lookup finds matches) and irregular ones."""
    out = []
    for i in range(n):
        if i % 2:
            unit = [300 + 11 * i + j for j in range(3 + i % 4)]
            out.append(unit * (2 + i % 3))
        else:
            out.append([(977 * (i + 1) + 131 * j) % 40000 + 100 for j in range(5 + 3 * i)])
    return out


async def run_all(config: EngineConfig, work: list[tuple[list[int], SamplingParams]],
                  observer: EngineObserver | None = None,
                  preloaded: LoadedModel | None = None) -> tuple[list[list[int]], AsyncEngine]:
    engine = AsyncEngine.from_config(config, observer=observer, preloaded=preloaded)
    await engine.start()
    try:
        async def one(i: int, prompt: list[int], params: SamplingParams) -> list[int]:
            return [t async for out in engine.generate(f"r{i}", prompt, params) for t in out.new_token_ids]

        results = await asyncio.gather(*(one(i, p, s) for i, (p, s) in enumerate(work)))
        await asyncio.sleep(0)
        engine.core.allocator.check_no_leaks()
        return list(results), engine
    finally:
        await engine.shutdown()


def tiny_config(model: Path, **overrides) -> EngineConfig:
    cfg = dict(model=str(model), dtype="float32", max_model_len=256, kv_cache_blocks=120, block_size=4,
               max_batch_size=8, prefix_caching=True)
    cfg.update(overrides)
    return EngineConfig(**cfg)


@pytest.mark.parametrize("method", ["ngram", "draft-same", "draft-other"])
async def test_greedy_output_identical_with_speculation(tiny_models, method):
    target, other = tiny_models
    work = [(p, SamplingParams(max_tokens=10 + 3 * (i % 7), temperature=0.0, ignore_eos=True))
            for i, p in enumerate(prompts(16))]
    expected, _ = await run_all(tiny_config(target), work)
    overrides: dict = {"speculative_method": "ngram", "num_speculative_tokens": 4}
    if method.startswith("draft"):
        overrides = {"speculative_method": "draft", "num_speculative_tokens": 3,
                     "draft_model": str(target if method == "draft-same" else other)}
    counter = SpecCounter()
    got, engine = await run_all(tiny_config(target, **overrides), work, counter)
    assert got == expected
    assert counter.drafts > 0 and counter.draft_tokens >= counter.drafts
    assert 0 < counter.accepted <= counter.draft_tokens
    if method == "draft-same":  # the draft is the target: (nearly) everything is accepted
        assert counter.accepted >= 0.9 * counter.draft_tokens


async def test_tight_kv_pool_and_stop_conditions_leave_no_blocks(tiny_models):
    """A small pool (drafts get fewer blocks, preemption happens) and early stops inside accepted drafts."""
    target, _ = tiny_models
    work = [(p, SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True)) for p in prompts(8)]
    config = dict(kv_cache_blocks=40, max_model_len=128)
    expected, _ = await run_all(tiny_config(target, **config), work)
    counter = SpecCounter()
    got, _ = await run_all(tiny_config(target, speculative_method="ngram", **config), work, counter)
    assert got == expected
    assert counter.preemptions > 0 and counter.accepted > 0  # the pool really was short
    # stop token ids: output ends at the first stop token, whether it was a draft or not
    stop_work = [(p, SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True,
                                    stop_token_ids=[expected[i][len(expected[i]) // 2]]))
                 for i, (p, _) in enumerate(work)]
    plain_stop, _ = await run_all(tiny_config(target, **config), stop_work)
    spec_stop, _ = await run_all(tiny_config(target, speculative_method="ngram", **config), stop_work)
    assert spec_stop == plain_stop
    assert all(len(s) <= len(e) // 2 + 1 for s, e in zip(spec_stop, expected, strict=True))


async def test_sampled_requests_with_speculation_are_reproducible(tiny_models):
    target, other = tiny_models
    work = [(p, SamplingParams(max_tokens=16, temperature=0.8, top_p=0.9, seed=i, ignore_eos=True))
            for i, p in enumerate(prompts(4))]
    cfg = tiny_config(target, speculative_method="draft", draft_model=str(other), num_speculative_tokens=3)
    counter = SpecCounter()
    first, _ = await run_all(cfg, work, counter)
    second, _ = await run_all(cfg, work)
    assert first == second
    assert all(len(tokens) == 16 for tokens in first)
    assert counter.draft_tokens > 0


def test_draft_model_with_another_vocabulary_is_refused(tiny_models, tmp_path):
    target, _ = tiny_models
    bad = copy_with_weights(target, tmp_path / "bad", seed=3, vocab_cut=16)
    with pytest.raises(ValueError, match="vocabulary"):
        AsyncEngine.from_config(tiny_config(target, speculative_method="draft", draft_model=str(bad)))


async def test_smollm2_greedy_identical_with_ngram():
    """The real model (fp32): a quoting prompt, where lookup finds long matches, and a free-form one."""
    path = default_model_path()
    loaded = load_model(path)
    text = ("Copy this sentence exactly: The quick brown fox jumps over the lazy dog near the river bank.\n"
            "Copy: The quick brown fox")
    work = [(loaded.tokenizer.encode(t), SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True))
            for t in (text, "Write a haiku about autumn leaves.")]
    cfg = dict(model=str(path), dtype="float32", max_model_len=256, kv_cache_blocks=64, block_size=16)
    expected, _ = await run_all(EngineConfig(**cfg), work, preloaded=loaded)
    counter = SpecCounter()
    got, _ = await run_all(EngineConfig(**cfg, speculative_method="ngram"), work, counter, preloaded=loaded)
    assert got == expected
    assert counter.accepted > 0
