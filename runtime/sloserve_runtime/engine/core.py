"""Async engine: requests in, token streams out, one batched model step at a time.

The event loop owns the request queues; each step (schedule, forward, sample) runs on the engine's compute
thread (compute_thread.py: the same thread that loaded the weights, for the sake of torch's OpenMP team) so
HTTP streaming, /health and new requests stay responsive while the model computes.
New requests and aborts are handed to the step thread through deques and take effect at the next step.
Timestamps (arrival_time) use time.monotonic().
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator

import torch

from sloserve_runtime.engine.compute_thread import ComputeThread
from sloserve_runtime.engine.detokenizer import IncrementalDetokenizer
from sloserve_runtime.engine.device import pick_device, pick_dtype, plan_kv_blocks
from sloserve_runtime.engine.engine_config import EngineConfig
from sloserve_runtime.engine.kv_cache import BlockAllocator
from sloserve_runtime.engine.model_runner import ModelRunner
from sloserve_runtime.engine.observer import EngineObserver
from sloserve_runtime.engine.outputs import EngineError, RequestOutput
from sloserve_runtime.engine.sampler import sample
from sloserve_runtime.engine.sampling_params import InvalidParameter, SamplingParams
from sloserve_runtime.engine.scheduler import Scheduler, SchedulerOutput
from sloserve_runtime.engine.sequence import Sequence, Status
from sloserve_runtime.engine.speculative import Speculator, build_speculator
from sloserve_runtime.model import LoadedModel, load_model
from sloserve_runtime.model.llama import PagedLlama, StepInput
from sloserve_runtime.model.model_files import resolve_model_path
from sloserve_runtime.model.quantization import check_supported, quantize_model
from sloserve_runtime.model.tokenizer import Tokenizer

log = logging.getLogger(__name__)


class EngineCore:
    """The synchronous part: scheduling, the model step, sampling, stop checks. Used from one thread."""

    def __init__(self, model: PagedLlama, tokenizer: Tokenizer, config: EngineConfig, num_blocks: int,
                 max_model_len: int, observer: EngineObserver) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.max_model_len = max_model_len
        self.observer = observer
        self.block_size = config.block_size
        self.allocator = BlockAllocator(num_blocks, config.block_size, config.prefix_caching)
        self.scheduler = Scheduler(self.allocator, config.max_batch_size, config.max_batched_tokens)
        self.eos_ids = set(tokenizer.eos_token_ids)
        self.device = model.device
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self.sequences: dict[str, Sequence] = {}
        self.inbox: deque[Sequence] = deque()
        self.aborts: deque[str] = deque()
        self.steps = 0
        self.runner = ModelRunner(model, config.block_size)
        # The public hook for speculative decoding: given each step's plan first; None from it = plain step.
        self.speculator: Speculator | None = None

    # ---- one step -------------------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        outputs = self._take_inbox()
        plan = self.scheduler.schedule()
        now = time.monotonic()
        for queried, hit in plan.prefix_lookups:
            self.observer.on_prefix_cache(queried, hit)
        for seq in plan.preempted:
            self.observer.on_preemption(seq.request_id)
        for seq in plan.admitted:
            if not seq.scheduled_once:
                seq.scheduled_once = True
                self.observer.on_scheduled(seq.request_id, max(0.0, now - seq.arrival_time))
        if plan.scheduled:
            outputs.extend(self._run(plan))
            self.steps += 1
        self.observer.on_step(len(self.scheduler.running), len(self.scheduler.waiting) + len(self.inbox),
                              self.allocator.usage)
        return outputs

    def has_work(self) -> bool:
        return bool(self.inbox or self.aborts or self.scheduler.has_work())

    def _take_inbox(self) -> list[RequestOutput]:
        outputs = []
        while self.inbox:
            seq = self.inbox.popleft()
            self.sequences[seq.request_id] = seq
            self.scheduler.add(seq)
        while self.aborts:
            seq = self.sequences.get(self.aborts.popleft())
            if seq is not None and seq.status != Status.FINISHED:
                outputs.append(self._finish(seq, "abort", ""))
        return outputs

    def _run(self, plan: SchedulerOutput) -> list[RequestOutput]:
        if self.speculator is not None:
            outputs = self.speculator.run(self, plan)  # None: nothing to speculate this step
            if outputs is not None:
                return outputs
        step = self.build_step(plan)
        logits = self.model.forward(step)
        sampling = self.scheduler.postprocess(plan.scheduled)
        if not sampling:
            return []
        tokens = sample(logits, sampling, self.eos_ids, self.generator)
        now = time.monotonic()
        return [self.append_token(seq, token, now) for seq, token in zip(sampling, tokens, strict=True)]

    def build_step(self, plan: SchedulerOutput) -> StepInput:
        return self.runner.build_step(plan)

    # ---- outputs and stopping -------------------------------------------------------------------------
    def append_token(self, seq: Sequence, token: int, now: float) -> RequestOutput:
        p = seq.params
        first = not seq.output_token_ids
        seq.output_token_ids.append(token)
        if first:
            self.observer.on_first_token(seq.request_id, now - seq.arrival_time)
        else:
            self.observer.on_token_gap(seq.request_id, now - (seq.last_token_time or now), 1)
        seq.last_token_time = now
        n_out = len(seq.output_token_ids)
        reason = None
        text_ids = seq.output_token_ids
        if n_out >= p.min_tokens:
            if token in p.stop_token_ids or (token in self.eos_ids and not p.ignore_eos):
                reason = "stop"
                text_ids = seq.output_token_ids[:-1]
        if seq.detokenizer is None:
            seq.detokenizer = IncrementalDetokenizer(self.tokenizer)
        text = seq.detokenizer.update(text_ids)
        if reason is None and p.stop:
            cut = _find_stop(text, p.stop, max(0, seq.emitted_text_len - _longest(p.stop)))
            if cut is not None:
                text = text[:cut]
                reason = "stop"
        if reason is None and (n_out >= p.max_tokens or seq.num_tokens >= self.max_model_len):
            reason = "length"
        if reason is not None:
            return self._finish(seq, reason, text[seq.emitted_text_len:], [token])
        safe = len(text)
        if text.endswith("\ufffd"):
            safe = len(text.rstrip("\ufffd"))  # an incomplete UTF-8 sequence: wait for its next bytes
        if p.stop:
            safe = min(safe, len(text) - _longest(p.stop) + 1)
        delta = text[seq.emitted_text_len:safe] if safe > seq.emitted_text_len else ""
        seq.emitted_text_len += len(delta)
        return RequestOutput(seq.request_id, [token], delta, False, None, len(seq.prompt_token_ids), n_out,
                             seq.num_cached_prompt)

    def _finish(self, seq: Sequence, reason: str, delta: str, new_tokens: list[int] | None = None) -> RequestOutput:
        self.scheduler.finish(seq, reason)
        self.sequences.pop(seq.request_id, None)
        now = time.monotonic()
        n_out = len(seq.output_token_ids)
        self.observer.on_finished(seq.request_id, reason, now - seq.arrival_time, len(seq.prompt_token_ids), n_out)
        seq.emitted_text_len += len(delta)
        return RequestOutput(seq.request_id, new_tokens or [], delta, True, reason, len(seq.prompt_token_ids),
                             n_out, seq.num_cached_prompt)

    def abort_all(self) -> list[RequestOutput]:
        outputs = []
        while self.inbox:
            seq = self.inbox.popleft()
            self.sequences[seq.request_id] = seq
        for seq in list(self.sequences.values()):
            if seq.status == Status.FINISHED:
                continue
            if seq.status == Status.WAITING and seq not in self.scheduler.waiting:
                seq.status = Status.FINISHED  # never reached the scheduler
                self.sequences.pop(seq.request_id, None)
                outputs.append(RequestOutput(seq.request_id, [], "", True, "abort", len(seq.prompt_token_ids),
                                             len(seq.output_token_ids), 0))
                continue
            outputs.append(self._finish(seq, "abort", ""))
        return outputs


def _longest(stops: list[str]) -> int:
    return max((len(s) for s in stops), default=0)


def _find_stop(text: str, stops: list[str], search_from: int) -> int | None:
    best = None
    for s in stops:
        if not s:
            continue
        i = text.find(s, search_from)
        if i >= 0 and (best is None or i < best):
            best = i
    return best


class AsyncEngine:
    """asyncio front of EngineCore: generate() streams RequestOutput; closing the stream aborts."""

    def __init__(self, core: EngineCore, model_name: str, compute: ComputeThread | None = None) -> None:
        self.core = core
        # Step on the thread that built the engine when that is a compute thread (the server loads there).
        self.compute = compute or ComputeThread.current() or ComputeThread("sloserve-engine")
        self.model_name = model_name
        self.max_model_len = core.max_model_len
        self.tokenizer = core.tokenizer
        self._queues: dict[str, asyncio.Queue[RequestOutput | BaseException]] = {}
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @classmethod
    def from_config(cls, config: EngineConfig, observer: EngineObserver | None = None,
                    preloaded: LoadedModel | None = None) -> AsyncEngine:
        """Load weights and size the KV pool (blocking; seconds for SmolLM2). `preloaded` skips reading
        config.model again (tests that also hand the same weights to a reference implementation).

        The work runs on a compute thread (the caller's, or a new one) that then runs every step."""
        compute = ComputeThread.current()
        if compute is None:
            compute = ComputeThread("sloserve-engine")
            return compute.submit(lambda: cls.from_config(config, observer, preloaded)).result()
        device = pick_device(config.device)
        dtype = pick_dtype(config.dtype, device)
        check_supported(config.quantization, device)  # e.g. fp8 on a CPU: refuse before loading
        if config.threads and device.type == "cpu":
            torch.set_num_threads(config.threads)
        path = resolve_model_path(config.model) if preloaded is None else config.model
        loaded = preloaded or load_model(path)
        max_model_len = min(config.max_model_len, loaded.args.max_position_embeddings)
        model = PagedLlama(loaded.args, loaded.state, device, dtype, max_positions=max_model_len)
        weight_bytes = quantize_model(model, config.quantization)
        model.prepack_weights()
        if preloaded is None:
            del loaded.state  # the model holds its own (fused, cast) copies
        num_blocks = plan_kv_blocks(config, device, model.kv_bytes_per_token(), max_model_len)
        model.allocate_kv_cache(num_blocks, config.block_size)
        core = EngineCore(model, loaded.tokenizer, config, num_blocks, max_model_len,
                          observer or EngineObserver())
        core.speculator = build_speculator(config, core)
        log.info("loaded %s on %s (%s), %d KV blocks of %d tokens", path, device, dtype, num_blocks - 1,
                 config.block_size)
        engine = cls(core, config.served_model_name or loaded.name)
        engine.weight_bytes = weight_bytes  # the server's model_weight_bytes gauge
        return engine

    # ---- lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is None:
            if self.compute.closed:
                self.compute = ComputeThread("sloserve-engine")
            self._wake = asyncio.Event()
            self._stopping = False
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="sloserve-engine")

    async def warmup(self) -> None:
        """One real prefill and decode step, so the first user request does not pay for lazy init."""
        prompt = self.tokenizer.encode("Hello, warm-up.") or [0]
        params = SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True)
        async for _ in self.generate(f"warmup-{time.monotonic_ns()}", prompt, params):
            pass

    async def shutdown(self) -> None:
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        self.compute.close()  # queued work still finishes; a later start() gets a fresh thread

    async def _loop(self) -> None:
        assert self._wake is not None
        core = self.core
        while not self._stopping:
            if not core.has_work():
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                outputs = await self.compute.call(core.step)
            except Exception as exc:  # a bug or device error: fail the in-flight requests, keep serving
                log.exception("engine step failed; aborting in-flight requests")
                self._fail_all(exc)
                continue
            self._deliver(outputs)
        self._deliver(core.abort_all())

    def _deliver(self, outputs: list[RequestOutput]) -> None:
        for out in outputs:
            queue = self._queues.get(out.request_id)
            if queue is not None:
                queue.put_nowait(out)

    def _fail_all(self, exc: BaseException) -> None:
        self.core.abort_all()
        for queue in self._queues.values():
            queue.put_nowait(EngineError(f"engine step failed: {exc}"))

    # ---- requests -------------------------------------------------------------------------------------
    async def generate(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams,
                       arrival_time: float | None = None) -> AsyncIterator[RequestOutput]:
        """Stream outputs for one request; leaving the loop early (or cancelling) aborts it."""
        if self._task is None:
            raise EngineError("engine not started (await engine.start() first)")
        if self._stopping:
            raise EngineError("engine is shutting down")
        if request_id in self._queues:
            raise InvalidParameter("request_id", f"request id {request_id!r} is already in flight")
        params.validate()
        if not prompt_token_ids:
            raise InvalidParameter("prompt", "the prompt is empty")
        if len(prompt_token_ids) >= self.max_model_len:
            raise InvalidParameter("prompt", f"the prompt has {len(prompt_token_ids)} tokens; this model "
                                   f"accepts at most {self.max_model_len - 1}")
        vocab = self.core.model.args.vocab_size
        if max(prompt_token_ids) >= vocab or min(prompt_token_ids) < 0:
            raise InvalidParameter("prompt", f"token ids must be in [0, {vocab})")
        for token in params.logit_bias:
            if not 0 <= int(token) < vocab:
                raise InvalidParameter("logit_bias", f"token id {token} out of range [0, {vocab})")
        seq = Sequence(request_id, list(prompt_token_ids), params,
                       arrival_time if arrival_time is not None else time.monotonic())
        if params.seed is not None:
            seq.generator = torch.Generator(device=self.core.device).manual_seed(params.seed)
        queue: asyncio.Queue[RequestOutput | BaseException] = asyncio.Queue()
        self._queues[request_id] = queue
        self.core.inbox.append(seq)
        assert self._wake is not None
        self._wake.set()
        finished = False
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                finished = item.finished
                yield item
                if finished:
                    return
        finally:
            self._queues.pop(request_id, None)
            if not finished:
                self.abort(request_id)

    def abort(self, request_id: str) -> None:
        """Stop a request; its blocks are freed at the start of the next step."""
        self.core.aborts.append(request_id)
        if self._wake is not None:
            self._wake.set()

    # ---- gauges ---------------------------------------------------------------------------------------
    @property
    def num_running(self) -> int:
        return len(self.core.scheduler.running)

    @property
    def num_waiting(self) -> int:
        return len(self.core.scheduler.waiting) + len(self.core.inbox)

    @property
    def kv_cache_usage(self) -> float:
        return self.core.allocator.usage

    @property
    def num_free_blocks(self) -> int:
        return self.core.allocator.num_free

    @property
    def num_total_blocks(self) -> int:
        return self.core.allocator.num_usable
