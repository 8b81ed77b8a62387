"""``python -m spam_assets.cli {run,ui,summary}``: what ``make run`` / ``make ui`` call.

``run`` materializes the whole chain through the ``spam_pipeline`` job on the persistent
instance under ``SPAM_HOME`` (so the UI shows it afterwards) and prints where everything is.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import dagster as dg

from spam_assets.instance import prepare_dagster_home
from spam_assets.lib.local_server import try_it_command
from spam_serving.settings import PROJECT_ROOT, get_settings

UI_PORT = int(os.environ.get("SPAM_UI_PORT", "3000"))
SUMMARY_ASSETS = ("raw_corpus", "parsed_messages", "model_evaluation", "onnx_model")


def spam_pipeline_job() -> dg.JobDefinition:
    """Module-level so ``dg.reconstructable`` can rebuild it in each step process."""
    from spam_assets.definitions import defs

    return defs().resolve_job_def("spam_pipeline")


def _latest(instance: dg.DagsterInstance, name: str) -> dict:
    event = instance.get_latest_materialization_event(dg.AssetKey(name))
    if event is None or event.asset_materialization is None:
        return {}
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def summary(instance: dg.DagsterInstance) -> str:
    """Where the UI, the model and the reports are, plus the headline metrics."""
    s = get_settings()
    corpus, parsed = _latest(instance, "raw_corpus"), _latest(instance, "parsed_messages")
    evaluation, onnx = _latest(instance, "model_evaluation"), _latest(instance, "onnx_model")
    lines = [
        "",
        "spam-mlops: pipeline summary",
        f"  Dagster UI      make ui  ->  http://127.0.0.1:{UI_PORT}",
        f"                  DAGSTER_HOME={s.dagster_home}",
        f"  MLflow          {s.effective_mlflow_uri}",
        "                  make mlflow-ui -> http://127.0.0.1:5000",
        f"  corpus          {corpus.get('n_messages', '?')} messages, "
        f"{parsed.get('n_kept', '?')} after de-duplication",
    ]
    if evaluation:
        lines.append(
            f"  model v{evaluation.get('model_version')}      on the test split at the junk "
            f"threshold (ham budget {s.target_ham_fpr:.1%}): spam caught "
            f"{evaluation.get('recall', 0):.1%}, easy-ham FPR "
            f"{evaluation.get('easy_ham_fpr', 0):.2%}, hard-ham FPR "
            f"{evaluation.get('hard_ham_fpr', 0):.2%}, F1 {evaluation.get('f1', 0):.3f}"
        )
    if onnx:
        lines.append(f"  ONNX bundle     {onnx.get('bundle_path')}")
    online = _latest(instance, "online_features")
    if online:
        lines.append(
            f"  feature store   Feast project {s.feast_project}, online store "
            f"{online.get('online_store')} ({online.get('dagster/row_count')} senders), "
            f"reputation features {'on' if s.reputation_features else 'off'}"
        )
    lines.append(
        "  evaluation      PR curve + tables in the UI (asset model_evaluation) and MLflow"
    )
    deployed = _latest(instance, "local_deployment")
    if deployed:
        lines += [
            f"  endpoint        {deployed.get('url')}  (model v{deployed.get('model_version')}, "
            f"pid {deployed.get('pid')}, {deployed.get('mode')}; stop: make serve-stop)",
            f"                  API keys in {deployed.get('api_keys_file')}",
            "  try it          "
            + try_it_command(
                str(deployed.get("url")), str(deployed.get("api_keys_file")), multiline=True
            ).replace("\n", "\n" + " " * 16),
            f"  inference log   {s.inference_log_dir} (Parquet, hourly partitions)",
            f"  drift reports   {s.reports_dir} (Evidently HTML + JSON per hour; `make ui` "
            "runs the schedules and sensors that write them and retrain)",
            f"  metrics         {deployed.get('url')}/metrics   docs: {deployed.get('url')}/",
        ]
    return "\n".join(lines)


def _serve(command: str) -> int:
    """``serve``: the service from source in the foreground (what ``make serve`` runs);
    ``serve-stop``: stop the server the ``local_deployment`` asset started."""
    from spam_assets.defs.resources import build_resources
    from spam_assets.lib.local_deploy import local_state
    from spam_assets.lib.local_server import stop_server

    serving = build_resources()["serving"]
    if command == "serve-stop":
        state = local_state(serving.state_dir)
        if not state:
            print("no local deployment recorded")
            return 0
        stop_server(state["pid"])
        print(f"stopped server pid {state['pid']} on {state['url']}")
        return 0
    serving.ensure_api_key()
    bentoml = str(Path(sys.executable).with_name("bentoml"))
    cmd = [
        bentoml,
        "serve",
        "spam_serving.service:SpamClassifier",
        "--host",
        serving.host,
        "--port",
        str(serving.port),
    ]
    os.chdir(PROJECT_ROOT)
    os.execve(cmd[0], cmd, serving.process_env())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="spam_assets.cli")
    parser.add_argument("command", choices=("run", "ui", "summary", "home", "serve", "serve-stop"))
    args = parser.parse_args(argv)
    home = prepare_dagster_home()
    if args.command == "home":
        print(home)
        return 0
    if args.command in ("serve", "serve-stop"):
        return _serve(args.command)
    if args.command == "ui":
        os.chdir(PROJECT_ROOT)
        dagster = Path(sys.executable).with_name("dagster")
        cmd = [str(dagster), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(UI_PORT)]
        os.execv(cmd[0], cmd)
    with dg.DagsterInstance.get() as instance:
        if args.command == "run":
            result = dg.execute_job(dg.reconstructable(spam_pipeline_job), instance=instance)
            print(summary(instance))
            if not result.success:
                failed = [e.step_key for e in result.all_events if e.is_step_failure]
                print(
                    f"\nrun {result.run_id} FAILED at {failed}; details: make ui", file=sys.stderr
                )
                return 1
            return 0
        print(summary(instance))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
