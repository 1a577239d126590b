"""Run by tests/test_finetune.py under torchrun: a few FSDP steps, losses and weights saved."""

import sys

import torch
from training_setup import make_trainer

if __name__ == "__main__":
    out, run_dir = sys.argv[1], sys.argv[2]
    trainer = make_trainer(run_dir=run_dir, fsdp=True, steps=4, dropout=0.0)
    history = trainer.fit()
    if trainer.dist.is_main:
        torch.save({"losses": torch.tensor(history.losses)}, out)
    torch.distributed.barrier()  # nobody tears the group down while another rank is in it
    torch.distributed.destroy_process_group()
