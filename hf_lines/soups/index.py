"""``soup.json``: the index of a sweep's outputs, read by ``hf-lines evaluate``."""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_lines.errors import LinesError, writing

INDEX_FILE = "soup.json"


@dataclass
class SoupIndex:
    """What a sweep wrote: its inputs, and one entry per output folder (name, variant, weights, format).

    ``load_on`` is the model an adapter output is loaded on (theta_SFT, or the base under an SFT
    adapter); ``tokenizer`` is the folder the policies' tokenizer is read from.
    """

    folder: Path
    info: dict[str, Any] = field(default_factory=dict)
    outputs: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, folder: str | Path) -> "SoupIndex":
        folder = Path(folder).expanduser().resolve()
        path = folder / INDEX_FILE
        if not path.is_file():
            raise LinesError(f"{folder} has no {INDEX_FILE}; point to the folder that `hf-lines soup -o` wrote")
        data = json.loads(path.read_text())
        outputs = data.pop("outputs", [])
        return cls(folder, data, outputs)

    def update(self, info: dict[str, Any], outputs: list[dict[str, Any]]) -> None:
        """New entries replace old ones of the same name; the rest are kept (a sweep can be extended)."""
        self.info = dict(info)
        names = {o["name"] for o in outputs}
        self.outputs = [o for o in self.outputs if o["name"] not in names] + list(outputs)


    def save(self) -> Path:
        """Write ``soup.json`` atomically."""
        with writing(self.folder / INDEX_FILE):
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".soup-", suffix=".json", dir=self.folder)
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump({**self.info, "outputs": self.outputs}, f, indent=2)
                    f.write("\n")
                os.replace(tmp, self.folder / INDEX_FILE)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return self.folder / INDEX_FILE
