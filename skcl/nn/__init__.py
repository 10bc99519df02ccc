"""Networks of skcl estimators: the network contract, trunks, heads and special layers.

Every network an estimator trains maps inputs to logits over its *units*, the
output neurons in the order they were added, and follows one contract:

- ``forward(x, task)``: logits over all units (``task`` a tensor of per-sample
  ids, one id, or ``None``);
- ``features(x, task)``: the representation the output layer reads;
- ``add_units(task, n_new, seed)``: append output units (for ``task``'s head
  where heads are per task);
- ``n_units``: the number of output units.

Trunks are built by :func:`make_trunk` through a layer factory, so a method
asks for masked, gated or column layers without copying the MLP builder, and
:class:`TaskSequential` hands the task to the layers that take it. One module
per concept: :mod:`skcl.nn.core` (trunks, growing heads, per-task heads),
:mod:`skcl.nn.masked` (per-task binary, thresholded-score and supermask layers),
:mod:`skcl.nn.gated` (units gated per task by a task embedding, HAT),
:mod:`skcl.nn.generators` (a VAE of the inputs), :mod:`skcl.nn.hyper`
(hypernetworks and the networks whose weights they generate),
:mod:`skcl.nn.columns` (progressive columns with lateral adapters),
:mod:`skcl.nn.consolidated` (CWR*'s consolidated output layer),
:mod:`skcl.nn.inference` (task inference by confidence, per sample or per batch).

Examples
--------
>>> import torch
>>> from skcl.nn import SharedHead, make_mlp
>>> net = SharedHead(lambda: make_mlp(4, (8,)), n_features=4)
>>> net.add_units(task=0, n_new=2, seed=0)
>>> net(torch.zeros(3, 4)).shape
torch.Size([3, 2])
"""

from skcl.nn.columns import ColumnNetwork
from skcl.nn.consolidated import ConsolidatedHead, ConsolidatedNetwork
from skcl.nn.core import (
    GLOBAL_RNG_LOCK,
    IncrementalLinear,
    SharedHead,
    TaskHeads,
    TaskSequential,
    call_trunk,
    make_mlp,
    make_trunk,
    output_width,
    seeded,
)
from skcl.nn.gated import GateContext, GatedHeads, GatedLinear
from skcl.nn.generators import VAE, FeatureScale
from skcl.nn.hyper import GeneratedNetworks, HyperMLP, HyperNetwork
from skcl.nn.inference import (
    TASK_INFERENCE,
    check_task_inference,
    least,
    min_entropy_heads,
    softmax_entropy,
)
from skcl.nn.latent import LatentSplit
from skcl.nn.masked import (
    MaskedLinear,
    ScoreMaskLinear,
    SupermaskLinear,
    Superposition,
    TaskMaskLinear,
)
from skcl.nn.picking import PickHeads, PickLinear

__all__ = [
    "LatentSplit",
    "ColumnNetwork",
    "ConsolidatedHead",
    "ConsolidatedNetwork",
    "GLOBAL_RNG_LOCK",
    "GateContext",
    "GatedHeads",
    "GatedLinear",
    "FeatureScale",
    "GeneratedNetworks",
    "HyperMLP",
    "HyperNetwork",
    "IncrementalLinear",
    "MaskedLinear",
    "PickHeads",
    "PickLinear",
    "ScoreMaskLinear",
    "SharedHead",
    "SupermaskLinear",
    "Superposition",
    "TaskHeads",
    "TaskMaskLinear",
    "TaskSequential",
    "VAE",
    "call_trunk",
    "make_mlp",
    "make_trunk",
    "min_entropy_heads",
    "TASK_INFERENCE",
    "check_task_inference",
    "least",
    "softmax_entropy",
    "output_width",
    "seeded",
]
