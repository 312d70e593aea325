"""Trace files other than the two shared ones: columns found by name, times in any common form, gzip."""

from __future__ import annotations

import gzip

import pytest
from sloserve_operator.simulate import trace_files


def test_burstgpt_style_csv_with_whole_second_times_spreads_each_second(tmp_path):
    path = tmp_path / "burst.csv"
    path.write_text("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
                    "5,ChatGPT,472,18,490,Conversation log\n5,GPT-4,1020,0,1020,Conversation log\n"
                    "6,ChatGPT,33,120,153,API log\n9,ChatGPT,10,5,15,API log\n")
    requests = trace_files.load_trace(path)
    assert sorted(r.prompt_tokens for r in requests) == [10, 33, 472, 1020]
    assert min(r.output_tokens for r in requests) == 1  # a failed request (0 tokens) still arrives
    assert all(0 <= r.arrival < 5.0 for r in requests)
    assert len({round(r.arrival, 6) for r in requests}) == 4  # the two at second 5 do not arrive in lockstep
    assert trace_files.load_trace(path, seed=1) != requests and trace_files.load_trace(path) == requests


@pytest.mark.parametrize("stamps", [
    ("2024-05-10 00:00:00.009930+00:00", "2024-05-10 02:00:01.509930+02:00"),  # zones: the same instant rules
    ("2024-05-10T00:00:00Z", "2024-05-10T00:00:01.5Z"),
    ("1715299200", "1715299201.5"),  # epoch seconds
    ("1715299200000", "1715299201500"),  # epoch milliseconds
])
def test_times_as_dates_with_or_without_zones_or_epoch_numbers(tmp_path, stamps):
    path = tmp_path / "t.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(f"{s},100,10\n" for s in stamps))
    first, second = trace_files.load_trace(path)
    assert first.arrival == 0.0 and second.arrival == pytest.approx(1.5, abs=1e-6)


def test_json_array_with_other_key_names_and_gzip(tmp_path):
    path = tmp_path / "requests.json.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write('[{"arrival_time": 0.25, "prompt_tokens": 300, "completion_tokens": 20},'
                     ' {"arrival_time": 2.0, "prompt_tokens": 50, "completion_tokens": 7}]')
    requests = trace_files.load_trace(path)
    assert [(r.arrival, r.prompt_tokens, r.output_tokens) for r in requests] == [(0.0, 300, 20), (1.75, 50, 7)]


def test_unreadable_files_name_the_file_the_line_and_what_was_expected(tmp_path):
    columns = tmp_path / "columns.csv"
    columns.write_text("when,prompt,answer\n1,2,3\n")
    with pytest.raises(trace_files.TraceError, match=r"columns.csv:\d: cannot find a time.*'when'"):
        trace_files.load_trace(columns)
    negative = tmp_path / "negative.jsonl"
    negative.write_text('{"timestamp": 0, "input_length": 5, "output_length": 1}\n'
                        '{"timestamp": 1, "input_length": -5, "output_length": 1}\n')
    with pytest.raises(trace_files.TraceError, match="negative.jsonl:2"):
        trace_files.load_trace(negative)
    (tmp_path / "empty.csv").write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n")
    with pytest.raises(trace_files.TraceError, match="no requests"):
        trace_files.load_trace(tmp_path / "empty.csv")
