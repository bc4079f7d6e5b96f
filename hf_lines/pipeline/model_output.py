"""``LinesMerger.save_pretrained(output='model')``: the edited model streamed into a staged folder, with its card."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hf_lines.errors import writing
from hf_lines.io.file_sink import WriteMode
from hf_lines.io.staging import staged_output
from hf_lines.io.support_files import copy_support_files
from hf_lines.pipeline.plan import execute
from hf_lines.pipeline.recipe import write_output_recipe
from hf_lines.publish import card
from hf_lines.publish.plot import preload as preload_plotting

if TYPE_CHECKING:
    from hf_lines.pipeline.merger import LinesMerger


def save_merger_model(
    merger: "LinesMerger",
    save_directory: str | Path,
    *,
    overwrite: bool,
    max_shard_size: int | str,
    progress: bool,
    workers: int | None,
    memory_budget: int | None,
    device: str | torch.device | None,
    write_mode: WriteMode,
    card_template: str | Path | None,
    card_data: dict[str, Any] | None,
    model_name: str,
) -> Path:
    """Stream every tensor of the merge into ``save_directory`` (options already checked); returns its path."""
    card.check_card_template(card_template, lambda folder: card.write_merger_card(
        merger, folder, model_name=model_name, template=card_template, card_data=card_data, preview=True))
    with staged_output(save_directory, overwrite=overwrite, inputs=merger.input_paths(card_template)) as tmp:
        plan = merger.plan(progress, workers)
        plotting = preload_plotting()
        norms = execute(plan, [tmp], max_shard_size=max_shard_size, write_mode=write_mode, workers=workers,
                        memory_budget=memory_budget, device=device, progress=progress,
                        desc=f"LiNeS {merger.method.name}")[0]
        with writing(tmp):
            copy_support_files(merger.base.checkpoint.path, tmp)
        with writing(tmp / "hf_lines.json"):
            (tmp / "hf_lines.json").write_text(json.dumps(merger.describe(), indent=2) + "\n")
        write_output_recipe(merger, tmp, max_shard_size)
        merger.tensor_norms = norms
        plotting.join()  # matplotlib's caches are not for two threads at once
        card.write_merger_card(merger, tmp, model_name=model_name, template=card_template, card_data=card_data)
    return Path(save_directory).expanduser().resolve()
