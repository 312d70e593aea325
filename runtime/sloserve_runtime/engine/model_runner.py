"""Step inputs from a schedule: the flat token batch and the attention metadata each backend needs.

Two attention backends read different metadata: the C++ paged-attention kernel (kernels/) takes one block
table and context length per row of the step; the torch path takes padded block tables plus a mask for the
decodes and a gather index plus a causal mask per prefill slice. The engine core and the speculator (which
lays out its own verification rows) both build their steps here.
"""

from __future__ import annotations

import torch

from sloserve_runtime.engine.scheduler import SchedulerOutput
from sloserve_runtime.model.llama import PagedLlama, PrefillSlice, StepInput


class ModelRunner:
    """Builds StepInput for one model's attention backend; holds no per-request state."""

    def __init__(self, model: PagedLlama, block_size: int) -> None:
        self.model = model  # its cpu_kernels flag picks the backend (read at every step: tests flip it)
        self.block_size = block_size
        self.device = model.device

    def build_step(self, plan: SchedulerOutput) -> StepInput:
        """The scheduled chunks as one flat batch; logits rows only for sequences that complete their tokens."""
        bs = self.block_size
        ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        logits_rows: list[int] = []
        decode_tables: list[list[int]] = []
        decode_lens: list[int] = []
        prefills: list[PrefillSlice] = []
        num_decodes = 0
        kernel = self.model.cpu_kernels  # its row tables replace the torch path's decode blocks and slices
        for item in plan.scheduled:
            seq, n = item.seq, item.num_new_tokens
            start, end = seq.num_computed, seq.num_computed + n
            row = len(ids)
            ids.extend(seq.token_slice(start, end))
            positions.extend(range(start, end))
            table = seq.block_ids
            slots.extend(table[p // bs] * bs + p % bs for p in range(start, end))
            if end == seq.num_tokens:
                logits_rows.append(row + n - 1)
            if n == 1:
                num_decodes += 1
                decode_tables.append(table)
                decode_lens.append(end)
            elif not kernel:
                prefills.append(self._prefill_slice(row, start, end, table))
        dev = self.device
        step = StepInput(
            input_ids=torch.tensor(ids, dtype=torch.long, device=dev),
            positions=torch.tensor(positions, dtype=torch.long, device=dev),
            slot_mapping=torch.tensor(slots, dtype=torch.long, device=dev),
            num_decodes=num_decodes,
            prefills=prefills,
            logits_indices=torch.tensor(logits_rows, dtype=torch.long, device=dev),
        )
        if kernel:
            step.row_tables, step.row_lens = self._row_tables(plan)
        elif num_decodes:
            step.decode_blocks, step.decode_mask = self._decode_blocks(decode_tables, decode_lens)
        return step

    def _row_tables(self, plan: SchedulerOutput) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row of the step: its sequence's block table (padded with the null block) and position + 1."""
        bs = self.block_size
        width = max(-(-(item.seq.num_computed + item.num_new_tokens) // bs) for item in plan.scheduled)
        tables, row_seq, lens = [], [], []
        for index, item in enumerate(plan.scheduled):
            table = item.seq.block_ids[:width]
            tables.append(table + [0] * (width - len(table)))
            row_seq.extend([index] * item.num_new_tokens)
            lens.extend(range(item.seq.num_computed + 1, item.seq.num_computed + item.num_new_tokens + 1))
        dev = self.device
        per_seq = torch.tensor(tables, dtype=torch.long, device=dev)
        return per_seq[torch.tensor(row_seq, dtype=torch.long, device=dev)], torch.tensor(lens, dtype=torch.long,
                                                                                         device=dev)

    def _decode_blocks(self, tables: list[list[int]], lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, NB] block tables padded with the null block, and the additive [B, 1, 1, NB*bs] mask."""
        bs = self.block_size
        max_blocks = max(-(-n // bs) for n in lengths)
        padded = [t[:max_blocks] + [0] * (max_blocks - min(len(t), max_blocks)) for t in tables]
        blocks = torch.tensor(padded, dtype=torch.long, device=self.device)
        lens = torch.tensor(lengths, device=self.device)
        padding = torch.arange(max_blocks * bs, device=self.device)[None, :] >= lens[:, None]
        mask = torch.zeros(padding.shape, dtype=torch.float32, device=self.device).masked_fill(padding, float("-inf"))
        return blocks, mask[:, None, None, :]

    def _prefill_slice(self, row: int, start: int, end: int, table: list[int]) -> PrefillSlice:
        n = end - start
        if start == 0:
            return PrefillSlice(row, row + n, end, None, None)
        bs = self.block_size
        pos = torch.arange(end, device=self.device)
        blocks = torch.tensor(table[: -(-end // bs)], dtype=torch.long, device=self.device)
        gather = blocks[pos // bs] * bs + pos % bs
        query_pos = torch.arange(start, end, device=self.device)
        mask = pos[None, :] <= query_pos[:, None]
        return PrefillSlice(row, row + n, end, gather, mask)
