"""A tiny, fully seeded training set-up shared by the training tests and the DDP worker."""

import torch

import discdiff as dd
from discdiff.data import LanguageSource, SyntheticLanguage
from discdiff.training import TrainConfig, Trainer

LANGUAGE = SyntheticLanguage(vocab_size=12, states=4, support=4, seed=0)


def make_trainer(run_dir=None, dropout=0.1, source=None, **config):
    torch.manual_seed(0)
    process = dd.MaskingProcess(vocab_size=12)
    backbone = dd.DiT(dd.DiTConfig.micro(vocab_size=13, model_length=16, dropout=dropout))
    with torch.no_grad():  # leave the zero-initialised output layer: give it a start
        backbone.output_layer.linear.weight.normal_(0, 0.02)
    settings = dict(
        steps=6, batch_size=8, lr=1e-3, warmup=2, ema=0.9, eval_every=0, progress=False, seed=0
    )
    settings.update(config)
    source = source or LanguageSource(LANGUAGE, 16, seed=0)
    return Trainer(
        process,
        dd.SUBS(backbone, process),
        source,
        TrainConfig(**settings),
        run_dir=run_dir,
        validation=LANGUAGE.sample(32, 16),
    )


def capture_gradients(trainer):
    """Run one step; return the gradients the optimiser saw and the loss it reported."""
    grads = {}
    step = trainer.optimizer.step

    def capture(*args, **kwargs):
        for name, p in trainer.model.named_parameters():
            grads[name] = p.grad.detach().clone()
        return step(*args, **kwargs)

    trainer.optimizer.step = capture
    grads["reported loss"] = torch.tensor(trainer.train_step())
    return grads
