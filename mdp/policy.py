"""Stationary policies of server one on the truncated (q1, q0) grid, and their file format.

A policy is applied at decision points, right after every event of the market
(every server's arrivals and capacity units, including events that change
neither q1 nor q0). In state (q1, q0) server one sends one of its jobs to the
pool with probability ``transfer_probability[q1, q0]`` and then decides again
in (q1 - 1, q0 + 1); otherwise it stops sending, and if the next event is its
own capacity unit it uses it as ``own`` (process an own job), ``help`` (offer
help to the pool) or ``idle`` with probabilities
``capacity_probabilities[q1, q0, :]`` taken in the state it stopped in.
A deterministic policy has only zeros and ones.

File format (``.npz``, written by :func:`save_policy`):

=========================  =============================================
key                        content
=========================  =============================================
``format``                 the string ``"pooling-mdp-policy"``
``format_version``         1
``arrival_rate`` ...       the six market parameters of :class:`~mdp.model.Market`
``truncation``             int array ``[Q1, Q0]``
``transfer_probability``   float array, shape (Q1 + 1, Q0 + 1)
``capacity_probabilities`` float array, shape (Q1 + 1, Q0 + 1, 3): own, help, idle
``metadata_json``          optional JSON text: how the policy was obtained
=========================  =============================================
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field

import numpy as np

from .kernels import capacity_one_hot
from .model import Market
from .validation import check_integer

CAPACITY_ACTIONS = ("own", "help", "idle")
FILE_FORMAT = "pooling-mdp-policy"
FILE_FORMAT_VERSION = 1
_PROBABILITY_TOLERANCE = 1e-9


@dataclass(frozen=True, eq=False)
class Policy:
    """A stationary, possibly randomised, policy of server one on a truncated grid.

    Parameters
    ----------
    market : Market
        The market the policy was computed for.
    truncation : tuple of int
        ``(Q1, Q0)``: the largest own queue and pool length of the grid.
    transfer_probability : ndarray, shape (Q1 + 1, Q0 + 1)
        Probability of sending one more job to the pool in each state. It must be
        zero where sending is impossible (q1 = 0 or q0 = Q0).
    capacity_probabilities : ndarray, shape (Q1 + 1, Q0 + 1, 3)
        Probabilities of own, help and idle at the server's capacity unit; each
        row sums to one and ``own`` is zero where q1 = 0.
    metadata : dict
        Free-form description of how the policy was obtained (JSON-serialisable).
    """

    market: Market
    truncation: tuple
    transfer_probability: np.ndarray
    capacity_probabilities: np.ndarray
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.market, Market):
            raise ValueError(f"market must be a Market, got {type(self.market).__name__}")
        truncation = check_truncation(self.truncation)
        transfer = np.array(self.transfer_probability, dtype=np.float64)
        capacity = np.array(self.capacity_probabilities, dtype=np.float64)
        own_limit, pool_limit = truncation
        if transfer.shape != (own_limit + 1, pool_limit + 1):
            raise ValueError(f"transfer_probability must have shape {(own_limit + 1, pool_limit + 1)}, "
                             f"got {transfer.shape}")
        if capacity.shape != (own_limit + 1, pool_limit + 1, 3):
            raise ValueError(f"capacity_probabilities must have shape {(own_limit + 1, pool_limit + 1, 3)}, "
                             f"got {capacity.shape}")
        _check_probabilities(transfer, capacity)
        transfer.setflags(write=False)
        capacity.setflags(write=False)
        object.__setattr__(self, "truncation", truncation)
        object.__setattr__(self, "transfer_probability", transfer)
        object.__setattr__(self, "capacity_probabilities", capacity)

    @property
    def is_deterministic(self) -> bool:
        """Whether every probability is 0 or 1."""
        values = np.concatenate([self.transfer_probability.ravel(), self.capacity_probabilities.ravel()])
        return bool(np.all((values == 0.0) | (values == 1.0)))

    def transfer_count(self) -> np.ndarray:
        """Return the expected number of jobs sent from each state before the policy stops sending."""
        own_limit, pool_limit = self.truncation
        count = np.zeros((own_limit + 1, pool_limit + 1))
        for own in range(1, own_limit + 1):
            send = self.transfer_probability[own, :pool_limit]
            count[own, :pool_limit] = send * (1.0 + count[own - 1, 1:])
        return count

    def capacity_action(self) -> np.ndarray:
        """Return the most likely capacity action per state: 0 own, 1 help, 2 idle."""
        return np.argmax(self.capacity_probabilities, axis=2)

    def __eq__(self, other):
        if not isinstance(other, Policy):
            return NotImplemented
        return (self.market == other.market and self.truncation == other.truncation
                and np.array_equal(self.transfer_probability, other.transfer_probability)
                and np.array_equal(self.capacity_probabilities, other.capacity_probabilities))

    @classmethod
    def deterministic(cls, market: Market, send: np.ndarray, capacity_action: np.ndarray,
                      metadata: dict | None = None) -> "Policy":
        """Build a deterministic policy from a 0/1 send array and capacity action codes (0, 1, 2)."""
        send = np.asarray(send, dtype=np.float64)
        capacity = capacity_one_hot(capacity_action)
        return cls(market, tuple(int(n) - 1 for n in send.shape), send, capacity, metadata or {})


def check_truncation(truncation) -> tuple:
    """Return ``truncation`` as a pair of positive ints ``(Q1, Q0)``, or raise ``ValueError``."""
    try:
        items = list(truncation)
    except TypeError:
        raise ValueError(f"truncation must be a pair of positive integers (Q1, Q0), got {truncation!r}") from None
    if len(items) != 2:
        raise ValueError(f"truncation must be a pair of positive integers (Q1, Q0), got {truncation!r}")
    own_limit = check_integer("truncation Q1", items[0], low=1)
    pool_limit = check_integer("truncation Q0", items[1], low=1)
    return (own_limit, pool_limit)


def _check_probabilities(transfer: np.ndarray, capacity: np.ndarray) -> None:
    low = -_PROBABILITY_TOLERANCE
    high = 1.0 + _PROBABILITY_TOLERANCE
    if not np.all(np.isfinite(transfer)) or transfer.min() < low or transfer.max() > high:
        raise ValueError("transfer_probability must contain probabilities in [0, 1]")
    if not np.all(np.isfinite(capacity)) or capacity.min() < low or capacity.max() > high:
        raise ValueError("capacity_probabilities must contain probabilities in [0, 1]")
    row_sums = capacity.sum(axis=2)
    worst = float(np.max(np.abs(row_sums - 1.0)))
    if worst > 1e-7:
        raise ValueError(f"capacity_probabilities must sum to 1 in every state; the largest deviation is {worst:.3g}")
    if np.any(transfer[0, :] > _PROBABILITY_TOLERANCE) or np.any(transfer[:, -1] > _PROBABILITY_TOLERANCE):
        raise ValueError("transfer_probability must be 0 where q1 = 0 or q0 = Q0 (no job can be sent there)")
    if np.any(capacity[0, :, 0] > _PROBABILITY_TOLERANCE):
        raise ValueError("capacity_probabilities must give 'own' probability 0 where q1 = 0")
    np.clip(transfer, 0.0, 1.0, out=transfer)
    np.clip(capacity, 0.0, 1.0, out=capacity)


def save_policy(policy_or_result, path) -> str:
    """Write a policy (or a solver result's policy) to an ``.npz`` file, atomically.

    Parameters
    ----------
    policy_or_result : Policy or object with a ``policy`` attribute
        What to save; a :class:`~mdp.solver.DeviationResult` saves its optimal policy.
    path : str or path-like
        Destination; ``.npz`` is appended if missing.

    Returns
    -------
    str
        The path written.
    """
    policy = getattr(policy_or_result, "policy", policy_or_result)
    if not isinstance(policy, Policy):
        raise ValueError(f"expected a Policy or a solver result, got {type(policy_or_result).__name__}")
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    market = policy.market
    arrays = {
        "format": np.array(FILE_FORMAT),
        "format_version": np.array(FILE_FORMAT_VERSION),
        "arrival_rate": np.array(market.arrival_rate),
        "servers": np.array(market.servers),
        "processing_cost": np.array(market.processing_cost),
        "help_cost": np.array(market.help_cost),
        "token_probability": np.array(market.token_probability),
        "wait_model": np.array(market.wait_model),
        "truncation": np.array(policy.truncation, dtype=np.int64),
        "transfer_probability": policy.transfer_probability,
        "capacity_probabilities": policy.capacity_probabilities,
        "metadata_json": np.array(json.dumps(policy.metadata, default=float)),
    }
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(f"cannot write policy file {path}: directory {directory} does not exist")
    handle, temporary = tempfile.mkstemp(suffix=".npz", dir=directory)
    # mkstemp creates the file readable by its owner only; give it the usual mode.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez_compressed(stream, **arrays)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return path


def load_policy(path) -> Policy:
    """Read a policy written by :func:`save_policy`.

    Raises
    ------
    ValueError
        If the file is missing, is not a policy file, or contains invalid arrays.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"policy file not found: {path}")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        raise ValueError(f"cannot read policy file {path}: it is not an .npz archive written by "
                         "save_policy") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} is not a pooling-mdp policy file (a single array, not an .npz archive)")
    try:
        with data:
            contents = {key: data[key] for key in data.files}
    except ValueError:
        raise ValueError(f"{path} is not a pooling-mdp policy file (it contains Python objects)") from None
    if str(contents.get("format", "")) != FILE_FORMAT:
        raise ValueError(f"{path} is not a pooling-mdp policy file (missing or wrong 'format' entry)")
    version = int(contents.get("format_version", -1))
    if version != FILE_FORMAT_VERSION:
        raise ValueError(f"{path} has policy format version {version}; this version reads {FILE_FORMAT_VERSION}")
    try:
        market = Market(
            arrival_rate=float(contents["arrival_rate"]),
            servers=int(contents["servers"]),
            processing_cost=float(contents["processing_cost"]),
            help_cost=float(contents["help_cost"]),
            token_probability=float(contents["token_probability"]),
            wait_model=str(contents["wait_model"]),
        )
        metadata = json.loads(str(contents.get("metadata_json", "{}")))
        return Policy(market, tuple(int(v) for v in contents["truncation"]),
                      contents["transfer_probability"], contents["capacity_probabilities"], metadata)
    except KeyError as error:
        raise ValueError(f"{path} is missing the entry {error.args[0]!r}") from None
