"""`make bench-speculative`: ITL and output tokens/s with and without speculative decoding, on SmolLM2.

Two workloads, all greedy, same prompts for every method, measured in one run:
- quote: the prompt holds a passage and asks for it back word for word (n-gram lookup finds long matches);
- free: open-ended writing (lookup rarely finds anything).
Methods: none (the baseline), ngram (prompt lookup, k tokens), draft (a draft model, k tokens). Printed per
workload and method: output tokens/s and its ratio to `none`, mean ITL (decode time per output token), p95 of
the per-token ITL as the runtime's histogram sees it (a step that emits m tokens after a gap g counts m times
g/m), the acceptance rate (accepted / proposed draft tokens, vLLM's counters), accepted tokens per drafting
step, and whether the text equals the baseline's (it must: greedy speculation is exact).

The draft model: there is no smaller SmolLM2 with the same tokenizer on this machine and nothing can be
downloaded, so the draft is a truncated copy of the target made by `write_truncated_draft` (keep the first N
decoder layers, plus optionally the last M, with the same embeddings, final norm and tokenizer), written as a
Hugging Face directory that `--draft-model` accepts:

    .venv/bin/python bench/speculative.py --write-draft /tmp/smollm2-draft --draft-layers 8
    sloserve-runtime --speculative-method draft --draft-model /tmp/smollm2-draft --num-speculative-tokens 4

Run the benchmark (it writes the draft to a temporary directory unless --draft-model is given):

    .venv/bin/python bench/speculative.py [--k 4] [--max-tokens 128] [--streams 1] [--draft-layers 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from sloserve_runtime.engine.core import AsyncEngine
from sloserve_runtime.engine.engine_config import EngineConfig
from sloserve_runtime.engine.observer import EngineObserver
from sloserve_runtime.engine.sampling_params import SamplingParams
from sloserve_runtime.model import LoadedModel, load_model
from sloserve_runtime.model.model_files import default_model_path

TEXT = Path(__file__).resolve().parent / "data" / "quality_text.txt"
FREE_PROMPTS = (
    "Write a short story about a lighthouse keeper who finds an old map.",
    "Describe, step by step, how to plan a small vegetable garden.",
    "Write a letter to a friend about a trip to the mountains.",
    "Explain why the sky changes colour at sunset, for a curious child.",
)


def write_truncated_draft(out_dir: Path, num_layers: int, keep_last: int = 0,
                          source: LoadedModel | None = None) -> Path:
    """A draft model: the bundled SmolLM2's first `num_layers` decoder layers (plus its last `keep_last`),
    its embeddings, final norm and tokenizer, as config.json + model.safetensors + tokenizer files."""
    loaded = source or load_model(default_model_path())
    args = loaded.args
    total = args.num_layers
    keep = list(range(num_layers)) + [i for i in range(total - keep_last, total) if i >= num_layers]
    if not keep or max(keep) >= total:
        raise ValueError(f"cannot keep layers {keep} of a {total}-layer model")
    state: dict[str, torch.Tensor] = {}
    for name, tensor in loaded.state.items():
        if name.startswith("model.layers."):
            _, _, index, rest = name.split(".", 3)
            if int(index) not in keep:
                continue
            name = f"model.layers.{keep.index(int(index))}.{rest}"
        state[name] = tensor.to(torch.bfloat16).contiguous()
    out_dir.mkdir(parents=True, exist_ok=True)
    config = args.to_hf_config()
    config["num_hidden_layers"] = len(keep)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    save_file(state, str(out_dir / "model.safetensors"))
    tokenizer = loaded.tokenizer
    tokenizer.backend.save(str(out_dir / "tokenizer.json"))
    (out_dir / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "add_bos_token": False,
        "chat_template": tokenizer.chat_template.source}, indent=2))
    return out_dir


class SpecCounts(EngineObserver):
    def __init__(self) -> None:
        self.drafts = self.draft_tokens = self.accepted = 0

    def on_speculation(self, drafts: int, draft_tokens: int, accepted_tokens: int) -> None:
        self.drafts += drafts
        self.draft_tokens += draft_tokens
        self.accepted += accepted_tokens


@dataclass
class Result:
    tokens_per_s: float
    mean_ttft_ms: float
    mean_itl_ms: float
    p95_itl_ms: float
    acceptance: float | None
    accepted_per_draft: float | None
    outputs: list[list[int]]


def workload_prompts(loaded: LoadedModel, name: str) -> list[list[int]]:
    tok = loaded.tokenizer
    if name == "quote":
        paragraphs = [p for p in TEXT.read_text().split("\n\n") if len(p) > 400]
        texts = [f"Here is a paragraph:\n\n{p}\n\nRepeat the paragraph above exactly, word for word."
                 for p in paragraphs[:4]]
    else:
        texts = list(FREE_PROMPTS)
    return [tok.encode(tok.apply_chat_template([{"role": "user", "content": t}])) for t in texts]


async def measure(loaded: LoadedModel, config: EngineConfig, prompts: list[list[int]], max_tokens: int,
                  streams: int) -> Result:
    counts = SpecCounts()
    engine = AsyncEngine.from_config(config, observer=counts, preloaded=loaded)
    await engine.start()
    try:
        await engine.warmup()
        counts.__init__()
        itls: list[float] = []
        mean_itls: list[float] = []
        ttfts: list[float] = []
        outputs: dict[int, list[int]] = {}
        semaphore = asyncio.Semaphore(streams)

        async def one(i: int, prompt: list[int]) -> None:
            async with semaphore:
                sent = time.perf_counter()
                params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
                tokens: list[int] = []
                last = first = None
                async for out in engine.generate(f"b{i}", prompt, params):
                    now = time.perf_counter()
                    if last is not None and out.new_token_ids:
                        share = (now - last) / len(out.new_token_ids)
                        itls.extend([share] * len(out.new_token_ids))
                    if out.new_token_ids:
                        first = first or now
                        last = now
                    tokens.extend(out.new_token_ids)
                mean_itls.append((last - first) / max(len(tokens) - 1, 1))
                ttfts.append(first - sent)
                outputs[i] = tokens

        start = time.perf_counter()
        await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))
        wall = time.perf_counter() - start
    finally:
        await engine.shutdown()
    total = sum(len(t) for t in outputs.values())
    itls.sort()
    acceptance = counts.accepted / counts.draft_tokens if counts.draft_tokens else None
    per_draft = counts.accepted / counts.drafts if counts.drafts else None
    return Result(total / wall, 1000 * statistics.mean(ttfts), 1000 * statistics.mean(mean_itls), 1000 * itls[int(0.95 * (len(itls) - 1))],
                  acceptance, per_draft, [outputs[i] for i in range(len(prompts))])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, default=4, help="--num-speculative-tokens for both methods")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--streams", type=int, default=1, help="concurrent requests (continuous batching)")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--draft-model", help="use this draft instead of writing a truncated SmolLM2")
    parser.add_argument("--draft-layers", type=int, default=8, help="truncated draft: first N layers")
    parser.add_argument("--draft-keep-last", type=int, default=0, help="truncated draft: also the last M layers")
    parser.add_argument("--write-draft", type=Path, help="only write the truncated draft to this directory")
    parser.add_argument("--workloads", default="quote,free")
    parser.add_argument("--repeats", type=int, default=3, help="runs per method; the median by tok/s is shown")
    parser.add_argument("--methods", default="none,ngram,draft")
    args = parser.parse_args()
    loaded = load_model(default_model_path())
    if args.write_draft:
        write_truncated_draft(args.write_draft, args.draft_layers, args.draft_keep_last, loaded)
        print(f"wrote {args.write_draft}")
        return 0
    methods = args.methods.split(",")
    with tempfile.TemporaryDirectory(prefix="sloserve-draft-") as tmp:
        draft = args.draft_model
        if "draft" in methods and not draft:
            draft = str(write_truncated_draft(Path(tmp) / "draft", args.draft_layers, args.draft_keep_last, loaded))
        draft_desc = args.draft_model or f"SmolLM2 truncated to {args.draft_layers}+{args.draft_keep_last} layers"
        print(f"SmolLM2-135M-Instruct, dtype {args.dtype}, k={args.k}, {args.max_tokens} greedy tokens per request, "
              f"{args.streams} concurrent stream(s), torch threads {torch.get_num_threads()}; draft: {draft_desc}; "
              f"median of {args.repeats} interleaved runs (first method = baseline)")
        print("p95 ITL charges each token of a multi-token step an equal share of its gap, as /metrics does")
        print()
        print("| workload | method | tok/s (x none) | mean TTFT ms | mean ITL ms | p95 ITL ms | acceptance | "
              "accepted/draft | same text |")
        print("|---|---|---|---|---|---|---|---|---|")
        for workload in args.workloads.split(","):
            prompts = workload_prompts(loaded, workload)
            runs: dict[str, list[Result]] = {method: [] for method in methods}
            for _ in range(args.repeats):  # methods interleaved, so machine noise hits them alike
                for method in methods:
                    config = EngineConfig(model=str(default_model_path()), dtype=args.dtype, max_model_len=2048,
                                          kv_cache_blocks=512, block_size=16, max_batch_size=max(args.streams, 1),
                                          speculative_method=method, num_speculative_tokens=args.k,
                                          draft_model=draft if method == "draft" else None)
                    runs[method].append(asyncio.run(measure(loaded, config, prompts, args.max_tokens, args.streams)))
            results = {m: sorted(rs, key=lambda r: r.tokens_per_s)[len(rs) // 2] for m, rs in runs.items()}
            baseline = results[methods[0]]
            for method, result in results.items():
                acc = "-" if result.acceptance is None else f"{result.acceptance:.0%}"
                per = "-" if result.accepted_per_draft is None else f"{result.accepted_per_draft:.2f}"
                same = all(r.outputs == baseline.outputs for r in runs[method])
                print(f"| {workload} | {method} | {result.tokens_per_s:.1f} "
                      f"({result.tokens_per_s / baseline.tokens_per_s:.2f}x) | {result.mean_ttft_ms:.0f} | "
                      f"{result.mean_itl_ms:.1f} | "
                      f"{result.p95_itl_ms:.1f} | {acc} | {per} | {'yes' if same else 'NO'} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
