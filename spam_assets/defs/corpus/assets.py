"""Corpus stage: raw messages -> parsed, de-duplicated table -> time-based splits."""

import hashlib
import json
from pathlib import Path

import dagster as dg
import pandas as pd

from spam_assets.defs.resources import CorpusResource, ModelPolicy, StorageResource
from spam_assets.lib.corpus_sources import CorpusError, read_sources
from spam_assets.lib.files import write_atomic
from spam_assets.lib.splits import (
    SPLITS,
    assign_splits,
    deduplicate,
    merge_feedback,
    parse_raw_table,
)

RAW_FILE = "messages.parquet"
MANIFEST_FILE = "manifest.json"


@dg.asset(
    group_name="corpus",
    kinds={"parquet"},
    description="Raw RFC822 messages from the configured sources, with a sha256 manifest.",
)
def raw_corpus(
    context: dg.AssetExecutionContext, corpus: CorpusResource, storage: StorageResource
) -> dg.MaterializeResult:
    """Land raw bytes once; an unchanged corpus is a no-op (same fingerprint, no rewrite)."""
    try:
        messages = read_sources(
            list(corpus.sources), Path(corpus.cache_dir), corpus.download_timeout_s
        )
    except CorpusError as exc:
        raise dg.Failure(description=f"raw_corpus: {exc}") from exc
    df = pd.DataFrame(
        {
            "message_id": [m.message_id for m in messages],
            "group": [m.group for m in messages],
            "label": [m.label for m in messages],
            "source": [m.source for m in messages],
            "sha256": [m.sha256 for m in messages],
            "n_bytes": [len(m.raw) for m in messages],
            "raw": [m.raw for m in messages],
        }
    ).sort_values("message_id", ignore_index=True)
    digest = hashlib.sha256()
    for row in df[["message_id", "label", "sha256"]].itertuples(index=False):
        digest.update(f"{row.message_id}\t{row.label}\t{row.sha256}\n".encode())
    fingerprint = digest.hexdigest()

    raw_dir = storage.raw_dir
    raw_dir.mkdir(parents=True, exist_ok=True)
    manifest_path, data_path = raw_dir / MANIFEST_FILE, raw_dir / RAW_FILE
    previous = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    unchanged = previous.get("fingerprint") == fingerprint and data_path.exists()
    per_group = df.groupby("group").size().to_dict()
    if unchanged:
        context.log.info(f"raw_corpus unchanged (fingerprint {fingerprint[:12]}); nothing written")
    else:
        write_atomic(data_path, lambda p: df.to_parquet(p, engine="pyarrow", index=False))
        manifest = {
            "fingerprint": fingerprint,
            "n_messages": len(df),
            "per_group": per_group,
            "sources": list(corpus.sources),
            "messages": df[["message_id", "group", "label", "sha256", "n_bytes"]].to_dict(
                "records"
            ),
        }
        write_atomic(manifest_path, lambda p: p.write_text(json.dumps(manifest, indent=1)))
    return dg.MaterializeResult(
        data_version=dg.DataVersion(fingerprint[:16]),
        metadata={
            "changed": not unchanged,
            "n_messages": len(df),
            "n_spam": int(df["label"].sum()),
            "bytes": int(df["n_bytes"].sum()),
            "per_group": dg.MetadataValue.json(per_group),
            "fingerprint": fingerprint,
            "manifest": dg.MetadataValue.path(str(manifest_path)),
        },
    )


@dg.asset(
    group_name="corpus",
    kinds={"parquet"},
    deps=[raw_corpus],
    description="One row per unique message: parsed headers, body text, structure, content hash.",
)
def parsed_messages(
    context: dg.AssetExecutionContext, storage: StorageResource
) -> dg.Output[pd.DataFrame]:
    data_path = storage.raw_dir / RAW_FILE
    if not data_path.exists():
        raise dg.Failure(
            description=f"parsed_messages: {data_path} missing; materialize raw_corpus"
        )
    raw = pd.read_parquet(data_path, engine="pyarrow")
    parsed = parse_raw_table(raw)
    kept, dups = deduplicate(parsed)
    context.log.info(f"parsed {len(parsed)} messages, kept {len(kept)} ({dups})")
    return dg.Output(
        kept,
        metadata={
            "n_input": len(parsed),
            "n_kept": len(kept),
            **dups,
            "parse_errors": int(kept["parse_error"].notna().sum()),
            "with_mime_defects": int(kept["defects"].notna().sum()),
            "truncated": int(kept["truncated"].sum()),
            "per_group": dg.MetadataValue.json(kept.groupby("group").size().to_dict()),
        },
    )


@dg.asset(
    group_name="corpus",
    kinds={"parquet"},
    description="Time-based split: -1 sets train (newest slice = validation), -2 sets test.",
)
def dataset_splits(
    parsed_messages: pd.DataFrame, labelled_feedback: pd.DataFrame, policy: ModelPolicy
) -> dg.Output[pd.DataFrame]:
    """Feedback rows (see ``labelled_feedback``) join training with their provenance columns
    (``prediction_id``, ``served_model_version``, ``feedback_ts``)."""
    merged, provenance = merge_feedback(parsed_messages, labelled_feedback)
    df = assign_splits(merged, policy.validation_fraction)
    counts = df.groupby(["split", "label"]).size().unstack(fill_value=0)
    table = "| split | ham | spam | spam share |\n|---|---|---|---|\n" + "\n".join(
        f"| {s} | {int(counts.loc[s].get(0, 0))} | {int(counts.loc[s].get(1, 0))} | "
        f"{counts.loc[s].get(1, 0) / max(int(counts.loc[s].sum()), 1):.1%} |"
        for s in SPLITS
        if s in counts.index
    )
    missing = [s for s in SPLITS if s not in counts.index]
    if missing:
        raise dg.Failure(
            description=f"dataset_splits: split(s) {missing} are empty; the corpus needs older "
            "(-1) and newer (-2) groups, e.g. easy-ham-1/spam-1 and easy-ham-2/spam-2"
        )
    return dg.Output(
        df,
        metadata={
            "splits": dg.MetadataValue.md(table),
            "feedback_rows": provenance["feedback_rows"],
            "corpus_rows_replaced_by_feedback": provenance["corpus_rows_replaced"],
            "feedback_provenance": dg.MetadataValue.json(provenance),
        },
    )
