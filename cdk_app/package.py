"""Build the Lambda code asset and layer folders (no Docker: pip targets the Lambda platform)."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
CODE = BUILD / "lambda"
LAYERS = ROOT / "layers" / "build"
LAMBDA_LIMIT_BYTES = 250 * 1024 * 1024  # unzipped function + layers

# Which requirements go in which layer. boto3/botocore are pinned here rather than taken from the Python
# runtime, whose bundled SDK version varies by region and lags: S3 conditional writes (IfNoneMatch, IfMatch)
# need a recent botocore. A function's own boto3 on sys.path (/opt/python) comes before the runtime's.
LAYER_PACKAGES = {
    "core": ["aws-lambda-powertools", "pydantic", "pyyaml", "boto3", "botocore", "s3transfer", "urllib3"],
    "arrow": ["pyarrow", "isal"],
}


SDK_SERVICES = {"s3", "glue", "sts", "sso", "sso-oidc"}  # glue: the catalog (schemahub.store.glue)


def build_code(out: Path = CODE) -> Path:
    """Function code: the schemahub package, the handlers and the mappings, nothing else."""
    if out.exists():
        shutil.rmtree(out)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "functions" / "schemahub", out / "schemahub", ignore=ignore)
    shutil.copytree(ROOT / "functions" / "handlers", out / "handlers", ignore=ignore)
    shutil.copytree(ROOT / "mappings", out / "mappings", ignore=ignore)
    # sim/ is for tests and demos; it is not needed in Lambda.
    shutil.rmtree(out / "schemahub" / "sim")
    return out


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, ver = line.split("==", 1)
            pins[name.strip().lower()] = f"{name.strip()}=={ver.strip()}"
    return pins


def build_layer(name: str, out_root: Path = LAYERS) -> Path:
    """pip install the layer's pinned packages for Lambda (manylinux x86_64, CPython 3.12), then strip."""
    pins = _pins()
    target = out_root / name / "python"
    if target.parent.exists():
        shutil.rmtree(target.parent)
    target.mkdir(parents=True)
    reqs = [pins[p] for p in LAYER_PACKAGES[name]]
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(target), "--only-binary=:all:",
         "--python-version", "3.12", "--implementation", "cp", "--platform", "manylinux2014_x86_64",
         "--platform", "manylinux_2_28_x86_64", "--upgrade", *reqs],
        check=True,
    )
    strip(target)
    return target.parent


def strip(target: Path) -> None:
    """Drop what a Lambda never loads: tests, caches, headers, static libs, type stubs."""
    for pattern in ("**/__pycache__", "**/tests", "**/*.pyx", "**/*.pxd", "**/include", "**/*.a", "**/*.h",
                    "pyarrow/*.pyi", "bin"):
        for path in list(target.glob(pattern)):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            elif path.exists():
                path.unlink()
    # botocore ships ~28 MB of models for 400+ services; the functions call S3 and Glue only (sts/sso: credentials).
    for data in (target / "botocore" / "data", target / "boto3" / "data"):
        for d in data.iterdir() if data.is_dir() else []:
            if d.is_dir() and d.name not in SDK_SERVICES:
                shutil.rmtree(d)
    for so in target.glob("**/*.so*"):
        subprocess.run(["strip", "--strip-unneeded", str(so)], check=False, capture_output=True)


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["code", "layers", "all"])
    args = ap.parse_args()
    if args.what in ("code", "all"):
        print(f"code: {build_code()} ({size(CODE) / 1e6:.1f} MB)")
    if args.what in ("layers", "all"):
        for name in LAYER_PACKAGES:
            print(f"layer {name}: {build_layer(name)} ({size(LAYERS / name) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
