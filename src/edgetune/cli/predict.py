"""`edgetune predict` for any number of inputs: lines stream through ClassifyStream in
batches the server's limits allow, with a bounded number of batches in flight (so memory
stays flat however long the input is), answers printed in input order."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

BATCH_CAP = 32
"""Inputs per request, at most: the server's dynamic batcher takes up to 32 at a time."""
IN_FLIGHT = 8
"""Requests sent ahead of their answers."""


@dataclass(slots=True)
class _Batch:
    lines: list[tuple[int, str]]
    """(line number, text) of each input."""


def classify_lines(
    args: argparse.Namespace,
    lines: Iterable[str],
    total: int | None = None,
    numbered: bool = True,
) -> int:
    """Classify every non-blank line; print one answer per line, in order. 1 when a line
    failed (each is reported on stderr by its line number), else 0."""
    from edgetune.cli.common import client_channel
    from edgetune.v1 import inference_pb2 as pb
    from edgetune.v1 import inference_pb2_grpc, server_pb2, server_pb2_grpc

    with client_channel(args) as channel:
        info = server_pb2_grpc.ServerStub(channel).GetServerInfo(
            server_pb2.GetServerInfoRequest(), timeout=args.timeout
        )
        size = max(1, min(info.limits.max_batch_size or 1, BATCH_CAP))
        byte_budget = max(info.limits.max_message_bytes // 2, 1)
        stub = inference_pb2_grpc.InferenceStub(channel)
        top_k = 0 if args.json else max(args.top_k, 1)
        pending: dict[str, _Batch] = {}
        slots = threading.Semaphore(IN_FLIGHT)
        done = threading.Event()

        def request(batch: list[tuple[int, str]]) -> Any:
            key = str(batch[0][0])
            pending[key] = _Batch(batch)
            inputs = [pb.Input(text=text) for _, text in batch]
            classify = pb.ClassifyRequest(
                model=args.model, version=args.version, inputs=inputs, top_k=top_k
            )
            return pb.ClassifyStreamRequest(id=key, request=classify)

        def requests() -> Iterator[Any]:
            batch: list[tuple[int, str]] = []
            weight = 0
            for number, line in enumerate(lines, 1):
                text = line.rstrip("\r\n")
                if not text.strip():
                    continue
                batch.append((number, text))
                weight += len(text) * 4  # UTF-8 bytes, at most
                if len(batch) >= size or weight >= byte_budget:
                    if not _acquire(slots, done):
                        return
                    yield request(batch)
                    batch, weight = [], 0
            if batch and _acquire(slots, done):
                yield request(batch)

        printer = _Printer(args, numbered)
        with _progress(total) as advance:
            try:
                for response in stub.ClassifyStream(requests()):
                    batch = pending.pop(response.id)
                    slots.release()
                    if response.HasField("error"):
                        code = _code(response.error.code)
                        if code != grpc.StatusCode.INVALID_ARGUMENT:
                            # About the call, not a line (unknown model, auth): stop here.
                            raise _Refused(code, response.error.message)
                        printer.retry_alone(stub, batch, top_k, response.error)
                    else:
                        for (number, text), result in zip(
                            batch.lines, response.response.results, strict=True
                        ):
                            printer.answer(number, text, result, response.response)
                    advance(len(batch.lines))
            finally:
                done.set()
    if not printer.answered and not printer.failed:
        from edgetune.errors import InvalidArgument

        raise InvalidArgument("no texts to classify")
    if printer.failed:
        print(
            f"{printer.failed} of {printer.failed + printer.answered} inputs failed",
            file=sys.stderr,
        )
        return 1
    return 0


def _code(number: int) -> grpc.StatusCode:
    return next((c for c in grpc.StatusCode if c.value[0] == number), grpc.StatusCode.UNKNOWN)


class _Refused(grpc.RpcError):  # type: ignore[misc]
    """The server refused the call itself (not one line); reported like any failed call."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def _acquire(slots: threading.Semaphore, done: threading.Event) -> bool:
    """Wait for a free slot; False once the reader has stopped (an error ended it)."""
    while not slots.acquire(timeout=0.5):
        if done.is_set():
            return False
    return not done.is_set()


class _Printer:
    """Prints answers and failures in the output format the flags ask for."""

    def __init__(self, args: argparse.Namespace, numbered: bool) -> None:
        self.args, self.numbered = args, numbered
        self.answered = self.failed = 0

    def answer(self, number: int, text: str, result: Any, reply: Any) -> None:
        self.answered += 1
        if self.args.json:
            best = result.labels[0]
            line: dict[str, Any] = {"line": number} if self.numbered else {}
            line |= {
                "text": text,
                "label": best.label,
                "score": round(best.score, 6),
                "scores": {s.label: round(s.score, 6) for s in result.labels},
                "model": reply.model,
                "version": reply.version,
            }
            print(json.dumps(line))
        else:
            print("\t".join(f"{s.label}\t{s.score:.4f}" for s in result.labels))

    def failure(self, number: int, code: str, message: str) -> None:
        self.failed += 1
        where = f"line {number}" if self.numbered else f"input {number}"
        print(f"{where}: {code}: {message}", file=sys.stderr)
        if self.args.json:
            error = {"code": code, "message": message}
            print(json.dumps({"line": number, "error": error} if self.numbered else error))
        else:
            print(f"ERROR\t{code}: {message}")

    def retry_alone(self, stub: Any, batch: _Batch, top_k: int, error: Any) -> None:
        """A refused batch: classify its lines one by one, so only bad lines fail."""
        from edgetune.v1 import inference_pb2 as pb

        if len(batch.lines) == 1:
            self.failure(batch.lines[0][0], _code(error.code).name, error.message)
            return
        for number, text in batch.lines:
            request = pb.ClassifyRequest(
                model=self.args.model,
                version=self.args.version,
                inputs=[pb.Input(text=text)],
                top_k=top_k,
            )
            try:
                reply = stub.Classify(request, timeout=self.args.timeout)
            except grpc.RpcError as exc:
                self.failure(number, exc.code().name, exc.details())
            else:
                self.answer(number, text, reply.results[0], reply)


class _progress:
    """A progress bar on stderr while it is a terminal; otherwise nothing."""

    def __init__(self, total: int | None) -> None:
        self.total = total
        self.bar: Any = None

    def __enter__(self) -> Any:
        if not sys.stderr.isatty():
            return lambda count: None
        from rich.console import Console
        from rich.progress import Progress

        self.bar = Progress(console=Console(stderr=True), transient=True)
        self.bar.start()
        task = self.bar.add_task("classifying", total=self.total)
        return lambda count: self.bar.advance(task, count)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
