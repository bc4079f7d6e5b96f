"""Dataset specs -> ``datasets.Dataset``: local csv/json/jsonl/parquet files, Hub dataset ids, or objects in memory."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

# file suffix -> the ``datasets`` builder that reads it
FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet",
           ".arrow": "arrow", ".txt": "text"}
SPEC_KEYS = ("path", "data_files", "dataset", "name", "split", "revision", "format")


class DatasetSpecError(ValueError):
    """A dataset spec that cannot be read; the message says what is accepted."""


def load_split(spec: Any) -> Any:
    """One split as a ``datasets.Dataset``.

    ``spec`` is one of:

    * a ``datasets.Dataset`` (returned as is), a list of row dicts or a dict of columns;
    * a local file path (``.csv``, ``.tsv``, ``.json``, ``.jsonl``, ``.parquet``, ``.arrow``,
      ``.txt``), read with ``datasets.load_dataset(<format>, data_files=path, split="train")``;
    * a mapping: ``{path: FILE}`` or ``{data_files: FILE(S), format: csv}`` for local files,
      ``{dataset: HUB_ID, name: CONFIG, split: validation, revision: REV}`` for the Hub.
    """
    import datasets

    if isinstance(spec, (datasets.Dataset,)):
        return spec
    if isinstance(spec, list):
        return datasets.Dataset.from_list(spec)
    if isinstance(spec, (str, Path)):
        return _load_file(spec, None, "train")
    if isinstance(spec, Mapping):
        unknown = sorted(set(spec) - set(SPEC_KEYS))
        if unknown and not any(k in spec for k in SPEC_KEYS):
            return datasets.Dataset.from_dict(dict(spec))  # a dict of columns
        if unknown:
            raise DatasetSpecError(f"unknown dataset spec key(s) {unknown}; use {list(SPEC_KEYS)}")
        if "dataset" in spec:
            if "path" in spec or "data_files" in spec:
                raise DatasetSpecError("give either dataset (a Hub id) or path/data_files (local files), not both")
            return datasets.load_dataset(spec["dataset"], spec.get("name"), split=spec.get("split", "validation"),
                                         revision=spec.get("revision"))
        files = spec.get("path", spec.get("data_files"))
        if files is None:
            raise DatasetSpecError(f"dataset spec {dict(spec)} names no data: give path, data_files or dataset")
        return _load_file(files, spec.get("format"), spec.get("split", "train"))
    raise DatasetSpecError(f"cannot read a dataset from {type(spec).__name__}: give a path, a mapping or a datasets.Dataset")


def _load_file(files: Any, fmt: str | None, split: str) -> Any:
    import datasets

    if isinstance(files, Mapping):  # {split: file(s)}, as datasets takes it
        if split not in files:
            raise DatasetSpecError(f"data_files has splits {sorted(files)}, not {split!r}: give split:")
        chosen = files[split]
        first = Path(chosen[0] if isinstance(chosen, (list, tuple)) else chosen).expanduser()
        fmt = fmt or FORMATS.get(first.suffix.lower())
        if fmt is None:
            raise DatasetSpecError(f"cannot tell the format of {first}: use one of {sorted(FORMATS)} or give format:")
        return datasets.load_dataset(fmt, data_files={k: v for k, v in files.items()}, split=split)
    first = Path(files[0] if isinstance(files, (list, tuple)) else files).expanduser()
    if fmt is None:
        fmt = FORMATS.get(first.suffix.lower())
        if fmt is None:
            raise DatasetSpecError(f"cannot tell the format of {first}: use one of {sorted(FORMATS)} or give format:")
    if not any(ch in str(first) for ch in "*?[") and not first.exists():
        raise DatasetSpecError(f"dataset file {first} does not exist")
    data_files = [str(Path(f).expanduser()) for f in files] if isinstance(files, (list, tuple)) else str(first)
    kwargs = {"delimiter": "\t"} if fmt == "csv" and first.suffix.lower() == ".tsv" else {}
    return datasets.load_dataset(fmt, data_files=data_files, split=split, **kwargs)
