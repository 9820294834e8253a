"""The resident-operand service: operands stored encoded on the workers, above the futures.

``put`` stores ``A`` encoded once; products against it send only the other operand; ``update``
and ``sgd_step`` change the stored blocks in place (linear updates keep them a codeword);
``matmul_left`` multiplies from the left against the same blocks; ``fetch`` decodes them;
``scrub`` checks every block and rebuilds the corrupt or stale ones; ``drop`` frees them.

Every operation that changes stored blocks is acknowledged by each worker: the returned handle
carries the :class:`~codedml.runtime.futures.Ack` (``handle.ack``), which settles with an
:class:`~codedml.runtime.futures.AckReport` or with
:class:`~codedml.errors.UpdateFailedError`. A worker that could not apply an operation has its
block marked *stale* the moment its error arrives: products skip it (an erasure, reported as
``"stale"``), so a failed update is an error to its caller and never a later "soft error";
``scrub`` stores stale blocks anew.

The root keeps a norm bound for every stored block (triangle inequality through updates) for
the decoder's noise model; a scrub resets them to the exact norms.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..codes import Encoding, LinearCode, MDSCode, ReplicationCode, Task
from ..codes._base import _input_dtype
from ..codes._validate import check_int
from ..codes.resident import encode_left
from ..errors import ConfigurationError, CorruptResultError, NonFiniteUpdateError
from .futures import Ack, Job
from .protocol import Op, Request

if TYPE_CHECKING:  # pragma: no cover
    from ._cluster import ClusterBase

__all__ = ["ResidentHandle", "ScrubReport", "ResidentService"]

_TOKENS = itertools.count()  # one per ResidentService: a handle names its cluster


@dataclass(frozen=True)
class ResidentHandle:
    """An operand stored encoded on the workers by ``cluster.put``; ``update`` and
    ``sgd_step`` return a new one (fresh norm bounds, the new acknowledgements in ``ack``)."""

    id: int
    code: LinearCode
    shape: tuple[int, ...]
    dtype: np.dtype
    norms: tuple[float, ...] = field(repr=False, default=())
    input_dtype: np.dtype = field(repr=False, default=np.dtype(np.float64))
    """The dtype ``A`` arrived in at ``put``."""
    precision: str = field(repr=False, default="auto")
    """The ``precision`` given to ``put``."""
    ack: Ack | None = field(repr=False, default=None, compare=False)
    """The acknowledgements of the operation that produced this handle."""
    owner: int = field(repr=False, default=-1)
    """Which cluster's service stored it (a handle of another cluster is refused by name)."""

    @property
    def compensated(self) -> bool:
        """Whether products against the stored blocks are compensated: what ``put``'s encode
        decided from the code, ``precision`` and the input dtype (see
        :meth:`~codedml.codes.LinearCode.compensates`)."""
        return self.code.compensates(self.input_dtype, self.dtype, self.precision)


@dataclass
class ScrubReport:
    """What a scrub of a stored operand found: workers checked, located corrupt, stale
    (missed a failed update), repaired, and missing (did not answer)."""

    checked: tuple[int, ...]
    faulty: tuple[int, ...]
    repaired: tuple[int, ...]
    missing: tuple[int, ...]
    handle: ResidentHandle
    stale: tuple[int, ...] = ()
    #: Whether the probe of every block held more corrupt ones than it locates and they were
    #: located by leaving blocks out in turn (see ``ResidentService._search``).
    searched: bool = False


def _nonneg(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"`{name}` must be a number >= 0, got {value!r}") from exc
    if isinstance(value, bool) or not (math.isfinite(v) and v >= 0):
        raise ConfigurationError(f"`{name}` must be a finite number >= 0, got {value!r}")
    return v


def _np(x: Any) -> np.ndarray:
    from ._cluster import _np as conv

    return conv(x)


