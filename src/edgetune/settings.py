"""Server settings in groups, read from EDGETUNE_* environment variables.

Each field of a group is the environment variable EDGETUNE_<FIELD> (the group is not part
of the name: `settings.limits.max_batch_size` is EDGETUNE_MAX_BATCH_SIZE). Command-line
flags override the environment; see `edgetune serve --help`. Settings are frozen: make a
changed copy with `Settings.replace`. What a task plugin alone uses is the plugin's own
setting, and a model's model-settings.json overrides batching and threads for that model.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Literal, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from edgetune.errors import InvalidArgument

ENV_PREFIX = "EDGETUNE_"
_PINNED_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def default_home() -> Path:
    """~/.edgetune: where models, jobs and data sets live unless EDGETUNE_HOME says."""
    return Path.home() / ".edgetune"


class _Group(BaseModel):
    """A group of settings: frozen, and a misspelt field is an error, not ignored."""

    # The docstrings under each field document it (README and tests/test_docs.py read
    # them); pydantic's use_attribute_docstrings would parse this file's source at every
    # start (60 ms of the server's start-up), so it stays off.
    model_config = ConfigDict(frozen=True, extra="forbid")


class ServerSettings(_Group):
    """Where the gRPC server listens, how it stops, which plugins it loads."""

    host: str = "127.0.0.1"
    """Address the gRPC server binds to."""

    port: int = Field(default=50051, ge=0, le=65535)
    """Port the gRPC server binds to; 0 picks a free port."""

    shutdown_grace_s: float = Field(default=10.0, ge=0)
    """Seconds in-flight calls get to finish after SIGTERM/SIGINT before they are cancelled."""

    shutdown_drain_delay_s: float = Field(default=1.0, ge=0)
    """Seconds after SIGTERM/SIGINT during which health answers NOT_SERVING while new calls
    are still accepted, so health checkers and load balancers move traffic away first."""

    plugins: list[str] = Field(default_factory=list)
    """Extra plugin modules to load by import path (like `--plugin`)."""

    disable_plugin_autoload: bool = False
    """Do not load plugins from the `edgetune` entry-point group of installed distributions."""


class SecuritySettings(_Group):
    """TLS and authentication. The TLS files come as a pair; a client CA needs them."""

    tls_cert_file: Path | None = None
    """PEM certificate chain of the server; with tls_key_file, the server speaks only TLS."""

    tls_key_file: Path | None = None
    """PEM private key of tls_cert_file."""

    tls_client_ca_file: Path | None = None
    """PEM CA bundle for mutual TLS: clients must present a certificate it signed."""

    insecure: bool = False
    """Serve plaintext on a non-loopback address (a warning is logged). Without TLS and
    without this, the server only starts on a loopback address."""

    auth: str = ""
    """Authenticator for every call except health, reflection and v2 liveness/readiness:
    "token" (built-in bearer tokens with scopes, see `edgetune tokens`) or one a plugin
    registers; empty = no authentication."""

    @model_validator(mode="after")
    def _tls_pair(self) -> SecuritySettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("TLS needs both tls_cert_file and tls_key_file")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file needs tls_cert_file and tls_key_file")
        return self


class LimitsSettings(_Group):
    """Sizes and quotas every request and upload is checked against."""

    max_batch_size: int = Field(default=64, ge=1)
    """Most inputs accepted in one Classify call."""

    max_text_bytes: int = Field(default=32_768, ge=1)
    """Most UTF-8 bytes in one input text; longer texts are refused, not cut."""

    max_message_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    """Largest gRPC message the server receives or sends."""

    max_dataset_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    """Largest data-set file accepted by UploadDataset (and inline examples, encoded)."""

    datasets_quota_mb: float = Field(default=2048, ge=0)
    """Most disk space (MiB) the stored data sets may take together; an upload that would
    pass it is refused with RESOURCE_EXHAUSTED. 0 = no quota."""

    max_base_file_bytes: int = Field(default=2 * 1024**3, ge=1)
    """Largest file of a base model uploaded with UploadBase."""

    max_base_bytes: int = Field(default=4 * 1024**3, ge=1)
    """Largest base model (all its files) uploaded with UploadBase."""

    bases_quota_mb: float = Field(default=16384, ge=0)
    """Most disk space (MiB) the stored base models (`<home>/bases`) may take together; an
    upload that would pass it is refused with RESOURCE_EXHAUSTED. 0 = no quota."""

    models_quota_mb: float = Field(default=0, ge=0)
    """Disk space (MiB) the model repository may take; while it holds more, new fine-tune
    jobs are refused with RESOURCE_EXHAUSTED. 0 = no quota."""


class BatchingSettings(_Group):
    """The dynamic batcher (a model's model-settings.json can override these)."""

    batch_max_size: int = Field(default=32, ge=1)
    """Most inputs the dynamic batcher puts in one ONNX Runtime call (requests that arrive
    while a call runs are combined); a request bigger than this runs on its own."""

    batch_max_delay_ms: float = Field(default=0.0, ge=0)
    """How long an idle model waits for more requests before running a batch; 0 runs at once
    (no added latency), batching only what queued up while the previous call ran."""

    max_queue_size: int = Field(default=256, ge=1)
    """Requests that may wait per model; beyond it requests get RESOURCE_EXHAUSTED."""

    inline_max_inputs: int = Field(default=1, ge=0)
    """Batches of at most this many inputs, taken when no other request waits and sent well
    after the previous run ended (not queued behind it), run on the event-loop thread
    instead of the inference pool: saves two thread hand-offs (about 0.3 ms) at the cost of
    holding other calls for that one short run. 0 always uses the pool."""


class RuntimeSettings(_Group):
    """ONNX Runtime and the loaded models: threads, providers, memory, start-up loading."""

    intra_op_threads: int = Field(default=0, ge=0)
    """ONNX Runtime threads per inference call; 0 uses the number of physical cores."""

    intra_op_spinning: bool = True
    """Let ONNX Runtime threads spin for work, for at most `intra_op_spin_us`, before they
    sleep, instead of sleeping at once after every parallel section of a run. Runs alone
    on a model then take its session with a thread per core whatever their size (see
    `small_run_tokens`). Under k6 on one 2-core machine (bench/latency.py's scenarios, the
    settings interleaved, two rounds): a short text at 1 caller p50 2.78-3.20 ms against
    3.71-4.28 with sleeping threads (where it ran on the one-thread session), a 128-token
    article 11.8-12.6 against 14.4, 32 callers and mixed lengths at 8 unchanged within
    the noise; the server burns ~0.6 CPU ms more per call at 1 caller. An earlier
    measurement on another machine found the opposite at 1 caller (p50 3.0-3.6 against
    2.4-2.6 ms: the spinning threads took the CPU its clients on the same cores needed):
    measure with the bench where it matters."""

    intra_op_spin_us: int = Field(default=100, ge=0, le=1_000_000)
    """How long an ONNX Runtime thread spins for work before it sleeps, in microseconds,
    when `intra_op_spinning` is on; 0 = ONNX Runtime's own, much longer spin."""

    small_run_tokens: int = Field(default=64, ge=0)
    """On CPU, when the main session has more than one thread, each model also gets a
    one-thread session, and as many of its runs as the main session has threads may be in
    flight at once, each on that session (one core each: two cores ran 2,260 short texts/s
    in batches of 8 that way, against 1,300 with one two-thread run at a time). When the
    threads do not spin (`intra_op_spinning` off), a run alone (no model running) takes the
    one-thread session too when its largest input holds at most this many elements (batch
    x tokens): waking a sleeping second thread costs more than it saves on so little work
    (one short sentence: 1.24 against 1.57 ms in-process). 0 = one session, one run at a
    time."""

    length_buckets: bool = True
    """Run a batch of texts of mixed lengths as several ONNX Runtime calls of similar
    length when that pads fewer tokens than one call padded to the longest (a short
    question batched with an article otherwise costs as much as a second article). Off:
    every batch is one call."""

    inference_workers: int = Field(default=0, ge=0)
    """Threads that run inference calls off the event loop, and the batches the models on
    the CPU may have in flight at once, all of them together; 0 uses the number of
    physical cores. ONNX Runtime releases the GIL, so these run truly in parallel."""

    execution_providers: list[str] = Field(default_factory=list)
    """ONNX Runtime execution providers to use, best first. Empty picks automatically:
    CUDA when this onnxruntime build and machine have it, else CPU."""

    memory_budget_mb: float = Field(default=0, ge=0)
    """Most memory the loaded models may hold together, in MiB; 0 sets no budget. Each
    version counts the resident memory its load added (at least its model.onnx size).
    Loading one more first evicts the least recently used versions that are not pinned; an
    evicted version loads again on its next request; one that cannot fit is refused with
    RESOURCE_EXHAUSTED. The process itself (Python, gRPC, ONNX Runtime: about 90 MiB) comes
    on top."""

    pinned_models: list[str] = Field(default_factory=list)
    """Models (`name`, or `name:version` for one version) loaded when the server starts and
    never evicted under the memory budget."""

    model_control: Literal["all", "pinned", "lazy"] = "all"
    """Which models the server loads when it starts, before it reports ready: "all" (the
    `latest` version of every model in the repository, most recently published first,
    as many as the memory budget holds without evicting; the rest load on first use),
    "pinned" (only pinned_models) or "lazy" (none: each loads on its first request).
    Pinned models always load at start-up."""

    repository_dir: Path | None = None
    """Folder of the model repository; unset = `<home>/models`. Replicas that serve the same
    models point theirs at one shared folder (a network file system) and keep a home each
    (jobs and data sets stay with the one replica that fine-tunes)."""

    repository_url: str = ""
    """Where the model repository lives, as a URL: empty (repository_dir, else
    `<home>/models`), `file:///absolute/folder`, or `s3://bucket/prefix` (the `s3` extra:
    versions are downloaded into repository_cache_dir; endpoint, region and credentials come
    from the standard AWS_* variables, AWS_ENDPOINT_URL for an S3-compatible store). Set
    this or repository_dir, not both."""

    repository_cache_dir: Path | None = None
    """Local read-through cache of an `s3://` repository: each version used is downloaded,
    checked against its manifest's sha256 and kept here (versions are immutable), and jobs
    stage their exports here; unset = `<home>/cache/models`."""

    repository_poll_s: float = Field(default=0.0, ge=0)
    """Seconds between checks of the repository for alias moves (a new `latest`) of the
    models being served, which are then loaded, warmed and switched to as a local
    promotion is, so a replica follows what another one published. 0 = off."""

    warmup: bool = True
    """Run one inference at load so the first real request is not slow."""

    verify_checksums: bool = True
    """Check each model file's sha256 against its manifest before loading it."""

    @field_validator("pinned_models")
    @classmethod
    def _pinned_names(cls, pinned: list[str]) -> list[str]:
        for entry in pinned:
            name, colon, spec = entry.partition(":")
            if not _PINNED_NAME.fullmatch(name) or (colon and not _PINNED_NAME.fullmatch(spec)):
                raise ValueError(
                    f"pinned model {entry[:64]!r} is not `name` or `name:version` "
                    "(a number or an alias)"
                )
        return pinned

    @field_validator("repository_url")
    @classmethod
    def _repository_url(cls, url: str) -> str:
        parse_repository_url(url)
        return url

    @model_validator(mode="after")
    def _one_repository(self) -> RuntimeSettings:
        if self.repository_url and self.repository_dir is not None:
            raise ValueError("set EDGETUNE_REPOSITORY_URL or EDGETUNE_REPOSITORY_DIR, not both")
        return self

    @property
    def pinned_routes(self) -> list[tuple[str, str]]:
        """(name, version-or-alias) of each pinned model, `latest` when only a name, sorted."""
        return sorted(
            (name, spec or "latest")
            for name, _, spec in (entry.partition(":") for entry in set(self.pinned_models))
        )


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX_PART = re.compile(r"^[A-Za-z0-9._-]+$")


def parse_repository_url(url: str) -> tuple[str, str, str]:
    """(scheme, where, prefix) of a repository_url: ("file", folder, "") for a folder ("" for
    the default) and ("s3", bucket, prefix) for a bucket, the prefix without slashes at its
    ends ("" for the whole bucket).

    :raises ValueError: an unsupported scheme or a malformed URL (what is wrong, quoted).
    """
    if not url:
        return "file", "", ""
    scheme, sep, rest = url.partition("://")
    if not sep:
        if not url.startswith("/"):
            raise ValueError(f"{url[:64]!r} is not an absolute folder, file:// or s3:// URL")
        return "file", url, ""
    if scheme == "file":
        # file:///folder: an empty (or localhost) host, an absolute path.
        host, slash, path = rest.partition("/")
        if host not in ("", "localhost") or not slash:
            raise ValueError(f"{url[:64]!r}: write file:///absolute/folder")
        return "file", "/" + path, ""
    if scheme == "s3":
        bucket, _, prefix = rest.partition("/")
        if not _BUCKET.fullmatch(bucket) or ".." in bucket:
            raise ValueError(
                f"{url[:64]!r}: bucket {bucket[:64]!r} is not a valid S3 bucket name "
                "(3-63 lowercase letters, digits, '.' and '-')"
            )
        parts = [part for part in prefix.strip("/").split("/") if part]
        if any(not _PREFIX_PART.fullmatch(p) or p in (".", "..") for p in parts):
            raise ValueError(
                f"{url[:64]!r}: the prefix may hold letters, digits, '.', '_', '-' and '/' "
                "(no '.' or '..' parts)"
            )
        return "s3", bucket, "/".join(parts)
    raise ValueError(f"{url[:64]!r}: unsupported scheme {scheme[:16]!r} (use file:// or s3://)")


class TrainingSettings(_Group):
    """Fine-tuning jobs: concurrency, training processes, the int8 gate, the search."""

    base_dirs: list[Path] = Field(default_factory=list)
    """Folders besides `<home>/bases` that a fine-tune request's base_path may name a model
    in; a path that resolves (symlinks followed) outside all of them is refused."""

    max_concurrent_jobs: int = Field(default=1, ge=0)
    """Fine-tuning jobs that train at the same time; the rest wait in the queue. 0 pauses
    fine-tuning: jobs are accepted and queued, and none starts until a restart with more."""

    max_queued_jobs: int = Field(default=32, ge=1)
    """Fine-tuning jobs that may wait for a slot; beyond it CreateJob gets RESOURCE_EXHAUSTED."""

    train_threads: int = Field(default=0, ge=0)
    """torch threads of a training process; 0 uses the number of physical cores."""

    train_nice: int = Field(default=10, ge=0, le=19)
    """Scheduling niceness of training processes, so serving wins the CPU when both want it."""

    max_accuracy_drop: float = Field(default=0.01, ge=0, le=1)
    """Largest int8-vs-fp32 drop of the gate metric (0.01 = 1 point) that still publishes int8."""

    gate_failure: Literal["fp32", "fail"] = "fp32"
    """What a job does when int8 loses more than max_accuracy_drop: publish the fp32 model
    ("fp32") or fail ("fail")."""

    search_budget_factor: float = Field(default=2.0, gt=0)
    """A job's search without a time budget of its own stops starting trials once its trials
    took this many times the first trial's duration."""

    search_max_length: int = Field(default=128, ge=8, le=8192)
    """Most tokens per example a search picks when the request sets no max_length: it takes
    the 95th percentile of the training texts' token counts, within this and the model's
    limit. Training and serving time grow with it (at 256 tokens a MiniLM epoch took 3.4
    times one at 128), and longer inputs did not pay for it: BBC News (800 articles, the
    cosine-head task), 4 epochs at 128 tokens scored 0.9747 on 1,425 held-out articles
    whether served at 128 or 256 tokens, 2 epochs at 256 (the same time) 0.9733."""

    search_trial_max_length: int = Field(default=128, ge=0, le=8192)
    """Most tokens of each input a search's trials see when the chosen configuration is
    retrained on all rows at the data's length (search_max_length): the trials only rank
    configurations, and attention cost grows with the length. BBC News (800 articles,
    search_max_length 256, the cosine-head task): the default job took 870 s with trials
    at 128 tokens against 1,859 s with trials at 256 (an earlier run, other work beside
    it for part of it), choosing the same configuration and publishing a model with the
    same held-out accuracy (0.9747). 0 = trials at the data's length."""

    search_refit_rows: int = Field(default=5000, ge=0)
    """Data sets with at most this many labelled rows (training plus a validation split)
    are retrained on all of them with the configuration a search chose; larger ones
    publish the chosen trial's model. 0 never retrains."""

    cancel_grace_s: float = Field(default=10.0, ge=0)
    """Seconds a cancelled training process gets to stop before it is killed."""

    max_job_attempts: int = Field(default=2, ge=1)
    """Times a job may start; a job interrupted by a server restart resumes from its last
    checkpoint while attempts remain, else it fails with the reason."""

    job_runner: str = "local"
    """Where jobs' training processes run: "local" (a child process of the server, niced),
    "ray" (a job on the Ray cluster at ray_address; the `ray` extra), or a runner a plugin
    registers."""

    ray_address: str = ""
    """The Ray cluster's dashboard (Jobs API) address for job_runner "ray", e.g.
    `http://127.0.0.1:8265`."""

    ray_shared_home: bool = True
    """Whether the Ray nodes see the server's home at the same path (one machine, or a
    shared file system). False: each Ray job gets its data sets, base folder and job record
    in its working_dir package, keeps its own job store and checkpoints on its node, and
    sends every event back through its log stream, which the server records; the model
    repository must then be one the nodes reach (repository_url s3://..., or
    repository_dir on a shared mount)."""


class ObservabilitySettings(_Group):
    """Metrics, the request log and the server's log level."""

    metrics_port: int = Field(default=0, ge=0, le=65535)
    """Port of the Prometheus metrics endpoint (HTTP, `/metrics`) on the gRPC host; it
    follows the same rules (TLS with the server's certificate when one is set, plaintext
    only on loopback unless `insecure`). 0 = no metrics endpoint."""

    access_log: Literal["off", "text", "json"] = "off"
    """One log line per request on the `edgetune.access` logger: "text" (key=value),
    "json", or "off". Lines name the method, model, version, input count, status, queue
    and inference milliseconds and the peer, never the inputs themselves."""

    log_level: str = "INFO"
    """Python logging level of the server."""


GROUPS: dict[str, type[_Group]] = {
    "server": ServerSettings,
    "security": SecuritySettings,
    "limits": LimitsSettings,
    "batching": BatchingSettings,
    "runtime": RuntimeSettings,
    "training": TrainingSettings,
    "observability": ObservabilitySettings,
}
FIELD_GROUPS: dict[str, str] = {
    field: group for group, model in GROUPS.items() for field in model.model_fields
}
"""The group of every setting, by its flat name (the environment variable's)."""


class _FlatEnvironment(PydanticBaseSettingsSource):
    """EDGETUNE_<FIELD> variables, put into the field's group. Lists are JSON."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        """Unused: __call__ reads every field at once."""
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        environ = {key.upper(): value for key, value in os.environ.items()}
        values: dict[str, Any] = {}
        if (home := environ.get(f"{ENV_PREFIX}HOME")) is not None:
            values["home"] = home
        for field, group in FIELD_GROUPS.items():
            raw = environ.get(f"{ENV_PREFIX}{field.upper()}")
            if raw is None:
                continue
            annotation = GROUPS[group].model_fields[field].annotation
            if get_origin(annotation) in (list, dict):
                try:
                    raw = json.loads(raw)
                except json.JSONDecodeError:
                    raise InvalidArgument(
                        f'{ENV_PREFIX}{field.upper()} must be a JSON list, e.g. ["a", "b"]'
                    ) from None
            values.setdefault(group, {})[field] = raw
        return values


class Settings(BaseSettings):
    """edgetune settings: the home folder and one frozen group per concern."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid")

    home: Path = Field(default_factory=default_home)
    """Folder holding the model repository (`<home>/models/<name>/<version>/`)."""

    server: ServerSettings = ServerSettings()
    """Where the gRPC server listens, how it stops, which plugins it loads."""

    security: SecuritySettings = SecuritySettings()
    """TLS and authentication."""

    limits: LimitsSettings = LimitsSettings()
    """Request, upload and disk limits."""

    batching: BatchingSettings = BatchingSettings()
    """The dynamic batcher."""

    runtime: RuntimeSettings = RuntimeSettings()
    """ONNX Runtime and the loaded models."""

    training: TrainingSettings = TrainingSettings()
    """Fine-tuning jobs."""

    observability: ObservabilitySettings = ObservabilitySettings()
    """Metrics and logs."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments first, then the flat EDGETUNE_* variables (no .env or secret files)."""
        return init_settings, _FlatEnvironment(settings_cls)

    @model_validator(mode="before")
    @classmethod
    def _route_flat_names(cls, data: Any) -> Any:
        """Accept flat names (`Settings(max_batch_size=8)`) beside groups; a flat name wins
        over the same field in a group (it came from an argument, the group maybe from the
        environment)."""
        if not isinstance(data, dict):
            return data
        routed: dict[str, Any] = {}
        flat: dict[str, dict[str, Any]] = {}
        for key, value in data.items():
            if key in GROUPS or key == "home":
                routed[key] = value.model_dump() if isinstance(value, BaseModel) else value
            elif key in FIELD_GROUPS:
                flat.setdefault(FIELD_GROUPS[key], {})[key] = value
            else:
                raise ValueError(f"unknown setting {key[:64]!r}")
        for group, fields in flat.items():
            routed[group] = {**routed.get(group, {}), **fields}
        return routed

    def replace(self, **changes: Any) -> Settings:
        """A copy with changes (flat names or whole groups), validated.

        :raises InvalidArgument: a change is out of range or breaks a rule between settings;
            the message names the setting.
        """
        values: dict[str, Any] = {"home": self.home}
        values.update({group: getattr(self, group).model_dump() for group in GROUPS})
        return load_settings(**(values | changes))

    def model_copy(self, *, update: Any = None, deep: bool = False) -> Settings:
        """Settings are frozen and validated: a copy goes through `replace`, so flat names
        in update work and a bad value is refused."""
        return self.replace(**(update or {}))

    def flat(self) -> dict[str, Any]:
        """Every setting by its flat name, JSON-ready (what EDGETUNE_<NAME> would hold)."""
        values: dict[str, Any] = {"home": str(self.home)}
        for group in GROUPS:
            values.update(getattr(self, group).model_dump(mode="json"))
        return values

    @property
    def bases_dir(self) -> Path:
        """Where base models for fine-tuning live (relative base_path is resolved here)."""
        return self.home / "bases"

    @property
    def models_dir(self) -> Path:
        """Root of a local model repository (a file repository_url, `repository_dir`, else
        `<home>/models`); for an `s3://` repository, its local cache."""
        scheme, where, _ = parse_repository_url(self.runtime.repository_url)
        if scheme == "s3":
            return self.models_cache_dir
        if where:
            return Path(where)
        return self.runtime.repository_dir or self.home / "models"

    @property
    def models_cache_dir(self) -> Path:
        """Local cache of an `s3://` model repository (`repository_cache_dir`, else
        `<home>/cache/models`)."""
        return self.runtime.repository_cache_dir or self.home / "cache" / "models"

    @property
    def datasets_dir(self) -> Path:
        """Uploaded data sets."""
        return self.home / "datasets"

    @property
    def jobs_dir(self) -> Path:
        """Job work folders (checkpoints, exports in progress) and the job database."""
        return self.home / "jobs"


def load_settings(**values: Any) -> Settings:
    """Settings from values (flat names or groups) over the environment.

    :raises InvalidArgument: a value is out of range, of the wrong type or breaks a rule
        between settings; the message names the setting (as its environment variable).
    """
    try:
        return Settings(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = [str(part) for part in first["loc"] if str(part) not in GROUPS]
        name = f"{ENV_PREFIX}{where[0].upper()}" if where else "settings"
        message = first["msg"].removeprefix("Value error, ")
        raise InvalidArgument(f"setting {name}: {message}") from None
