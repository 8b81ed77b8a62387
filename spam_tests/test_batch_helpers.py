"""Batch helpers: real helper processes over a real bundle; a split batch must be exactly the
batch done in one piece, and a helper's death, a bad bundle or a dead worker must cost no
request and leave no process behind."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from spam_serving import batch_helpers, metrics
from spam_serving.batch_helpers import BatchHelpers
from spam_serving.batch_work import featurize_chunk
from spam_serving.live_models import LiveModel
from spam_serving.model_bundle import ModelBundle
from spam_serving.schemas import MessageIn
from spam_serving.settings import PROJECT_ROOT
from spam_tests.helpers.serving import train_bundle

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def live(tmp_path_factory, real_sample) -> LiveModel:
    path = train_bundle(real_sample, tmp_path_factory.mktemp("helpers") / "v1", "1", rounds=20)
    return LiveModel(ModelBundle.load(path), {}, max_latency_ms=100, max_batch_size=100)


@pytest.fixture(scope="module")
def messages(real_sample) -> list[MessageIn]:
    """Real mail of every group, JSON fields, one message that asks for no explanation."""
    msgs = [MessageIn(raw=raw.decode("latin-1")) for _, _, raw in real_sample[::9][:61]]
    msgs.insert(7, MessageIn(subject="WIN CASH", body="http://x.biz now!!!", sender="a@x.biz"))
    msgs[3] = MessageIn(raw=msgs[3].raw, explain=False)
    return msgs


def _errors() -> float:
    return metrics.ERRORS.labels("batch_helper")._value.get()


async def _until(check, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        await asyncio.sleep(0.05)


def _same(got, want) -> None:
    assert [m.to_record() for m in got[0]] == [m.to_record() for m in want[0]]
    np.testing.assert_array_equal(got[1], want[1])
    assert got[2] == want[2]


def test_helpers_start_with_the_first_batch_and_split_it_exactly(live, messages):
    async def run():
        helpers = BatchHelpers(2, split_min=16)
        task = asyncio.create_task(helpers.keep_up(lambda: [live.key]))
        try:
            await asyncio.sleep(0.5)
            assert helpers.pids() == [] and not helpers.wants(15)  # no batch asked yet
            await asyncio.sleep(0.5)
            assert helpers.pids() == []
            assert not helpers.wants(len(messages))  # this batch asks; it runs in-process
            await _until(lambda: helpers.wants(len(messages)))
            assert len(helpers.pids()) == 2 and os.getpid() not in helpers.pids()
            assert not helpers.wants(15)  # small batches stay in the worker
            split = await helpers.run(live.key, live.chunk_model, messages, True, 5)
            parsed_only = await helpers.run(live.key, live.chunk_model, messages, False, 5)
            return split, parsed_only
        finally:
            helpers.close()
            await task

    (split, parsed_only), whole = asyncio.run(run()), featurize_chunk(live.chunk_model, messages, 5)
    _same(split, whole)
    assert len(split[0]) == len(messages) == 62 and split[1].shape[0] == 62
    assert split[2][3] == [] and all(len(top) == 5 for i, top in enumerate(split[2]) if i != 3)
    assert split[0][7].sender_domain == "x.biz"  # the JSON message kept its place
    assert parsed_only[1] is None and parsed_only[2] is None
    assert [m.to_record() for m in parsed_only[0]] == [m.to_record() for m in whole[0]]


def test_a_dead_helper_costs_no_request_and_the_pool_comes_back(live, messages, monkeypatch):
    monkeypatch.setattr(batch_helpers, "RESTART_AFTER_S", 0.2)
    whole = featurize_chunk(live.chunk_model, messages, 5)

    async def run():
        helpers = BatchHelpers(1, split_min=16)
        task = asyncio.create_task(helpers.keep_up(lambda: [live.key]))
        try:
            await _until(lambda: helpers.wants(len(messages)))
            (first,) = helpers.pids()
            os.kill(first, signal.SIGKILL)
            errors = _errors()
            during = await helpers.run(live.key, live.chunk_model, messages, True, 5)
            assert _errors() == errors + 1  # counted, answered in-process
            await _until(lambda: helpers.wants(len(messages)))
            (second,) = helpers.pids()
            after = await helpers.run(live.key, live.chunk_model, messages, True, 5)
            return first, second, during, after
        finally:
            helpers.close()
            await task

    first, second, during, after = asyncio.run(run())
    assert first != second
    _same(during, whole)
    _same(after, whole)


def test_helpers_refuse_a_bundle_whose_state_changed_and_batches_stay_in_process(live, messages):
    wrong = (live.key[0], "0" * 16, live.key[2])
    errors = _errors()

    async def run():
        helpers = BatchHelpers(1, split_min=16)
        task = asyncio.create_task(helpers.keep_up(lambda: [wrong]))
        try:
            helpers.wants(len(messages))
            await _until(lambda: _errors() > errors)  # the warm-up failed, and said so
            assert not helpers.wants(len(messages)) and helpers.pids() == []
        finally:
            helpers.close()
            await task

    asyncio.run(run())


def test_no_helpers_configured_means_none_start(live, messages):
    async def run():
        helpers = BatchHelpers(0, split_min=16)
        await asyncio.wait_for(helpers.keep_up(lambda: [live.key]), 5)
        return helpers.wants(len(messages))

    assert asyncio.run(run()) is False


_WORKER = """
import asyncio, json, sys
from spam_serving.batch_helpers import BatchHelpers

async def main():
    helpers = BatchHelpers(1, split_min=16)
    key = tuple(json.loads(sys.argv[1]))
    task = asyncio.create_task(helpers.keep_up(lambda: [key]))
    while not helpers.wants(100):
        await asyncio.sleep(0.05)
    print(json.dumps(helpers.pids()), flush=True)
    await asyncio.sleep(600)

if __name__ == "__main__":
    asyncio.run(main())
"""


def test_helpers_and_their_forkserver_exit_when_the_worker_is_killed(live, tmp_path: Path):
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    worker = subprocess.Popen(
        [sys.executable, str(script), json.dumps(live.key)],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        helpers = json.loads(worker.stdout.readline())
        # the helpers, their forkserver and multiprocessing's resource tracker
        pids = [c.pid for c in psutil.Process(worker.pid).children(recursive=True)]
        assert helpers and set(helpers) < set(pids) and len(pids) >= 3
    finally:
        worker.kill()  # SIGKILL: no shutdown hook runs
        worker.wait(10)

    def alive(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + 20
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in pids)
