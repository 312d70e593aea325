"""Model correctness: our paged forward against transformers' own Llama on the same weights.

The SmolLM2 parity check dequantizes the bundled GGUF once (a few seconds) and compares greedy tokens in
fp32, where both sides compute the same math; bf16 is the serving dtype but rounds differently per kernel.
"""

from __future__ import annotations

import asyncio

import pytest
import torch
from bundled_model import requires_smollm2
from sloserve_runtime.engine.core import AsyncEngine
from sloserve_runtime.engine.engine_config import EngineConfig
from sloserve_runtime.engine.sampling_params import SamplingParams
from sloserve_runtime.model.gguf_loader import unpermute_rope_rows
from sloserve_runtime.model.loader import load_model
from sloserve_runtime.model.model_args import ModelArgs
from sloserve_runtime.model.model_files import default_model_path
from sloserve_runtime.model.rope import inverse_frequencies
from sloserve_runtime.testing import make_tiny_model

transformers = pytest.importorskip("transformers")



def hf_reference(args: ModelArgs, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    cfg_dict = args.to_hf_config()
    cls_name = cfg_dict["architectures"][0]
    config = transformers.AutoConfig.for_model(**cfg_dict)
    with torch.device("meta"):  # skip random init: every weight is assigned below
        model = getattr(transformers, cls_name)(config)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    assert not unexpected
    assert set(missing) <= {"lm_head.weight"}  # tied to the embedding
    if "lm_head.weight" in missing:
        model.lm_head.weight = model.model.embed_tokens.weight
    model.model.rotary_emb = type(model.model.rotary_emb)(config)  # buffers were created on meta
    return model.eval()


def hf_greedy(model: torch.nn.Module, prompt: list[int], n: int) -> list[int]:
    with torch.inference_mode():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False, eos_token_id=None,
                             pad_token_id=0, min_new_tokens=n)
    return out[0, len(prompt):].tolist()


async def engine_greedy(loaded, prompts: list[list[int]], n: int, **cfg) -> list[list[int]]:
    config = EngineConfig(dtype="float32", max_model_len=512, kv_cache_blocks=128, **cfg)
    engine = AsyncEngine.from_config(config, preloaded=loaded)
    await engine.start()
    params = SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True)

    async def one(i: int, prompt: list[int]) -> list[int]:
        tokens: list[int] = []
        async for out in engine.generate(f"r{i}", prompt, params):
            tokens.extend(out.new_token_ids)
        return tokens

    try:
        return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts))))
    finally:
        await engine.shutdown()


def test_unpermute_inverts_llama_cpp_permutation():
    w = torch.arange(8 * 3 * 2, dtype=torch.float32).reshape(8 * 2, 3).numpy()
    n_head = 2
    permuted = w.reshape(n_head, 2, w.shape[0] // n_head // 2, 3).swapaxes(1, 2).reshape(w.shape)
    assert (unpermute_rope_rows(permuted, n_head) == w).all()


def test_llama3_rope_scaling_keeps_high_frequencies_and_scales_low():
    base = inverse_frequencies(128, 500000.0, None)
    scaled = inverse_frequencies(128, 500000.0, {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    assert torch.equal(scaled[:4], base[:4])
    assert torch.allclose(scaled[-4:], base[-4:] / 8.0)


@pytest.mark.parametrize("bias", [False, True], ids=["llama", "qwen2-bias"])
def test_tiny_model_matches_transformers_with_batching_and_chunked_prefill(tmp_path, bias):
    path = make_tiny_model(tmp_path / "tiny", seed=3, attention_bias=bias)
    loaded = load_model(path)
    reference = hf_reference(loaded.args, loaded.state)
    prompts = [loaded.tokenizer.encode(t) for t in
               ("The quick brown fox jumps over the lazy dog " * 6, "Hello", "1 2 3 4 5 6 7 8 9 10 11 12")]
    expected = [hf_greedy(reference, p, 12) for p in prompts]
    # max_batched_tokens=16 forces chunked prefill of the long prompt alongside the others' decodes.
    got = asyncio.run(engine_greedy(loaded, prompts, 12, max_batched_tokens=16, block_size=4))
    assert got == expected


@pytest.mark.slow
@requires_smollm2
def test_smollm2_gguf_greedy_matches_transformers():
    loaded = load_model(default_model_path())
    assert loaded.args.num_layers == 30 and loaded.args.tie_word_embeddings
    reference = hf_reference(loaded.args, loaded.state)
    tok = loaded.tokenizer
    prompts = [tok.encode(tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}])),
               tok.encode("def fibonacci(n):\n    ")]
    expected = [hf_greedy(reference, p, 16) for p in prompts]
    got = asyncio.run(engine_greedy(loaded, prompts, 16))
    assert got == expected
    assert "Paris" in tok.decode(got[0])
