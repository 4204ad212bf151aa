"""The InfoGAN categorical code (Chen et al. 2016) that a DCGAN or StyleGAN-lite with
``latent_code`` reads from z itself, so seeds, truncation and the exported graphs keep their
meaning (``gancore.sampling.latent_codes`` is the same rule in numpy)."""

from __future__ import annotations

import torch


def latent_code(z: torch.Tensor, values: int) -> torch.Tensor:
    """The categorical code a DCGAN or StyleGAN-lite with ``latent_code`` reads from z: the
    argmax of its first ``values`` components. Uniform over the values for any z with i.i.d.
    symmetric components, truncated or not."""
    return z[:, :values].argmax(dim=1)


def with_code(z: torch.Tensor, code: torch.Tensor, values: int) -> torch.Tensor:
    """``z`` with its first ``values`` components permuted so that :func:`latent_code` reads
    ``code`` from each row: the row's largest of them swaps places with component ``code``. For
    i.i.d. z this draws z given its code, e.g. a sample grid with one row per code value."""
    code = torch.as_tensor(code, device=z.device)
    if code.numel() and (int(code.min()) < 0 or int(code.max()) >= values):
        raise ValueError(f"code values must be in 0..{values - 1}, got {code.tolist()}")
    rows = torch.arange(z.shape[0], device=z.device)
    top = latent_code(z, values)
    out = z.clone()
    out[rows, code] = z[rows, top]
    out[rows, top] = z[rows, code]
    return out
