"""The transport-free inference service: validate a request, route it, run it off the loop."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

from edgetune.errors import InvalidArgument
from edgetune.serving.batcher import Batcher, Cores
from edgetune.serving.model import ServedModel
from edgetune.serving.observe import CURRENT_CALL, Observer, Timing
from edgetune.serving.registry import ModelRegistry
from edgetune.serving.session import CPU, physical_cores
from edgetune.settings import Settings
from edgetune.store import ModelVersion
from edgetune.store.model_settings import ModelOverrides, ModelSettings
from edgetune.task import Input, Result, Text, TextPair


@dataclass(frozen=True, slots=True)
class Classification:
    """The answer to one Classify call."""

    version: ModelVersion
    results: list[Result]


class InferenceService:
    """Classify batches of inputs on the models of a registry; concurrent requests for one
    model share ONNX Runtime calls through its Batcher."""

    def __init__(
        self,
        registry: ModelRegistry,
        settings: Settings,
        executor: Executor,
        observer: Observer | None = None,
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.executor = executor
        self.observer = observer
        self.cores = Cores(settings.runtime.inference_workers or physical_cores())
        """The runs in flight on the CPU across every model (the batchers of the models
        whose sessions run on the CPU share it): at most one a core, as many as the
        inference pool has workers."""

    async def classify(
        self, model: str, version: str, inputs: Sequence[Input], top_k: int = 0
    ) -> Classification:
        """Check the request against the limits and the model's task, then run it.

        :raises InvalidArgument: naming the field (`model`, `inputs`, `inputs[i].text` ...).
        :raises NotFound: the model or version does not exist.
        """
        if not model:
            raise InvalidArgument("model is required")
        self._check_inputs(inputs)
        served = await self.registry.get(model, version)
        record = CURRENT_CALL.get()
        if record is not None:
            record.model, record.version = served.version.name, str(served.version.version)
        accepted = served.task.input_kinds
        for index, item in enumerate(inputs):
            if not isinstance(item, accepted):
                kinds = ", ".join(kind.kind for kind in accepted)
                raise InvalidArgument(
                    f"inputs[{index}]: model {model!r} (task {served.task.name}) does not take "
                    f"{item.kind} input; it takes {kinds}"
                )
        # A request that fills a batch by itself goes through the batcher too: it runs as
        # its own batch, but on the cores' budget, in its turn.
        results = await self._batcher(served).submit(inputs, top_k)
        return Classification(served.version, results)

    def _settings_of(self, served: ServedModel) -> ModelSettings:
        if served.settings is None:
            served.settings = ModelOverrides().applied_to(self.settings)
        return served.settings

    def _batcher(self, served: ServedModel) -> Batcher:
        if served.batcher is None:
            observer, version = self.observer, served.version
            knobs = self._settings_of(served)

            def on_run(timing: Timing) -> None:
                if observer is not None:
                    observer.batch_ran(version, timing)

            on_cpu = served.providers[0] == CPU
            served.batcher = Batcher(
                f"{served.version.name}:{served.version.version}",
                served.run,
                self.executor,
                max_batch=knobs.batch_max_size,
                max_delay_s=knobs.batch_max_delay_ms / 1000,
                max_queue=knobs.max_queue_size,
                inline_max_inputs=knobs.inline_max_inputs,
                on_run=on_run if observer is not None else None,
                parallel_runs=served.parallel_runs,
                cores=self.cores if on_cpu else None,
                run_threads=served.session.get_session_options().intra_op_num_threads,
            )
        return served.batcher

    def _check_inputs(self, inputs: Sequence[Input]) -> None:
        if not inputs:
            raise InvalidArgument("inputs is empty: send at least one input")
        most = self.settings.limits.max_batch_size
        if len(inputs) > most:
            raise InvalidArgument(f"inputs has {len(inputs)} items; the limit is {most}")
        limit = self.settings.limits.max_text_bytes
        for index, item in enumerate(inputs):
            if isinstance(item, Text):
                fields: tuple[tuple[str, str], ...] = (("text", item.text),)
            elif isinstance(item, TextPair):
                fields = (("text_pair.text", item.text), ("text_pair.text_pair", item.text_pair))
            else:
                continue
            for field, text in fields:
                if not text.strip():
                    raise InvalidArgument(f"inputs[{index}].{field} is empty")
                # UTF-8 takes at most 4 bytes a character: most texts need no encoding here.
                if len(text) * 4 > limit and (size := len(text.encode())) > limit:
                    raise InvalidArgument(
                        f"inputs[{index}].{field} is {size} bytes; the limit is {limit}"
                    )
