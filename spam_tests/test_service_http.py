"""The BentoML service as a real ``bentoml serve`` process (2 workers), over HTTP.

Two real models (v1 = champion, v2 = challenger) are trained on real corpus messages and
exported like the pipeline does; the alias file points at their bundles.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import Counter

import psutil
import pytest
import requests

from spam_assets.lib.local_server import start_server, stop_server
from spam_serving.inference_log import read_log
from spam_serving.model_store import write_aliases
from spam_serving.settings import PROJECT_ROOT
from spam_tests.helpers.env import free_port
from spam_tests.helpers.serving import API_KEYS, running_server, server_env, train_bundle

pytestmark = pytest.mark.slow
KEY = {"X-API-Key": API_KEYS[0]}
SPAM_MSG = {
    "subject": "WIN CASH NOW!!! Limited offer",
    "body": "Click http://cheap-pills.biz/offer to claim your FREE prize. Act now!!!",
    "sender": "promo@cheap-pills.biz",
}


@pytest.fixture(scope="module")
def served(tmp_path_factory, real_sample):
    home = tmp_path_factory.mktemp("serving_home")
    v1 = train_bundle(real_sample, home / "bundles" / "v1", "1", rounds=40)
    v2 = train_bundle(real_sample, home / "bundles" / "v2", "2", rounds=15)
    v3 = train_bundle(real_sample[::2], home / "bundles" / "v3", "3", rounds=25)
    entries = {
        v: {"bundle_path": str(p), "model_version": v[1:]}
        for v, p in (("v1", v1), ("v2", v2), ("v3", v3))
    }
    write_aliases(
        home / "serving" / "aliases.json",
        {"champion": entries["v1"], "challenger": entries["v2"]},
    )
    port = free_port()
    with running_server(home, port) as server:
        yield {
            "url": server.url,
            "home": home,
            "entries": entries,
            "server": server,
            "sample": real_sample,
        }


def post(served, path, payload=None, headers=None, data=None, **kw):
    h = {**KEY, **(headers or {})}
    if payload is not None:
        return requests.post(served["url"] + path, json=payload, headers=h, timeout=30, **kw)
    return requests.post(served["url"] + path, data=data, headers=h, timeout=30, **kw)


def test_probes_are_public_and_ready(served):
    for path in ("/livez", "/readyz", "/metrics"):
        assert requests.get(served["url"] + path, timeout=5).status_code == 200


def test_predict_contract_and_explanations(served):
    r = post(served, "/predict", SPAM_MSG)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) >= {
        "prediction_id",
        "label",
        "action",
        "spam_probability",
        "threshold",
        "model_version",
        "environment",
        "top_features",
    }
    assert body["label"] in ("spam", "ham") and 0.0 <= body["spam_probability"] <= 1.0
    assert body["model_version"] == "1" and body["environment"] == "production"
    assert (body["label"] == "spam") == (body["spam_probability"] >= body["threshold"])
    # a bundle without action bands: junk above the label's threshold, never reject
    assert body["action"] == ("junk" if body["label"] == "spam" else "deliver")
    tops = body["top_features"]
    assert len(tops) == 5
    mags = [abs(t["contribution"]) for t in tops]
    assert mags == sorted(mags, reverse=True)
    assert len(body["prediction_id"]) == 32
    quiet = post(served, "/predict", {**SPAM_MSG, "explain": False}).json()
    assert quiet["top_features"] == []
    assert quiet["spam_probability"] == pytest.approx(body["spam_probability"], abs=1e-6)


def test_raw_mail_forms_give_the_same_answer(served):
    raw = next(raw for _, label, raw in served["sample"] if label == 1 and max(raw) >= 0x80)
    as_rfc822 = post(served, "/predict", data=raw, headers={"Content-Type": "message/rfc822"})
    as_b64 = post(served, "/predict", {"raw_base64": base64.b64encode(raw).decode()})
    assert as_rfc822.status_code == 200, as_rfc822.text
    assert as_rfc822.json()["spam_probability"] == pytest.approx(
        as_b64.json()["spam_probability"], abs=1e-6
    )
    text_raw = next(raw for _, _, raw in served["sample"] if max(raw) < 0x80)
    as_text = post(served, "/predict", data=text_raw, headers={"Content-Type": "text/plain"})
    as_json = post(served, "/predict", {"raw": text_raw.decode()})
    assert as_text.json()["spam_probability"] == pytest.approx(
        as_json.json()["spam_probability"], abs=1e-6
    )


def test_auth(served):
    url = served["url"] + "/predict"
    missing = requests.post(url, json=SPAM_MSG, timeout=10)
    wrong = requests.post(url, json=SPAM_MSG, headers={"X-API-Key": "guess-123"}, timeout=10)
    for r in (missing, wrong):
        assert r.status_code == 401
        assert "error" in r.json() and "guess-123" not in r.text
    bearer = requests.post(
        url, json=SPAM_MSG, headers={"Authorization": f"Bearer {API_KEYS[1]}"}, timeout=10
    )
    assert bearer.status_code == 200
    prefix = requests.post(url, json=SPAM_MSG, headers={"X-API-Key": API_KEYS[0][:-1]}, timeout=10)
    assert prefix.status_code == 401
    for path in ("/predict_batch", "/feedback", "/predict_async/submit"):
        assert requests.post(served["url"] + path, json={}, timeout=10).status_code == 401
    assert (
        requests.get(served["url"] + "/predict_async/status?task_id=x", timeout=10).status_code
        == 401
    )


def test_environment_routing(served):
    prod = post(served, "/predict", SPAM_MSG, {"X-Environment": "production"}).json()
    staging = post(served, "/predict", SPAM_MSG, {"X-Environment": "Staging"}).json()
    default = post(served, "/predict", SPAM_MSG).json()
    assert prod["model_version"] == default["model_version"] == "1"
    assert staging["model_version"] == "2" and staging["environment"] == "staging"
    bad = post(served, "/predict", SPAM_MSG, {"X-Environment": "dev"})
    assert bad.status_code == 400 and "X-Environment" in bad.json()["error"]


def _metric(served, name: str) -> float:
    text = requests.get(served["url"] + "/metrics", timeout=10).text
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name)]
    return sum(values)


def test_predict_batch_and_limit(served):
    """A worker's first batch of 100 starts its batch helper (one per worker) and is
    answered in-process; later batches are split with it. Either way the answer is exactly
    what /predict answers per message."""
    msgs = [{"raw": raw.decode("latin-1")} for _, _, raw in served["sample"][:100]]
    deadline = time.monotonic() + 60
    while _metric(served, "spam_batch_helpers_up ") < 2 and time.monotonic() < deadline:
        assert post(served, "/predict_batch", {"messages": msgs[:16]}).status_code == 200
        time.sleep(0.2)
    assert _metric(served, "spam_batch_helpers_up ") == 2
    by_helpers = _metric(served, "spam_batch_helper_messages_total ")
    r = post(served, "/predict_batch", {"messages": msgs})
    assert r.status_code == 200, r.text
    assert _metric(served, "spam_batch_helper_messages_total ") == by_helpers + 50
    preds = r.json()["predictions"]
    assert len(preds) == 100 and len({p["prediction_id"] for p in preds}) == 100
    for i in (0, 37, 49, 50, 99):  # both sides of the split
        single = post(served, "/predict", msgs[i]).json()
        assert single["spam_probability"] == pytest.approx(preds[i]["spam_probability"], abs=1e-6)
        assert single["top_features"] == preds[i]["top_features"]
    over = post(served, "/predict_batch", {"messages": msgs + msgs[:1]})
    assert over.status_code == 422
    assert "at most 100" in over.json()["error"]


def test_async_job_lifecycle(served):
    msgs = [{"raw": raw.decode("latin-1")} for _, _, raw in served["sample"][:250]]
    msgs[3] = {"subject": 42}
    msgs[120] = {"raw": ""}
    msgs[249] = "not a message"
    submit = post(served, "/predict_async/submit", {"messages": msgs})
    assert submit.status_code == 200, submit.text
    task_id = submit.json()["task_id"]
    status = _wait_task(served, task_id)
    assert status == "completed", status
    got = requests.get(
        f"{served['url']}/predict_async/get?task_id={task_id}", headers=KEY, timeout=10
    )
    assert got.status_code == 200
    result = got.json()
    assert result["n_messages"] == 250 and result["n_failed"] == 3
    by_index = {r["index"]: r for r in result["results"]}
    assert sorted(by_index) == list(range(250))
    assert {i for i, r in by_index.items() if "error" in r} == {3, 120, 249}
    assert "subject" in by_index[3]["error"]
    assert by_index[0]["label"] in ("spam", "ham") and by_index[0]["model_version"] == "1"
    unknown = requests.get(
        f"{served['url']}/predict_async/get?task_id=nope", headers=KEY, timeout=10
    )
    assert unknown.status_code == 404


def _wait_task(served, task_id: str) -> str:
    status_url = f"{served['url']}/predict_async/status?task_id={task_id}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = requests.get(status_url, headers=KEY, timeout=10).json()["status"]
        if status in ("completed", "failed", "canceled"):
            return status
        time.sleep(0.2)
    pytest.fail(f"task {task_id} still {status}")


@pytest.mark.parametrize(
    ("payload", "status", "reason"),
    [
        ({"messages": "x"}, 400, "validation error"),
        ({"messages": [{"body": "a"}] * 10_001}, 422, "at most 10000"),
    ],
    ids=["not-a-list", "over-limit"],
)
def test_async_job_rejected_as_a_whole(served, payload, status, reason):
    """A job whose shape is wrong fails as a job, with the reason at /get."""
    submit = post(served, "/predict_async/submit", payload)
    assert submit.status_code == 200
    task_id = submit.json()["task_id"]
    assert _wait_task(served, task_id) == "failed"
    got = requests.get(
        f"{served['url']}/predict_async/get?task_id={task_id}", headers=KEY, timeout=10
    )
    assert got.status_code == status and reason in got.text


def test_feedback_and_inference_log(served):
    pred = post(served, "/predict", SPAM_MSG).json()
    fb = post(served, "/feedback", {"prediction_id": pred["prediction_id"], "label": "spam"})
    assert fb.status_code == 200 and fb.json()["status"] == "recorded"
    root = served["home"] / "inference_log"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        preds = read_log(root, "predictions")
        fbs = read_log(root, "feedback")
        if (
            fbs.num_rows
            and pred["prediction_id"] in fbs.column("prediction_id").to_pylist()
            and pred["prediction_id"] in preds.column("prediction_id").to_pylist()
        ):
            break
        time.sleep(0.3)
    else:
        pytest.fail("prediction/feedback not in the inference log")
    row = next(r for r in preds.to_pylist() if r["prediction_id"] == pred["prediction_id"])
    assert row["model_version"] == "1" and row["score"] == pytest.approx(pred["spam_probability"])
    assert row["latency_ms"] > 0 and "num_n_urls" in row and row["num_n_urls"] >= 1
    assert json.loads(row["message"])["subject"].startswith("WIN CASH")
    assert not list(root.rglob(".*.tmp"))


def test_metrics_content(served):
    post(served, "/predict", SPAM_MSG)
    requests.post(served["url"] + "/predict", json=SPAM_MSG, timeout=10)  # 401
    text = requests.get(served["url"] + "/metrics", timeout=10).text
    assert 'spam_predictions_total{environment="production",label=' in text
    assert 'model_version="1"' in text
    assert "spam_request_latency_seconds_bucket" in text
    assert 'spam_request_errors_total{kind="unauthorized"}' in text
    assert "spam_probability_bucket" in text
    assert "bentoml_service_request_duration_seconds" in text  # BentoML's own


def test_every_worker_freezes_its_start_up_heap(served):
    """gc.freeze() once the models and the log writer's pandas import are in: each of the
    2 workers reports its frozen object count (BentoML + numpy + pandas + models: >50k); 0
    until its freeze has run, a moment after readiness."""
    deadline = time.monotonic() + 30
    while True:
        text = requests.get(served["url"] + "/metrics", timeout=10).text
        counts = [
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("spam_gc_frozen_objects{")
        ]
        if (len(counts) >= 2 and min(counts) > 0) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(counts) >= 2 and min(counts) > 50_000, counts


BIG = "x" * 10_500_000
BAD_REQUESTS = [
    # (id, path, kwargs for requests.post, expected status)
    ("empty-body", "/predict", {"data": b""}, 400),
    ("empty-object", "/predict", {"json": {}}, 400),
    ("null", "/predict", {"json": None, "data": b"null"}, 400),
    ("json-list", "/predict", {"json": []}, 400),
    ("json-string", "/predict", {"json": "hello"}, 400),
    ("truncated-json", "/predict", {"data": b'{"subject": '}, 400),
    ("non-utf8-json", "/predict", {"data": b'{"body": "\xff\xfe spam"}'}, 400),
    (
        "non-utf8-text",
        "/predict",
        {"data": b"Subject: x\n\n\xff\xfe", "headers": {"Content-Type": "text/plain"}},
        400,
    ),
    ("raw-empty", "/predict", {"json": {"raw": ""}}, 400),
    ("raw-blank", "/predict", {"json": {"raw": "  \n "}}, 400),
    ("b64-invalid", "/predict", {"json": {"raw_base64": "!!!not base64"}}, 400),
    ("b64-empty", "/predict", {"json": {"raw_base64": ""}}, 400),
    ("raw-and-fields", "/predict", {"json": {"raw": "Subject: a\n\nb", "subject": "a"}}, 400),
    ("raw-and-b64", "/predict", {"json": {"raw": "a", "raw_base64": "YQ=="}}, 400),
    ("subject-int", "/predict", {"json": {"subject": 5}}, 400),
    ("body-list", "/predict", {"json": {"body": ["a", "b"]}}, 400),
    ("headers-list", "/predict", {"json": {"body": "a", "headers": ["X-A: b"]}}, 400),
    ("header-int", "/predict", {"json": {"body": "a", "headers": {"X-A": 1}}}, 400),
    (
        "too-many-headers",
        "/predict",
        {"json": {"body": "a", "headers": {f"X-{i}": "v" for i in range(501)}}},
        400,
    ),
    ("explain-string", "/predict", {"json": {"body": "a", "explain": "yes"}}, 400),
    ("unknown-field", "/predict", {"json": {"subjekt": "hello"}}, 400),
    ("sender-too-long", "/predict", {"json": {"body": "a", "sender": "a" * 1001}}, 400),
    ("10MB-json", "/predict", {"json": {"raw": BIG}}, 413),
    (
        "10MB-rfc822",
        "/predict",
        {"data": b"Subject: big\n\n" + BIG.encode(), "headers": {"Content-Type": "message/rfc822"}},
        413,
    ),
    ("xml", "/predict", {"data": b"<mail/>", "headers": {"Content-Type": "application/xml"}}, 415),
    ("multipart", "/predict", {"files": {"raw": ("m.eml", b"Subject: a\n\nb")}}, 415),
    (
        "pickle",
        "/predict",
        {"data": b"\x80\x04N.", "headers": {"Content-Type": "application/vnd.bentoml+pickle"}},
        415,
    ),
    ("batch-not-list", "/predict_batch", {"json": {"messages": "x"}}, 400),
    ("batch-empty", "/predict_batch", {"json": {"messages": []}}, 400),
    ("batch-bad-item", "/predict_batch", {"json": {"messages": [{"subject": 1}]}}, 400),
    ("batch-missing", "/predict_batch", {"json": {}}, 400),
    ("batch-101", "/predict_batch", {"json": {"messages": [{"body": "a"}] * 101}}, 422),
    ("feedback-bad-id", "/feedback", {"json": {"prediction_id": "123", "label": "spam"}}, 400),
    (
        "feedback-bad-label",
        "/feedback",
        {"json": {"prediction_id": "a" * 32, "label": "maybe"}},
        400,
    ),
    ("feedback-missing-label", "/feedback", {"json": {"prediction_id": "a" * 32}}, 400),
]


@pytest.mark.parametrize(
    ("path", "kwargs", "expected"),
    [pytest.param(p, k, e, id=i) for i, p, k, e in BAD_REQUESTS],
)
def test_bad_input_is_a_4xx_with_a_json_reason(served, path, kwargs, expected):
    kwargs = dict(kwargs)
    headers = {**KEY, **kwargs.pop("headers", {})}
    if "json" in kwargs and kwargs.get("data") is not None:
        kwargs.pop("json")
    r = requests.post(served["url"] + path, headers=headers, timeout=60, **kwargs)
    assert r.status_code == expected, r.text[:500]
    assert r.headers["content-type"].startswith("application/json")
    reason = r.json()
    reason = reason[0] if isinstance(reason, list) else reason
    assert reason.get("error"), reason
    assert requests.get(served["url"] + "/livez", timeout=5).status_code == 200


def test_wrong_method_and_missing_task_id(served):
    r = requests.get(served["url"] + "/predict", headers=KEY, timeout=10)
    assert r.status_code == 405
    r = requests.get(served["url"] + "/predict_async/status", headers=KEY, timeout=10)
    assert r.status_code == 400 and r.json()["error"]


def test_hot_reload_under_concurrent_traffic(served):
    """Move champion v1 -> v3 while 6 clients hammer /predict: no failed request."""
    alias_file = served["home"] / "serving" / "aliases.json"
    entries = served["entries"]
    statuses: Counter = Counter()
    versions: Counter = Counter()
    stop = threading.Event()

    def client() -> None:
        session = requests.Session()
        while not stop.is_set():
            r = session.post(served["url"] + "/predict", json=SPAM_MSG, headers=KEY, timeout=30)
            statuses[r.status_code] += 1
            if r.status_code == 200:
                versions[r.json()["model_version"]] += 1

    threads = [threading.Thread(target=client) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.5)
        write_aliases(alias_file, {"champion": entries["v3"], "challenger": entries["v2"]})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and versions["3"] < 50:
            time.sleep(0.2)
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        # every worker swapped: after the move only v3 answers production
        after = Counter(
            post(served, "/predict", SPAM_MSG).json()["model_version"] for _ in range(20)
        )
    finally:
        stop.set()
        write_aliases(alias_file, {"champion": entries["v1"], "challenger": entries["v2"]})
    assert set(statuses) == {200}, statuses
    assert versions["1"] > 0 and versions["3"] >= 50, versions
    assert set(after) == {"3"}, after
    assert served["server"].alive()
    _wait_version(served, "1")


def test_broken_alias_keeps_the_old_model(served):
    alias_file = served["home"] / "serving" / "aliases.json"
    entries = served["entries"]
    broken = {"bundle_path": str(served["home"] / "nowhere"), "model_version": "9"}
    write_aliases(alias_file, {"champion": broken, "challenger": entries["v2"]})
    try:
        time.sleep(1.5)
        r = post(served, "/predict", SPAM_MSG)
        assert r.status_code == 200 and r.json()["model_version"] == "1"
        assert requests.get(served["url"] + "/readyz", timeout=5).status_code == 200
        assert (
            'spam_model_reloads_total{alias="champion",outcome="failed"}'
            in requests.get(served["url"] + "/metrics", timeout=5).text
        )
    finally:
        write_aliases(alias_file, {"champion": entries["v1"], "challenger": entries["v2"]})


def _wait_version(served, version: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        seen = {post(served, "/predict", SPAM_MSG).json()["model_version"] for _ in range(6)}
        if seen == {version}:
            return
        time.sleep(0.2)
    pytest.fail(f"server did not return to v{version}")


def test_not_ready_without_a_model(tmp_path):
    """No alias file and no packaged model: alive, not ready, predictions 503 with a reason."""
    port = free_port()
    server = start_server(
        "spam_serving.service:SpamClassifier",
        "127.0.0.1",
        port,
        server_env(tmp_path, SPAM_SERVE_WORKERS="1"),
        tmp_path / "bento.log",
        cwd=PROJECT_ROOT,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if requests.get(server.url + "/livez", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        assert requests.get(server.url + "/readyz", timeout=5).status_code == 503
        r = requests.post(server.url + "/predict", json=SPAM_MSG, headers=KEY, timeout=10)
        assert r.status_code == 503 and "model not loaded" in r.json()["error"]
    finally:
        stop_server(server.pid)


def test_canary_share_of_production_goes_to_the_challenger(served):
    """SPAM_CANARY_FRACTION=0.3: about 30% of production answers come from the challenger,
    labelled ``production-canary``; staging is unaffected."""
    with running_server(
        served["home"],
        free_port(),
        SPAM_CANARY_FRACTION="0.3",
        SPAM_SERVE_WORKERS="1",
        # BentoML's task result store is one SQLite file per home: one server per home
        BENTOML_HOME=str(served["home"] / "bentoml-canary"),
    ) as server:
        session = requests.Session()
        seen = Counter()
        for _ in range(300):
            body = session.post(
                server.url + "/predict", json=SPAM_MSG, headers=KEY, timeout=10
            ).json()
            seen[(body["environment"], body["model_version"])] += 1
        staging = session.post(
            server.url + "/predict",
            json=SPAM_MSG,
            timeout=10,
            headers={**KEY, "X-Environment": "staging"},
        ).json()
        sticky = {
            f"mailbox-{k}": [
                session.post(
                    server.url + "/predict",
                    json=SPAM_MSG,
                    headers={**KEY, "X-Routing-Key": f"mailbox-{k}"},
                    timeout=10,
                ).json()
                for _ in range(2 if k else 10)
            ]
            for k in range(200)
        }
    assert set(seen) == {("production", "1"), ("production-canary", "2")}, seen
    assert 50 <= seen[("production-canary", "2")] <= 130, seen  # binomial(300, 0.3): 90 +- 40
    assert staging["environment"] == "staging" and staging["model_version"] == "2"
    # X-Routing-Key: one key, one side, every time; across keys, the same share
    sides = {key: {body["model_version"] for body in answers} for key, answers in sticky.items()}
    assert all(len(versions) == 1 for versions in sides.values()), sides
    to_canary = sum(versions == {"2"} for versions in sides.values())
    assert 20 <= to_canary <= 100, to_canary  # binomial(200, 0.3): 60 +- 40


def _worker_processes(served) -> list[psutil.Process]:
    arbiter = psutil.Process(served["server"].pid)
    return [
        p
        for p in arbiter.children(recursive=True)
        if "_bentoml_impl.worker.service" in " ".join(p.cmdline())
    ]


def test_each_worker_listens_on_its_own_socket_and_gets_connections(served):
    """SO_REUSEPORT (bentoml_patches): each worker has a listening socket of its own on the
    port, the arbiter listens on none (it only holds the port), and 32 keep-alive clients
    that connect together are spread over both workers, not piled on one."""
    port = int(served["url"].rsplit(":", 1)[1])
    workers = _worker_processes(served)
    assert len(workers) == 2

    def listening(proc: psutil.Process) -> list:
        return [
            c
            for c in proc.net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port
        ]

    assert all(len(listening(w)) == 1 for w in workers)
    assert not listening(psutil.Process(served["server"].pid))
    sessions = [requests.Session() for _ in range(32)]
    barrier = threading.Barrier(32)

    def one(session: requests.Session) -> int:
        barrier.wait()
        return session.get(served["url"] + "/readyz", timeout=10).status_code

    try:
        threads = [threading.Thread(target=one, args=(s,)) for s in sessions]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        held = [
            sum(
                1
                for c in w.net_connections("tcp")
                if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port
            )
            for w in workers
        ]
    finally:
        for s in sessions:
            s.close()
    # the kernel hashes each connection to a socket: P(a worker gets < 4 of 32) ~ 1e-6
    assert sum(held) == 32 and min(held) >= 4, held
