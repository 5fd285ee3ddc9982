"""The `edgetune` command: serve, import-model, predict, models, plugins, finetune, jobs."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc

from edgetune.cli.common import client_channel, read_labels, state_name
from edgetune.errors import EdgetuneError, InvalidArgument
from edgetune.settings import Settings, load_settings

DEFAULT_ADDRESS = "127.0.0.1:50051"


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        key: value
        for key in (
            "home",
            "host",
            "port",
            "log_level",
            "tls_cert_file",
            "tls_key_file",
            "tls_client_ca_file",
            "auth",
            "metrics_port",
            "model_control",
            "access_log",
        )
        if (value := getattr(args, key, None)) is not None
    }
    if getattr(args, "insecure", False):
        overrides["insecure"] = True
    settings = load_settings(**overrides)
    return settings.replace(plugins=[*settings.server.plugins, *getattr(args, "plugin", [])])


def _plugins(settings: Settings):  # type: ignore[no-untyped-def]
    from edgetune.plugins.manager import build_plugins

    return build_plugins(
        settings.server.plugins, autoload=not settings.server.disable_plugin_autoload
    )


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the gRPC server until SIGTERM / SIGINT."""
    from edgetune.server.app import serve

    settings = _settings(args)
    logging.basicConfig(
        level=settings.observability.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(serve(settings, _plugins(settings)))
    return 0


def cmd_import_model(args: argparse.Namespace) -> int:
    """Export a local transformers folder to ONNX and publish it as a new version (on a
    running server with --address: the folder is uploaded and the server imports it)."""
    if args.address:
        return _import_remote(args)
    from edgetune.extras import require_train

    require_train("import-model")
    from edgetune.exporters.onnx import import_model
    from edgetune.store import open_repository

    settings = _settings(args)
    logging.basicConfig(level=logging.WARNING)
    task = _plugins(settings).task(args.task)
    labels, descriptions = read_labels(args.labels, args.labels_file)
    version = import_model(
        open_repository(settings),
        task,
        args.name,
        Path(args.source),
        labels,
        max_length=args.max_length,
        descriptions=descriptions,
    )
    print(
        f"imported {version.name} version {version.version} ({task.name}, "
        f"labels: {', '.join(version.manifest.labels)}) into {version.path}"
    )
    return 0


def _import_remote(args: argparse.Namespace) -> int:
    from edgetune.cli.finetune import upload_base
    from edgetune.v1 import finetuning_pb2_grpc, models_pb2, models_pb2_grpc

    labels, descriptions = read_labels(args.labels, args.labels_file)
    with client_channel(args) as channel:
        base = upload_base(
            finetuning_pb2_grpc.FineTuningStub(channel), Path(args.source), args.timeout
        )
        info = models_pb2_grpc.ModelsStub(channel).ImportModel(
            models_pb2.ImportModelRequest(
                name=args.name,
                task=args.task,
                base=base,
                labels=labels,
                label_descriptions=descriptions,
                max_length=args.max_length or 0,
            ),
            timeout=max(args.timeout, 600),
        )
    print(
        f"imported {info.name} version {info.version} ({info.task}, labels: "
        f"{', '.join(label.name for label in info.labels)}) on {args.address}"
    )
    return 0


def cmd_tokens(args: argparse.Namespace) -> int:
    """Create, list or revoke bearer tokens (stored hashed in <home>/auth/tokens.json)."""
    from edgetune.plugins.token_auth import TokenStore

    store = TokenStore(_settings(args).home)
    if args.action == "create":
        if not args.name:
            raise InvalidArgument("tokens create needs a name")
        scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
        secret = store.create(args.name, scopes)
        print(f"token {args.name} ({', '.join(sorted(scopes))}); shown once, store it now:")
        print(secret)
    elif args.action == "list":
        for token in store.load():
            print(f"{token.name:24} {','.join(sorted(token.scopes))}")
    else:
        if not args.name:
            raise InvalidArgument("tokens revoke needs a name")
        store.revoke(args.name)
        print(f"revoked {args.name}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """Classify texts over gRPC and print one line per input, in input order.

    Texts come from the arguments, or one per line from stdin (`-`) or `--input FILE`, in
    any number: they stream through ClassifyStream in batches the server's limits allow
    (GetServerInfo), with a progress bar on stderr when it is a terminal. A line the server
    refuses prints `ERROR` (or a JSON `error`) in its place and is reported on stderr by
    its line number; the others are answered; the exit code is 1 if any line failed.
    """
    from edgetune.cli.predict import classify_lines

    if args.input is not None:
        if args.texts:
            raise InvalidArgument("give texts or --input FILE, not both")
        with open(args.input, encoding="utf-8") as file:
            return classify_lines(args, file, total=_count_lines(args.input))
    if args.texts == ["-"]:
        return classify_lines(args, sys.stdin)
    if not args.texts:
        raise InvalidArgument("no texts to classify: give TEXT..., - (stdin) or --input FILE")
    return classify_lines(args, iter(args.texts), total=len(args.texts), numbered=False)


def _count_lines(path: Path) -> int:
    with open(path, "rb") as file:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: file.read(1 << 20), b""))


_STATE_WORDS = {2: "ready", 1: "available", 3: "loading", 4: "failed"}
"""ModelState numbers (edgetune.v1.ModelState) as `models list` prints them."""


def cmd_models(args: argparse.Namespace) -> int:
    """List, load or unload models on a running server."""
    from edgetune.v1 import models_pb2, models_pb2_grpc, server_pb2, server_pb2_grpc

    with client_channel(args) as channel:
        stub = models_pb2_grpc.ModelsStub(channel)
        if args.action == "list":
            info = server_pb2_grpc.ServerStub(channel).GetServerInfo(
                server_pb2.GetServerInfoRequest(), timeout=args.timeout
            )
            reply = stub.ListModels(models_pb2.ListModelsRequest(), timeout=args.timeout)
            readiness = "ready" if info.ready else "NOT ready (loading models at start-up)"
            print(f"server {readiness}; model_control={info.model_control}")
            print(
                f"{'MODEL':24} {'VERSION':>7}  {'TASK':24} {'STATE':10} {'MEMORY':>9} "
                f"{'ALIASES':16} LABELS"
            )
            failures = []
            for model in reply.models:
                for v in model.versions:
                    state = _STATE_WORDS.get(v.state, "unknown")
                    memory = f"{v.memory_bytes / 2**20:.1f} MiB" if v.memory_bytes else "-"
                    if v.pinned:
                        state += ",pin"
                    if v.state_reason:
                        failures.append(f"{v.name} version {v.version}: {v.state_reason}")
                    print(
                        f"{v.name:24} {v.version:>7}  {v.task:24} {state:10} {memory:>9} "
                        f"{','.join(v.aliases):16} {','.join(label.name for label in v.labels)}"
                    )
            for failure in failures:
                print(f"failed to load {failure}")
            return 0
        if args.action == "load":
            info = stub.LoadModel(
                models_pb2.LoadModelRequest(name=args.name, version=args.version),
                timeout=args.timeout,
            )
            print(f"loaded {info.name} version {info.version} on {', '.join(info.providers)}")
        else:
            unloaded = stub.UnloadModel(
                models_pb2.UnloadModelRequest(name=args.name, version=args.version),
                timeout=args.timeout,
            )
            print(f"unloaded {args.name} version {unloaded.version}")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    """List plugins, where each came from, and the tasks and readers they register."""
    plugins = _plugins(_settings(args))
    for info in plugins.infos:
        print(f"{info.name}  ({info.describe()}; module {info.module})")
        for name, owner in sorted(plugins.task_plugins.items()):
            if owner == info.name:
                print(f"    task {name}: {plugins.tasks[name].description}")
        for name, owner in sorted(plugins.reader_plugins.items()):
            if owner == info.name:
                suffixes = ", ".join(plugins.readers[name].suffixes)
                print(f"    data-set reader {name} ({suffixes})")
    from edgetune.extras import capabilities, missing_train_modules

    missing = missing_train_modules()
    note = f" (no fine-tuning: pip install 'edgetune[train]' for {', '.join(missing)})"
    print(f"capabilities: {', '.join(capabilities())}{note if missing else ''}")
    return 0


def _client_options(parser: argparse.ArgumentParser, suppress: bool = False) -> None:
    """--address, --timeout, TLS and --token; with `suppress`, options that set nothing
    unless given (for subcommands that repeat their parent's options)."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--address",
        default=default(os.environ.get("EDGETUNE_ADDRESS", DEFAULT_ADDRESS)),
        help="server HOST:PORT (default: $EDGETUNE_ADDRESS or 127.0.0.1:50051)",
    )
    parser.add_argument("--timeout", type=float, default=default(120.0), help="seconds per call")
    parser.add_argument(
        "--tls-ca",
        dest="tls_ca",
        type=Path,
        default=default(None),
        help="CA bundle (PEM): connect with TLS",
    )
    parser.add_argument(
        "--tls-cert",
        dest="tls_cert",
        type=Path,
        default=default(None),
        help="client certificate (mutual TLS)",
    )
    parser.add_argument(
        "--tls-key", dest="tls_key", type=Path, default=default(None), help="client private key"
    )
    parser.add_argument(
        "--token",
        default=default(os.environ.get("EDGETUNE_TOKEN", "")),
        help="bearer token (default: $EDGETUNE_TOKEN)",
    )


def _add_finetune_commands(command: Any) -> None:
    """Add `finetune` and `jobs` through the main parser's `command` helper (their code,
    and rich, load only when one of them runs)."""
    from edgetune.v1 import finetuning_pb2

    finetune = command("finetune", cmd_finetune, client=True)
    base = finetune.add_mutually_exclusive_group(required=True)
    base.add_argument(
        "--base",
        help="transformers model folder (uploaded when the server cannot read it itself)",
    )
    base.add_argument(
        "--base-model",
        dest="base_model",
        metavar="NAME[:VERSION]",
        help="a repository model to continue from",
    )
    finetune.add_argument("--data", required=True, help="training data (.jsonl or .csv)")
    finetune.add_argument("--name", required=True, help="model name to publish under")
    finetune.add_argument(
        "--task", default="", help="task to train; required with --base (see `edgetune plugins`)"
    )
    finetune.add_argument("--validation", help="separate validation data file")
    finetune.add_argument(
        "--validation-split",
        dest="validation_split",
        type=float,
        default=0.0,
        help="held-out fraction of the data (default 0.2)",
    )
    for flag, kind, default in (
        ("epochs", int, 0),
        ("learning-rate", float, 0.0),
        ("batch-size", int, 0),
        ("max-length", int, 0),
        ("warmup-ratio", float, 0.0),
        ("weight-decay", float, 0.0),
        ("seed", int, 0),
        ("patience", int, 0),
    ):
        finetune.add_argument(
            f"--{flag}",
            dest=flag.replace("-", "_"),
            type=kind,
            default=default,
            help="0: the server's default",
        )
    finetune.add_argument(
        "--trials",
        type=int,
        default=0,
        help="hyperparameter search trials (default 6 when no hyperparameter is given; "
        "1: one run with the hyperparameters given)",
    )
    finetune.add_argument(
        "--time-budget",
        dest="time_budget",
        type=float,
        default=0.0,
        metavar="MINUTES",
        help="minutes the search may take (default: twice its first trial)",
    )
    finetune.add_argument(
        "--search-metric",
        dest="search_metric",
        default="",
        help="validation metric the search maximizes (default: the task's, f1)",
    )
    finetune.add_argument(
        "--no-promote",
        dest="no_promote",
        action="store_true",
        help="publish the version without switching traffic to it",
    )
    finetune.add_argument("--idempotency-key", dest="idempotency_key", default="")
    finetune.add_argument("--detach", action="store_true", help="start the job and return")

    jobs = command("jobs", cmd_jobs, client=True)
    jobs.add_argument("action", choices=["list", "show", "watch", "cancel"])
    jobs.add_argument("id", nargs="?", help="job id (show, watch, cancel)")
    jobs.add_argument(
        "--state",
        action="append",
        default=[],
        choices=[state_name(s) for s in finetuning_pb2.JobState.values() if s],
        help="only jobs in this state (repeatable)",
    )
    jobs.add_argument("--limit", type=int, default=50)


def cmd_finetune(args: argparse.Namespace) -> int:
    """Upload data, start a fine-tuning job and follow it to the end."""
    from edgetune.cli.finetune import cmd_finetune as run

    return run(args)


def cmd_jobs(args: argparse.Namespace) -> int:
    """List, show, watch or cancel fine-tuning jobs."""
    from edgetune.cli.finetune import cmd_jobs as run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(prog="edgetune", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    def command(
        name: str,
        handler: Callable[[argparse.Namespace], int],
        *,
        home: bool = False,
        client: bool = False,
        plugins: bool = False,
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=handler.__doc__, description=handler.__doc__)
        sub.set_defaults(handler=handler)
        if home:
            sub.add_argument(
                "--home", type=Path, help="edgetune home (default: $EDGETUNE_HOME or ~/.edgetune)"
            )
        if plugins:
            sub.add_argument(
                "--plugin",
                action="append",
                default=[],
                metavar="MODULE",
                help="also load this plugin module (repeatable)",
            )
        if client:
            _client_options(sub)
        return sub

    serve = command("serve", cmd_serve, home=True, plugins=True)
    serve.add_argument("--host", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 50051; 0 picks one)")
    serve.add_argument("--log-level", dest="log_level", help="logging level (default INFO)")
    serve.add_argument("--tls-cert", dest="tls_cert_file", type=Path, help="server certificate")
    serve.add_argument("--tls-key", dest="tls_key_file", type=Path, help="server private key")
    serve.add_argument(
        "--tls-client-ca",
        dest="tls_client_ca_file",
        type=Path,
        help="require client certificates signed by this CA (mutual TLS)",
    )
    serve.add_argument(
        "--insecure", action="store_true", help="allow plaintext on a non-loopback address"
    )
    serve.add_argument("--auth", help='authenticator, e.g. "token" (default: none)')
    serve.add_argument(
        "--metrics-port",
        dest="metrics_port",
        type=int,
        help="Prometheus /metrics port on the same host (default 0: off)",
    )
    serve.add_argument(
        "--model-control",
        dest="model_control",
        choices=["all", "pinned", "lazy"],
        help="models loaded before the server reports ready (default all)",
    )
    serve.add_argument(
        "--access-log",
        dest="access_log",
        choices=["off", "text", "json"],
        help="one log line per request (default off)",
    )

    tokens = command("tokens", cmd_tokens, home=True)
    tokens.add_argument("action", choices=["create", "list", "revoke"])
    tokens.add_argument("name", nargs="?", default="", help="token name (create, revoke)")
    tokens.add_argument(
        "--scopes", default="infer", help="comma-separated: infer, finetune, admin (create)"
    )

    imp = command("import-model", cmd_import_model, home=True, plugins=True, client=True)
    # Local unless --address is given: only then is the folder uploaded to that server.
    imp.set_defaults(address=None)
    imp.add_argument("--name", required=True, help="model name in the repository")
    imp.add_argument("--task", required=True, help="task the model serves (see `edgetune plugins`)")
    imp.add_argument("--labels", help="comma-separated labels (default: the folder's id2label)")
    imp.add_argument(
        "--labels-file",
        dest="labels_file",
        help="JSON list of labels, or object label -> description (zero-shot tasks)",
    )
    imp.add_argument(
        "--max-length",
        dest="max_length",
        type=int,
        help="tokens per input when serving (default: what the model takes)",
    )
    imp.add_argument("source", metavar="SRC_DIR", help="local transformers model folder")

    predict = command("predict", cmd_predict, client=True)
    predict.add_argument("--model", required=True, help="model name")
    predict.add_argument("--version", default="", help="version or alias (default latest)")
    predict.add_argument("--top-k", dest="top_k", type=int, default=1, help="labels per line")
    predict.add_argument("--json", action="store_true", help="one JSON object per input")
    predict.add_argument(
        "--input", type=Path, help="read texts from this file, one per line (any number)"
    )
    predict.add_argument(
        "texts", nargs="*", metavar="TEXT", help="texts, or - to read lines from stdin"
    )

    models = command("models", cmd_models, client=True)
    models.add_argument("--version", default="", help="version or alias (default latest)")
    actions = models.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, summary in (
        ("list", "every model and version, with its state"),
        ("load", "load and warm a version (moves `latest` to a newly imported version)"),
        ("unload", "unload a version"),
    ):
        sub = actions.add_parser(action, help=summary, description=summary)
        _client_options(sub, suppress=True)  # options after the action, too
        sub.add_argument(
            "--version", default=argparse.SUPPRESS, help="version or alias (default latest)"
        )
        if action != "list":
            sub.add_argument("name", help="model name")

    command("plugins", cmd_plugins, plugins=True)
    _add_finetune_commands(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `edgetune` console script."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except EdgetuneError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except grpc.RpcError as exc:
        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