class ResidentService:
    """Operations on stored operands, for one cluster (``cluster.resident``; the cluster's
    ``put``, ``update``, ... delegate here)."""

    def __init__(self, core: "ClusterBase") -> None:
        self.core = core
        self.token = next(_TOKENS)
        self._next_handle = 0
        self._next_update = 0
        self._live: set[int] = set()  # handles stored and not dropped: bounded by the caller

    # ------------------------------------------------------------------ helpers
    def _handle(self, handle: Any, name: str = "handle") -> ResidentHandle:
        if not isinstance(handle, ResidentHandle):
            raise ConfigurationError(
                f"`{name}` must be a ResidentHandle from cluster.put, got {type(handle).__name__}")
        if handle.owner != self.token:
            raise ConfigurationError(
                f"`{name}` (resident operand {handle.id}) was stored by another cluster; a handle "
                f"is only valid on the cluster whose put returned it")
        if handle.id not in self._live:
            raise ConfigurationError(
                f"`{name}` (resident operand {handle.id}) is no longer stored: it was dropped")
        return handle

    def _acked(self, op: Op, handles: tuple[int, ...], req: Request,
               per_worker: list[list[np.ndarray]], timeout: float | None,
               rows: list[int] | None = None) -> Ack:
        """Send an acknowledged operation to ``rows`` (default: every live worker whose block
        of ``handles[0]`` is not stale) and return its :class:`Ack` (under the lock)."""
        core = self.core
        timeout = core._deadline(timeout)
        stale = core._stale.get(handles[0], set()) if op is not Op.PUT else set()
        if rows is None:
            rows = [w for w in range(core.workers) if w not in core._dead and w not in stale]
        aid = core._next_ack
        core._next_ack += 1
        ack = Ack(core, aid, op.name.lower(), handles, rows, timeout, time.perf_counter(),
                  sorted(stale))
        for w in range(core.workers):
            if w in core._dead:
                ack.failed[w] = "crashed"
        core._register(ack, Request(op, aid, req.handle, req.field, req.compensated, req.params),
                       per_worker)
        ack._progress()
        return ack

    # ------------------------------------------------------------------ put / update / sgd
    def put(self, A: Any, *, code: LinearCode, precision: str = "auto",
            timeout: float | None = None) -> ResidentHandle:
        """Store ``A`` encoded on the workers once; ``matmul(handle, x)`` then sends only ``x``.

        Needs a code that leaves B unencoded: :class:`~codedml.codes.MDSCode` (or a PolyDot
        code with one inner and one column block) or :class:`~codedml.codes.ReplicationCode`.
        ``precision`` is that of :meth:`~codedml.codes.LinearCode.encode`; it holds for every
        later product against the stored blocks. The handle's ``ack`` settles when every live
        worker stored its block.
        """
        core = self.core
        with core._lock:
            core._check_open()
            core._check_code(code)
            if not (isinstance(code, (MDSCode, ReplicationCode)) or
                    (getattr(code, "m", None) == 1 and getattr(code, "q", None) == 1)):
                raise ConfigurationError(
                    f"`code` must leave B unencoded for a resident operand (MDSCode or "
                    f"ReplicationCode), got {code!r}")
            A = np.asarray(A)
            if A.ndim != 2:
                raise ConfigurationError(f"`A` must be a 2-D matrix to be stored, got shape {A.shape}")
            enc = code.encode(A, np.zeros(A.shape[1], dtype=A.dtype), precision=precision)
            hid = self._next_handle
            self._next_handle += 1
            norms = tuple(float(np.linalg.norm(_np(t.a).ravel())) for t in enc)
            ack = self._acked(Op.PUT, (hid,), Request(Op.PUT, 0, hid, code.field),
                              [[_np(t.a)] for t in enc], timeout)
            self._live.add(hid)
            return ResidentHandle(hid, code, tuple(A.shape), enc.dtype, norms,
                                  _input_dtype(A, A), precision, ack, self.token)

    def update(self, handle: ResidentHandle, U: Any, V: Any, *,
               timeout: float | None = None) -> ResidentHandle:
        """In place ``A <- A + U V^T`` on the encoded blocks, without re-encoding.

        Encoding is linear in A and the split is by rows, so the encoded update of worker w is
        ``enc(U)_w V^T``: only ``enc(U)_w`` (rows/k x r) and ``V`` (cols x r) travel.
        Returns the handle with updated norm bounds and this update's ``ack`` (use the
        returned one). Non-finite factors raise :class:`~codedml.errors.NonFiniteUpdateError`
        before anything is sent.
        """
        core = self.core
        with core._lock:
            core._check_open()
            handle = self._handle(handle)
            encU, V = self._encode_update(handle, U, V)
            seq = self._next_update
            self._next_update += 1
            nv = float(np.linalg.norm(V))
            norms = tuple(handle.norms[w] + float(np.linalg.norm(encU[w])) * nv
                          for w in range(core.workers))
            ack = self._acked(Op.UPDATE, (handle.id,),
                              Request(Op.UPDATE, 0, handle.id, handle.code.field, params={"seq": seq}),
                              [[encU[w], V] for w in range(core.workers)], timeout)
            return replace(handle, norms=norms, ack=ack)

    def sgd_step(self, handle: ResidentHandle, U: Any, V: Any, *, lr: float, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
                 buffer: ResidentHandle | None = None,
                 timeout: float | None = None) -> tuple[ResidentHandle, ResidentHandle | None]:
        """One SGD step on a resident weight ``W`` whose gradient is ``U V^T``, at the workers.

        The rule of :class:`torch.optim.SGD`: ``g = U V^T + wd W``; ``buf = g`` on the first step,
        then ``mu buf + (1 - dampening) g``; ``d = g + mu buf`` (Nesterov) or ``buf``;
        ``W <- W - lr d``. Every step is linear, so worker ``w`` applies it to its encoded block
        with ``enc(U)_w`` and ``V`` and the blocks stay the encoding of the updated weights,
        never re-encoded. The momentum buffer is itself stored encoded (``buffer``; pass
        ``None`` on the first step and the returned handle afterwards).
        Returns ``(weight handle, buffer handle)`` with updated norm bounds; the weight
        handle's ``ack`` settles when the workers applied the step.
        """
        core = self.core
        with core._lock:
            core._check_open()
            handle = self._handle(handle)
            if handle.code.field is not None:
                raise ConfigurationError("`sgd_step` needs a real-valued resident operand, got one "
                                         f"over GF({handle.code.field})")
            lr = _nonneg("lr", lr)
            momentum = _nonneg("momentum", momentum)
            dampening = _nonneg("dampening", dampening)
            weight_decay = _nonneg("weight_decay", weight_decay)
            if nesterov and (momentum <= 0 or dampening != 0):
                raise ConfigurationError(
                    f"`nesterov` needs momentum > 0 and dampening = 0, got momentum={momentum}, "
                    f"dampening={dampening}")
            if buffer is not None:
                buffer = self._handle(buffer, "buffer")
                # another operand as the buffer would be scaled and added to in place (the
                # weight itself: a wrong step; another shape: every worker fails the step and
                # both operands go stale)
                if buffer.id == handle.id:
                    raise ConfigurationError(
                        f"`buffer` must be a momentum buffer, not the weight itself (handle "
                        f"{handle.id}): pass None on the first step, then the buffer it returns")
                ours = (handle.shape, handle.code, handle.dtype)
                theirs = (buffer.shape, buffer.code, buffer.dtype)
                if theirs != ours:
                    raise ConfigurationError(
                        f"`buffer` must be stored like the weight (shape, code, dtype) {ours}, "
                        f"got {theirs} (handle {buffer.id})")
            encU, V = self._encode_update(handle, U, V)
            nv = float(np.linalg.norm(V))
            first = buffer is None
            if momentum and first:
                buffer = replace(handle, id=self._next_handle,
                                 norms=tuple(0.0 for _ in range(core.workers)), ack=None)
                self._next_handle += 1
                self._live.add(buffer.id)
            seq = self._next_update
            self._next_update += 1
            params = {"seq": seq, "lr": lr, "momentum": momentum, "dampening": dampening,
                      "weight_decay": weight_decay, "nesterov": bool(nesterov),
                      "buffer": buffer.id if momentum else None, "first": first}
            wn, bn = list(handle.norms), list(buffer.norms) if momentum else []
            for w in range(core.workers):
                g = float(np.linalg.norm(encU[w])) * nv + weight_decay * wn[w]
                if momentum:
                    bn[w] = g if first else momentum * bn[w] + (1 - dampening) * g
                    d = g + momentum * bn[w] if nesterov else bn[w]
                else:
                    d = g
                wn[w] += lr * d
            handles = (handle.id, buffer.id) if momentum else (handle.id,)
            if momentum and first:  # a fresh buffer starts with the weight's stale set
                for w in core._stale.get(handle.id, ()):
                    core._mark_stale(buffer.id, w)
            ack = self._acked(Op.SGD, handles, Request(Op.SGD, 0, handle.id, None, params=params),
                              [[encU[w], V] for w in range(core.workers)], timeout)
            new = replace(handle, norms=tuple(wn), ack=ack)
            buf = replace(buffer, norms=tuple(bn), ack=ack) if momentum else None
            return new, buf

    def _encode_update(self, handle: ResidentHandle, U: Any, V: Any) -> tuple[list[np.ndarray], np.ndarray]:
        from ..codes._validate import owned, residues

        given_v = V
        U = np.asarray(U)
        V = np.asarray(V)
        if U.ndim != 2 or V.ndim != 2 or U.shape[1] != V.shape[1] or U.shape[0] != handle.shape[0] \
                or V.shape[0] != handle.shape[1]:
            raise ConfigurationError(
                f"`U` and `V` must be ({handle.shape[0]}, r) and ({handle.shape[1]}, r), "
                f"got {U.shape} and {V.shape}")
        for name, X in (("U", U), ("V", V)):   # a cast to the stored dtype would drop an
            # imaginary part, or parse strings
            if X.dtype.kind not in "fiub":
                raise ConfigurationError(
                    f"`{name}` (a factor of the update U V^T) must hold real numbers, got dtype "
                    f"{X.dtype}")
            if handle.code.field is None and X.dtype.kind == "f" and not np.isfinite(X).all():
                raise NonFiniteUpdateError(
                    f"`{name}` (a factor of the update U V^T) contains NaN or Inf: the update "
                    f"(e.g. a gradient) is not finite, and applying it would corrupt every "
                    f"stored block; nothing was sent")
        code = handle.code
        if code.field is not None:
            U = residues("U", U, code.field)   # named here, not as the encode's `A`
        encU = code.encode(U, np.zeros(U.shape[1], dtype=U.dtype))
        out = [_np(t.a) for t in encU]
        if code.field is None:
            out = [np.ascontiguousarray(u.astype(handle.dtype, copy=False)) for u in out]
            V = np.ascontiguousarray(V.astype(handle.dtype))   # a copy: the caller's V stays its own
        else:   # checked here, as U is by the encode: a worker refusing it would leave
            # every block stale
            V = owned(np.ascontiguousarray(residues("V", V, code.field)), given_v)
        return out, V

    def drop(self, handle: ResidentHandle, *, timeout: float | None = None) -> Ack:
        """Free a stored operand on the workers; returns the drop's :class:`Ack`."""
        core = self.core
        with core._lock:
            core._check_open()
            handle = self._handle(handle)
            rows = [w for w in range(core.workers) if w not in core._dead]
            ack = self._acked(Op.DROP, (handle.id,), Request(Op.DROP, 0, handle.id),
                              [[] for _ in range(core.workers)], timeout, rows=rows)
            core._stale.pop(handle.id, None)
            self._live.discard(handle.id)
            return ack

    # ------------------------------------------------------------------ products
    def _resident_encoding(self, h: ResidentHandle, cols: tuple[int, ...], bnorm: float) -> Encoding:
        """The record a decode of ``stored block @ B`` needs: shape, noise scales, dtype."""
        tasks = [Task(w, None, None) for w in range(self.core.workers)]
        return Encoding(h.code, tasks, (h.shape[0],) + tuple(cols), h.shape[1], h.dtype,
                        h.compensated, scales=np.array([n * bnorm for n in h.norms]))

    def _encode_b(self, h: ResidentHandle, B: Any) -> tuple[Encoding, list[list[np.ndarray]]]:
        from ..codes._validate import owned, real_matrix, residues

        given = B
        B = np.asarray(B)
        if B.ndim not in (1, 2) or B.shape[0] != h.shape[1]:
            raise ConfigurationError(
                f"`B` must have {h.shape[1]} rows to multiply the resident {h.shape} operand, got {B.shape}")
        if h.code.field is not None:
            B = residues("B", B, h.code.field, allow_vector=True)
        else:
            B = real_matrix("B", B, allow_vector=True).astype(h.dtype, copy=False)
        B = owned(B, given)   # sent to every worker, read until the sends complete
        enc = self._resident_encoding(h, B.shape[1:], float(np.linalg.norm(B.ravel())))
        return enc, [[B] for _ in range(self.core.workers)]

    def submit(self, h: ResidentHandle, B: Any, *, code: LinearCode | None, errors: int,
               timeout: float, t0: float) -> Job:
        """``stored A @ B`` (the cluster's ``submit`` with a handle)."""
        core = self.core
        h = self._handle(h, "A")
        if code is not None and code != h.code:
            raise ConfigurationError("`code` must be left out (or equal the handle's code) for a resident operand")
        core._check_errors(h.code, errors)
        enc, per_worker = self._encode_b(h, B)
        req = Request(Op.MATMUL, 0, h.id, h.code.field, h.compensated)
        # each stored block has about rows / k of A's rows (MDS-type: k = the threshold)
        return core._start(h.code, enc, req, per_worker, errors, timeout, t0, handle=h.id,
                           skip=core._stale.get(h.id, ()),
                           stored_rows=-(-h.shape[0] // h.code.recovery_threshold))

    def submit_left(self, L: Any, handle: ResidentHandle, *, errors: int = 0,
                    timeout: float | None = None) -> Job:
        """Start ``L @ A`` for a resident ``A``.

        With an :class:`~codedml.codes.MDSCode` the inner dimension is split MatDot-style
        against the *same* stored blocks that serve ``A @ x`` (see
        :mod:`codedml.codes.resident`): recovery threshold ``2k - 1``, twice the forward
        product's flops per worker, ``errors`` corrupt results corrected from
        ``2k - 1 + 2 errors`` results. With a :class:`~codedml.codes.ReplicationCode` each
        worker multiplies its plain block and the root sums one copy per block.
        """
        core = self.core
        with core._lock:
            core._check_open()
            errors = check_int("errors", errors, 0, core.workers)
            timeout = core._deadline(timeout)
            handle = self._handle(handle)
            if not isinstance(handle.code, (MDSCode, ReplicationCode)) or len(handle.shape) != 2:
                raise ConfigurationError(
                    f"a product from the left needs a 2-D operand stored with an MDSCode or a "
                    f"ReplicationCode, got {handle.code!r} for shape {handle.shape}")
            L = np.asarray(L)
            if L.ndim != 2 or L.shape[1] != handle.shape[0]:
                raise ConfigurationError(
                    f"`L` must be 2-D with {handle.shape[0]} columns to multiply the resident "
                    f"{handle.shape} operand from the left, got shape {L.shape}")
            t0 = time.perf_counter()
            code, enc = encode_left(handle.code, L, handle.shape[1], dtype=handle.dtype,
                                    norms=handle.norms, input_dtype=handle.input_dtype,
                                    precision=handle.precision)
            core._check_errors(code, errors)
            per_worker = [[_np(t.a)] for t in enc]
            req = Request(Op.MATMUL_LEFT, 0, handle.id, code.field, bool(enc.compensated))
            return core._start(code, enc, req, per_worker, errors, timeout, t0, handle=handle.id,
                               skip=core._stale.get(handle.id, ()))

    def fetch(self, handle: ResidentHandle, *, errors: int = 0, timeout: float | None = None,
              wait_all: bool = False, return_job: bool = False) -> Any:
        """Decode a resident operand from its stored blocks (locating up to ``errors`` corrupt
        blocks, which need ``k + 2 errors`` answers); ``return_job`` gives ``(A, job)``."""
        core = self.core
        with core._lock:
            core._check_open()
            handle = self._handle(handle)
            errors = check_int("errors", errors, 0, core.workers)
            core._check_errors(handle.code, errors)
        A, job = self._fetch(handle, errors, timeout, wait_all, ())
        return (A, job) if return_job else A

    def _fetch(self, handle: ResidentHandle, errors: int, timeout: float | None, wait_all: bool,
               skip: Any) -> tuple[Any, Job]:
        """:meth:`fetch` leaving out the stale blocks and those in ``skip`` too."""
        core = self.core
        with core._lock:
            core._check_open()
            timeout = core._deadline(timeout)
            t0 = time.perf_counter()
            # the stored block itself, as if multiplied by the identity: shape and noise scale
            enc = self._resident_encoding(handle, (handle.shape[1],), math.sqrt(handle.shape[1]))
            left_out = set(core._stale.get(handle.id, ())) | set(skip)
            job = core._start(handle.code, enc, Request(Op.FETCH, 0, handle.id, handle.code.field),
                              [[] for _ in range(core.workers)], errors, timeout, t0, wait_all,
                              handle=handle.id, skip=left_out)
        return core._wait(job), job

    # ------------------------------------------------------------------ scrub
    def scrub(self, handle: ResidentHandle, *, timeout: float | None = None,
              seed: int | None = None, retries: int = 2) -> ScrubReport:
        """Check every stored block of ``handle`` and repair the corrupt and stale ones.

        Detect: every live worker multiplies its block by one shared random vector ``r`` (a
        product of the size of ``x``, not of the block) and the root decodes ``A r`` with the
        largest error budget the answers allow, locating the inconsistent blocks. Repair (only
        when some are found, or some blocks are stale): decode ``A`` from the other blocks
        (a fetch that leaves the located ones out), re-encode it and store those workers'
        blocks anew. Workers that did not answer within ``timeout`` are reported as
        ``missing`` (unchecked). Returns a :class:`ScrubReport` whose ``handle`` (with fresh
        norm bounds) replaces the one passed in. Answers inconsistent beyond the error budget
        are searched for one corrupt block more, leaving blocks out in turn
        (:meth:`_search`; ``ScrubReport.searched``); failing that (transient result errors on
        top of storage errors, or more corrupt blocks), the check is repeated with a fresh
        probe, at most ``retries`` times, and then raises
        :class:`~codedml.errors.CorruptResultError`.
        """
        from ._cluster import retry_on_corrupt

        handle = self._handle(handle)
        if seed is not None:
            seed = check_int("seed", seed, 0)
        rng = np.random.default_rng(seed)
        return retry_on_corrupt(lambda: self._scrub_once(handle, timeout, rng), retries)

    def _probe(self, handle: ResidentHandle, skip: Any, timeout: float | None,
               rng: np.random.Generator) -> Any:
        """The report of :meth:`_start_probe`'s job once it settled (raises its error)."""
        job = self._start_probe(handle, skip, timeout, rng)
        self.core._wait(job)
        return job.report

    def _start_probe(self, handle: ResidentHandle, skip: Any, timeout: float | None,
                     rng: np.random.Generator) -> Job:
        """One check of the blocks not in ``skip``: every such live worker multiplies its block
        by one fresh random vector, the root decodes with the largest error budget the answers
        allow (the job raises :class:`~codedml.errors.CorruptResultError` when the answers hold
        more corrupt ones than that budget)."""
        core = self.core
        with core._lock:
            core._check_open()
            timeout = core._deadline(timeout)
            live = [w for w in range(core.workers) if w not in core._dead and w not in skip]
            budget = max(0, (len(live) - handle.code.recovery_threshold) // 2)
            cols = handle.shape[1]
            if handle.code.field is not None:
                r = rng.integers(0, handle.code.field, size=cols, dtype=np.int64)
            else:
                r = rng.standard_normal(cols).astype(handle.dtype)
            t0 = time.perf_counter()
            enc, per_worker = self._encode_b(handle, r)
            req = Request(Op.MATMUL, 0, handle.id, handle.code.field, handle.compensated)
            return core._start(handle.code, enc, req, per_worker, budget, timeout, t0,
                               wait_all=True, handle=handle.id, skip=set(skip))

    def _search(self, handle: ResidentHandle, live: list[int], left_out: set[int],
                timeout: float | None, rng: np.random.Generator,
                exc: Exception) -> tuple[tuple[int, ...], Any, Any, Any] | None:
        """Locate one corrupt block more than a probe of all ``live`` blocks can.

        Stored corruption persists, so the blocks can be asked again with one of them left
        out: with ``t + 1`` corrupt blocks among ``m`` live ones (``t = (m - k) // 2``, what a
        probe of all locates), leaving out a corrupt one leaves ``t`` among ``m - 1``, which a
        probe of those locates (when ``m - 1 - k >= 2t``). The candidate (the left-out block and
        the ``t`` located) is accepted only when the ``m - t - 1`` blocks outside it -- at least
        ``k + 2``, two spare -- agree with each other, both in a fresh probe and in the fetch of
        the full blocks: a code of distance ``>= 3`` on those blocks detects any one or two
        corrupt ones among them deterministically, so a wrong candidate is rejected unless
        three or more corruptions happen to form a codeword (a coincidence of measure zero for
        corruptions independent of the random probe). When the failed probe held ``t`` stored
        corruptions and a transient error, a good left-out block can join a verified candidate;
        storing it anew is harmless. Suspects named by the failed probe are left out first.
        ``live`` are the blocks that answered the failed probe, ``left_out`` the others (stale,
        silent); a worker silent in a probe of the search ends it, so the search waits for a
        silent worker's deadline at most once (every probe and fetch has the scrub's full
        ``timeout``, so a slow worker that always answers can stretch the search). Returns ``(bad, probe report, A, fetch
        job)`` or ``None`` (no candidate verified: the caller raises the original error)."""
        k = handle.code.recovery_threshold
        m = len(live)
        t = (m - k) // 2
        if handle.code.field is not None or t < 1 or m - t - 1 < k + 2 or (m - 1 - k) // 2 < t:
            return None
        suspects = [w for w in getattr(exc, "suspects", ()) if w in live]

        def heard(rep: Any, skip: set[int]) -> bool:
            return not any(r.status in ("missing", "crashed") for r in rep.workers if r.worker not in skip)

        for w in suspects + [w for w in live if w not in suspects]:
            try:
                rep = self._probe(handle, left_out | {w}, timeout, rng)
            except CorruptResultError:
                continue
            if not heard(rep, left_out | {w}):
                return None
            located = set(rep.faulty)
            if len(located) != t:   # not t + 1 corrupt with w among them: another w
                continue
            bad = located | {w}
            try:
                ver = self._probe(handle, left_out | bad, timeout, rng)
                if not heard(ver, left_out | bad):
                    return None
                if ver.faulty:
                    continue
                A, fjob = self._fetch(handle, 0, timeout, True, left_out | bad)
            except CorruptResultError:
                continue
            if fjob.report.faulty:
                continue
            return tuple(sorted(bad)), ver, A, fjob
        return None

    def _scrub_once(self, handle: ResidentHandle, timeout: float | None,
                    rng: np.random.Generator) -> ScrubReport:
        core = self.core
        with core._lock:
            core._check_open()
            timeout = core._deadline(timeout)
            stale = sorted(core._stale.get(handle.id, ()))
            live = [w for w in range(core.workers) if w not in core._dead and w not in stale]
            k = handle.code.recovery_threshold
        searched = False
        job = self._start_probe(handle, set(stale), timeout, rng)
        try:
            core._wait(job)
            rep = job.report
        except CorruptResultError as exc:
            answered = [w.worker for w in job.report.workers
                        if w.worker in live and w.status in ("used", "corrupt", "spare", "late")]
            found = self._search(handle, answered, set(range(core.workers)) - set(answered),
                                 timeout, rng, exc)
            if found is None:
                raise
            bad_found, rep, A, fjob = found
            searched = True
        if searched:
            faulty = bad_found
            checked = tuple(sorted(answered))
            missing = tuple(sorted(set(live) - set(answered)))
        else:
            faulty = tuple(w.worker for w in rep.workers if w.status == "corrupt")
            missing = tuple(w.worker for w in rep.workers if w.status in ("missing", "crashed"))
            checked = tuple(w.worker for w in rep.workers if w.status in ("used", "corrupt"))
            if not faulty and not stale:
                return ScrubReport(checked, (), (), missing, handle)
            # The located blocks are left out of the fetch (erased, not corrected again): each
            # costs the fetch one spare answer instead of two, so it can still locate a
            # corrupt block the probe's projection did not show.
            left = len(live) - len(faulty)
            A, fjob = self._fetch(handle, max(0, (left - k) // 2), timeout, True, set(faulty))
        bad = sorted(set(faulty) | set(fjob.report.faulty) | set(stale))
        # the repaired blocks get the stored blocks' dtype, whatever dtype the decode returned
        block_precision = "float32" if np.dtype(handle.dtype) == np.float32 else "float64"
        enc = handle.code.encode(A, np.zeros(A.shape[1], dtype=A.dtype), precision=block_precision)
        # Every block's norm anew (not only the repaired ones): the decoder's noise model
        # compares workers, and exact norms beside loose update bounds made the repaired
        # blocks look too large for their scale -- falsely corrupt.
        norms = [float(np.linalg.norm(_np(t.a).ravel())) if handle.code.field is None else 0.0 for t in enc]
        with core._lock:
            rows = [w for w in bad if w not in core._dead]
            # A stored-anew block is trusted again at once: the put reaches the worker before
            # any later product, and if it fails there its error marks the block stale again
            # before that product's result arrives.
            for w in rows:
                core._stale.get(handle.id, set()).discard(w)
            ack = self._acked(Op.PUT, (handle.id,), Request(Op.PUT, 0, handle.id, handle.code.field),
                              [[_np(enc[w].a)] for w in range(core.workers)], timeout, rows=rows)
        new = replace(handle, norms=tuple(norms), ack=ack)
        return ScrubReport(checked, tuple(faulty), tuple(bad), missing, new, tuple(stale), searched)
