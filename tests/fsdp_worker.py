"""Run by tests/test_finetune.py under torchrun: FSDP steps, a checkpoint, a resumed run.

Rank 0 saves the losses of 4 steps and, after resuming from the step-4
checkpoint, of steps 5-6.
"""

import sys

import torch
from training_setup import make_trainer

if __name__ == "__main__":
    out, run_dir = sys.argv[1], sys.argv[2]
    first = make_trainer(run_dir=run_dir, fsdp=True, steps=4, dropout=0.0).fit()
    first_losses = list(first.losses)
    resumed = make_trainer(run_dir=run_dir, fsdp=True, steps=6, dropout=0.0)
    history = resumed.fit()
    if resumed.dist.is_main:
        torch.save(
            {"first": torch.tensor(first_losses), "resumed": torch.tensor(history.losses)}, out
        )
    torch.distributed.barrier()  # nobody tears the group down while another rank is in it
    torch.distributed.destroy_process_group()
