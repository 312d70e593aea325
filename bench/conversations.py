"""The live routing check's workload: multi-turn conversations under one shared system prompt, and a control
with the same arrival times and prompt lengths but no prefix any two requests share.

Turn k's prompt is the system prompt, every earlier turn (user text and a fixed assistant reply) and turn k's
user text, so it extends turn k-1's prompt as a string: a replica that served turn k-1 holds all of it but the
last partial 16-token block in its prefix cache. The prompts are plain completions text (the runtime applies
no chat template to /v1/completions, so what is sent is what is tokenized and hashed). Seeded: the same
arguments give the same requests.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from sloserve_operator.load_client import WORDS


@dataclass(frozen=True)
class Turn:
    at: float  # seconds after the start of the replay
    prompt: str
    max_tokens: int
    conversation: int
    turn: int


@dataclass(frozen=True)
class Shape:
    conversations: int = 24
    turns: int = 5
    system_words: int = 200
    user_words: int = 48
    reply_words: int = 128
    output_tokens: int = 16
    spread: float = 30.0  # conversations start uniformly within this many seconds
    turn_gap: float = 8.0  # mean seconds between a conversation's turns (jittered +-25%)


def _words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(count))


def shared_prefix(shape: Shape, seed: int = 0) -> list[Turn]:
    """Conversations whose turns extend the previous turn, all under one system prompt; sorted by time."""
    rng = random.Random(seed)
    system = "System: you are a helpful assistant. " + _words(rng, shape.system_words)
    turns: list[Turn] = []
    for conversation in range(shape.conversations):
        at = rng.uniform(0.0, shape.spread)
        history = system
        for turn in range(shape.turns):
            user = f"\nUser {conversation}: " + _words(rng, shape.user_words)
            turns.append(Turn(at, history + user + "\nAssistant:", shape.output_tokens, conversation, turn))
            history += user + "\nAssistant: " + _words(rng, shape.reply_words)
            at += shape.turn_gap * rng.uniform(0.75, 1.25)
    return sorted(turns, key=lambda t: t.at)


def no_reuse_control(turns: list[Turn], seed: int = 0) -> list[Turn]:
    """The same requests (times, word counts, outputs) with fresh text each: no shared leading block."""
    rng = random.Random(seed + 1)
    control = []
    for index, turn in enumerate(turns):
        words = len(turn.prompt.split())
        control.append(Turn(turn.at, f"Request {index}: " + _words(rng, max(words - 2, 1)), turn.max_tokens,
                            turn.conversation, turn.turn))
    return control
