"""Corpus stage: raw messages -> parsed, de-duplicated table -> time-based splits."""

from pathlib import Path

import dagster as dg
import pandas as pd

from spam_assets.defs.resources import (
    CorpusResource,
    ModelPolicy,
    StorageResource,
    TuningResource,
)
from spam_assets.lib.corpus_sources import CorpusError
from spam_assets.lib.parsed_store import ParsedCorpus, deduplicated, update_parts
from spam_assets.lib.raw_store import MANIFEST_FILE, RawPart, land, read_manifest
from spam_assets.lib.split_store import SplitTable, plan_splits, write_splits
from spam_assets.lib.splits import SPLITS


@dg.asset(
    group_name="corpus",
    kinds={"parquet"},
    description="Raw RFC822 messages from the configured sources, as Parquet parts per source "
    "with a manifest (fingerprints per source and part).",
)
def raw_corpus(
    context: dg.AssetExecutionContext, corpus: CorpusResource, storage: StorageResource
) -> dg.MaterializeResult:
    """Land raw bytes once, a part at a time; an unchanged source keeps its parts, so an
    unchanged corpus is a no-op and new mail lands only its own parts."""
    try:
        landing = land(
            list(corpus.sources),
            storage.raw_dir,
            Path(corpus.cache_dir),
            corpus.download_timeout_s,
            corpus.chunk_rows,
        )
    except CorpusError as exc:
        raise dg.Failure(description=f"raw_corpus: {exc}") from exc
    changed = bool(landing.written or landing.removed)
    if not changed:
        context.log.info(f"raw_corpus unchanged ({landing.fingerprint[:12]}); nothing written")
    return dg.MaterializeResult(
        data_version=dg.DataVersion(landing.fingerprint[:16]),
        metadata={
            "changed": changed,
            "sources_written": dg.MetadataValue.json(list(landing.written)),
            "parts_removed": len(landing.removed),
            "n_messages": landing.n_messages,
            "n_spam": landing.n_spam,
            "bytes": landing.n_bytes,
            "n_parts": len(landing.parts),
            "per_group": dg.MetadataValue.json(landing.per_group),
            "fingerprint": landing.fingerprint,
            "manifest": dg.MetadataValue.path(str(storage.raw_dir / MANIFEST_FILE)),
        },
    )


@dg.asset(
    group_name="corpus",
    kinds={"parquet"},
    deps=[raw_corpus],
    description="One row per unique message: parsed headers, body text, structure, content "
    "hash; parsed parts per raw part (only new or changed parts are parsed), de-duplicated "
    "across all of them.",
)
def parsed_messages(
    context: dg.AssetExecutionContext,
    corpus: CorpusResource,
    storage: StorageResource,
    tuning: TuningResource,
) -> dg.Output[ParsedCorpus]:
    manifest = read_manifest(storage.raw_dir)
    if not manifest.get("sources"):
        raise dg.Failure(
            description=f"parsed_messages: {storage.raw_dir / MANIFEST_FILE} missing or from "
            "an older version; materialize raw_corpus"
        )
    parts = [RawPart(**p) for source in manifest["sources"] for p in source["parts"]]
    parsed_now, reused, nodes = update_parts(
        storage.raw_dir, parts, storage.parsed_dir, corpus.parse_workers, tuning.ray_address
    )
    kept, stats = deduplicated(storage.parsed_dir, parts)
    context.log.info(
        f"parsed {len(parsed_now)} part(s), reused {len(reused)}; kept {stats['n_kept']} of "
        f"{stats['n_input']} messages"
    )
    return dg.Output(
        kept,
        metadata={
            **{k: v for k, v in stats.items() if k != "per_group"},
            "parts_parsed": len(parsed_now),
            "parts_reused": len(reused),
            "parsed_on": (
                f"Ray cluster {tuning.ray_address}: {len(nodes)} node(s)"
                if tuning.ray_address
                else f"{corpus.parse_workers} local process(es)"
            ),
            "per_group": dg.MetadataValue.json(stats["per_group"]),
        },
    )


@dg.asset(
    group_name="corpus",
    kinds={"parquet"},
    description="Time-based split: -1 sets train (newest slice = validation), -2 sets test; "
    "a Parquet file per split, written a parsed part at a time and passed by reference.",
)
def dataset_splits(
    parsed_messages: ParsedCorpus,
    labelled_feedback: pd.DataFrame,
    policy: ModelPolicy,
    storage: StorageResource,
) -> dg.Output[SplitTable]:
    """Feedback rows (see ``labelled_feedback``) join training with their provenance columns
    (``prediction_id``, ``served_model_version``, ``feedback_ts``). The split is chosen on the
    key columns; the rows never sit in memory all at once (``spam_assets.lib.split_store``)."""
    plan = plan_splits(parsed_messages, labelled_feedback, policy.validation_fraction)
    provenance = plan.provenance
    counts = plan.assigned.groupby(["split", "label"]).size().unstack(fill_value=0)
    summary = "| split | ham | spam | spam share |\n|---|---|---|---|\n" + "\n".join(
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
    table = write_splits(Path(storage.data_dir) / "splits", parsed_messages, plan)
    return dg.Output(
        table,
        metadata={
            "rows": sum(table.counts.values()),
            "path": dg.MetadataValue.path(table.root),
            "splits": dg.MetadataValue.md(summary),
            "feedback_rows": provenance["feedback_rows"],
            "corpus_rows_replaced_by_feedback": provenance["corpus_rows_replaced"],
            "feedback_provenance": dg.MetadataValue.json(provenance),
        },
    )
