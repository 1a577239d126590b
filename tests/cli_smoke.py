"""Overrides that shrink `discdiff` commands to seconds, for tests that run them as written."""

TINY_RUN = [
    "model.hidden_dim=32",
    "model.cond_dim=16",
    "model.n_blocks=1",
    "model.n_heads=2",
    "data.length=16",
    "train.steps=4",
    "train.batch_size=8",
    "train.eval_every=2",
    "train.eval_sequences=16",
    "train.checkpoint_every=0",
    "train.progress=false",
]

SMOKE = {
    "train": TINY_RUN,
    "sample": ["--quiet", "sampler.samples=2", "sampler.batch_size=2"],
    "eval": ["--sequences", "8"],
    "scale": ["--samples", "2", "--seeds", "1", "--steps", "2,4"],
}
"""Appended to each command: later options and overrides win."""
