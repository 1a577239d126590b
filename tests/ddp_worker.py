"""Run by tests/test_training.py under torchrun: one DDP step's gradients, saved by rank 0."""

import sys

import torch
from training_setup import capture_gradients, make_trainer

if __name__ == "__main__":
    trainer = make_trainer(batch_size=8, accumulate=1, grad_clip=0.0, dropout=0.0)
    grads = capture_gradients(trainer)
    if trainer.dist.is_main:
        torch.save(grads, sys.argv[1])
    torch.distributed.barrier()  # nobody tears the group down while another rank is in it
    torch.distributed.destroy_process_group()
