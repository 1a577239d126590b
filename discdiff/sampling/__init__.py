"""Samplers: ancestral, block by block with caches, autoregressive, particles; the Pyro chain.

A sampler runs a strategy (a posterior or decoder of `discdiff.processes`)
over time; it never knows which one it has.
"""

from discdiff.sampling.ancestral import AncestralSampler, SampleResult
from discdiff.sampling.blocks import BlockCache, BlockSampler, BlockSampleResult
from discdiff.sampling.particles import ParticleSampler, resample
from discdiff.sampling.program import ReverseChain

__all__ = [
    "AncestralSampler",
    "BlockCache",
    "BlockSampleResult",
    "BlockSampler",
    "ParticleSampler",
    "ReverseChain",
    "SampleResult",
    "resample",
]
