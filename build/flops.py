"""Parameter and MAC counting with forward hooks, in the convention the seed figures use.

Convention (thop 0.1.1 ``profile``, which is what produces seed 004's "FLOPs": RetinaFace-MobileNet-0.25
1.030 G at 640x640; those "FLOPs" are multiply-accumulates):

* ``nn.Conv2d`` / ``nn.Conv1d``: output elements x (in_channels / groups) x kernel elements. Bias is free.
* ``nn.Linear``: output elements x in_features.
* BatchNorm / GroupNorm / LayerNorm / InstanceNorm: 2 ops per input element, x2 when affine (thop's
  ``count_normalization``), i.e. 4 per element for an affine BatchNorm.
* Activations, pooling, upsampling, additions, concatenation, softmax: 0.
* Any module with a ``macs(inputs, output) -> int`` method (e.g. a deformable convolution, which must count
  its offset conv, sampling and the convolution itself) counts itself; its submodules are then not counted
  separately. ``inputs`` is the tuple of positional tensors passed to ``forward``, ``output`` its result.

``Complexity.macs`` is the total in that convention; ``conv_macs`` only the convolution/linear/self-counted
part (what most papers call MACs), ``norm_ops`` the normalisation part. Parameters are counted once each
(shared parameters are not double counted), trainable or not; buffers (BN running stats) are not parameters.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


@dataclass(frozen=True)
class Complexity:
    input_shape: tuple[int, ...]  # (1, C, H, W)
    params: int
    macs: int  # thop convention: conv_macs + norm_ops
    conv_macs: int
    norm_ops: int
    per_module: dict[str, int] = field(default_factory=dict)  # module name -> its counted MACs/ops

    def summary(self) -> str:
        return (
            f"input {list(self.input_shape)}: params {self.params:,}, MACs {self.macs / 1e9:.4f} G "
            f"(conv/linear {self.conv_macs / 1e9:.4f} G + norm {self.norm_ops / 1e6:.2f} M)"
        )


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _self_counting(mod: nn.Module) -> bool:
    return callable(getattr(mod, "macs", None))


def _counted_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """Modules to hook: self-counting ones (not their children), convs, linears, norms."""
    skip_prefixes: list[str] = []
    for name, mod in model.named_modules():
        if any(name.startswith(p) for p in skip_prefixes):
            continue
        if _self_counting(mod):
            skip_prefixes.append(name + "." if name else "")
            yield name, mod
        elif isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Linear, *_NORMS)):
            yield name, mod


def _conv_like_macs(mod: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> int:
    if isinstance(mod, (nn.Conv1d, nn.Conv2d)):
        per_out = (mod.in_channels // mod.groups) * int(torch.tensor(mod.kernel_size).prod().item())
        return output.numel() * per_out
    if isinstance(mod, nn.Linear):
        return output.numel() * mod.in_features
    if _self_counting(mod):
        return int(mod.macs(inputs, output))  # type: ignore[operator]
    return 0


def count(model: nn.Module, input_size: tuple[int, int] = (640, 640), channels: int = 3) -> Complexity:
    """Params and MACs of ``model`` on one (1, channels, H, W) input; ``input_size`` is (H, W)."""
    shape = (1, channels, *input_size)
    conv_macs = 0
    norm_ops = 0
    per_module: dict[str, int] = {}
    handles = []

    def make_hook(name: str, mod: nn.Module) -> Any:
        def hook(m: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            nonlocal conv_macs, norm_ops
            if isinstance(m, _NORMS) and not _self_counting(m):
                ops = 2 * inputs[0].numel()
                if getattr(m, "affine", False) or getattr(m, "elementwise_affine", False):
                    ops *= 2
                norm_ops += ops
            else:
                if not isinstance(output, torch.Tensor):
                    raise TypeError(f"{name}: cannot count MACs of a module returning {type(output).__name__}")
                ops = _conv_like_macs(m, inputs, output)
                conv_macs += ops
            per_module[name] = per_module.get(name, 0) + ops

        return hook

    for name, mod in _counted_modules(model):
        handles.append(mod.register_forward_hook(make_hook(name, mod)))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(shape))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    result = Complexity(shape, count_params(model), conv_macs + norm_ops, conv_macs, norm_ops, per_module)
    log.debug("%s", result.summary())
    return result


def main() -> None:
    import argparse

    from build.nets.retinaface import RetinaFace, get_config

    parser = argparse.ArgumentParser(description="Params and MACs (thop convention) of a detector variant")
    parser.add_argument("--variant", default="retinaface")
    parser.add_argument("--size", type=int, nargs=2, default=(640, 640), metavar=("H", "W"))
    args = parser.parse_args()
    print(count(RetinaFace(get_config(args.variant)), tuple(args.size)).summary())


if __name__ == "__main__":
    main()
