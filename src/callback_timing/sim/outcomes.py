"""Play the planned attempts forward in time: who is called, who answers, what is logged.

A planned attempt happens only if no earlier attempt of its request was answered, and the
answer probability depends on how many calls the contact got in the previous 24 h
(fatigue), so the order of events matters. Calls are processed as "the k-th planned call
of every contact" for k = 0, 1, ...: each step is one vectorised operation over all
contacts, and each contact's recent calls sit in a small ring buffer.

Examples
--------
>>> rng = np.random.default_rng(0)
>>> res = resolve(contact=np.array([0, 0]), request=np.array([0, 0]),
...               time_ns=np.array([0, 2 * 3600 * 10**9]), base_logit=np.array([-9.0, -9.0]),
...               fatigue_per_call=0.5, fatigue_cap=6, rng=rng)
>>> res["happened"].tolist(), res["calls_last_24h"].tolist()
([True, True], [0, 1])
"""

from __future__ import annotations

import numpy as np

DAY_NS = 86_400 * 10**9
_RING = 8  # remembered recent calls per contact (must exceed the fatigue cap)
#: Shares of the non-answer outcomes (the rest of ``schema.OUTCOMES``).
NON_ANSWER_SHARES = {
    "no_answer": 0.55, "busy": 0.12, "voicemail": 0.25, "rejected": 0.075,
    "invalid_number": 0.005,
}
#: Typical durations in seconds per outcome: (low, high) of a uniform draw.
_DURATION_RANGE = {
    "no_answer": (20, 45), "busy": (0, 4), "voicemail": (15, 60), "rejected": (2, 15),
    "invalid_number": (0, 3),
}


def resolve(
    contact: np.ndarray,
    request: np.ndarray,
    time_ns: np.ndarray,
    base_logit: np.ndarray,
    fatigue_per_call: float,
    fatigue_cap: int,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Decide which planned calls happen and which are answered.

    Parameters
    ----------
    contact, request : int arrays, the contact row and request number of each planned call.
    time_ns : int64 UTC instants of the planned calls.
    base_logit : true logit of each call before fatigue.
    fatigue_per_call, fatigue_cap : logit lost per call in the previous 24 h, and its cap.

    Returns
    -------
    dict of aligned arrays ``happened``, ``answered`` (bool), ``p_true`` (float, NaN when
    the call did not happen) and ``calls_last_24h`` (int).
    """
    n = len(contact)
    if fatigue_cap >= _RING:
        raise ValueError(f"fatigue_cap must be below {_RING}")
    order = np.lexsort((time_ns, contact))
    sorted_contact = contact[order]
    starts = np.flatnonzero(np.r_[True, sorted_contact[1:] != sorted_contact[:-1]])
    counts = np.diff(np.r_[starts, n])
    rank = np.arange(n) - np.repeat(starts, counts)
    by_rank = order[np.argsort(rank, kind="stable")]
    bounds = np.r_[0, np.cumsum(np.bincount(rank))]

    n_contacts = int(contact.max()) + 1 if n else 0
    ring = np.full((n_contacts, _RING), np.iinfo(np.int64).min, dtype=np.int64)
    ring_pos = np.zeros(n_contacts, dtype=np.int64)
    done = np.zeros(int(request.max()) + 1 if n else 0, dtype=bool)
    happened = np.zeros(n, dtype=bool)
    answered = np.zeros(n, dtype=bool)
    p_true = np.full(n, np.nan)
    calls = np.zeros(n, dtype=np.int64)
    draw = rng.random(n)
    for k in range(len(bounds) - 1):
        rows = by_rank[bounds[k] : bounds[k + 1]]
        rows = rows[~done[request[rows]]]
        c, t = contact[rows], time_ns[rows]
        recent = (ring[c] > (t - DAY_NS)[:, None]).sum(axis=1)
        logit = base_logit[rows] - fatigue_per_call * np.minimum(recent, fatigue_cap)
        p = 1.0 / (1.0 + np.exp(-logit))
        ans = draw[rows] < p
        done[request[rows[ans]]] = True
        ring[c, ring_pos[c] % _RING] = t
        ring_pos[c] += 1
        happened[rows], answered[rows], p_true[rows], calls[rows] = True, ans, p, recent
    return {"happened": happened, "answered": answered, "p_true": p_true,
            "calls_last_24h": calls}


def failure_labels(u: np.ndarray) -> np.ndarray:
    """The non-answer outcome of calls from uniform draws ``u`` in [0, 1), in the shares of
    :data:`NON_ANSWER_SHARES` (for a replay that draws its own numbers).

    >>> failure_labels(np.array([0.0, 0.6, 0.999])).tolist()
    ['no_answer', 'busy', 'invalid_number']
    """
    names = np.array(list(NON_ANSWER_SHARES), dtype=object)
    edges = np.cumsum(list(NON_ANSWER_SHARES.values()))
    edges /= edges[-1]
    return names[np.minimum(np.searchsorted(edges, u, side="right"), len(names) - 1)]


def outcomes_and_durations(
    answered: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Outcome labels (``schema.OUTCOMES``) and durations in seconds of resolved calls.

    >>> labels, secs = outcomes_and_durations(np.array([True, False]), np.random.default_rng(0))
    >>> str(labels[0]), bool(secs[0] > 0)
    ('answered', True)
    """
    n = len(answered)
    names = np.array(list(NON_ANSWER_SHARES), dtype=object)
    shares = np.array(list(NON_ANSWER_SHARES.values()))
    code = rng.choice(len(names), n, p=shares / shares.sum())
    low, high = np.array([_DURATION_RANGE[x] for x in names], dtype=float).T
    secs = rng.uniform(low[code], high[code])
    talk = np.clip(rng.lognormal(np.log(150.0), 0.8, n), 5.0, 3600.0)
    labels = np.where(answered, "answered", names[code])
    return labels, np.round(np.where(answered, talk, secs))
