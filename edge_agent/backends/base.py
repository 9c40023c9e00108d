"""The one Backend protocol, and the tensor specs backends report."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

Tensor = npt.NDArray[np.generic]


class BackendError(RuntimeError):
    """A backend failed to load, configure or run a model. The message says what and how to fix it."""


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """Name, shape (None for a dynamic dimension) and numpy dtype name of one model input or output."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str  # numpy dtype name: "float32", "uint8", ...


@runtime_checkable
class Backend(Protocol):
    """A loaded model on some runtime. ``run`` takes and returns named tensors; nothing else."""

    kind: str  # "onnx" | "hailo"

    @property
    def inputs(self) -> Mapping[str, TensorSpec]: ...

    @property
    def outputs(self) -> Mapping[str, TensorSpec]: ...

    def run(self, feeds: Mapping[str, Tensor]) -> dict[str, Tensor]: ...

    def close(self) -> None: ...
