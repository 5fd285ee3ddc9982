"""Length buckets: a batch of mixed lengths runs as calls of similar length, with the answers
of one call."""

from __future__ import annotations

import asyncio
import itertools
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from fakes import scrape_metrics
from grpc import aio

from edgetune.client import free_port
from edgetune.server.app import start_server
from edgetune.serving.buckets import LengthSplit, split_rows
from edgetune.v1 import inference_pb2 as pb
from edgetune.v1 import inference_pb2_grpc

TEXT_SHAPES = [("input_ids", ["batch_size", "sequence_length"])] + [
    (name, ["batch_size", "sequence_length"]) for name in ("attention_mask", "token_type_ids")
]


def nodes(shapes: list[tuple[str, list[Any]]]) -> list[SimpleNamespace]:
    return [SimpleNamespace(name=name, shape=shape) for name, shape in shapes]


def cheapest(lengths: list[int], run_cost: int) -> int:
    """The least cost of any cut of the sorted lengths into consecutive groups, by trying
    every cut."""
    ordered = sorted(lengths)
    best = None
    for cuts in itertools.product((False, True), repeat=len(ordered) - 1):
        cost, start = 0, 0
        for end in [i + 1 for i, cut in enumerate(cuts) if cut] + [len(ordered)]:
            cost += (end - start) * ordered[end - 1] + run_cost
            start = end
        best = cost if best is None else min(best, cost)
    assert best is not None
    return best


@pytest.mark.parametrize("seed", range(25))
def test_the_split_is_the_cheapest_cut_of_the_rows_by_length(seed: int) -> None:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 130, size=int(rng.integers(2, 11)))
    groups = split_rows(lengths, run_cost=32)
    assert sorted(np.concatenate(groups).tolist()) == list(range(len(lengths)))
    # Each group holds consecutive lengths of the sorted order: its rows are all no longer
    # than the next group's shortest.
    for shorter, longer in itertools.pairwise(groups):
        assert lengths[shorter].max() <= lengths[longer].min()
    cost = sum(len(rows) * int(lengths[rows].max()) + 32 for rows in groups)
    assert cost == cheapest(lengths.tolist(), 32)


def test_batches_of_one_length_stay_one_call_in_their_order() -> None:
    assert [g.tolist() for g in split_rows(np.array([12, 14, 11, 13]))] == [[0, 1, 2, 3]]
    assert [g.tolist() for g in split_rows(np.array([100]))] == [[0]]
    assert [g.tolist() for g in split_rows(np.array([10, 60]), run_cost=60)] == [[0, 1]]
    assert [g.tolist() for g in split_rows(np.array([128, 12, 10, 128, 11]))] == [
        [2, 4, 1],
        [0, 3],
    ]


def test_the_sequence_axes_come_from_the_graph_shapes() -> None:
    text = LengthSplit.of(nodes(TEXT_SHAPES), nodes([("logits", ["batch_size", 3])]))
    assert text is not None
    assert text.feed_axes == {"input_ids": 1, "attention_mask": 1, "token_type_ids": 1}
    assert text.output_axes == (None,)
    per_token = nodes([("logits", ["batch_size", "sequence_length", 5])])
    tokens = LengthSplit.of(nodes(TEXT_SHAPES), per_token)
    assert tokens is not None and tokens.output_axes == (1,)
    # No attention mask (an image model), or an output dimension the graph does not name
    # as the batch, the sequence or a number: never split.
    pixels = nodes([("pixel_values", ["batch_size", 3, 224, 224])])
    assert LengthSplit.of(pixels, nodes([("logits", ["batch_size", 2])])) is None
    unknown = nodes([("logits", ["batch_size", "Addlogits_dim_1"])])
    assert LengthSplit.of(nodes(TEXT_SHAPES), unknown) is None
    unnamed = nodes([("input_ids", [None, None]), ("attention_mask", [None, None])])
    assert LengthSplit.of(unnamed, nodes([("logits", [None, 3])])) is None


def test_split_outputs_are_put_back_in_the_batch_order_and_width() -> None:
    split = LengthSplit.of(
        nodes(TEXT_SHAPES[:2]),
        nodes([("logits", ["batch_size", 2]), ("tokens", ["batch_size", "sequence_length"])]),
    )
    assert split is not None
    lengths = [40, 3, 40, 2]
    mask = np.array([[1] * n + [0] * (40 - n) for n in lengths])
    ids = np.arange(mask.size).reshape(mask.shape) * mask
    calls: list[tuple[int, ...]] = []

    def call(feeds: dict[str, Any]) -> list[Any]:
        # A model whose row output is (its length, first id) and whose token output is its ids.
        calls.append(feeds["input_ids"].shape)
        rows = np.stack([feeds["attention_mask"].sum(1), feeds["input_ids"][:, 0]], axis=1)
        return [rows.astype(np.float32), feeds["input_ids"]]

    outputs, count = split.run({"input_ids": ids, "attention_mask": mask}, call)
    assert count == 2 and sorted(calls) == [(2, 3), (2, 40)]
    np.testing.assert_array_equal(outputs[0], np.stack([lengths, ids[:, 0]], axis=1))
    np.testing.assert_array_equal(outputs[1], ids)


# ---- through gRPC -----------------------------------------------------------------------

LONG = " ".join(["the movie was good and the plot was great"] * 4)
MIXED = ["fun", LONG, "bad film", "i love it", LONG, "boring"]


async def classify_each_way(settings, plugins, length_buckets: bool) -> dict[str, Any]:
    """Every text alone, then all in one request, on a server with metrics."""
    settings = settings.replace(metrics_port=free_port(), length_buckets=length_buckets)
    running = await start_server(settings, plugins)
    try:
        async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = inference_pb2_grpc.InferenceStub(channel)

            async def scores(texts: list[str]) -> list[list[float]]:
                request = pb.ClassifyRequest(model="tiny", inputs=[pb.Input(text=t) for t in texts])
                reply = await stub.Classify(request)
                return [
                    [s.score for s in sorted(r.labels, key=lambda s: s.label)]
                    for r in reply.results
                ]

            alone = [(await scores([text]))[0] for text in MIXED]
            together = await scores(MIXED)
            same_length = await scores(["fun", "bad", "boring"])
        families = await asyncio.to_thread(scrape_metrics, running.metrics_port)
    finally:
        await running.stop(0)
    split = sum(s.value for s in families["edgetune_split_batches"] if s.name.endswith("_total"))
    return {"alone": alone, "together": together, "same": same_length, "split": split}


async def test_a_mixed_batch_runs_split_and_answers_as_each_text_alone(settings, plugins) -> None:
    on = await classify_each_way(settings, plugins, length_buckets=True)
    assert on["split"] == 1  # the mixed request; the one-length one ran as one call
    np.testing.assert_allclose(on["together"], on["alone"], atol=1e-5)
    off = await classify_each_way(settings, plugins, length_buckets=False)
    assert off["split"] == 0
    np.testing.assert_allclose(off["together"], on["together"], atol=1e-5)
