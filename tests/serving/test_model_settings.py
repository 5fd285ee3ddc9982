"""Per-model serving settings: `<models>/<name>/model-settings.json` overrides batching and
threads for that model only; a malformed file fails that model's load, naming the field."""

from __future__ import annotations

import asyncio
import json

import grpc
import onnxruntime as ort
import pytest
from fakes import publish_copy, scrape_metrics
from grpc import aio

from edgetune.client import free_port
from edgetune.plugins.manager import Plugins
from edgetune.server.app import start_server
from edgetune.settings import Settings
from edgetune.store import ModelRepository
from edgetune.v1 import inference_pb2 as ipb
from edgetune.v1 import inference_pb2_grpc


def write_model_settings(repository: ModelRepository, name: str, content: object) -> None:
    (repository.root / name / "model-settings.json").write_text(json.dumps(content))


def batches(port: int, model: str) -> tuple[float, float]:
    """(batches run, inputs in them) for a model, from the Prometheus endpoint."""
    samples = scrape_metrics(port)["edgetune_batch_size"]
    values = {
        s.name: s.value for s in samples if s.labels.get("model") == model and "le" not in s.labels
    }
    return values.get("edgetune_batch_size_count", 0.0), values.get("edgetune_batch_size_sum", 0.0)


def spinning(session: ort.InferenceSession) -> str:
    """Whether a session's intra-op threads may spin ("1") or sleep at once ("0")."""
    entry: str = session.get_session_options().get_session_config_entry(
        "session.intra_op.allow_spinning"
    )
    return entry


async def test_a_model_batches_and_threads_by_its_own_settings(
    settings: Settings, plugins: Plugins, repository: ModelRepository
) -> None:
    publish_copy(repository, repository.resolve("tiny"), "a")
    # Model a waits (up to a minute) until three inputs are there, then runs them together;
    # the server's own settings (no delay) would have run the first request alone at once.
    write_model_settings(
        repository,
        "a",
        {
            "batch_max_size": 3,
            "batch_max_delay_ms": 60_000,
            "intra_op_threads": 1,
            "intra_op_spinning": False,
        },
    )
    running = await start_server(
        settings.model_copy(update={"metrics_port": free_port(), "model_control": "lazy"}), plugins
    )
    try:
        async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = inference_pb2_grpc.InferenceStub(channel)
            await stub.Classify(ipb.ClassifyRequest(model="a", inputs=[ipb.Input(text="warm")]))
            before = batches(running.metrics_port, "a")
            request = ipb.ClassifyRequest(model="a", inputs=[ipb.Input(text="good fun")])
            replies = await asyncio.gather(*(stub.Classify(request, timeout=30) for _ in range(3)))
            assert [len(r.results) for r in replies] == [1, 1, 1]
            after = batches(running.metrics_port, "a")
            # the first (warming) call ran alone: a batch of 3 fills the size, nothing waits
            assert before == (1.0, 1.0)
            assert (after[0] - before[0], after[1] - before[1]) == (1.0, 3.0)
            served = running.registry.loaded[("a", 1)]
            assert served.settings is not None and served.settings.max_queue_size == 256
            assert served.session.get_session_options().intra_op_num_threads == 1
            assert spinning(served.session) == "0"
            await stub.Classify(ipb.ClassifyRequest(model="tiny", inputs=[ipb.Input(text="x")]))
            tiny = running.registry.loaded[("tiny", 1)]
            assert tiny.settings is not None and tiny.settings.batch_max_delay_ms == 0.0
            # the server's default: threads spin for work for 100 us before they sleep
            assert spinning(tiny.session) == "1"
            options = tiny.session.get_session_options()
            assert options.get_session_config_entry("session.intra_op.spin_duration_us") == "100"
    finally:
        await running.stop(grace=1)


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ({"batch_max_size": 0}, "batch_max_size"),
        ({"max_batch": 4}, "max_batch"),
        ({"intra_op_threads": "many"}, "intra_op_threads"),
    ],
)
async def test_a_malformed_model_settings_file_fails_that_model_naming_the_field(
    settings: Settings,
    plugins: Plugins,
    repository: ModelRepository,
    content: object,
    named: str,
) -> None:
    publish_copy(repository, repository.resolve("tiny"), "b")
    write_model_settings(repository, "b", content)
    running = await start_server(settings.model_copy(update={"model_control": "lazy"}), plugins)
    try:
        async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = inference_pb2_grpc.InferenceStub(channel)
            with pytest.raises(aio.AioRpcError) as refused:
                await stub.Classify(ipb.ClassifyRequest(model="b", inputs=[ipb.Input(text="x")]))
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "b/model-settings.json" in str(refused.value.details())
            assert named in str(refused.value.details())
            reply = await stub.Classify(
                ipb.ClassifyRequest(model="tiny", inputs=[ipb.Input(text="x")])
            )
            assert reply.results  # the other models serve
    finally:
        await running.stop(grace=1)
