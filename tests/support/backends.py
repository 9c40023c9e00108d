"""Backend wrappers for tests."""

from __future__ import annotations

from collections.abc import Mapping

from edge_agent.backends.base import Backend, Tensor, TensorSpec


class CountingBackend:
    """A real backend wrapped to record the batch size of every call (no behaviour of its own)."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.batches: list[int] = []

    @property
    def inputs(self) -> Mapping[str, TensorSpec]:
        return self.inner.inputs

    @property
    def outputs(self) -> Mapping[str, TensorSpec]:
        return self.inner.outputs

    def run(self, feeds: Mapping[str, Tensor]) -> dict[str, Tensor]:
        self.batches.append(int(next(iter(feeds.values())).shape[0]))
        return self.inner.run(feeds)

    def close(self) -> None:
        self.inner.close()
