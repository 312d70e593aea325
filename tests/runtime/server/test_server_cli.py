"""`sloserve-runtime` flags: every convention flag reaches EngineConfig / ServerOptions, bad values are
refused before anything loads, and a model that cannot load ends the process with a clear message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sloserve_runtime.cli import build_parser, configs_from_args

pytestmark = pytest.mark.timeout(120)


def parse(*argv: str) -> tuple[Any, Any]:
    return configs_from_args(build_parser().parse_args(list(argv)))


def test_every_flag_reaches_the_configs() -> None:
    config, options = parse(
        "--model", "/models/m.gguf", "--served-model-name", "chat", "--host", "127.0.0.1", "--port", "9000",
        "--grpc-port", "9001", "--device", "cuda:1", "--dtype", "bfloat16", "--threads", "3",
        "--max-batch-size", "8", "--max-batched-tokens", "512", "--max-model-len", "2048", "--block-size", "32",
        "--kv-cache-blocks", "100", "--no-prefix-caching", "--max-queue", "5", "--drain-timeout", "12.5",
        "--slo-ttft-ms", "500", "--slo-itl-ms", "45", "--quantization", "int8", "--speculative-method", "draft",
        "--num-speculative-tokens", "3", "--draft-model", "/models/draft", "--seed", "7", "--log-level", "debug")
    assert (config.model, config.served_model_name, config.device, config.dtype, config.threads) == (
        "/models/m.gguf", "chat", "cuda:1", "bfloat16", 3)
    assert (config.max_batch_size, config.max_batched_tokens, config.max_model_len, config.block_size,
            config.kv_cache_blocks, config.prefix_caching) == (8, 512, 2048, 32, 100, False)
    assert (config.quantization, config.speculative_method, config.num_speculative_tokens, config.draft_model,
            config.seed) == ("int8", "draft", 3, "/models/draft", 7)
    assert (options.host, options.port, options.grpc_port, options.max_queue, options.drain_timeout) == (
        "127.0.0.1", 9000, 9001, 5, 12.5)
    assert (options.slo_ttft_ms, options.slo_itl_ms, options.log_level) == (500, 45, "debug")


def test_defaults_serve_the_bundled_model_without_grpc() -> None:
    config, options = parse()
    assert config.model is None and config.prefix_caching and options.grpc_port == 0


@pytest.mark.parametrize("argv", [
    ["--port", "-1"], ["--max-batch-size", "0"], ["--quantization", "int3"], ["--dtype", "float8"],
    ["--speculative-method", "medusa"], ["--drain-timeout", "-2"], ["--slo-ttft-ms", "0"], ["--threads", "x"],
])
def test_bad_flag_values_exit_2(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse(*argv)
    assert exit_info.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_draft_method_needs_a_draft_model() -> None:
    with pytest.raises(SystemExit, match="--draft-model"):
        parse("--speculative-method", "draft")


def test_console_script_help_lists_the_convention_flags() -> None:
    script = Path(sys.executable).with_name("sloserve-runtime")
    output = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60, check=True).stdout
    for flag in ("--model", "--grpc-port", "--max-queue", "--drain-timeout", "--slo-ttft-ms", "--quantization",
                 "--speculative-method", "--prefix-caching"):
        assert flag in output


def test_a_model_that_cannot_load_exits_1_with_the_reason(runtime_factory: Any, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model.gguf"
    runtime = runtime_factory(missing, wait=False)
    assert runtime.wait_exit(timeout=90) == 1
    assert "no-such-model.gguf" in runtime.log()
