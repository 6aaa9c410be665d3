"""The neural memory's configuration, and the default bound on its learning rate."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from lifelong.errors import ConfigError
from lifelong.validate import check_fields


def stable_max_lr(chunk_size: int, gates: str = "chunk") -> float:
    """The default bound on θ of the paper's rule (``update="paper"``): small enough
    that the inner loop stays finite.

    A chunk's write sums b token gradients taken at the chunk-start weights, so
    the step on the chunk is ~b·θ, and with token gates the within-chunk momentum
    applies each of those stale gradients up to 1/(1−η) times more. Streaming
    8k tokens of RMS-1 and RMS-3 input through untrained memories (head width
    8–64, depth 2–3, chunks 1–64), the bare MLP stayed finite at
    θ_max = min(0.02, 0.1/b) with chunk gates and min(0.02, 0.03/b) with token
    gates, and overflowed at about 3× those bounds. Larger θ memorizes faster
    and is fine for short or well-conditioned streams: set ``max_lr`` explicitly.
    """
    return min(0.02, (0.1 if gates == "chunk" else 0.03) / max(1, chunk_size))


# The default bound on θ of the "bounded" rule: with the chunk's step divided by
# the Gershgorin bound of its key Gram matrix, θ ≤ 0.5 makes the summed step on
# a linear memory, I − 2θ K_nᵀK_n / G_n, a contraction (eigenvalues in [0, 1]).
BOUNDED_MAX_LR = 0.5
UPDATES = ("bounded", "paper")


@dataclass
class NeuralMemoryConfig:
    dim: int = 256  # model width of the input/output stream
    heads: int = 4  # independent memories, one MLP each
    head_dim: int = 64  # key/value/query width per head
    depth: int = 2  # layers of the memory MLP; 1 = a linear matrix memory
    expansion: float = 4.0  # hidden width of the memory MLP = expansion · head_dim
    chunk_size: int = 64  # b: tokens per write; 1 = exact token recurrence
    conv_kernel: int = 4  # causal depthwise conv after q/k/v projections; 1 = none
    gates: str = "chunk"  # "chunk" or "token": granularity of α and η (θ is per token)
    momentum: bool = True  # False: S_t = −θ_t ∇ℓ (plain gradient step, η ≡ 0)
    max_lr: float | None = None  # θ_t ∈ (0, max_lr); None: stable_max_lr(chunk_size, gates)
    init_lr_logit: float = 0.0  # initial θ = max_lr · sigmoid(·)
    init_forget_logit: float = -4.6  # initial α ≈ 0.01
    init_momentum_logit: float = 2.2  # initial η = max_momentum · sigmoid(·) ≈ 0.9 · max_momentum
    max_momentum: float = 1.0  # η_t ∈ (0, max_momentum)
    # the inner update rule: "bounded" (momentum as an average, θ scaled by the chunk's
    # key Gram bound; see ops.chunk_coefficients) or "paper" (eqs. 10, 13-14 as written)
    update: str = "bounded"
    value_norm: bool | None = None  # ℓ2-normalize values like keys; None: True for "bounded"

    def __post_init__(self) -> None:
        check_fields(self, "NeuralMemoryConfig")  # `dim="64"`, `chunk_size=2.5`, `max_lr=nan` are refused
        for name in ("dim", "heads", "head_dim", "depth", "chunk_size", "conv_kernel"):
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"NeuralMemoryConfig.{name} must be ≥ 1, got {getattr(self, name)}",
                    hint=f"set {name} to a positive integer",
                )
        if self.gates not in ("chunk", "token"):
            raise ConfigError(
                f"NeuralMemoryConfig.gates must be 'chunk' or 'token', got {self.gates!r}",
                hint="use gates='chunk' (α, η per chunk) or gates='token' (per token)",
            )
        if self.update not in UPDATES:
            raise ConfigError(
                f"NeuralMemoryConfig.update must be one of {', '.join(UPDATES)}, got {self.update!r}",
                hint="update='bounded' (the stable default) or update='paper' (the paper's rule as written)",
            )
        if self.value_norm is None:
            self.value_norm = self.update == "bounded"
        if self.max_lr is None:
            self.max_lr = BOUNDED_MAX_LR if self.update == "bounded" else stable_max_lr(self.chunk_size, self.gates)
        if not 0.0 < self.max_momentum <= 1.0:
            raise ConfigError(
                f"NeuralMemoryConfig.max_momentum must be in (0, 1], got {self.max_momentum}",
                hint="η_t ∈ (0, max_momentum); 1.0 is the paper's range",
            )
        if self.expansion <= 0 or self.max_lr <= 0:
            raise ConfigError(
                "NeuralMemoryConfig.expansion and max_lr must be positive",
                hint="e.g. expansion=4.0; leave max_lr unset for the stable default",
            )

    @property
    def hidden_dim(self) -> int:
        return max(1, int(round(self.expansion * self.head_dim)))

    def layer_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of each memory layer: d → h → … → h → d (depth 1: d → d)."""
        if self.depth == 1:
            return [(self.head_dim, self.head_dim)]
        dims = [self.head_dim] + [self.hidden_dim] * (self.depth - 1) + [self.head_dim]
        return list(zip(dims[:-1], dims[1:]))

    def fingerprint(self) -> str:
        """Short hash of the fields that decide a state's layout and meaning.

        The paper's rule without value norm hashes without ``update`` and
        ``value_norm``, as before those fields existed, so states saved then
        still load into the same memory."""
        fields = asdict(self)
        if fields["update"] == "paper" and not fields["value_norm"]:
            del fields["update"], fields["value_norm"]
        blob = json.dumps(fields, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]
