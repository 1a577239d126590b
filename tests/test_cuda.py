"""CUDA-only checks: xformers against SDPA, bf16 autocast, and their speed.

Skipped without a CUDA device. Run on a GPU machine with
`pytest tests/test_cuda.py -s` to print the timing table.
"""

import time

import pytest
import torch

from discdiff.models import DiT, DiTConfig, attention
from discdiff.models.attention import xformers_available

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
needs_xformers = pytest.mark.skipif(
    not (torch.cuda.is_available() and xformers_available()), reason="needs xformers"
)


def timed(fn, repeats=20):
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


@needs_xformers
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("padded", [False, True])
def test_xformers_matches_sdpa(dtype, padded):
    generator = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (
        torch.randn(4, 256, 8, 64, device="cuda", dtype=dtype, generator=generator)
        for _ in range(3)
    )
    mask = None
    if padded:
        mask = (
            torch.arange(256, device="cuda")
            < torch.tensor([256, 200, 129, 7], device="cuda")[:, None]
        )
    ref = attention(q, k, v, backend="sdpa", padding_mask=mask)
    got = attention(q, k, v, backend="xformers", padding_mask=mask)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got.float(), ref.float(), atol=tol, rtol=tol)


@needs_xformers
def test_dit_backends_agree_on_cuda():
    config = DiTConfig.tiny(vocab_size=1001)
    tokens = torch.randint(1001, (8, 256), device="cuda")
    sigma = torch.zeros(8, device="cuda")
    torch.manual_seed(0)
    models = {
        b: DiT(DiTConfig.tiny(vocab_size=1001, attention=b)).cuda().eval()
        for b in ("sdpa", "xformers")
    }
    models["xformers"].load_state_dict(models["sdpa"].state_dict())
    with torch.no_grad():
        out = {b: m(tokens, sigma) for b, m in models.items()}
    assert config.attention == "auto"
    torch.testing.assert_close(out["xformers"], out["sdpa"], atol=5e-2, rtol=5e-2)


@needs_xformers
def test_speed_table():
    rows = []
    for length in (256, 1024):
        q, k, v = (
            torch.randn(8, length, 12, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3)
        )
        for backend in ("sdpa", "xformers", "math"):
            seconds = timed(lambda b=backend, q=q, k=k, v=v: attention(q, k, v, backend=b))
            rows.append((length, backend, seconds * 1e3))
    for length, backend, ms in rows:
        print(f"L={length:5d} {backend:9s} {ms:8.3f} ms")
    assert all(ms > 0 for *_, ms in rows)
