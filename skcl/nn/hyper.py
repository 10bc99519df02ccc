r"""Hypernetworks: networks that generate another network's weights from a task embedding.

:class:`HyperNetwork` maps a task embedding :math:`e` (with chunk embeddings
:math:`c_i` when chunked) to a flat weight vector; :class:`HyperMLP` is a
network of the skcl contract whose MLP trunk takes its weights from it, one
set per task, with an ordinary output head per task (von Oswald, Henning,
Grewe & Sacramento, ICLR 2020).

Examples
--------
>>> import torch
>>> from skcl.nn import HyperMLP
>>> net = HyperMLP(n_features=4, hidden_layer_sizes=(8,), embedding_dim=3,
...                hyper_hidden_sizes=(5,), chunk_size=16, chunk_embedding_dim=2)
>>> net.add_units(task=0, n_new=2, seed=0)
>>> net.n_target_weights, net.generate([0]).shape
(40, torch.Size([1, 40]))
>>> net(torch.zeros(3, 4), task=0).shape
torch.Size([3, 2])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from skcl.nn.core import IncrementalLinear, make_mlp, output_width
from skcl.nn.inference import check_task_inference, least, softmax_entropy


class HyperNetwork(nn.Module):
    r"""An MLP from a task embedding to a flat vector of ``n_outputs`` weights.

    Unchunked, :math:`h(e) = W_{out}\,\mathrm{MLP}(e) + b_{out}`. Chunked
    (``chunk_size`` set), the same MLP maps :math:`[e, c_i]` to the
    :math:`i`-th chunk of ``chunk_size`` weights, :math:`c_i` a learned chunk
    embedding, and the chunks are concatenated (the last one cut): the
    hypernetwork then has far fewer parameters than it generates.

    Parameters
    ----------
    n_outputs : int
        Number of weights generated.
    embedding_dim : int
        Width of the task embedding.
    hidden_layer_sizes : sequence of int
        Widths of the MLP's hidden layers (ReLU).
    chunk_size : int or None
        Weights generated per chunk; ``None`` generates all at once.
    chunk_embedding_dim : int
        Width of a chunk embedding (ignored unchunked).
    """

    def __init__(self, n_outputs: int, embedding_dim: int, hidden_layer_sizes: Sequence[int],
                 chunk_size: int | None, chunk_embedding_dim: int):
        super().__init__()
        self.n_outputs, self.chunk_size = n_outputs, chunk_size
        n_in, n_out = embedding_dim, n_outputs
        if chunk_size is not None:
            n_chunks = math.ceil(n_outputs / chunk_size)
            self.chunk_embeddings = nn.Parameter(torch.randn(n_chunks, chunk_embedding_dim))
            n_in, n_out = embedding_dim + chunk_embedding_dim, chunk_size
        self.body = make_mlp(n_in, [int(s) for s in hidden_layer_sizes])
        self.out = nn.Linear(output_width(self.body, n_in), n_out)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Weights generated for each row of ``embeddings`` (k, embedding_dim): (k, n_outputs)."""
        if self.chunk_size is None:
            return self.out(self.body(embeddings))
        k, n_chunks = embeddings.shape[0], self.chunk_embeddings.shape[0]
        rows = torch.cat([embeddings.repeat_interleave(n_chunks, dim=0),
                          self.chunk_embeddings.repeat(k, 1)], dim=1)
        return self.out(self.body(rows)).reshape(k, -1)[:, : self.n_outputs]


