r"""Generative models of the inputs: a variational autoencoder for tabular or flattened data.

:class:`VAE` models inputs of any width. It works in a unit space learned
from the stream (:class:`FeatureScale`, per-feature minimum and maximum), so
its output range follows the data instead of constants fitted to one
dataset. Generative replay (:mod:`skcl.generator`) trains it and samples it.

Examples
--------
>>> import torch
>>> from skcl.nn import VAE
>>> vae = VAE(n_features=5, hidden_layer_sizes=(16,), latent_dim=3)
>>> vae.scale.update(torch.tensor([[0.0] * 5, [4.0] * 5]))
>>> x = vae.sample(4, seed=0)
>>> x.shape, bool((x >= 0).all() and (x <= 4).all())
(torch.Size([4, 5]), True)
>>> torch.equal(x, vae.sample(4, seed=0))
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from skcl.nn.core import make_mlp, output_width


class FeatureScale(nn.Module):
    r"""Per-feature range of the data seen, mapping inputs to :math:`[0, 1]` and back.

    :math:`u = (x - \text{low}) / \text{span}`, with ``low`` and ``low + span``
    the smallest and largest value each feature has shown (a constant feature
    gets span 1). The range only widens as data arrives.

    Parameters
    ----------
    n_features : int

    Examples
    --------
    >>> import torch
    >>> from skcl.nn import FeatureScale
    >>> scale = FeatureScale(2)
    >>> scale.update(torch.tensor([[0.0, 1.0], [2.0, 1.0]]))
    >>> scale.to_unit(torch.tensor([[1.0, 1.0]])).tolist()
    [[0.5, 0.0]]
    """

    def __init__(self, n_features: int):
        super().__init__()
        self.register_buffer("low", torch.full((n_features,), float("inf")))
        self.register_buffer("high", torch.full((n_features,), float("-inf")))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Widen the range to cover ``x`` (rows of inputs)."""
        self.low = torch.minimum(self.low, x.min(dim=0).values.to(self.low))
        self.high = torch.maximum(self.high, x.max(dim=0).values.to(self.high))

    @property
    def span(self) -> torch.Tensor:
        span = self.high - self.low
        return torch.where(span > 0, span, torch.ones_like(span))

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in unit space, clipped to :math:`[0, 1]`."""
        return ((x - self.low) / self.span).clamp(0.0, 1.0)

    def from_unit(self, u: torch.Tensor) -> torch.Tensor:
        """Unit-space values back in the data's range."""
        return self.low + u * self.span


class VAEOutput(NamedTuple):
    """What :meth:`VAE.forward` returns: reconstruction logits (unit space), the inputs in
    unit space, and the posterior's mean and log-variance."""

    logits: torch.Tensor
    target: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor


class VAE(nn.Module):
    r"""Variational autoencoder (Kingma & Welling, ICLR 2014) for inputs of any width.

    Encoder: an MLP of ``hidden_layer_sizes`` to the mean and log-variance of
    :math:`q(z \mid x)`, :math:`z \in \mathbb R^{d}`; decoder: the mirrored MLP to
    one Bernoulli logit per feature in the unit space of :attr:`scale`. The
    training criterion (:meth:`loss`) is the negative ELBO per feature, as van
    de Ven et al. (2020) use for their replay generator:

    .. math:: \frac1{D}\Big(\sum_{i=1}^{D} \mathrm{BCE}(\hat u_i, u_i)
              + \mathrm{KL}\big(q(z \mid x) \,\|\, \mathcal N(0, I)\big)\Big).

    Parameters
    ----------
    n_features : int
        Input width :math:`D`.
    hidden_layer_sizes : sequence of int
        Encoder widths; the decoder uses them in reverse.
    latent_dim : int
        :math:`d`.
    """

    def __init__(self, n_features: int, hidden_layer_sizes: Sequence[int], latent_dim: int):
        super().__init__()
        sizes = [int(s) for s in hidden_layer_sizes]
        self.n_features, self.latent_dim = n_features, latent_dim
        self.scale = FeatureScale(n_features)
        self.encoder = make_mlp(n_features, sizes)
        width = output_width(self.encoder, n_features)
        self.mu = nn.Linear(width, latent_dim)
        self.logvar = nn.Linear(width, latent_dim)
        self.decoder = make_mlp(latent_dim, sizes[::-1])
        self.out = nn.Linear(output_width(self.decoder, latent_dim), n_features)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Bernoulli logits of the unit-space features for latent codes ``z``."""
        return self.out(self.decoder(z))

    def forward(self, x: torch.Tensor, task=None, seed: int | None = None,
                share: tuple[int, int, int] | None = None) -> VAEOutput:
        """Encode ``x``, draw :math:`z` by the reparameterisation trick (its noise from
        ``seed`` when given, else from torch's global generator; the mean in eval mode),
        decode. ``share=(rank, world, rows)``: ``x`` holds rows ``rank::world`` of a batch
        of ``rows`` (data-parallel training), and gets those rows of that batch's noise."""
        u = self.scale.to_unit(x)
        h = self.encoder(u)
        mu, logvar = self.mu(h), self.logvar(h).clamp(-20.0, 20.0)
        z = mu
        if self.training:
            generator = None if seed is None else torch.Generator().manual_seed(int(seed))
            shape = mu.shape if share is None else (share[2], mu.shape[1])
            noise = torch.randn(shape, generator=generator).to(mu)
            if share is not None:
                noise = noise[share[0]::share[1]]
            z = mu + noise * (0.5 * logvar).exp()
        return VAEOutput(self.decode(z), u, mu, logvar)

    @staticmethod
    def loss(out: VAEOutput, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Negative ELBO per feature, averaged over the samples (weighted by ``weight``)."""
        recon = F.binary_cross_entropy_with_logits(out.logits, out.target,
                                                   reduction="none").sum(dim=1)
        kl = -0.5 * (1.0 + out.logvar - out.mu.square() - out.logvar.exp()).sum(dim=1)
        per_sample = (recon + kl) / out.target.shape[1]
        return per_sample.mean() if weight is None else (per_sample * weight).mean()

    @torch.no_grad()
    def sample(self, n: int, seed: int) -> torch.Tensor:
        r"""``n`` inputs in the data's range: :math:`z \sim \mathcal N(0, I)` drawn from
        ``seed`` (a generator of its own, so torch's global one is untouched), decoded
        to the mean of each feature's Bernoulli."""
        generator = torch.Generator().manual_seed(int(seed))
        z = torch.randn(n, self.latent_dim, generator=generator)
        z = z.to(device=self.out.weight.device, dtype=self.out.weight.dtype)
        return self.scale.from_unit(torch.sigmoid(self.decode(z)))
