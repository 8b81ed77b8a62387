"""BentoML's async-task store shared by two processes, as two workers share it: with the
patch (autocommit, retry, a converter that reads both timestamp conventions) no call fails.
Without it one process gets stuck in "database is locked" (a race: it does not happen on
every run, so only the patched side is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

STRESS = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from spam_serving import result_store_patch
    result_store_patch.install()
    import feast.infra.online_stores.sqlite  # noqa: F401  (its TIMESTAMP converter)
    from _bentoml_impl.tasks.result import ResultStatus, Sqlite3Store

    class Serializer:
        async def serialize_request(self, request): return b"x" * 2000
        async def serialize_response(self, response): return b"y" * 2000

    async def main():
        store = Sqlite3Store(sys.argv[1])
        store.serializer = Serializer()
        await store.__aenter__()
        errors, done = {}, 0
        async def one():
            nonlocal done
            try:
                task = await store.new_entry("predict_async", None)
                await store.set_status(task, ResultStatus.IN_PROGRESS)
                for _ in range(3):
                    await store.get_status(task)
                    await asyncio.sleep(0.001)
                await store.set_result(task, None, ResultStatus.COMPLETED)
                status = await store.get_status(task)
                assert status.status is ResultStatus.COMPLETED
                done += 1
            except Exception as exc:
                errors[repr(exc)[:80]] = errors.get(repr(exc)[:80], 0) + 1
        start = time.monotonic()
        while time.monotonic() - start < 3:
            await asyncio.gather(*(one() for _ in range(8)))
        await store.__aexit__(None, None, None)
        print(json.dumps({"done": done, "errors": errors}))

    asyncio.run(main())
    """
)


def test_two_workers_share_the_task_store_without_errors(tmp_path):
    from _bentoml_impl.tasks.result import Sqlite3Store

    db = str(tmp_path / "tasks.db")
    Sqlite3Store.init_db(db)
    procs = [
        subprocess.Popen([sys.executable, "-c", STRESS, db], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        for p in procs:  # a hung store must not outlive the test
            if p.poll() is None:
                p.kill()
                p.wait()
    results = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    for result in results:
        assert result["errors"] == {} and result["done"] > 50, result
