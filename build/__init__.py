"""Build-time pipeline (torch): network definitions, training, export, HEF compile.

Nothing in ``edge_agent/`` imports this package; it produces the artifacts in ``models/``.
"""
