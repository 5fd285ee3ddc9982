"""Fine-tune jobs on a real Ray cluster (job_runner "ray"), through the public gRPC API.

The test starts a Ray head of its own (loopback only, one CPU, in its own process group,
stopped at the end): a job trains there and its model is served; a server stopped, or
killed with SIGKILL, while its Ray job trains leaves it training, and the next server
follows that job instead of submitting it again; cancel stops it on Ray."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import jsonl, sentiment_rows
from grpc import aio
from test_finetune import FAST, upload, watch_to_end
from test_job_lifecycle import SLOW, wait_for_event

from edgetune.client import free_port
from edgetune.errors import InvalidArgument
from edgetune.server.app import start_server
from edgetune.settings import Settings
from edgetune.store.s3_client import s3_client
from edgetune.training.jobstore import EVENT_MARKER, REMOTE_MARKER, JobStore
from edgetune.training.spec import JobState
from edgetune.v1 import finetuning_pb2 as pb
from edgetune.v1 import finetuning_pb2_grpc, inference_pb2_grpc
from edgetune.v1 import inference_pb2 as ipb

BIN = Path(sys.executable).parent
START_TIMEOUT_S = 120
# Ray's log-tailing client (run by the server) calls aiohttp with a deprecated argument.
pytestmark = pytest.mark.filterwarnings("ignore:ssl=None is deprecated:DeprecationWarning")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_group(pgid: int, grace_s: float = 2.0) -> None:
    """SIGTERM every process of the Ray head's process group, SIGKILL what is left after
    grace_s. Polls: the processes are not this one's children, so there is nothing to wait
    on; bounded by the grace."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace_s
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not _group_alive(pgid):
            return


def start_ray_head(temp: str) -> tuple[int, int, str]:
    """`ray start --head` on loopback ports picked now: (its exit code, its process group,
    the dashboard's address)."""
    dashboard = free_port()
    env = {
        **os.environ,
        # The jobs' `python` is this venv's, which has edgetune (PYTHONPATH passes on too).
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        # Otherwise Ray replaces 127.0.0.1 with the machine's own address for its agents.
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    command = [
        str(BIN / "ray"),
        "start",
        "--head",
        "--port=0",
        "--node-ip-address=127.0.0.1",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard}",
        f"--ray-client-server-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        "--num-cpus=1",
        f"--temp-dir={temp}",
        "--disable-usage-stats",
    ]
    with (Path(temp) / "start.log").open("ab") as out:
        # Its own session: every process the head starts is in this process group.
        starter = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        code = starter.wait(timeout=START_TIMEOUT_S)
    finally:
        starter.kill()
        starter.wait()
    return code, starter.pid, f"http://127.0.0.1:{dashboard}"


@pytest.fixture(scope="module")
def ray_head(endpoint: str) -> Iterator[str]:
    """A Ray head with its dashboard (the Jobs API) on loopback; its address. A start that
    fails (a port picked here taken meanwhile by another process) is tried again, twice.
    It starts with moto's S3 endpoint and credentials in its environment, as a cluster has
    its own credentials for the bucket (the server does not send its AWS_* variables)."""
    # Short: Ray's socket paths under the temp dir must fit in 107 bytes.
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    groups = []
    try:
        for _ in range(3):
            code, group, address = start_ray_head(temp)
            groups.append(group)
            if code == 0:
                break
            _stop_group(group)
        assert code == 0, (Path(temp) / "start.log").read_text()[-4000:]
        yield address
    finally:
        for group in groups:
            _stop_group(group)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture
def ray_settings(settings: Settings, ray_head: str) -> Settings:
    return settings.replace(job_runner="ray", ray_address=ray_head, cancel_grace_s=5)


def job_request(base: Path, name: str, hyperparameters, **fields) -> pb.CreateJobRequest:
    """A text-classification job on the tiny BERT folder base (data: `dataset_id` or
    `examples` in fields)."""
    return pb.CreateJobRequest(
        task="text-classification",
        base_path=str(base),
        model_name=name,
        hyperparameters=hyperparameters,
        **fields,
    )


