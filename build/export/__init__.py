"""ONNX export of build-time networks into models/ artifacts (file + manifest.json + MODEL_CARD.md)."""
