"""``LinesMerger.save_pretrained(output='model')``: the edited model streamed into a staged folder, with its card."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hf_lines.errors import writing
from hf_lines.io.buffers import OutputBuffers
from hf_lines.io.file_sink import WriteMode
from hf_lines.io.staging import staged_output
from hf_lines.io.support_files import copy_support_files
from hf_lines.io.writer import ShardedWriter
from hf_lines.pipeline.executor import compute_device, default_prefetch, default_workers, stream
from hf_lines.pipeline.recipe import with_dtype, write_output_recipe
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
    base = merger.base.checkpoint
    with staged_output(save_directory, overwrite=overwrite, inputs=merger.input_paths(card_template)) as tmp:
        merger.compute_statistics(progress, workers)
        scales = merger.scales()
        infos = {n: with_dtype(base.info(n), merger.dtype) for n in base.names()}
        norms: dict[str, tuple[float, float]] = {}
        plotting = preload_plotting()
        writer = ShardedWriter(tmp, infos, max_shard_size, metadata={"hf_lines": "LiNeS"}, write_mode=write_mode)
        workers = workers or default_workers()
        prefetch = default_prefetch(workers)
        # one more than can be in flight: take() never waits forever
        buffers = OutputBuffers(prefetch + 1, phases=writer.phases())

        def write(name: str, tensor: torch.Tensor) -> None:
            writer.write(name, tensor)
            buffers.give_back(name)

        on = compute_device(device)
        try:
            stream(
                writer.order,
                lambda n: merger.tensor(n, scales[n], norms, buffers, on),
                write,
                sizes={n: i.nbytes for n, i in infos.items()},
                # inputs and output of a tensor are alive while it is in flight
                costs={n: i.nbytes * (len(merger.models) + 2) + merger.method.working_bytes(i.numel) for n, i in infos.items()},
                budget=memory_budget,
                prefetch=prefetch,
                desc=f"LiNeS {merger.method.name}",
                workers=workers,
                progress=progress,
            )
            writer.close()
        except BaseException:
            writer.abort()
            raise
        with writing(tmp):
            copy_support_files(base.path, tmp)
        with writing(tmp / "hf_lines.json"):
            (tmp / "hf_lines.json").write_text(json.dumps(merger.describe(), indent=2) + "\n")
        write_output_recipe(merger, tmp, max_shard_size)
        merger.tensor_norms = norms
        plotting.join()  # matplotlib's caches are not for two threads at once
        card.write_merger_card(merger, tmp, model_name=model_name, template=card_template, card_data=card_data)
    merger.tensor_norms = norms
    merger.tensor_norms = norms
    return Path(save_directory).expanduser().resolve()