def ray_client(address: str):
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address)


def submissions(address: str, job_id: str) -> list[str]:
    """The Ray submissions the server made for job_id."""
    return [
        job.submission_id
        for job in ray_client(address).list_jobs()
        if (job.metadata or {}).get("edgetune_job") == job_id
    ]


def until_ray_job_ends(address: str, submission_id: str, timeout: float = 30.0) -> str:
    """The Ray job's terminal status; polls another process's state, bounded by timeout."""
    client = ray_client(address)
    deadline = time.monotonic() + timeout
    while True:
        status = client.get_job_status(submission_id)
        if status.is_terminal() or time.monotonic() > deadline:
            return str(status.value)
        time.sleep(0.2)


async def test_a_job_trains_on_ray_and_its_model_is_served(
    ray_settings, plugins, tiny_bert, ray_head
) -> None:
    running = await start_server(ray_settings, plugins)
    try:
        async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = finetuning_pb2_grpc.FineTuningStub(channel)
            dataset = await upload(stub, jsonl(sentiment_rows(80)))
            job = await stub.CreateJob(
                job_request(tiny_bert, "on-ray", FAST, dataset_id=dataset.id, auto_promote=True)
            )
            events = await watch_to_end(stub, job.id)
            final = await stub.GetJob(pb.GetJobRequest(id=job.id))
            messages = [e.message for e in events]
            assert final.state == pb.JOB_STATE_SUCCEEDED, (final.error, messages)
            assert f"training process started (Ray job {job.id} on {ray_head}, attempt 1)" in (
                messages
            )
            # The same events as a local job: progress, a metrics event per epoch, states.
            states = {pb.JobState.Name(e.state) for e in events}
            assert {"JOB_STATE_RUNNING", "JOB_STATE_EXPORTING", "JOB_STATE_SUCCEEDED"} <= states
            assert [e.sequence for e in events] == list(range(1, len(events) + 1))
            assert len([e for e in events if "accuracy" in e.metrics]) == 2
            progress = [e.progress for e in events if e.progress.total_steps]
            assert progress[-1].step == progress[-1].total_steps == 2 * 8
            assert (final.result.model_name, final.result.version) == ("on-ray", "1")
            assert final.result.promoted
            reply = await inference_pb2_grpc.InferenceStub(channel).Classify(
                ipb.ClassifyRequest(model="on-ray", inputs=[ipb.Input(text="great fun")])
            )
            assert reply.version == "1"
            assert {s.label for s in reply.results[0].labels} == {"negative", "positive"}
    finally:
        await running.stop(0)
    info = ray_client(ray_head).get_job_info(job.id)
    assert (str(info.status.value), info.driver_exit_code) == ("SUCCEEDED", 0)
    logs = ray_client(ray_head).get_job_logs(job.id)
    assert f"{EVENT_MARKER}{job.id}" in logs  # each event woke the watchers through the log
    assert submissions(ray_head, job.id) == [job.id]


