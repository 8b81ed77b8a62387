"""Data-quality checks on the corpus stage. Leakage across splits is blocking."""

import dagster as dg

from spam_assets.defs.corpus.assets import dataset_splits, parsed_messages
from spam_assets.lib.parsed_store import ParsedCorpus
from spam_assets.lib.split_store import SplitTable
from spam_assets.lib.splits import leaking_hashes

MAX_PARSE_FAILURE_RATE = 0.01
MAX_NULL_RATES = {"sent_at": 0.05, "sender": 0.02, "subject": 0.05}


@dg.asset_check(asset=parsed_messages, blocking=True, description="<= 1% messages unparseable")
def parse_failure_rate(parsed_messages: ParsedCorpus) -> dg.AssetCheckResult:
    errors = parsed_messages.read(["message_id", "parse_error"])["parse_error"]
    failed = int(errors.notna().sum())
    rate = failed / max(len(errors), 1)
    return dg.AssetCheckResult(
        passed=rate <= MAX_PARSE_FAILURE_RATE,
        metadata={"failed": failed, "rate": rate, "max_rate": MAX_PARSE_FAILURE_RATE},
    )


@dg.asset_check(asset=parsed_messages, blocking=True, description="both classes present")
def label_counts(parsed_messages: ParsedCorpus) -> dg.AssetCheckResult:
    counts = parsed_messages.read(["message_id", "label"])["label"].value_counts().to_dict()
    ham, spam = int(counts.get(0, 0)), int(counts.get(1, 0))
    return dg.AssetCheckResult(
        passed=ham > 0 and spam > 0,
        metadata={"ham": ham, "spam": spam, "spam_share": spam / max(ham + spam, 1)},
    )


@dg.asset_check(asset=parsed_messages, description="null/empty rates of key fields")
def null_rates(parsed_messages: ParsedCorpus) -> dg.AssetCheckResult:
    df = parsed_messages.read(["message_id", "sent_at", "sender", "subject"])
    n = max(len(df), 1)
    rates = {
        "sent_at": float(df["sent_at"].isna().sum() / n),
        "sender": float((df["sender"].fillna("") == "").sum() / n),
        "subject": float((df["subject"].fillna("") == "").sum() / n),
    }
    bad = {k: v for k, v in rates.items() if v > MAX_NULL_RATES[k]}
    return dg.AssetCheckResult(
        passed=not bad,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={**{f"{k}_null_rate": v for k, v in rates.items()}, "over_limit": str(bad)},
    )


@dg.asset_check(
    asset=dataset_splits, blocking=True, description="no content hash or raw sha256 in two splits"
)
def no_split_leakage(dataset_splits: SplitTable) -> dg.AssetCheckResult:
    keys = dataset_splits.read(["content_hash", "sha256", "split"])
    leaks = leaking_hashes(keys, "content_hash")
    raw_leaks = leaking_hashes(keys, "sha256")
    return dg.AssetCheckResult(
        passed=not leaks and not raw_leaks,
        metadata={
            "content_hash_leaks": len(leaks),
            "sha256_leaks": len(raw_leaks),
            "examples": str((leaks + raw_leaks)[:5]),
        },
    )
