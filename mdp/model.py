"""The market that server one deviates in.

A market has ``servers`` (N) identical servers. Jobs arrive at each server as a
Poisson process of rate ``arrival_rate`` (lambda < 1), capacity units as a
Poisson process of rate 1, so time is measured in mean capacity inter-arrival
times. A waiting job costs its owner 1 per unit of time. Processing one of its
own jobs costs a server ``processing_cost`` (c), and processing a job from the
shared pool costs ``help_cost`` (c_help). Every request for help costs one token and
every offer of help earns one token with probability ``token_probability``
(phi), whether or not the pool held a job.

The best-deviation model charges a job sent to the pool its expected wait when
it is sent: behind x jobs it waits for x + 1 departures at rate R. The wait
model ``"all"`` takes R = N, exact when every server helps at every capacity
unit; ``"others"`` takes R = N - 1, the pessimistic case in which server one
never helps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .validation import check_choice, check_integer, check_real

WAIT_MODELS = ("all", "others")


@dataclass(frozen=True)
class Market:
    """Parameters of a symmetric market, validated on construction.

    Parameters
    ----------
    arrival_rate : float
        Job arrival rate per server, lambda, in (0, 1).
    servers : int
        Number of servers N, at least 2.
    processing_cost : float, default 1.0
        Cost c of processing one of the server's own jobs, finite and >= 0.
    help_cost : float or None
        Cost c_help of processing a job from the pool; ``None`` means c.
    token_probability : float or None
        Probability phi in (0, 1) that an offer of help earns a token;
        ``None`` means phi = lambda, the value at which complete pooling is an
        equilibrium.
    wait_model : {"all", "others"}
        Rate R at which the pool is served in the charge for a sent job:
        ``"all"`` is R = N, ``"others"`` is R = N - 1.

    Raises
    ------
    ValueError
        If any value is out of range, not finite or of the wrong type.
    """

    arrival_rate: float
    servers: int
    processing_cost: float = 1.0
    help_cost: float | None = None
    token_probability: float | None = None
    wait_model: str = field(default="all")

    def __post_init__(self):
        arrival_rate = check_real("arrival_rate", self.arrival_rate, low=0.0, high=1.0,
                                  low_open=True, high_open=True)
        servers = check_integer("servers", self.servers, low=2)
        processing_cost = check_real("processing_cost", self.processing_cost, low=0.0)
        help_cost = processing_cost if self.help_cost is None else check_real(
            "help_cost", self.help_cost, low=0.0)
        token_probability = arrival_rate if self.token_probability is None else check_real(
            "token_probability", self.token_probability, low=0.0, high=1.0,
            low_open=True, high_open=True)
        wait_model = check_choice("wait_model", self.wait_model, WAIT_MODELS)

        object.__setattr__(self, "arrival_rate", arrival_rate)
        object.__setattr__(self, "servers", servers)
        object.__setattr__(self, "processing_cost", processing_cost)
        object.__setattr__(self, "help_cost", help_cost)
        object.__setattr__(self, "token_probability", token_probability)
        object.__setattr__(self, "wait_model", wait_model)

    @property
    def pool_service_rate(self) -> int:
        """Rate R of pool departures in the charge for a sent job: N or N - 1."""
        return self.servers if self.wait_model == "all" else self.servers - 1

    @property
    def event_rate(self) -> float:
        """Total event rate N(lambda + 1), the uniformisation constant Lambda."""
        return self.servers * (self.arrival_rate + 1.0)

    @property
    def is_equilibrium_setting(self) -> bool:
        """Whether phi = lambda, the only phi at which the other servers' pooling is an equilibrium."""
        return self.token_probability == self.arrival_rate

    def replace(self, **changes) -> "Market":
        """Return a copy with some parameters changed (validated again)."""
        values = {name: getattr(self, name) for name in
                  ("arrival_rate", "servers", "processing_cost", "help_cost",
                   "token_probability", "wait_model")}
        values.update(changes)
        return Market(**values)

    def as_dict(self) -> dict:
        """Return the parameters as a plain dictionary (all values resolved)."""
        return {
            "arrival_rate": self.arrival_rate,
            "servers": self.servers,
            "processing_cost": self.processing_cost,
            "help_cost": self.help_cost,
            "token_probability": self.token_probability,
            "wait_model": self.wait_model,
        }