class HyperMLP(nn.Module):
    r"""An MLP trunk whose weights a hypernetwork generates per task, with per-task heads.

    Task :math:`t` has a learned embedding :math:`e_t`; its trunk is the ReLU
    MLP of ``hidden_layer_sizes`` with weights :math:`h(e_t)` (each layer's
    generated weights and biases scaled by :math:`1/\sqrt{\text{fan-in}}`, so a
    hypernetwork at its initialisation generates weights on the scale of
    PyTorch's default initialisation), and its head is an ordinary linear
    layer that only that task's samples train. Follows the network contract of
    :mod:`skcl.nn`: ``forward(x, task)`` gives logits over every unit, ``-inf``
    for units of other tasks; ``task=None`` runs every task's network.

    Parameters
    ----------
    n_features : int
    hidden_layer_sizes : sequence of int
        The target trunk's widths.
    embedding_dim : int
        Width of the task embeddings.
    hyper_hidden_sizes : sequence of int
        Hidden widths of the hypernetwork.
    chunk_size : int or None
        See :class:`HyperNetwork`.
    chunk_embedding_dim : int
    """

    def __init__(self, n_features: int, hidden_layer_sizes: Sequence[int], embedding_dim: int,
                 hyper_hidden_sizes: Sequence[int], chunk_size: int | None,
                 chunk_embedding_dim: int):
        super().__init__()
        widths = [n_features, *(int(s) for s in hidden_layer_sizes)]
        self.shapes = list(zip(widths[1:], widths[:-1], strict=True))  # (out, in) per layer
        self.width = widths[-1]
        self.n_target_weights = sum(o * i + o for o, i in self.shapes)
        self.embedding_dim = embedding_dim
        self.hnet = HyperNetwork(self.n_target_weights, embedding_dim, hyper_hidden_sizes,
                                 chunk_size, chunk_embedding_dim)
        self.embeddings = nn.ParameterDict()
        self.heads = nn.ModuleDict()
        self.register_buffer("unit_task", torch.empty(0, dtype=torch.long))

    @property
    def n_units(self) -> int:
        return int(self.unit_task.numel())

    @property
    def tasks(self) -> list[int]:
        """Tasks with an embedding, in order of arrival."""
        return [int(k) for k in self.embeddings.keys()]

    def add_units(self, task: int, n_new: int, seed: int) -> None:
        """Append ``n_new`` units to ``task``'s head; a new task gets an embedding drawn from
        :math:`\\mathcal N(0, I)` (seeded) and a head."""
        key, device = str(task), self.unit_task.device
        generator = torch.Generator().manual_seed(seed)
        if key not in self.embeddings:
            embedding = torch.randn(self.embedding_dim, generator=generator)
            self.embeddings[key] = nn.Parameter(embedding.to(device))
            self.heads[key] = IncrementalLinear(self.width).to(device)
        self.heads[key].grow(n_new, int(torch.randint(2**62, (1,), generator=generator)))
        new = torch.full((n_new,), task, dtype=torch.long, device=device)
        self.unit_task = torch.cat([self.unit_task, new])

    def generate(self, tasks: Sequence[int], hnet: HyperNetwork | None = None) -> torch.Tensor:
        """Flat trunk weights generated per task from its embedding, (k, n_target_weights),
        by ``hnet`` (a frozen copy of :attr:`hnet`, say) or by :attr:`hnet` itself."""
        return (self.hnet if hnet is None else hnet)(
            torch.stack([self.embeddings[str(t)] for t in tasks]))

    def target_weights(self, flat: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """One task's flat generated vector cut into ``(weight, bias)`` per trunk layer."""
        layers, start = [], 0
        for out, inp in self.shapes:
            scale = 1.0 / math.sqrt(inp)
            weight = flat[start:start + out * inp].reshape(out, inp) * scale
            start += out * inp
            layers.append((weight, flat[start:start + out] * scale))
            start += out
        return layers

    def features(self, x: torch.Tensor, task: int, flat: torch.Tensor | None = None):
        """The trunk's output for ``task``, from ``flat`` generated weights if given."""
        flat = self.generate([task])[0] if flat is None else flat
        for weight, bias in self.target_weights(flat):
            x = F.relu(F.linear(x, weight, bias))
        return x

    def forward(self, x: torch.Tensor, task: torch.Tensor | int | None = None,
                generated: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        """Logits over all units (``-inf`` outside each sample's task); ``generated`` maps a
        task to its flat trunk weights (generated here when missing)."""
        out = x.new_full((x.shape[0], self.n_units), float("-inf"))
        for t, rows in self._tasks_to_run(task):
            flat = None if generated is None else generated.get(t)
            logits = self.heads[str(t)](self.features(x if rows is None else x[rows], t, flat))
            units = torch.nonzero(self.unit_task == t).flatten()
            if rows is None:
                out = out.index_copy(1, units, logits)
            else:
                out = out.index_copy(0, rows, out[rows].index_copy(1, units, logits))
        return out

    def _tasks_to_run(self, task):
        known = self.tasks
        if task is None:
            return [(t, None) for t in known]
        if isinstance(task, int):
            return [(task, None)] if task in known else []
        values = torch.unique(task).tolist()
        if len(values) == 1:
            return [(values[0], None)] if values[0] in known else []
        return [(t, torch.nonzero(task == t).flatten()) for t in values if t in known]


class GeneratedNetworks(nn.Module):
    r"""Every task's network of a :class:`HyperMLP` with its weights generated once, for
    predictions; with no task given, the task is inferred.

    Task inference by predictive entropy (von Oswald et al., 2020, Sec. 3,
    "HNET+ENT"): every task's network scores the input, and the task whose
    head's softmax has the lowest entropy
    :math:`H_t(x) = -\sum_c p_{t,c}(x) \log p_{t,c}(x)` answers
    (:func:`~skcl.nn.softmax_entropy`); the other tasks' units score ``-inf``.
    ``per='sample'`` infers a task per row, ``per='batch'`` one task for all
    the rows of a call, the lowest total entropy (:func:`~skcl.nn.least`;
    the authors evaluate one task's test batch at a time).

    Parameters
    ----------
    network : HyperMLP
        Its hypernetwork generates the weights once, here; the module keeps
        ``network`` (no copy: pass one that nothing else trains).
    per : {'sample', 'batch'}, default='sample'
        Granularity of task inference (:mod:`skcl.nn.inference`).

    Examples
    --------
    >>> import torch
    >>> from skcl.nn import HyperMLP
    >>> from skcl.nn import GeneratedNetworks
    >>> net = HyperMLP(4, (8,), 3, (5,), None, 2)
    >>> net.add_units(0, 2, seed=0); net.add_units(1, 2, seed=1)
    >>> scores = GeneratedNetworks(net)(torch.randn(5, 4))
    >>> torch.isinf(scores).sum(dim=1).tolist()
    [2, 2, 2, 2, 2]
    >>> batch = GeneratedNetworks(net, per="batch")(torch.randn(5, 4))
    >>> len({tuple(row) for row in torch.isinf(batch).tolist()})
    1
    """

    def __init__(self, network: HyperMLP, per: str = "sample"):
        super().__init__()
        self.network, self.per = network, check_task_inference(per)
        tasks = network.tasks
        with torch.no_grad():
            flats = network.generate(tasks) if tasks else []
        self.generated = {t: flat for t, flat in zip(tasks, flats, strict=True)}

    def forward(self, x: torch.Tensor, task: torch.Tensor | int | None = None) -> torch.Tensor:
        net = self.network
        if task is not None:
            return net(x, task, generated=self.generated)
        logits = [net.heads[str(t)](net.features(x, t, flat)) for t, flat in
                  self.generated.items()]
        chosen = least(torch.stack([softmax_entropy(z) for z in logits]), self.per)
        out = x.new_full((x.shape[0], net.n_units), float("-inf"))
        for i, (t, z) in enumerate(zip(self.generated, logits, strict=True)):
            rows = torch.nonzero(chosen == i).flatten()
            units = torch.nonzero(net.unit_task == t).flatten()
            out = out.index_copy(0, rows, out[rows].index_copy(1, units, z[rows]))
        return out
