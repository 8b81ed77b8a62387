"""The local IO manager: DataFrames as Parquet, anything else pickled, atomic writes."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import dagster as dg
import pandas as pd


class ParquetPickleIOManager(dg.ConfigurableIOManager):
    """DataFrames as Parquet (pyarrow), anything else pickled; writes are atomic renames so a
    crash mid-write never leaves a half file where a good one was."""

    base_dir: str

    def _base(self, key: dg.AssetKey) -> Path:
        return Path(self.base_dir).joinpath(*key.path)

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        base = self._base(context.asset_key)
        base.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(obj, pd.DataFrame):
            path, stale = base.with_suffix(".parquet"), base.with_suffix(".pkl")
            tmp = path.with_suffix(".parquet.tmp")
            obj.to_parquet(tmp, engine="pyarrow", index=False)
            context.add_output_metadata({"rows": len(obj), "path": str(path)})
        else:
            path, stale = base.with_suffix(".pkl"), base.with_suffix(".parquet")
            tmp = path.with_suffix(".pkl.tmp")
            with open(tmp, "wb") as f:
                pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
            context.add_output_metadata({"path": str(path)})
        os.replace(tmp, path)
        stale.unlink(missing_ok=True)

    def load_input(self, context: dg.InputContext) -> object:
        base = self._base(context.asset_key)
        if base.with_suffix(".parquet").exists():
            return pd.read_parquet(base.with_suffix(".parquet"), engine="pyarrow")
        path = base.with_suffix(".pkl")
        if not path.exists():
            raise dg.Failure(
                description=f"{context.asset_key.to_user_string()}: no stored value at {base}.*; "
                "materialize it first"
            )
        with open(path, "rb") as f:
            return pickle.load(f)