async def test_a_restarted_server_reattaches_to_its_ray_job_and_cancel_stops_it(
    ray_settings, plugins, tiny_bert, ray_head, monkeypatch, tmp_path
) -> None:
    # The training process waits after epoch 1 until the next server follows it, so the
    # job is still training through the restart however fast the CPU.
    release = tmp_path / "release"
    monkeypatch.setenv("EDGETUNE_TEST_FAULT", f"hold={release}@epoch")
    first = await start_server(ray_settings, plugins)
    try:
        async with aio.insecure_channel(f"127.0.0.1:{first.port}") as channel:
            stub = finetuning_pb2_grpc.FineTuningStub(channel)
            dataset = await upload(stub, jsonl(sentiment_rows(200)))
            job = await stub.CreateJob(
                job_request(tiny_bert, "reattached", SLOW, dataset_id=dataset.id)
            )
            await wait_for_event(stub, job.id, "test fault: held at epoch")
    finally:
        await first.stop(1)
    # The job trains on without its server: still RUNNING on Ray and in the store.
    assert str(ray_client(ray_head).get_job_status(job.id).value) == "RUNNING"
    stored = JobStore(ray_settings.jobs_dir / "jobs.db").get(job.id)
    assert (stored.state, stored.attempts) == (JobState.RUNNING, 1)

    second = await start_server(ray_settings, plugins)
    try:
        async with aio.insecure_channel(f"127.0.0.1:{second.port}") as channel:
            stub = finetuning_pb2_grpc.FineTuningStub(channel)
            after = 0
            async for event in stub.WatchJob(pb.WatchJobRequest(id=job.id), timeout=120):
                if "the server restarted; it follows the training" in event.message:
                    after = event.sequence
                    break
            assert after, "the restarted server did not reattach"
            release.touch()
            # The same process goes on training and its events still reach the watchers.
            async for event in stub.WatchJob(
                pb.WatchJobRequest(id=job.id, after_sequence=after), timeout=120
            ):
                if "validation:" in event.message:
                    break
            else:
                raise AssertionError("no epoch ended after the restart")
            cancelled = await stub.CancelJob(pb.CancelJobRequest(id=job.id))
            assert cancelled.state == pb.JOB_STATE_CANCELLED
            events = await watch_to_end(stub, job.id)
    finally:
        await second.stop(0)
    assert until_ray_job_ends(ray_head, job.id) == "STOPPED"  # stopped on Ray, not left running
    messages = [e.message for e in events]
    assert events[-1].state == pb.JOB_STATE_CANCELLED
    # Started once: one submission, one attempt, one start event, epoch 1 trained once.
    assert submissions(ray_head, job.id) == [job.id]
    assert JobStore(ray_settings.jobs_dir / "jobs.db").get(job.id).attempts == 1
    assert len([m for m in messages if m.startswith("training process started")]) == 1
    assert len([m for m in messages if m.startswith("epoch 1 validation")]) == 1
    assert not any("resum" in m for m in messages), messages
    assert not (ray_settings.jobs_dir / job.id).exists()  # partial files removed
    assert not (ray_settings.models_dir / "reattached").exists()


async def test_a_ray_job_away_from_the_server_s_home_reports_each_event_once(
    ray_settings, plugins, tiny_bert, ray_head, bucket, monkeypatch, tmp_path
) -> None:
    """ray_shared_home false: the job's data set and base travel in its package, it trains
    with a home of its own on the node, and its events reach the server's store through the
    log stream; a server restarted mid-job reads that log again from its start and records
    nothing twice; the model is published to the shared S3 repository and served."""
    # The training process waits after its epochs until the next server follows it, so the
    # job cannot end while no server runs (a fast CPU trains the tiny model in a second).
    release = tmp_path / "release"
    monkeypatch.setenv("EDGETUNE_TEST_FAULT", f"hold={release}@export")
    settings = ray_settings.replace(ray_shared_home=False, repository_url=f"s3://{bucket}/m")
    first = await start_server(settings, plugins)
    try:
        async with aio.insecure_channel(f"127.0.0.1:{first.port}") as channel:
            stub = finetuning_pb2_grpc.FineTuningStub(channel)
            dataset = await upload(stub, jsonl(sentiment_rows(80)))
            job = await stub.CreateJob(
                job_request(
                    tiny_bert,
                    "away",
                    pb.Hyperparameters(epochs=4, learning_rate=1e-3, batch_size=8, max_length=16),
                    dataset_id=dataset.id,
                    auto_promote=True,
                )
            )
            await wait_for_event(stub, job.id, "test fault: held at export")
            # Its checkpoints are on the node: none in the server's home.
            assert not (settings.jobs_dir / job.id / "checkpoints").exists()
    finally:
        await first.stop(1)
    second = await start_server(settings, plugins)
    try:
        async with aio.insecure_channel(f"127.0.0.1:{second.port}") as channel:
            stub = finetuning_pb2_grpc.FineTuningStub(channel)
            await wait_for_event(stub, job.id, "the server restarted; it follows the training")
            release.touch()
            events = await watch_to_end(stub, job.id)
            final = await stub.GetJob(pb.GetJobRequest(id=job.id))
            messages = [e.message for e in events]
            assert final.state == pb.JOB_STATE_SUCCEEDED, (final.error, messages)
            assert len([m for m in messages if m.startswith("test fault: held at")]) == 1
            assert [e.sequence for e in events] == list(range(1, len(events) + 1))
            for epoch in range(1, 5):
                assert len([m for m in messages if m.startswith(f"epoch {epoch} validation")]) == 1
            assert len([e for e in events if "accuracy" in e.metrics]) == 4
            assert (final.result.model_name, final.result.version) == ("away", "1")
            reply = await inference_pb2_grpc.InferenceStub(channel).Classify(
                ipb.ClassifyRequest(model="away", inputs=[ipb.Input(text="great fun")])
            )
            assert reply.version == "1"
    finally:
        await second.stop(0)
    info = ray_client(ray_head).get_job_info(job.id)
    assert info.entrypoint.endswith("--package .")
    assert info.runtime_env["working_dir"].startswith("gcs://")  # uploaded with the submission
    assert REMOTE_MARKER in ray_client(ray_head).get_job_logs(job.id)
    assert submissions(ray_head, job.id) == [job.id]
    assert not (settings.jobs_dir / job.id / "package").exists()  # removed once uploaded
    published = s3_client().list_objects_v2(Bucket=bucket, Prefix="m/away/1/manifest.json")
    assert published["KeyCount"] == 1


