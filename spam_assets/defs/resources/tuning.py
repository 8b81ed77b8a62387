"""Ray Tune's search over XGBoost parameters."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from spam_assets.defs.resources.slice import SettingsSlice, Source


class TuningResource(SettingsSlice):
    """Ray Tune: local Ray with ``num_cpus`` by default, a cluster when ``ray_address`` is set."""

    SOURCES: ClassVar[dict[str, Source]] = {
        "num_cpus": "ray_num_cpus",
        "num_samples": "tune_num_samples",
        "max_rounds": "tune_max_rounds",
        "early_stopping_rounds": "tune_early_stopping_rounds",
        "max_rows": "tune_max_rows",
        "train_workers": "ray_train_workers",
        "storage_dir": lambda s: s.home / "ray_results",
    }

    ray_address: str | None
    num_cpus: int
    num_samples: int
    max_rounds: int
    early_stopping_rounds: int
    max_rows: int
    train_workers: int
    seed: int
    storage_dir: str

    def search(self, data: dict, run_name: str, **tracking):
        """Run the Ray Tune search with these settings; ``tracking`` carries the MLflow
        arguments of :func:`spam_assets.lib.tuning.run_search` (none: untracked)."""
        from spam_assets.lib.tuning import run_search

        return run_search(
            data,
            num_samples=self.num_samples,
            num_cpus=self.num_cpus,
            address=self.ray_address,
            max_rounds=self.max_rounds,
            early_stopping=self.early_stopping_rounds,
            seed=self.seed,
            storage_dir=Path(self.storage_dir),
            run_name=run_name,
            **tracking,
        )
