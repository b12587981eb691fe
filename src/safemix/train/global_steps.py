"""Training steps whose loss is the mean over every process's tokens: the reference computation that sharded
training (FSDP2, ``safemix.models.sharded``) is checked against, in one process or several."""

from __future__ import annotations

from typing import Any

from safemix.train.recipe import token_loss_sum


def global_mean_steps(model: Any, batch: dict[str, Any], *, total_tokens: int, world_size: int, steps: int,
                      learning_rate: float) -> list[float]:
    """Run ``steps`` AdamW steps on this process's ``batch``; return each step's loss over all processes.

    ``total_tokens`` is the number of label tokens of the whole step (every process's). Each process's loss is
    its token sum over that count; FSDP averages gradients over the processes, so the backward pass scales by
    ``world_size`` to get the gradient of the global mean. With ``world_size`` 1 no process group is needed.
    """
    import torch
    import torch.distributed as dist

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=learning_rate)
    model.train()
    losses = []
    for _ in range(steps):
        loss_sum = token_loss_sum(model, batch)
        (loss_sum * world_size / total_tokens).backward()
        optimizer.step()
        optimizer.zero_grad()
        total = loss_sum.detach()
        if world_size > 1:
            dist.all_reduce(total)
        losses.append(total.item() / total_tokens)
    return losses
