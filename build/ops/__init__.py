"""Custom torch ops used by build/ networks (each with a plain-torch implementation and an ONNX mapping)."""

from build.ops.deform_conv import DeformConv2d, deform_conv2d, deform_conv2d_reference

__all__ = ["DeformConv2d", "deform_conv2d", "deform_conv2d_reference"]
