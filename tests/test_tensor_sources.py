"""Every kind of input is read through the one ``TensorSource`` protocol the pipeline knows."""
from __future__ import annotations


def test_every_input_kind_is_read_through_one_protocol(family_models, tmp_path):
    """A model folder, an adapter seen as its fine-tune, an SFT adapter merged: one TensorSource each."""
    import tiny_adapters
    from hf_lines.adapters import AdapterCheckpoint
    from hf_lines.io import Checkpoint, TensorSource
    from hf_lines.soups.inputs import MergedSFTCheckpoint

    base, _ = family_models("llama", 1)
    adapter = tiny_adapters.make_adapter("llama", base, tmp_path / "adapter")
    model = Checkpoint(base)
    sources = [model, AdapterCheckpoint(adapter, model), MergedSFTCheckpoint(adapter, model)]
    for source in sources:
        assert isinstance(source, TensorSource), type(source)
        name = source.names()[0]
        assert tuple(source.get(name).shape) == source.info(name).shape and name in source
