"""``deploy_local`` on its failure paths (the e2e tests cover the happy ones): a port held by
a process the deployment did not start fails the deployment, and the alias file is back to
what it was, so the previous model keeps serving."""

from __future__ import annotations

import socket

import pytest

from spam_assets.lib.local_deploy import (
    DeploymentFailed,
    LocalTarget,
    deploy_local,
    local_state,
)
from spam_serving.model_store import read_aliases, read_canary, write_aliases

BENTO = {
    "model_version": "7",
    "model_tag": "spam-classifier:v7",
    "bento_tag": "spam_classifier:abc",
    "code_hash": "c0de",
}


def _target(tmp_path, port: int) -> LocalTarget:
    return LocalTarget(
        host="127.0.0.1",
        port=port,
        url=f"http://127.0.0.1:{port}",
        state_dir=tmp_path,
        alias_file=tmp_path / "aliases.json",
        env={},
        startup_timeout_s=5.0,
        api_key="k",
    )


@pytest.mark.parametrize("strategy", ["direct", "canary"])
def test_a_foreign_process_on_the_port_fails_and_restores_the_aliases(tmp_path, strategy):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        target = _target(tmp_path, held.getsockname()[1])
        before = {"champion": {"model_tag": "spam-classifier:v6", "model_version": "6"}}
        before["challenger"] = before["champion"]
        write_aliases(target.alias_file, before)
        logged: list[str] = []
        with pytest.raises(DeploymentFailed, match="in use by a process"):
            deploy_local(
                BENTO,
                target,
                strategy=strategy,
                restart=False,
                canary_fraction=0.1,
                log=logged.append,
            )
    assert read_aliases(target.alias_file) == before
    assert not read_canary(target.alias_file)
    assert local_state(tmp_path) == {}  # nothing recorded as deployed


def test_an_unknown_strategy_is_refused_before_anything_changes(tmp_path):
    target = _target(tmp_path, 1)
    with pytest.raises(ValueError, match="unknown strategy 'blue-green'"):
        deploy_local(
            BENTO, target, strategy="blue-green", restart=False, canary_fraction=0.1, log=print
        )
    assert not target.alias_file.exists()
