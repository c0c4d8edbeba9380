"""Per-coordinate routed-transport plans (SPEC: Routed transport, Named configurations).

A plan gives each latent coordinate k a route (which component c), a tie (one c per element or per
row), a source (where the noise comes from) and a mode (transport it or use it directly). The named
presets are the paper's configurations. Plans compile to one int32 code per coordinate, the layout
csrc/xvae_math.h decodes.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Iterable, List, Sequence, Tuple, Union

import torch

ROUTES = ("home", "prior", "posterior")
TIES = ("none", "row")
SOURCES = ("prior", "prior_home", "posterior")
MODES = ("transport", "direct")

PRESETS = ("full", "interleaved", "split-2/3", "split-1/3", "k1-pp-np", "k1-pq-np", "k1-pp-nq",
           "k1-pq-nq", "matched")
# The paper's configurations (Tables 8-10); `matched` is SPEC Revision 2's: every coordinate
# transported with its home component, z = mu + sigma * eta (Lemma 3).
PAPER_PRESETS = PRESETS[:8]


@dataclasses.dataclass(frozen=True)
class CoordinatePlan:
    """How one latent coordinate is drawn."""

    route: str = "prior"
    tie: str = "none"
    source: str = "prior"
    mode: str = "transport"

    def __post_init__(self):
        for field, allowed in (("route", ROUTES), ("tie", TIES), ("source", SOURCES),
                               ("mode", MODES)):
            value = getattr(self, field)
            if value not in allowed:
                raise ValueError(f"CoordinatePlan.{field} must be one of {allowed}, got {value!r}")
        if self.mode == "transport" and self.source != "prior":
            raise ValueError("CoordinatePlan: mode 'transport' needs source 'prior' (SPEC step 4), "
                             f"got source {self.source!r}")


HOME_TRANSPORT = CoordinatePlan("home", "none", "prior", "transport")
PRIOR_TRANSPORT = CoordinatePlan("prior", "none", "prior", "transport")
PRIOR_DIRECT = CoordinatePlan("prior", "none", "prior", "direct")


class Plan:
    """A per-coordinate plan for K coordinates; `Plan.preset(name, K)` builds the named ones."""

    def __init__(self, coordinates: Sequence[CoordinatePlan], name: str = "custom"):
        coordinates = list(coordinates)
        if not coordinates:
            raise ValueError("Plan needs at least one coordinate")
        for k, c in enumerate(coordinates):
            if not isinstance(c, CoordinatePlan):
                raise TypeError(f"Plan coordinate {k} must be a CoordinatePlan, got {type(c).__name__}")
        self.coordinates: Tuple[CoordinatePlan, ...] = tuple(coordinates)
        self.name = name
        codes, slot = [], 0
        for c in self.coordinates:
            code = (ROUTES.index(c.route) | (TIES.index(c.tie) << 2) | (SOURCES.index(c.source) << 3)
                    | (MODES.index(c.mode) << 5))
            if c.source == "posterior":
                code |= slot << 8
                slot += 1
            codes.append(code)
        self.codes: Tuple[int, ...] = tuple(codes)
        self.num_posterior = slot
        self._needs_pi_q = any(c.route == "posterior" for c in self.coordinates)
        self._device_codes: Dict[torch.device, torch.Tensor] = {}

    # -- properties ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.coordinates)

    def __repr__(self) -> str:
        return f"Plan({self.name!r}, K={len(self)})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Plan) and self.coordinates == other.coordinates

    def __hash__(self) -> int:
        return hash(self.coordinates)

    @property
    def needs_pi_q(self) -> bool:
        """True if some coordinate routes by the posterior's pi_q."""
        return self._needs_pi_q

    def codes_tensor(self, device) -> torch.Tensor:
        device = torch.device(device)
        if torch.compiler.is_compiling():
            return torch.tensor(self.codes, dtype=torch.int32, device=device)
        t = self._device_codes.get(device)
        if t is None:
            t = torch.tensor(self.codes, dtype=torch.int32, device=device)
            self._device_codes[device] = t
        return t

    def to_dict(self) -> dict:
        return {"name": self.name, "coordinates": [dataclasses.asdict(c) for c in self.coordinates]}

    @classmethod
    def from_dict(cls, d: dict) -> "Plan":
        return cls([CoordinatePlan(**c) for c in d["coordinates"]], name=d.get("name", "custom"))

    # -- presets ------------------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, K: int) -> "Plan":
        if not isinstance(K, int) or K < 1:
            raise ValueError(f"latent size K must be a positive int, got {K!r}")
        if name == "full":
            coords = [PRIOR_TRANSPORT] * K
        elif name == "matched":
            coords = [HOME_TRANSPORT] * K
        elif name == "interleaved":
            # SPEC's "even k" counts coordinates from 1 (the paper's K = 3 interleaved model has
            # one transported coordinate): transport at 0-based k = 1, 3, 5, ...; the rest are
            # direct draws routed by pi_q, one component per row.
            anchored = CoordinatePlan("posterior", "row", "prior", "direct")
            coords = [HOME_TRANSPORT if k % 2 == 1 else anchored for k in range(K)]
        elif name in ("split-2/3", "split-1/3"):
            n = round((2 / 3 if name == "split-2/3" else 1 / 3) * K)
            coords = [PRIOR_TRANSPORT] * n + [PRIOR_DIRECT] * (K - n)
        elif name.startswith("k1-") and name in PRESETS:
            _, pi, n = name.split("-")
            last = CoordinatePlan("prior" if pi == "pp" else "posterior", "none",
                                  "prior_home" if n == "np" else "posterior", "direct")
            coords = [HOME_TRANSPORT] * (K - 1) + [last]
        else:
            raise ValueError(f"unknown plan preset {name!r}; choose one of {PRESETS} "
                             "(or 'single' for the single-Gaussian X-VAE, which has no routing)")
        return cls(coords, name=name)


# Presets resolved by name, kept: building a K-coordinate plan (and its device codes) on every op
# call costs more than a small batch's kernel.
_PRESET_CACHE: Dict[Tuple[str, int], Plan] = {}


def resolve_plan(plan: Union[str, Plan, Iterable[CoordinatePlan]], K: int) -> Plan:
    """A Plan for K coordinates from a preset name, a Plan, or a list of CoordinatePlan."""
    if isinstance(plan, str):
        key = (plan, K)
        hit = _PRESET_CACHE.get(key) if isinstance(K, int) and not isinstance(K, bool) else None
        if hit is None:
            hit = Plan.preset(plan, K)
            if len(_PRESET_CACHE) >= 64:
                _PRESET_CACHE.clear()
            _PRESET_CACHE[key] = hit
        return hit
    if not isinstance(plan, Plan):
        plan = Plan(list(plan))
    if len(plan) != K:
        raise ValueError(f"plan has {len(plan)} coordinates but the latent size K is {K}")
    return plan
