"""The data layer: generated and external datasets, their cards, and files written safely.

``pdediff.data`` is public: the readers of :mod:`pdediff.data.dataset` are re-exported here
(``open_dataset``, ``load_arrays``, ``read_card``, ``PDEDataset`` ...), and :func:`describe`
(:mod:`pdediff.data.draft`), which drafts a card for an unknown HDF5 file, and
:func:`read_fields` (:mod:`pdediff.data.external`), which reads any card: time-dependent,
per-seed groups, ``.npz``, ``.pt``, netCDF, rectangular and periodic grids, several fields.
Example files in each layout: :mod:`pdediff.data.examples`. The generator is
:mod:`pdediff.data.generate`, dataset cards :mod:`pdediff.data.cards`, atomic writes
:mod:`pdediff.data.atomic`, checkpoints :mod:`pdediff.data.checkpoint`, the benchmark cases
:mod:`pdediff.data.cases`.
"""

from pdediff.data.dataset import (DatasetCard, ExternalCard, FileInfo, PDEDataset, ShardReader, find_card,
                                  inspect_card, inspect_file, load_arrays, open_dataset, read_card, resolve_paths)
from pdediff.data.draft import describe
from pdediff.data.external import read_fields

__all__ = ["DatasetCard", "ExternalCard", "FileInfo", "PDEDataset", "ShardReader", "describe", "find_card",
           "inspect_card", "inspect_file", "load_arrays", "open_dataset", "read_card", "read_fields", "resolve_paths"]
