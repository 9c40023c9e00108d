"""Inference backends. Each moves named tensors only; everything model-specific lives in the manifest."""
