"""Reading request traces from files: CSV with a header, JSON lines or a JSON array, optionally gzipped.

Public traces name the same three things differently (Azure: TIMESTAMP, ContextTokens, GeneratedTokens;
BurstGPT: Timestamp, Request tokens, Response tokens; Mooncake: timestamp, input_length, output_length), so
columns are found by name (case, spaces and underscores ignored; TIME_NAMES, PROMPT_NAMES, OUTPUT_NAMES),
not by position. Times are ISO dates (any fraction of a second, with or without a zone) or numbers:
seconds, except milliseconds where the field says so (a name ending in "ms"), in a Mooncake-style JSON
"timestamp", or in epoch values too large to be seconds. Requests that share a timestamp are spread
uniformly (seeded) over the trace's tick, since the file does not record finer arrival times. A bad file
fails with its name and line rather than giving a partial trace.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
import re
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from sloserve_operator.simulate.traces import Request, chain_ids

MOONCAKE_BLOCK_TOKENS = 512
TIME_NAMES = ("timestamp", "time", "arrival", "arrivaltime", "arrivaltimestamp", "timestampms", "requesttime",
              "starttime", "created")
PROMPT_NAMES = ("contexttokens", "inputlength", "inputtokens", "prompttokens", "requesttokens", "promptlength",
                "inputlen", "promptlen", "numprompttokens", "ninputtokens")
OUTPUT_NAMES = ("generatedtokens", "outputlength", "outputtokens", "completiontokens", "responsetokens",
                "outputlen", "numoutputtokens", "noutputtokens", "generatedlength")
EPOCH_MS_ABOVE = 1e11  # a number this large is milliseconds since the epoch (seconds would be year 5138)


class TraceError(ValueError):
    """A trace file that cannot be read; the message names the file and line."""


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _pick(names: list[str], wanted: tuple[str, ...]) -> str | None:
    by_key = {_key(name): name for name in names}
    return next((by_key[key] for key in wanted if key in by_key), None)


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix.lower() == ".gz":
        return io.TextIOWrapper(gzip.open(path), encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


def _instant(value: object, milliseconds: bool) -> float | datetime:
    """A timestamp: seconds on some fixed origin, or a naive UTC datetime."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    else:
        text = str(value).strip()
        try:
            number = float(text)
        except ValueError:
            stamp = datetime.fromisoformat(text)  # any fraction of a second, "Z" or an offset
            return stamp.astimezone(UTC).replace(tzinfo=None) if stamp.tzinfo is not None else stamp
    return number / 1000.0 if milliseconds or number > EPOCH_MS_ABOVE else number


def _tokens(value: object) -> int:
    number = float(value)  # "374", 374, "374.0"
    if number != number or number < 0:
        raise ValueError(f"not a token count: {value!r}")
    return max(int(number), 1)


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, str], list[str]]]:
    with _open_text(path) as handle:
        reader = csv.DictReader(handle)
        names = [name.strip() for name in reader.fieldnames or []]
        reader.fieldnames = names
        for row in reader:
            yield reader.line_num, row, names


def _json_rows(path: Path) -> Iterator[tuple[int, dict, list[str]]]:
    with _open_text(path) as handle:
        text = handle.read()
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except ValueError as error:
            raise TraceError(f"{path}: not a JSON array of requests: {error}") from error
        for index, item in enumerate(items, start=1):
            yield index, item, list(item) if isinstance(item, dict) else []
        return
    for line, item_text in enumerate(text.splitlines(), start=1):
        if not item_text.strip():
            continue
        try:
            item = json.loads(item_text)
        except ValueError as error:
            raise TraceError(f"{path}:{line}: not JSON: {error}") from error
        yield line, item, list(item) if isinstance(item, dict) else []


