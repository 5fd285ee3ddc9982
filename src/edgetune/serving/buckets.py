"""Length buckets: a padded batch of mixed-length texts runs as several ONNX Runtime calls
of similar lengths when that is cheaper than one call padded to the longest.

A batch is padded to its longest input, and a transformer's cost grows with batch x
padded length: a 12-token question batched with a 128-token article costs as much as a
second article. Sorted by length, the rows are cut into consecutive groups (the cut that
minimises padded tokens plus `RUN_COST_TOKENS` per call, found by dynamic programming);
each group runs with its feeds cut to its own width, and the outputs are put back in the
batch's order and width, so `TaskRuntime.decode` sees what one call would have given.

Which feed axis and output axis is "the sequence" comes from the graph itself: ONNX names
symbolic dimensions, and an exporter (Optimum, torch.onnx) gives the attention mask's
second axis the same name everywhere it appears (`sequence_length`). A model whose
outputs have a dimension that is neither the batch, the sequence nor a fixed number (or
that takes no attention mask) is never split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgetune.task import Array

RUN_COST_TOKENS = 32
"""The fixed cost of one ONNX Runtime call, in padded tokens of the batch: a split must
save more padding than this per extra call. Fused int8 MiniLM, two threads, AMD EPYC with
AVX2: one 16-token row 3.6 ms, one 128-token row 19.8 ms (0.14 ms a token), so the call
itself is ~1.4 ms, ~10 tokens; 32 leaves room for noise. In process, 4 short texts and 4
articles ran 96 examples/s split (two calls) against 60 in one call padded to 128."""

MASK = "attention_mask"

Feeds = dict[str, Array]


@dataclass(frozen=True, slots=True)
class LengthSplit:
    """Where the sequence axis is in a model's feeds and outputs."""

    feed_axes: dict[str, int | None]
    """Each input's sequence axis (None: it has none; every input has the batch first)."""
    output_axes: tuple[int | None, ...]
    """Each output's sequence axis, in session output order (None: one row per input)."""

    @classmethod
    def of(cls, inputs: Sequence[Any], outputs: Sequence[Any]) -> LengthSplit | None:
        """The split of a session with these inputs and outputs (`get_inputs()`,
        `get_outputs()`: objects with `name` and `shape`), or None when its shapes do not
        say where the batch and the sequence are."""
        shapes = {node.name: list(node.shape) for node in inputs}
        mask = shapes.get(MASK)
        if mask is None or len(mask) != 2 or not all(isinstance(d, str) for d in mask):
            return None
        batch, sequence = mask
        feed_axes: dict[str, int | None] = {}
        for name, shape in shapes.items():
            if not shape or shape[0] != batch:
                return None
            feed_axes[name] = shape.index(sequence) if sequence in shape else None
        output_axes: list[int | None] = []
        for node in outputs:
            shape = list(node.shape)
            known = all(isinstance(d, int) or d in (batch, sequence) for d in shape[1:])
            if not shape or shape[0] != batch or not known or shape.count(sequence) > 1:
                return None
            output_axes.append(shape.index(sequence) if sequence in shape else None)
        return cls(feed_axes, tuple(output_axes))

    def run(self, feeds: Feeds, call: Callable[[Feeds], list[Array]]) -> tuple[list[Array], int]:
        """The outputs of `feeds`, computed by `call` on the whole batch or on groups of
        similar length; and how many calls that took."""
        groups = split_rows(np.count_nonzero(feeds[MASK], axis=1))
        if len(groups) == 1:
            return call(feeds), 1
        width = feeds[MASK].shape[1]
        merged: list[Array] = []
        for rows in groups:
            columns = np.flatnonzero(feeds[MASK][rows].any(axis=0))
            span = slice(int(columns[0]), int(columns[-1]) + 1) if columns.size else slice(0, 1)
            part = call({name: self._cut(name, feed, rows, span) for name, feed in feeds.items()})
            if not merged:
                merged = [
                    self._empty(out, axis, len(feeds[MASK]), width)
                    for out, axis in zip(part, self.output_axes, strict=True)
                ]
            for whole, out, axis in zip(merged, part, self.output_axes, strict=True):
                whole[_place(rows, out.ndim, axis, span)] = out
        return merged, len(groups)

    def _cut(self, name: str, feed: Array, rows: Array, span: slice) -> Array:
        axis = self.feed_axes.get(name)
        return np.ascontiguousarray(feed[_place(rows, feed.ndim, axis, span)])

    @staticmethod
    def _empty(part: Array, axis: int | None, rows: int, width: int) -> Array:
        shape = list(part.shape)
        shape[0] = rows
        if axis is not None:
            shape[axis] = width
        return np.zeros(shape, dtype=part.dtype)


def _place(rows: Array, ndim: int, axis: int | None, span: slice) -> tuple[Any, ...]:
    """The index of `rows` (and of `span` on the sequence axis) in an array of ndim axes."""
    index: list[Any] = [rows] + [slice(None)] * (ndim - 1)
    if axis is not None:
        index[axis] = span
    return tuple(index)


def split_rows(lengths: Array, run_cost: int = RUN_COST_TOKENS) -> list[Array]:
    """Row indices of each call, shortest rows first: the consecutive groups of the rows
    sorted by length that minimise padded tokens + run_cost per call. One group (all rows,
    in order) when splitting saves no more than a call costs."""
    count = len(lengths)
    longest = int(lengths.max(initial=0))
    if count < 2 or count * longest - int(lengths.sum()) <= run_cost:
        return [np.arange(count)]
    order = np.argsort(lengths, kind="stable")
    ordered = lengths[order].astype(np.int64)
    # cost[j]: least cost of the first j sorted rows; the last group holding rows i..j-1
    # costs (j - i) x ordered[j - 1] + run_cost.
    cost = np.zeros(count + 1, dtype=np.int64)
    start = np.zeros(count + 1, dtype=np.int64)
    for j in range(1, count + 1):
        options = cost[:j] + (j - np.arange(j)) * ordered[j - 1] + run_cost
        start[j] = int(np.argmin(options))
        cost[j] = options[start[j]]
    if start[count] == 0:
        return [np.arange(count)]
    groups: list[Array] = []
    end = count
    while end > 0:
        groups.append(order[start[end] : end])
        end = int(start[end])
    return groups[::-1]
