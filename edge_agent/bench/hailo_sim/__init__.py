"""Latency-simulating Hailo device for the benchmark (``edge-bench hailo-sim``); never used by the daemon.

``chip`` (one serialised simulated chip with busy accounting), ``hailo_api`` (HailoRT's InferModel API on it),
``network`` (simulated HEFs: outputs from the ONNX model, replayed from a cache), ``compile`` (ONNX artifact ->
simulated HEF artifact), ``run`` (the real Pipeline on the simulated device).
"""
