"""The command line: parses arguments, builds Settings once, wires the pipeline and runs it.

This is the one place where ``triage`` (the core) and ``connectors`` (the outside world) meet.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import httpx
import structlog

from triage import __version__
from triage.errors import ConfigError, TriageError
from triage.settings import Settings, load_settings

EXIT_OK, EXIT_ERROR, EXIT_CONFIG, EXIT_INTERRUPTED = 0, 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="triage", description="Incident log triage: cluster errors as they happen.")
    p.add_argument("--version", action="version", version=f"triage {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="TOML settings file (see config/triage.example.toml)")
    common.add_argument("--state-dir", type=Path, help="where the store lives (default .triage/)")
    common.add_argument("--sink", action="append", dest="sinks", metavar="SINK",
                        help="terminal | jsonl:PATH | slack | kafka://HOST:PORT/TOPIC (repeatable; replaces the configured sinks)")
    common.add_argument("--no-color", action="store_true", help="plain terminal output")
    common.add_argument("--quiet", action="store_true", help="no findings on the terminal sink's console")

    run = sub.add_parser("run", parents=[common], help="run the pipeline on configured sources until stopped")
    run.add_argument("--source", action="append", dest="sources", metavar="SOURCE",
                     help="file:GLOB | stdin | kafka://HOST:PORT/TOPIC (repeatable; replaces the configured sources)")
    run.add_argument("--once", action="store_true", help="read the sources to their end, flush and exit (replay)")

    demo = sub.add_parser("demo", parents=[common], help="replay the bundled sample incident (no network)")
    demo.add_argument("--top", type=int, default=25, help="rows in the final cluster table")

    silence = sub.add_parser("silence", help="hold back findings of a cluster or template pattern for a while")
    silence_sub = silence.add_subparsers(dest="silence_command", required=True)
    add = silence_sub.add_parser("add", help="add a silence")
    target = add.add_mutually_exclusive_group(required=True)
    target.add_argument("--cluster", default="", help="a cluster id (as shown in findings)")
    target.add_argument("--match", default="", help="a glob on the template, e.g. '*connection refused*'")
    add.add_argument("--for", dest="duration", default="2h", help="how long: 30m, 2h, 1d (default 2h)")
    add.add_argument("--comment", default="", help="why (shown by list)")
    add.add_argument("--state-dir", type=Path, help="the store of the running triage (default .triage/)")
    lst = silence_sub.add_parser("list", help="list silences")
    lst.add_argument("--all", action="store_true", help="expired ones too")
    lst.add_argument("--state-dir", type=Path)
    exp = silence_sub.add_parser("expire", help="end a silence now")
    exp.add_argument("id", type=int)
    exp.add_argument("--state-dir", type=Path)

    model = sub.add_parser("model", help="the local model (installed by `make model`)")
    model_sub = model.add_subparsers(dest="model_command", required=True)
    serve = model_sub.add_parser("serve", help="serve the local model on 127.0.0.1 (OpenAI-compatible)")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--threads", type=int, default=2, help="CPU threads (1 when the machine is busy)")
    serve.add_argument("--ctx", type=int, default=4096, help="context size in tokens")
    model_sub.add_parser("status", help="say whether the local model is installed")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging()
    try:
        if args.command == "demo":
            return _demo(args)
        if args.command == "run":
            return _run(args)
        if args.command == "model":
            return _model(args)
        if args.command == "silence":
            return _silence(args)
    except (TriageError, BaseExceptionGroup) as e:
        error = _triage_error(e)
        if error is None:
            raise
        if isinstance(error, ConfigError):
            print(f"triage: configuration error: {error}", file=sys.stderr)
            return EXIT_CONFIG
        print(f"triage: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_ERROR  # pragma: no cover - argparse requires a command


def _triage_error(e: BaseException) -> TriageError | None:
    """The first TriageError in ``e`` (task groups wrap errors of their stages in exception groups)."""
    if isinstance(e, TriageError):
        return e
    if isinstance(e, BaseExceptionGroup):
        for inner in e.exceptions:
            found = _triage_error(inner)
            if found is not None:
                return found
    return None


def _configure_logging() -> None:
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]  # duck-typed stream
    )


class _Stderr:
    """Writes to whatever ``sys.stderr`` is at the time (it may be replaced after configuration)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    overrides: dict[str, Any] = {"state_dir": args.state_dir, **extra}
    if args.sinks:
        overrides["sinks"] = tuple(args.sinks)
    if getattr(args, "sources", None):
        overrides["sources"] = tuple(args.sources)
    return load_settings(args.config, **overrides)


def _run(args: argparse.Namespace) -> int:
    from triage.app import build, print_counters

    settings = _settings(args)
    if not settings.sources:
        raise ConfigError("no sources: give --source file:GLOB or stdin, or 'sources' in --config")
    app = build(settings, follow=not args.once, color=False if args.no_color else None, quiet=args.quiet)
    try:
        code = _run_until_signalled(app)
        print_counters(app, file=sys.stderr)
    finally:
        app.store.close()
    return code