async def test_a_ray_job_scores_what_a_local_job_scores_with_the_same_seed(
    ray_settings, plugins, tiny_bert, bucket
) -> None:
    """The same data, hyperparameters and seed, trained by the local runner and by Ray away
    from the server's home: the same model, so the same figures on the validation rows."""
    results = {}
    for runner, settings in (
        ("local", ray_settings.replace(home=ray_settings.home / "local", job_runner="local")),
        ("ray", ray_settings.replace(ray_shared_home=False, repository_url=f"s3://{bucket}/m")),
    ):
        running = await start_server(settings, plugins)
        try:
            async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                stub = finetuning_pb2_grpc.FineTuningStub(channel)
                dataset = await upload(stub, jsonl(sentiment_rows(80, seed=5)))
                job = await stub.CreateJob(
                    job_request(
                        tiny_bert,
                        "twin",
                        pb.Hyperparameters(
                            epochs=5, learning_rate=3e-3, batch_size=8, max_length=16, seed=7
                        ),
                        dataset_id=dataset.id,
                    )
                )
                await watch_to_end(stub, job.id)
                final = await stub.GetJob(pb.GetJobRequest(id=job.id))
                assert final.state == pb.JOB_STATE_SUCCEEDED, (runner, final.error)
                results[runner] = final.result
        finally:
            await running.stop(0)
    local, ray = results["local"], results["ray"]
    assert local.estimated_metrics["accuracy"] > 0.6  # it learned something to compare
    for name in ("estimated_metrics", "fp32_metrics", "int8_metrics"):
        ours, theirs = dict(getattr(ray, name)), dict(getattr(local, name))
        # The loss agrees to float noise (the two processes' math libraries may sum in
        # another order: 0.69311 vs 0.69318 seen); every count-based figure is the same.
        assert ours.pop("loss", 0.0) == pytest.approx(theirs.pop("loss", 0.0), rel=1e-3)
        assert ours == theirs, name


