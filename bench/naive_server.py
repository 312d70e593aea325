"""Naive baseline server: one request at a time through transformers' `generate` with a streamer.

What a team gets by wrapping Hugging Face generate in an HTTP handler: no batching (a lock serializes
requests), no paged KV cache, streaming via a generate() streamer running in a thread. It serves the same
SmolLM2 weights as the runtime (dequantized from the bundled GGUF by the runtime's loader, so tokens match)
on `POST /v1/completions` (OpenAI streaming subset) and `GET /health`.

The streamer here hands over every token as it is produced (transformers' TextIteratorStreamer buffers
text up to word boundaries, which would make inter-token latency look like inter-word latency); the text
of each chunk is the incremental decode of the tokens so far.

    python bench/naive_server.py --port 8100 [--dtype float32|bfloat16] [--threads N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import queue
import threading
import time
import uuid

import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from sloserve_runtime.model.loader import load_model
from sloserve_runtime.model.model_files import resolve_model_path
from transformers import AutoConfig, LlamaForCausalLM
from transformers.generation.streamers import BaseStreamer

_DONE = object()


class TokenStreamer(BaseStreamer):
    """Receives token ids from generate(); the first put() is the prompt, which is skipped."""

    def __init__(self) -> None:
        self.queue: queue.Queue = queue.Queue()
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        for token in value.reshape(-1).tolist():
            self.queue.put(int(token))

    def end(self) -> None:
        self.queue.put(_DONE)


def build_model(model: str | None, dtype: torch.dtype):
    loaded = load_model(resolve_model_path(model))
    config = AutoConfig.for_model(**loaded.args.to_hf_config())
    with torch.device("meta"):
        hf = LlamaForCausalLM(config)
    hf.load_state_dict({k: v.to(dtype) for k, v in loaded.state.items()}, strict=False, assign=True)
    if config.tie_word_embeddings:
        hf.lm_head.weight = hf.model.embed_tokens.weight
    hf.model.rotary_emb = type(hf.model.rotary_emb)(config)
    return hf.eval(), loaded.tokenizer, loaded.name


def make_app(model, tokenizer, name: str) -> FastAPI:
    app = FastAPI()
    lock = asyncio.Lock()  # the naive part: one generate() at a time

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await request.json()
        prompt = body["prompt"]
        ids = prompt if isinstance(prompt, list) else tokenizer.encode(prompt)
        max_tokens = int(body.get("max_tokens", 16))
        rid = f"cmpl-{uuid.uuid4().hex}"

        async def events():
            async with lock:
                streamer = TokenStreamer()
                kwargs = dict(input_ids=torch.tensor([ids]), max_new_tokens=max_tokens, do_sample=False,
                              streamer=streamer, pad_token_id=0)
                if body.get("ignore_eos") or body.get("logit_bias"):
                    kwargs["min_new_tokens"] = max_tokens  # EOS banned, as the benchmark asks
                worker = threading.Thread(target=lambda: model.generate(**kwargs), daemon=True)
                worker.start()
                tokens: list[int] = []
                sent = ""
                while True:
                    token = await asyncio.to_thread(streamer.queue.get)
                    if token is _DONE:
                        break
                    tokens.append(token)
                    text = tokenizer.decode(tokens)
                    delta, sent = text[len(sent):], text
                    chunk = {"id": rid, "object": "text_completion", "created": int(time.time()), "model": name,
                             "choices": [{"index": 0, "text": delta, "finish_reason": None}]}
                    yield f"data: {json.dumps(chunk)}\n\n"
                await asyncio.to_thread(worker.join)
                usage = {"prompt_tokens": len(ids), "completion_tokens": len(tokens),
                         "total_tokens": len(ids) + len(tokens)}
                final = {"id": rid, "object": "text_completion", "created": int(time.time()), "model": name,
                         "choices": [{"index": 0, "text": "", "finish_reason": "length"}], "usage": usage}
                yield f"data: {json.dumps(final)}\n\n"
                yield "data: [DONE]\n\n"

        if not body.get("stream"):
            return JSONResponse({"error": {"message": "this baseline only streams", "type": "invalid_request_error"}},
                                status_code=400)
        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="bfloat16")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer, name = build_model(args.model, getattr(torch, args.dtype))
    uvicorn.run(make_app(model, tokenizer, name), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
