"""An offline end-to-end run: build a tiny LLaMA, fine-tune it briefly, apply LiNeS, report per block."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .merger import LinesMerger


@dataclass
class DemoResult:
    output: Path
    rows: list[tuple[int, float, float, float]]  # block, lambda, ||tau||, ||lambda * tau||
    losses: dict[str, float]  # model -> loss on the fine-tuning task


def _task_batch(g: torch.Generator, vocab: int, n: int = 32, length: int = 16) -> torch.Tensor:
    """Counting sequences modulo ``vocab``: next token = previous + step."""
    start = torch.randint(0, vocab, (n, 1), generator=g)
    step = torch.randint(1, 4, (n, 1), generator=g)
    return (start + step * torch.arange(length)) % vocab


def _loss(model, batch: torch.Tensor) -> float:
    with torch.no_grad():
        return float(model(input_ids=batch, labels=batch).loss)


def run_demo(out: str | Path, alpha: float = 0.5, beta: float = 0.5, steps: int = 60, overwrite: bool = False) -> DemoResult:
    """Fine-tune a tiny random LLaMA on a counting task, then write its LiNeS edit to ``out``."""
    import tempfile

    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=48, hidden_size=64, intermediate_size=128, num_hidden_layers=6,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    base = LlamaForCausalLM(config)
    with tempfile.TemporaryDirectory() as tmp:
        base_dir, ft_dir = Path(tmp) / "base", Path(tmp) / "finetuned"
        base.save_pretrained(base_dir)
        ft = LlamaForCausalLM.from_pretrained(base_dir)
        opt = torch.optim.AdamW(ft.parameters(), lr=3e-3)
        g = torch.Generator().manual_seed(0)
        ft.train()
        for _ in range(steps):
            batch = _task_batch(g, config.vocab_size)
            loss = ft(input_ids=batch, labels=batch).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
        ft.eval()
        ft.save_pretrained(ft_dir)

        merger = LinesMerger.from_pretrained(base_dir, [ft_dir], alpha=alpha, beta=beta)
        output = merger.save_pretrained(out, overwrite=overwrite, progress=False)
        edited = LlamaForCausalLM.from_pretrained(output)
        test = _task_batch(torch.Generator().manual_seed(1), config.vocab_size, n=256)
        losses = {"pre-trained": _loss(base, test), "fine-tuned": _loss(ft, test), "LiNeS": _loss(edited, test)}

        base_sd, ft_sd = base.state_dict(), ft.state_dict()
        rows = []
        for (_, block), names in sorted(merger.layer_map.block_names().items()):
            tau = torch.sqrt(sum(((ft_sd[n] - base_sd[n]).float() ** 2).sum() for n in names))
            lam = merger.layer_map.scale(names[0], alpha, beta)
            rows.append((block, lam, float(tau), float(abs(lam) * tau)))
    return DemoResult(output, rows, losses)