async def test_a_job_whose_package_cannot_be_written_fails_saying_so(
    ray_settings, plugins, tiny_bert, bucket, monkeypatch
) -> None:
    import errno

    from edgetune.training import ray_runner

    def no_room(settings, job, attempt, folder):
        folder.mkdir(parents=True)
        (folder / "job.json").write_text("{")  # written in part when the disk filled
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ray_runner, "build_package", no_room)
    settings = ray_settings.replace(ray_shared_home=False, repository_url=f"s3://{bucket}/m")
    running = await start_server(settings, plugins)
    try:
        async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = finetuning_pb2_grpc.FineTuningStub(channel)
            examples = pb.Examples(examples=[pb.Example(**r) for r in sentiment_rows(40)])
            job = await stub.CreateJob(job_request(tiny_bert, "no-room", FAST, examples=examples))
            await watch_to_end(stub, job.id)
            final = await stub.GetJob(pb.GetJobRequest(id=job.id))
    finally:
        await running.stop(0)
    assert final.state == pb.JOB_STATE_FAILED
    assert final.error == (
        f"the training process could not be started: job {job.id} could not be submitted to "
        f"the Ray cluster at {ray_settings.training.ray_address}: OSError: [Errno 28] No space "
        "left on device"
    )
    assert not (settings.jobs_dir / job.id / "package").exists()
    assert submissions(ray_settings.training.ray_address, job.id) == []


@pytest.mark.settings(job_runner="ray", ray_address="http://127.0.0.1:1", ray_shared_home=False)
async def test_ray_away_from_the_home_needs_a_repository_the_nodes_reach(settings, plugins) -> None:
    with pytest.raises(InvalidArgument, match=r"setting EDGETUNE_RAY_SHARED_HOME: false needs"):
        await start_server(settings, plugins)


def worker_pids(job_id: str) -> list[int]:
    """The training processes of job_id on this machine (the Ray job's, here)."""
    wanted = ["-m", "edgetune.training.worker", "--job", job_id]
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if argv[1:5] == wanted:
            found.append(int(entry.name))
    return found


def until_worker(job_id: str, timeout: float = 60.0) -> int:
    """The pid of job_id's training process once it exists; polls /proc (it is no child
    of this process), bounded by timeout."""
    deadline = time.monotonic() + timeout
    while not (found := worker_pids(job_id)):
        assert time.monotonic() < deadline, f"no training process of {job_id} started"
        time.sleep(0.05)
    (pid,) = found
    return pid


def hold_outside_a_write(pid: int, database: Path) -> None:
    """SIGSTOP pid at a moment it holds no write transaction of the job store (else the
    next server could not write); bounded tries."""
    for _ in range(50):
        os.kill(pid, signal.SIGSTOP)
        db = sqlite3.connect(database, timeout=0.2, isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:  # stopped inside a write: let it finish, try again
            os.kill(pid, signal.SIGCONT)
        finally:
            db.close()
    raise AssertionError("the training process always held a write transaction")


async def test_a_server_killed_mid_training_reattaches_after_its_restart(
    ray_settings, plugins, tiny_bert, ray_head
) -> None:
    """kill -9 of a server (a separate process) while its job's training process runs on
    Ray: the job goes on, and the next server follows it to the end and serves its model."""
    from faults.server_process import ServerProcess

    server = ServerProcess(
        ray_settings.home, EDGETUNE_JOB_RUNNER="ray", EDGETUNE_RAY_ADDRESS=ray_head
    )
    try:
        await asyncio.to_thread(server.start)
        async with aio.insecure_channel(server.address) as channel:
            stub = finetuning_pb2_grpc.FineTuningStub(channel)
            job = await stub.CreateJob(
                pb.CreateJobRequest(
                    task="text-classification",
                    base_path=str(tiny_bert),
                    examples=pb.Examples(examples=[pb.Example(**r) for r in sentiment_rows(80)]),
                    model_name="survivor",
                    hyperparameters=pb.Hyperparameters(
                        epochs=3, learning_rate=1e-3, batch_size=8, max_length=16
                    ),
                    auto_promote=True,
                )
            )
            await wait_for_event(stub, job.id, "training process started")
        # Hold the training process (on Ray, not a child of any server) from its start
        # until the next server has reattached, so the job cannot end while no server
        # runs (a watch hears of its events through Ray's log stream, seconds late).
        worker = await asyncio.to_thread(until_worker, job.id)
        hold_outside_a_write(worker, ray_settings.jobs_dir / "jobs.db")
    finally:
        await asyncio.to_thread(server.stop)  # SIGKILL: none of its shutdown code runs
    try:
        running = await start_server(ray_settings, plugins)
        try:
            async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                stub = finetuning_pb2_grpc.FineTuningStub(channel)
                await wait_for_event(stub, job.id, "the server restarted; it follows the training")
                os.kill(worker, signal.SIGCONT)
                events = await watch_to_end(stub, job.id)
                final = await stub.GetJob(pb.GetJobRequest(id=job.id))
                messages = [e.message for e in events]
                assert final.state == pb.JOB_STATE_SUCCEEDED, (final.error, messages)
                reply = await inference_pb2_grpc.InferenceStub(channel).Classify(
                    ipb.ClassifyRequest(model="survivor", inputs=[ipb.Input(text="great fun")])
                )
                assert reply.version == "1"
        finally:
            await running.stop(0)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker, signal.SIGCONT)
    assert submissions(ray_head, job.id) == [job.id]
    assert JobStore(ray_settings.jobs_dir / "jobs.db").get(job.id).attempts == 1
    assert len([m for m in messages if m.startswith("epoch 1 validation")]) == 1
    assert not any("resum" in m for m in messages), messages


