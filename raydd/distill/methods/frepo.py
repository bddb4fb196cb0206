"""Neural feature regression with a model pool (FRePo, Zhou et al. 2022).

A sample picks one network of a pool and fits kernel ridge regression on its features of the whole
synthetic set (the kernel is the network's feature Gram matrix), then scores the regression's
predictions for a real batch against the real labels. Only the synthetic set receives gradients; the
pool moves in ``after_step`` alone (one Adam step on the synthetic set for one model per iteration),
and a model that has had ``max_online_updates`` steps restarts from a fresh initialisation.

Where this departs from the reference implementation: labels stay fixed (centred one-hot) instead of
being learned; the online step fits the hard labels with cross-entropy (the reference fits its learned
labels with MSE); the model learning rate is constant (the reference warms it up and anneals it); and
synthetic images are not flip-augmented before the regression.

Under ``--worker-split classes`` (``share``) each worker embeds only its own classes' synthetic instances and its
part of the real batch; the synthetic features (n x d, small) are gathered from every worker with a
differentiable gather, so each worker solves the same regression and its own instances receive the
gradient of every worker's part of the loss. The pool's online step is split the same way: each worker's
cross-entropy over its own instances, the pool model's gradient summed over workers, the same Adam step
everywhere, so that the pool stays identical on every worker.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from raydd.distill.methods.base import MatchingSample, fresh_network
from raydd.distill.share import Share
from raydd.distill.synthetic import SyntheticSet

REAL_CHUNK = 256  # clips per no-grad forward: bounds the activations held at once
SEED_RANGE = 2**62


def centred_one_hot(labels: Tensor, num_classes: int) -> Tensor:
    """FRePo's regression targets: one-hot minus 1/C, so that every target row sums to zero. A comparison with
    ``arange`` rather than ``F.one_hot``, which checks the labels' range with a host read (on the CPU always, on
    CUDA without ``num_classes``): the same 0/1 values, and nothing for the GPU to wait on."""
    classes = torch.arange(num_classes, device=labels.device)
    return (labels[:, None] == classes).float() - 1.0 / num_classes


def feature_regression(features_s: Tensor, targets_s: Tensor, features_t: Tensor, ridge: float) -> Tensor:
    """Kernel ridge predictions for ``features_t``, fitted on (``features_s``, ``targets_s``) with the
    linear kernel K = F F^T and lambda = ``ridge`` * trace(K_ss) / n (FRePo's scale-free ridge).

    With more instances than feature dimensions the same predictions come from the d x d primal system
    F_t (F_s^T F_s + lambda I)^-1 F_s^T Y_s (push-through identity): smaller, and much better conditioned,
    since the n x n kernel then has rank d and n - d of its eigenvalues are lambda alone.

    ``solve_ex``, not ``solve``: ``solve`` reads the factorisation's error flag on the host, a sync on CUDA every
    sample. The system is positive definite for ``ridge`` > 0; a singular one (``ridge`` 0) gives non-finite
    predictions, and the loop's non-finite check stops the run.
    """
    n, d = features_s.shape
    lam = ridge * features_s.pow(2).sum() / n  # trace(F F^T) is the squared Frobenius norm of F
    if n <= d:
        k_ss = features_s @ features_s.T
        alpha = torch.linalg.solve_ex(k_ss + lam * torch.eye(n, device=k_ss.device), targets_s).result
        return (features_t @ features_s.T) @ alpha
    gram = features_s.T @ features_s
    weights = torch.linalg.solve_ex(gram + lam * torch.eye(d, device=gram.device), features_s.T @ targets_s).result
    return features_t @ weights


class FeatureRegression(nn.Module):
    """FRePo as a matching method. The pool (parameters, Adam states, update counters, seeds) is part of
    ``state_dict`` so that a resumed run continues exactly; ``learnable`` is empty because raydd keeps
    labels fixed.

    ``model_lr`` = 3e-4 with Adam and ``ridge`` = 1e-6 are the reference's values for the online models
    and the regression; the reference pool holds 10 models, fewer here by default because each one is a
    full network held on every worker.
    """

    def __init__(
        self,
        build_network: Callable[[], nn.Module],
        *,
        batch_real: int,
        pool_size: int = 4,
        max_online_updates: int = 100,
        model_lr: float = 3e-4,
        ridge: float = 1e-6,
        seed: int = 0,
    ) -> None:
        super().__init__()
        for name, value in (
            ("batch_real", batch_real),
            ("pool_size", pool_size),
            ("max_online_updates", max_online_updates),
        ):
            if value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        if model_lr <= 0 or ridge < 0:
            raise ValueError(f"model_lr must be positive and ridge non-negative, got {model_lr} and {ridge}")
        self.build_network = build_network
        self.batch_real, self.pool_size, self.max_online_updates = batch_real, pool_size, max_online_updates
        self.model_lr, self.ridge = model_lr, ridge
        seeds = torch.randint(SEED_RANGE, (pool_size,), generator=torch.Generator().manual_seed(seed)).tolist()
        self.pool = nn.ModuleList(self._fresh(s, torch.get_default_device()) for s in seeds)
        self.optimizers = [self._optimizer(net) for net in self.pool]
        self.seeds: list[int] = seeds
        # Staggered ages, as in the reference: the models restart one after another, never all at once.
        self.updates = [max_online_updates // pool_size * k for k in range(pool_size)]

    def _fresh(self, seed: int, device: torch.device) -> nn.Module:
        return fresh_network(self.build_network, seed, device).requires_grad_(False)

    def _optimizer(self, net: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.Adam(net.parameters(), lr=self.model_lr)

    def _ready(self, index: int, device: torch.device) -> nn.Module:
        """Pool model ``index`` and its optimizer state on ``device`` (the loop may move the method, or
        load a checkpoint, after the optimizer state was created elsewhere)."""
        net = self.pool[index].to(device)
        for state in self.optimizers[index].state.values():
            for key, value in state.items():
                if key != "step" and isinstance(value, Tensor):  # Adam keeps its step count on the CPU
                    state[key] = value.to(device)
        return net

    def _pick(self, generator: torch.Generator) -> int:
        return int(torch.randint(self.pool_size, (1,), generator=generator))

    def learnable(self) -> list[nn.Parameter]:
        return []

    def accumulate(self, synthetic: SyntheticSet, sample: MatchingSample, weight: float) -> Tensor:
        net = self._ready(self._pick(sample.generator), sample.device).eval()
        classes, share = synthetic.num_classes, sample.share
        drawn = sample.real.draw_random(self.batch_real, sample.generator)
        videos = synthetic.draw_classes(sample.classes(classes), sample.generator)
        if share is not None:
            part = share.part(self.batch_real)
            drawn = drawn.part(part.start, part.stop)
        with torch.no_grad():
            features_t = torch.cat([net.embed(clips) for clips in sample.real.stream(drawn.chunks(REAL_CHUNK))])
        features_s = net.embed(videos)
        if share is not None:
            features_s = share.gather_classes(features_s, synthetic.per_class)
        prediction = feature_regression(features_s, centred_one_hot(synthetic.labels, classes), features_t, self.ridge)
        errors = ((prediction - centred_one_hot(sample.real.labels_of(drawn), classes)) ** 2).sum(1)
        # Under a class split: this worker's part of the mean over the real batch.
        loss: Tensor = errors.mean() if share is None else errors.sum() / self.batch_real
        (loss * weight).backward()
        return loss.detach()

    def after_step(self, synthetic: SyntheticSet, generator: torch.Generator, share: Share | None = None) -> None:
        device = synthetic.labels.device
        index = self._pick(generator)
        net, optimizer = self._ready(index, device).train(), self.optimizers[index]
        classes = range(synthetic.num_classes) if share is None else share.classes
        with torch.no_grad():
            inputs = synthetic.draw_classes(classes, generator)
        labels = synthetic.labels[classes.start * synthetic.per_class : classes.stop * synthetic.per_class]
        net.requires_grad_(True)
        optimizer.zero_grad(set_to_none=True)
        if share is None:
            F.cross_entropy(net(inputs), labels).backward()
        else:
            (F.cross_entropy(net(inputs), labels, reduction="sum") / len(synthetic)).backward()
            grads = [p.grad for p in net.parameters() if p.grad is not None]
            flat = torch.cat([g.reshape(-1) for g in grads])
            share.group.sum_(flat)
            offset = 0
            for grad in grads:
                grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
                offset += grad.numel()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        net.requires_grad_(False)  # pool models never collect gradients from the matching loss
        self.updates[index] += 1
        if self.updates[index] >= self.max_online_updates:
            self.seeds[index] = int(torch.randint(SEED_RANGE, (1,), generator=generator))
            self.pool[index] = self._fresh(self.seeds[index], device)
            self.optimizers[index] = self._optimizer(self.pool[index])
            self.updates[index] = 0

    def get_extra_state(self) -> dict:
        """What ``state_dict`` adds to the pool's parameters."""
        return {
            "updates": list(self.updates),
            "seeds": list(self.seeds),
            "optimizers": [o.state_dict() for o in self.optimizers],
        }

    def set_extra_state(self, state: dict) -> None:
        if len(state["updates"]) != self.pool_size:
            raise ValueError(
                f"the checkpoint holds a pool of {len(state['updates'])} models, this method has pool_size "
                f"{self.pool_size}"
            )
        self.updates, self.seeds = list(state["updates"]), list(state["seeds"])
        for optimizer, saved in zip(self.optimizers, state["optimizers"], strict=True):
            optimizer.load_state_dict(saved)
