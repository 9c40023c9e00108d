"""The daemon never needs torch or the build/ package: importing every edge_agent module loads neither."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import edge_agent

PACKAGE_DIR = Path(edge_agent.__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent

_PROBE = r"""
import importlib, json, pkgutil, sys
import edge_agent
names, failed = [], {}
for info in pkgutil.walk_packages(edge_agent.__path__, "edge_agent."):
    if info.name.endswith("__main__"):
        continue
    try:
        importlib.import_module(info.name)
        names.append(info.name)
    except ImportError as exc:  # an optional extra (e.g. bench plots) that is not installed
        failed[info.name] = repr(exc)
heavy = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.") or m == "build"
               or m.startswith("build."))
print(json.dumps({"imported": names, "failed": failed, "heavy": heavy}))
"""


def test_importing_every_module_loads_no_torch_and_no_build() -> None:
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120,
                         cwd=REPO_ROOT, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == [], f"torch/build imported by edge_agent: {result['heavy']}"
    failed = result["failed"]
    # Every module imports, except ones whose *third-party* optional dependency is missing.
    internal = {m: e for m, e in failed.items() if "edge_agent" in e or "torch" in e or "'build" in e}
    assert internal == {}, internal
    for must in ("edge_agent.cli", "edge_agent.pipeline", "edge_agent.engine", "edge_agent.sources",
                 "edge_agent.publisher", "edge_agent.messages", "edge_agent.subscriber"):
        assert must in result["imported"]


_FORBIDDEN = re.compile(r"^\s*(import\s+(torch|build)\b|from\s+(torch|build)(\.|\s))", re.MULTILINE)


def test_no_source_file_mentions_a_torch_or_build_import() -> None:
    offenders = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        offenders += [f"{path.relative_to(REPO_ROOT)}: {m.group(0).strip()}" for m in _FORBIDDEN.finditer(text)]
    assert offenders == []


def test_the_grep_pattern_catches_what_it_should() -> None:
    bad = "import torch\nfrom torch import nn\n    import build.nets\nfrom build.export import x\n"
    good = "import torchvision_not\n# torch is build-only\nx = 'import torch'\nfrom buildtools import y\n"
    assert len(_FORBIDDEN.findall(bad)) == 4
    assert _FORBIDDEN.findall(good) == []