def _demo(args: argparse.Namespace) -> int:
    from triage.app import build, print_clusters, print_counters
    from triage.demo import sample_glob

    temp = None
    state_dir = args.state_dir
    if state_dir is None:  # a fresh store each time, so the demo always shows the whole incident
        temp = Path(tempfile.mkdtemp(prefix="triage-demo-"))
        state_dir = temp
    try:
        settings = _settings(args, sources=(f"file:{sample_glob()}",), state_dir=state_dir)
        extra, which = _demo_llm(settings)
        if extra:
            settings = _settings(args, sources=(f"file:{sample_glob()}",), state_dir=state_dir, **extra)
        app = build(settings, follow=False, color=False if args.no_color else None, quiet=args.quiet,
                    source_name="demo")
        print("triage demo: replaying the bundled sample incident (4 services, ~30 min of logs) "
              f"with {which}\n", file=sys.stderr)
        try:
            code = _run_until_signalled(app)
            print_clusters(app, top=args.top)
            print_counters(app, file=sys.stdout)
        finally:
            app.store.close()
        return code
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """'90s', '30m', '2h', '1d' (or plain seconds) to seconds."""
    text = text.strip().lower()
    try:
        value = float(text[:-1]) * _UNITS[text[-1]] if text[-1:] in _UNITS else float(text)
    except ValueError:
        raise ConfigError(f"--for {text!r}: expected a duration such as 30m, 2h or 1d") from None
    if value <= 0:
        raise ConfigError(f"--for {text!r}: must be positive")
    return value


def _silence(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from triage.store import Store

    settings = load_settings(None, state_dir=args.state_dir)
    store = Store.open(settings.state_dir)
    now = time.time()
    try:
        if args.silence_command == "add":
            until = now + parse_duration(args.duration)
            sid = store.add_silence(cluster_id=args.cluster, pattern=args.match, expires_at=until,
                                    comment=args.comment)
            print(f"silence {sid} until {datetime.fromtimestamp(until, UTC):%Y-%m-%d %H:%M:%SZ}: "
                  f"{'cluster ' + args.cluster if args.cluster else 'template ' + repr(args.match)}")
        elif args.silence_command == "list":
            rows = store.silences()
            shown = [r for r in rows if args.all or r.expires_at > now]
            for r in shown:
                state = "active" if r.expires_at > now else "expired"
                what = f"cluster {r.cluster_id}" if r.cluster_id else f"template {r.pattern!r}"
                print(f"{r.id:5d}  {state:7}  until {datetime.fromtimestamp(r.expires_at, UTC):%Y-%m-%d %H:%M:%SZ}"
                      f"  {what}  {r.comment}")
            if not shown:
                print("no silences" if args.all else "no active silences")
        elif not store.expire_silence(args.id, now):
            print(f"no active silence {args.id}", file=sys.stderr)
            return EXIT_ERROR
        else:
            print(f"silence {args.id} expired")
    finally:
        store.close()
    return EXIT_OK


def _model(args: argparse.Namespace) -> int:
    from triage.summarize import local_model

    if args.model_command == "status":
        reason = local_model.missing_reason()
        print(reason or f"local model installed: {local_model.model_path_default()}")
        return EXIT_OK if reason is None else EXIT_ERROR
    reason = local_model.missing_reason()
    if reason is not None:
        raise ConfigError(reason)
    print(f"triage: serving the local model on http://127.0.0.1:{args.port}/v1 (model id 'local'); "
          "use it with TRIAGE_LLM__PROVIDER=local", file=sys.stderr)
    return local_model.main(["--port", str(args.port), "--threads", str(args.threads), "--ctx", str(args.ctx)])


def _demo_llm(settings: Settings) -> tuple[dict[str, Any], str]:
    """The demo uses a configured endpoint, else a running local model, else the model-free summary."""
    if settings.llm.enabled:
        return {}, f"the configured model endpoint ({settings.llm.base_url or settings.llm.provider})"
    from triage.app import LOCAL_BASE_URL

    try:
        ok = httpx.get(f"{LOCAL_BASE_URL}/models", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        ok = False
    if ok:  # a CPU model answers in tens of seconds: shorter answers, and time to finish them at the end
        return ({"llm": {"provider": "local", "max_tokens": 256, "drain_timeout_s": 300, "read_timeout_s": 300}},
                f"the local model at {LOCAL_BASE_URL}")
    return {}, "the model-free summarizer (no model configured and none running: see `make model`)"


def _run_until_signalled(app: Any) -> int:
    """First SIGINT/SIGTERM drains and checkpoints; a second one exits at once."""
    result = {"code": EXIT_OK}

    async def main() -> None:
        async with anyio.create_task_group() as tg:

            async def on_signals() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    seen = 0
                    async for _ in signals:
                        seen += 1
                        if seen == 1:
                            print("\ntriage: stopping: draining and checkpointing (again to exit now)",
                                  file=sys.stderr)
                            app.pipeline.stop()
                        else:
                            result["code"] = EXIT_INTERRUPTED
                            tg.cancel_scope.cancel()

            tg.start_soon(on_signals)
            try:
                await app.pipeline.run()
            finally:
                tg.cancel_scope.cancel()
                close = getattr(app, "aclose", None)
                if close is not None:
                    with anyio.CancelScope(shield=True):
                        await close()

    anyio.run(main)
    return result["code"]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