@pytest.mark.settings(job_runner="ray")
async def test_ray_without_an_address_stops_the_start_naming_the_setting(settings, plugins) -> None:
    with pytest.raises(InvalidArgument, match=r"setting EDGETUNE_RAY_ADDRESS: .*needs the address"):
        await start_server(settings, plugins)


@pytest.mark.settings(job_runner="ray", ray_address="http://127.0.0.1:1")
async def test_ray_not_installed_stops_the_start_naming_the_extra(
    settings, plugins, monkeypatch
) -> None:
    from edgetune.training import ray_runner

    monkeypatch.setattr(ray_runner, "find_spec", lambda name: None)
    with pytest.raises(InvalidArgument, match=r"EDGETUNE_JOB_RUNNER: 'ray' needs the ray extra"):
        await start_server(settings, plugins)


@pytest.mark.settings(job_runner="slurm")
async def test_an_unknown_runner_stops_the_start_listing_the_known_ones(settings, plugins) -> None:
    with pytest.raises(InvalidArgument, match=r"no job runner named 'slurm' \(known: local, ray\)"):
        await start_server(settings, plugins)


def test_serve_refuses_ray_without_an_address(tmp_path) -> None:
    env = {**os.environ, "EDGETUNE_HOME": str(tmp_path), "EDGETUNE_JOB_RUNNER": "ray"}
    env.pop("EDGETUNE_RAY_ADDRESS", None)
    done = subprocess.run(
        [sys.executable, "-m", "edgetune", "serve", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "error: setting EDGETUNE_RAY_ADDRESS" in done.stderr


def test_only_the_ray_runner_imports_ray() -> None:
    package = Path(__file__).resolve().parents[2] / "src" / "edgetune"
    importers = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(name == "ray" or name.startswith("ray.") for name in names):
                importers.append(str(path.relative_to(package)))
    assert set(importers) == {"training/ray_runner.py"}


async def test_a_job_fails_saying_so_when_the_ray_cluster_cannot_be_reached(
    settings, plugins, tiny_bert
) -> None:
    address = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    running = await start_server(settings.replace(job_runner="ray", ray_address=address), plugins)
    try:
        async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = finetuning_pb2_grpc.FineTuningStub(channel)
            job = await stub.CreateJob(
                pb.CreateJobRequest(
                    task="text-classification",
                    base_path=str(tiny_bert),
                    examples=pb.Examples(examples=[pb.Example(**r) for r in sentiment_rows(40)]),
                    model_name="unreachable",
                    hyperparameters=FAST,
                )
            )
            assert job.state == pb.JOB_STATE_FAILED
            assert job.error.startswith(
                f"the training process could not be started: cannot reach the Ray cluster "
                f"at EDGETUNE_RAY_ADDRESS={address}"
            ), job.error
    finally:
        await running.stop(0)