def _read(path: Path, rows: Iterator[tuple[int, dict, list[str]]], json_ms: bool) -> list[tuple]:
    """(time in seconds, prompt, output, prefix hashes) per row, in file order."""
    raw: list[tuple[float, int, int, tuple[int, ...]]] = []
    origin: datetime | None = None  # dates count from the first one, exactly
    columns: tuple[str | None, str | None, str | None] | None = None
    for line, row, names in rows:
        if not isinstance(row, dict):
            raise TraceError(f"{path}:{line}: expected an object with a time, a prompt and an output length")
        if columns is None:
            columns = (_pick(names, TIME_NAMES), _pick(names, PROMPT_NAMES), _pick(names, OUTPUT_NAMES))
            if None in columns:
                raise TraceError(f"{path}:{line}: cannot find a time, prompt-length and output-length field in "
                                 f"{names}; expected e.g. TIMESTAMP,ContextTokens,GeneratedTokens (Azure) or "
                                 "timestamp/input_length/output_length (Mooncake)")
        time_name, prompt_name, output_name = columns
        milliseconds = _key(time_name).endswith("ms") or (json_ms and _key(time_name) == "timestamp")
        try:
            instant = _instant(row[time_name], milliseconds)
            if isinstance(instant, datetime):
                origin = origin or instant
                instant = (instant - origin).total_seconds()
            hashes = chain_ids([int(h) for h in row.get("hash_ids") or ()])
            raw.append((instant, _tokens(row[prompt_name]), _tokens(row[output_name]), hashes))
        except (KeyError, ValueError, TypeError, OverflowError) as error:
            raise TraceError(f"{path}:{line}: cannot parse {time_name}/{prompt_name}/{output_name} in "
                             f"{row!r}: {error}") from error
    if not raw:
        raise TraceError(f"{path}: no requests")
    return raw


def _requests(raw: list[tuple], seed: int, block_tokens: int) -> list[Request]:
    """Arrivals from the trace's start. A trace whose requests share timestamps was written in ticks (Mooncake:
    ~3 s, up to 28 requests a tick): each request then arrives uniformly within its tick."""
    start = min(t for t, *_ in raw)
    counts = Counter(t for t, *_ in raw)
    ticks = sorted(counts)
    gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False) if b > a]
    tick = (min(gaps) if gaps else 1.0) if max(counts.values()) > 1 else 0.0
    rng = random.Random(seed)
    requests = [Request(t - start + (rng.random() * tick if tick else 0.0), prompt, output, prefix=hashes,
                        block_tokens=block_tokens)
                for t, prompt, output, hashes in raw]
    requests.sort(key=lambda r: r.arrival)
    return requests


def load_csv(path: str | Path, seed: int = 0) -> list[Request]:
    """A CSV trace with a header (Azure LLM inference traces, BurstGPT and the like)."""
    path = Path(path)
    return _requests(_read(path, _csv_rows(path), json_ms=False), seed, block_tokens=16)


def load_json(path: str | Path, seed: int = 0) -> list[Request]:
    """JSON lines or a JSON array of requests (Mooncake FAST'25: timestamp in ms, 512-token hash_ids)."""
    path = Path(path)
    return _requests(_read(path, _json_rows(path), json_ms=True), seed, block_tokens=MOONCAKE_BLOCK_TOKENS)


def load_trace(path: str | Path, seed: int = 0) -> list[Request]:
    """By extension (a .gz suffix is unwrapped first): .csv a CSV with a header, .jsonl/.ndjson/.json JSON."""
    path = Path(path)
    suffixes = [s.lower() for s in path.suffixes]
    kind = suffixes[-2] if suffixes[-1:] == [".gz"] and len(suffixes) >= 2 else (suffixes[-1] if suffixes else "")
    if kind == ".csv":
        return load_csv(path, seed=seed)
    if kind in (".jsonl", ".json", ".ndjson"):
        return load_json(path, seed=seed)
    raise TraceError(f"{path}: unknown trace format (expected .csv, .jsonl or .json, optionally .gz)")
