"""Feature columns as numpy arrays: what the feature kernels return, before any DataFrame.

A :class:`FeatureBlock` holds one array per feature column (categoricals as integer codes of
their categories). :func:`callback_timing.features.build_features` turns it into the model's
DataFrame with :meth:`FeatureBlock.to_frame`; the ranking policy reads the arrays directly and
builds the booster's float32 matrix with :meth:`FeatureBlock.matrix`.

Examples
--------
>>> import numpy as np
>>> block = FeatureBlock({"x": np.array([1.5, 2.0]), "c": np.array([1, 0], dtype=np.int8)},
...                      {"c": ["a", "b"]})
>>> block.decoded("c").tolist(), block.take(np.array([1]))["x"].tolist()
(['b', 'a'], [2.0])
>>> block.to_frame().dtypes.astype(str).tolist()
['float64', 'category']
"""

from __future__ import annotations

import numpy as np
import pandas as pd


class FeatureBlock:
    """Aligned feature arrays; ``categories[name]`` lists the labels of a categorical's codes.

    ``block[name]`` is the raw array (codes for a categorical, -1 for missing).
    """

    def __init__(self, columns: dict[str, np.ndarray], categories: dict[str, list]) -> None:
        self.columns = columns
        self.categories = categories
        self._n = len(next(iter(columns.values()))) if columns else 0

    def __len__(self) -> int:
        return self._n

    def __contains__(self, name: object) -> bool:
        return name in self.columns

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def decoded(self, name: str) -> np.ndarray:
        """A column's values; a categorical's labels as objects (NaN where missing)."""
        values = self.columns[name]
        if name not in self.categories:
            return values
        return np.array([*self.categories[name], np.nan], dtype=object)[values]

    def codes(self, name: str, categories: list) -> np.ndarray:
        """Codes of categorical ``name`` in ``categories`` (-1 for labels not among them)."""
        own = list(self.categories[name])
        values = self.columns[name]
        if own == list(categories):
            return values
        remap = np.append(pd.Index(categories).get_indexer(own), -1)
        return remap[values]

    def take(self, rows: np.ndarray, names: list[str] | None = None) -> FeatureBlock:
        """The block of rows ``rows`` (positions or a boolean mask), of columns ``names``."""
        if names is None and rows.dtype == bool and len(rows) == self._n and rows.all():
            return self  # every row: the arrays are not modified, so share them
        names = self.columns if names is None else names
        return FeatureBlock({k: self.columns[k][rows] for k in names}, self.categories)

    def to_frame(self, index: pd.Index | None = None) -> pd.DataFrame:
        """The columns as a DataFrame (categoricals as ``category`` columns)."""
        data = {
            name: (pd.Categorical.from_codes(values, categories=self.categories[name])
                   if name in self.categories else values)
            for name, values in self.columns.items()
        }
        frame = pd.DataFrame(data, index=index)
        return frame if len(data) else pd.DataFrame(index=index)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> FeatureBlock:
        """A frame's columns as a block (``category`` columns as codes)."""
        columns, categories = {}, {}
        for name in frame.columns:
            col = frame[name]
            if isinstance(col.dtype, pd.CategoricalDtype):
                columns[name] = col.cat.codes.to_numpy()
                categories[name] = list(col.cat.categories)
            else:
                columns[name] = col.to_numpy()
        return cls(columns, categories)

    def matrix(self, names: list[str], categories: dict) -> np.ndarray | None:
        """Columns ``names`` as the float32 matrix a booster reads, categoricals as codes.

        ``None`` when a categorical's labels differ from ``categories`` (what the model was
        trained with) or a column the model treats as categorical is numeric here.
        """
        if not names:
            return None
        out = np.empty((len(names), self._n), dtype=np.float32)  # one row per column first
        for j, name in enumerate(names):
            values = self.columns[name]
            if name in self.categories:
                if list(self.categories[name]) != list(categories.get(name, [])):
                    return None
                out[j] = values
                out[j, values < 0] = np.nan
            elif name in categories:
                return None
            else:
                out[j] = values
        return np.ascontiguousarray(out.T)
