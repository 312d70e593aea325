"""`make bench-quality`: what each --quantization scheme costs in quality, and what it saves, on SmolLM2.

Per scheme (none, int8, int4), all measured in this run on the same weights:
- perplexity on bench/data/quality_text.txt (a fixed text written for this project, ~2.5k tokens), scored in
  chunks with the paged KV cache exactly as the runtime computes prefills;
- top-1 agreement: fraction of text positions where the scheme's next-token argmax equals the unquantized one;
- greedy agreement: fraction of tokens equal to the unquantized model's greedy output, position by position,
  over a few free-form prompts (after a first divergence the continuations usually differ, so this is strict);
- resident weight MB (the runtime's model_weight_bytes gauge) and single-stream decode tokens/s, both as a ratio
  to `none`.

    .venv/bin/python bench/quality.py [--dtype auto|float32|bfloat16] [--gen-tokens 48]

`none` is SmolLM2's GGUF dequantized (its tensors are Q4_1 already); int4 with groups of 32 re-encodes
those blocks almost exactly, see runtime/sloserve_runtime/model/quantization.py.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from sloserve_runtime.engine.core import AsyncEngine
from sloserve_runtime.engine.device import pick_dtype
from sloserve_runtime.engine.engine_config import EngineConfig
from sloserve_runtime.engine.sampling_params import SamplingParams
from sloserve_runtime.model import LoadedModel, load_model
from sloserve_runtime.model.llama import PagedLlama, PrefillSlice, StepInput
from sloserve_runtime.model.model_files import default_model_path
from sloserve_runtime.model.quantization import quantize_model

TEXT = Path(__file__).resolve().parent / "data" / "quality_text.txt"
SCHEMES = ("none", "int8", "int4")
PROMPTS = (
    "Explain in a few sentences why harbours keep records of the tide.",
    "Write a short poem about bread and the sea.",
    "List three things a ferry timetable promises its passengers.",
    "What is the capital of France? Answer and then explain how you know.",
)
CHUNK = 256
BLOCK = 16


def chunked_logits(model: PagedLlama, ids: list[int]) -> Iterator[tuple[int, torch.Tensor]]:
    """Logits at every position of ids, CHUNK tokens per forward, each chunk attending to the cached context."""
    n = len(ids)
    model.allocate_kv_cache(-(-n // BLOCK) + 1, BLOCK)
    slots = torch.arange(n) + BLOCK  # a contiguous "block table" after the null block
    for start in range(0, n, CHUNK):
        end = min(start + CHUNK, n)
        pos = torch.arange(end)
        query = torch.arange(start, end)
        gather, mask = (None, None) if start == 0 else (slots[:end], pos[None, :] <= query[:, None])
        step = StepInput(input_ids=torch.tensor(ids[start:end]), positions=query, slot_mapping=slots[start:end],
                         num_decodes=0, prefills=[PrefillSlice(0, end - start, end, gather, mask)],
                         logits_indices=torch.arange(end - start))
        yield start, model.forward(step)


def score_text(model: PagedLlama, ids: list[int]) -> tuple[float, torch.Tensor]:
    """Mean next-token NLL over the text and the argmax at every position (but the last)."""
    nll = 0.0
    argmax = []
    for start, logits in chunked_logits(model, ids):
        argmax.append(logits.argmax(-1))
        targets = torch.tensor(ids[start + 1:start + 1 + len(logits)])
        logp = torch.log_softmax(logits[:len(targets)], dim=-1)
        nll -= float(logp.gather(1, targets[:, None]).sum())
    return nll / (len(ids) - 1), torch.cat(argmax)[:-1]


async def greedy_outputs(loaded: LoadedModel, scheme: str, dtype: str, max_tokens: int) -> tuple[list[list[int]], float]:
    """Greedy tokens per prompt, and single-stream decode tokens/s (after the first token)."""
    config = EngineConfig(model=str(default_model_path()), dtype=dtype, quantization=scheme, max_model_len=1024,
                          kv_cache_blocks=256, block_size=BLOCK)
    engine = AsyncEngine.from_config(config, preloaded=loaded)
    await engine.start()
    try:
        await engine.warmup()
        tok = loaded.tokenizer
        outputs, decode_time, decode_tokens = [], 0.0, 0
        for i, prompt in enumerate(PROMPTS):
            ids = tok.encode(tok.apply_chat_template([{"role": "user", "content": prompt}]))
            params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
            tokens, first = [], None
            async for out in engine.generate(f"q{i}", ids, params):
                tokens.extend(out.new_token_ids)
                if first is None:
                    first = time.perf_counter()
            decode_time += time.perf_counter() - first
            decode_tokens += len(tokens) - 1
            outputs.append(tokens)
        return outputs, decode_tokens / decode_time
    finally:
        await engine.shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="auto", help="activation dtype (auto: bf16 where the CPU has it)")
    parser.add_argument("--gen-tokens", type=int, default=48, help="greedy tokens per prompt")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(default_model_path())
    dtype = pick_dtype(args.dtype, torch.device("cpu"))
    ids = loaded.tokenizer.encode(TEXT.read_text())
    print(f"SmolLM2-135M-Instruct, {dtype}, text {TEXT.name}: {len(ids)} tokens; "
          f"{len(PROMPTS)} prompts x {args.gen_tokens} greedy tokens; torch threads {torch.get_num_threads()}")
    rows = []
    reference_argmax = reference_greedy = None
    for scheme in SCHEMES:
        model = PagedLlama(loaded.args, loaded.state, torch.device("cpu"), dtype, max_positions=len(ids) + 1)
        size = quantize_model(model, scheme)
        mean_nll, argmax = score_text(model, ids)
        del model
        greedy, tokens_per_s = asyncio.run(greedy_outputs(loaded, scheme, args.dtype, args.gen_tokens))
        if reference_argmax is None:
            reference_argmax, reference_greedy = argmax, greedy
        top1 = float((argmax == reference_argmax).float().mean())
        same = sum(a == b for ref, out in zip(reference_greedy, greedy, strict=True)
                   for a, b in zip(ref, out, strict=True))
        total = sum(len(ref) for ref in reference_greedy)
        rows.append((scheme, math.exp(mean_nll), top1, same / total, size / 1e6, tokens_per_s))
    base_mb, base_tps = rows[0][4], rows[0][5]
    print()
    print("| scheme | perplexity | top-1 agreement | greedy agreement | weights MB (x none) | decode tok/s (x none) |")
    print("|---|---|---|---|---|---|")
    for scheme, ppl, top1, greedy_agree, mb, tps in rows:
        print(f"| {scheme} | {ppl:.2f} | {top1:.1%} | {greedy_agree:.1%} | {mb:.0f} ({mb / base_mb:.2f}x) "
              f"| {tps:.1f} ({tps / base_tps:.2f}x) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
