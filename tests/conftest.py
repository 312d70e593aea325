"""Fixtures shared across test packages."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def cached_k8s_schemas() -> Iterator[None]:
    """kubernetes-validate re-reads its JSON schemas on every call; read each file once per module."""
    import kubernetes_validate.utils

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kubernetes_validate.utils, "schema_contents",
                      functools.lru_cache(maxsize=None)(kubernetes_validate.utils.schema_contents))
        yield
