"""Federated optimisation (FedAvg, FSVRG, DANE), AdaSync and Dutta et al.'s staleness rule over
LocalCluster; IID and Dirichlet partitions; deadlines, crashes and resume mid-round."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from codedml import LocalCluster  # noqa: E402
from codedml.errors import ConfigurationError, TrainingError  # noqa: E402
from codedml.faults import Die, FailSilent, FixedStragglers  # noqa: E402
from codedml.train import Engine, Task, TrainConfig, fit, handlers, train  # noqa: E402
from codedml.train.federated import staleness_norm_weight  # noqa: E402
from codedml.train.partition import label_histogram, parse_partition, split  # noqa: E402
from codedml.train.task import partition_indices  # noqa: E402


# ------------------------------------------------------------------ a small convex problem
def _blobs(n=240, d=5, classes=3, seed=0):
    """Overlapping Gaussian blobs: multinomial logistic regression has a finite optimum."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    centres = rng.normal(0, 1.0, (classes, d))
    X = centres[y] + rng.normal(0, 1.0, (n, d))
    return X.astype(np.float64), y.astype(np.int64)


X, Y = _blobs()


def _model():
    torch.manual_seed(0)
    return torch.nn.Linear(X.shape[1], 3).double()


def _task(name="blobs"):
    return Task(_model, X, Y, "cross_entropy", name=name)


def _optimum() -> float:
    m = _model()
    opt = torch.optim.LBFGS(m.parameters(), lr=1, max_iter=500, tolerance_grad=1e-12,
                            tolerance_change=1e-15, history_size=20, line_search_fn="strong_wolfe")
    Xt, yt = torch.from_numpy(X), torch.from_numpy(Y)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(m(Xt), yt)
        loss.backward()
        return loss
    for _ in range(5):
        opt.step(closure)
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(m(Xt), yt))


F_STAR = _optimum()
with torch.no_grad():
    F_0 = float(torch.nn.functional.cross_entropy(_model()(torch.from_numpy(X)), torch.from_numpy(Y)))


# ------------------------------------------------------------------ partitions
def test_iid_partition_is_the_old_layout_and_dirichlet_is_a_seeded_skewed_partition():
    old = np.array_split(np.random.default_rng([3, 0xDA7A]).permutation(240), 4)
    assert all(np.array_equal(a, b) for a, b in zip(partition_indices(240, 4, 3), old))
    assert all(np.array_equal(a, b) for a, b in zip(partition_indices(240, 4, 3, "iid", Y), old))
    for alpha in (0.05, 0.5, 100.0):
        parts = split(Y, 6, f"dirichlet:{alpha}", 7)
        allidx = np.concatenate(parts)
        assert sorted(allidx.tolist()) == list(range(len(Y)))       # a partition: disjoint, complete
        assert all(len(p) >= 1 for p in parts)                        # nobody is empty
        again = split(Y, 6, f"dirichlet:{alpha}", 7)
        assert all(np.array_equal(a, b) for a, b in zip(parts, again))  # seeded
    # skew: with a small alpha a worker's label distribution is far from the global one
    def skew(alpha):
        H = label_histogram(Y, split(Y, 6, f"dirichlet:{alpha}", 1), 3).astype(float)
        P = H / H.sum(1, keepdims=True)
        glob = np.bincount(Y, minlength=3) / len(Y)
        return float(np.abs(P - glob).sum(1).mean())
    assert skew(0.05) > 0.8 > 0.2 > skew(1000.0)
    assert not all(np.array_equal(a, b) for a, b in zip(split(Y, 6, "dirichlet:0.5", 1),
                                                         split(Y, 6, "dirichlet:0.5", 2)))


@pytest.mark.parametrize("spec,match", [
    ("dirichlet", r"`partition` must be 'iid' or 'dirichlet:ALPHA' \(ALPHA > 0\), got 'dirichlet'"),
    ("dirichlet:0", r"`partition` dirichlet:ALPHA needs a finite ALPHA greater than 0, got '0'"),
    ("dirichlet:nan", r"finite ALPHA greater than 0, got 'nan'"),
    ("noniid", r"got 'noniid'"),
])
def test_bad_partition_is_named(spec, match):
    with pytest.raises(ConfigurationError, match=match):
        parse_partition(spec)
    with pytest.raises(ConfigurationError, match=match):
        TrainConfig(partition=spec)


@pytest.mark.parametrize("kw,match", [
    ({"fraction": 0.0}, r"`fraction` must be in \(0, 1\], got 0.0"),
    ({"fraction": 1.5}, r"`fraction` must be in \(0, 1\], got 1.5"),
    ({"local_epochs": 0}, r"`local_epochs` must be at least 1, got 0"),
    ({"local_steps": 0}, r"`local_steps` must be at least 1, got 0"),
    ({"dane_eta": 0.0}, r"`dane_eta` must be greater than 0, got 0.0"),
    ({"dane_mu": -1.0}, r"`dane_mu` must be at least 0, got -1.0"),
    ({"round_deadline": -1.0}, r"`round_deadline` must be at least 0, got -1.0"),
    ({"round_deadline": math.inf}, r"`round_deadline` must be a finite number"),
    ({"adasync_every": 0}, r"`adasync_every` must be at least 1, got 0"),
    ({"staleness_lr": "norm:-2"}, r"`staleness_lr` norm:C needs a finite C greater than 0, got '-2'"),
    ({"staleness_lr": "dutta"}, r"`staleness_lr` must be 'inverse', 'none' or 'norm:C' \(C > 0\), got 'dutta'"),
    ({"policy": "fedavg", "qsgd": 4}, r"`qsgd` must be 0 under fedavg"),
    ({"policy": "dane", "data_bits": 4}, r"`data_bits` must be 0 under dane"),
])
def test_bad_federated_config_names_the_argument(kw, match):
    with pytest.raises(ConfigurationError, match=match):
        TrainConfig(**kw)


def test_adasync_k0_is_checked_against_the_workers():
    with pytest.raises(ConfigurationError, match=r"`k` must be between 1 and workers=3 for adasync, got 4"):
        TrainConfig(policy="adasync", k=4).check_workers(3)


# ------------------------------------------------------------------ convergence
CASES = {
    "fedavg": dict(fraction=0.5, local_epochs=2, batch=10, lr=0.2),
    "fsvrg": dict(batch=5, lr=0.5),
    "dane": dict(batch=0, lr=0.5, local_steps=10, dane_mu=0.1),
    "adasync": dict(batch=10, lr=0.2, adasync_every=10),
    "kasync": dict(k=2, batch=10, lr=0.2, staleness_lr="norm:0.05"),
}


@pytest.mark.parametrize("partition", ["iid", "dirichlet:0.3"])
@pytest.mark.parametrize("policy", list(CASES))
def test_each_policy_reaches_its_target_on_a_convex_problem(policy, partition):
    steps = 60 if policy in ("adasync", "kasync") else 25
    res = train(_task(), TrainConfig(policy=policy, steps=steps, eval_every=steps, partition=partition,
                                     **CASES[policy]), local=4)
    assert res.steps == steps and not res.crashed
    # target: 90% of the way from the initial loss to the optimum
    assert res.loss - F_STAR < 0.1 * (F_0 - F_STAR), (policy, res.loss, F_STAR, F_0)
    if policy == "fedavg":  # C = 0.5 of 4 clients: two per round
        assert all(len(m["workers"]) == 2 for m in res.metrics)
    if policy == "adasync":  # K grows from K_0 = 1 as the loss falls, never decreases
        ks = [m["k"] for m in res.metrics]
        assert ks[0] == 1 and ks[-1] > 1 and all(a <= b for a, b in zip(ks, ks[1:]))
        assert all(len(m["workers"]) == k for m, k in zip(res.metrics, ks))


def test_fedavg_with_one_client_and_one_full_batch_epoch_is_sgd():
    cfg = dict(steps=8, lr=0.3, batch=0, eval_every=1)
    fed = train(_task(), TrainConfig(policy="fedavg", fraction=1.0, local_epochs=1, **cfg), local=1)
    sgd = train(_task(), TrainConfig(policy="sync", **cfg), local=1)
    a = np.array([m["loss"] for m in fed.metrics])
    b = np.array([m["loss"] for m in sgd.metrics])
    assert np.all(np.diff(b) < 0)
    np.testing.assert_allclose(a, b, rtol=1e-13, atol=0)
    # and the parameters themselves, through a model the root trains in place
    m1, m2 = _model(), _model()
    fit_ = lambda m, pol, extra: train(Task(m, X, Y, name="blobs"), TrainConfig(policy=pol, **cfg, **extra), local=1)  # noqa: E731
    fit_(m1, "fedavg", {})
    fit_(m2, "sync", {})
    for p, q in zip(m1.parameters(), m2.parameters()):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-12, atol=1e-15)
    assert not torch.equal(m1.weight, _model().weight)


def test_fsvrg_scalings_follow_the_coordinate_frequencies():
    # a feature absent from every sample of workers 0 and 1: omega = 2 of 4, A = 2 on its weights
    Xs = X.copy()
    parts = partition_indices(len(Xs), 4, 0)
    for w in (0, 1):
        Xs[parts[w], 2] = 0.0
    task = Task(_model, Xs, Y, name="sparse")
    with LocalCluster(4, handlers=handlers(task)) as cl:
        eng = Engine(cl, task, TrainConfig(policy="fsvrg", steps=2, batch=5, eval_every=2))
        res = eng.run()
    A = np.asarray(eng.extra_state["fsvrg_A"])
    phi = np.asarray(eng.extra_state["fsvrg_phi"])
    W = A[:15].reshape(3, 5)      # Linear(5, 3).weight, then the bias
    assert np.all(W[:, 2] == 2.0) and np.all(np.delete(W, 2, axis=1) == 1.0) and np.all(A[15:] == 1.0)
    frac = (len(parts[2]) + len(parts[3])) / len(Xs)
    np.testing.assert_allclose(phi.reshape(-1)[:15].reshape(3, 5)[:, 2], frac)
    assert math.isfinite(res.loss)
    # bits: 4 frequency messages (d x 32), then 2 phases x 4 clients per round (d x 64, float64)
    d = 18
    assert res.bits_sent == 4 * d * 32 + 2 * 2 * 4 * d * 64


# ------------------------------------------------------------------ deadlines and crashes
@pytest.mark.parametrize("policy", ["fedavg", "fsvrg", "dane"])
def test_a_client_late_for_the_deadline_is_dropped_and_training_goes_on(policy):
    cfg = TrainConfig(policy=policy, steps=4, eval_every=4, round_deadline=0.5, timeout=20,
                      **{k: v for k, v in CASES[policy].items() if k != "fraction"})
    res = train(_task(), cfg, local=4, faults=FixedStragglers([2], 2.0))
    assert res.steps == 4 and math.isfinite(res.loss) and res.loss < F_0 and not res.crashed
    for m in res.metrics:  # rank 2's late replies belong to cancelled jobs: never used
        assert 2 not in m["workers"] and 2 in m["dropped"]
    assert {r for m in res.metrics for r in m["workers"]} == {1, 3, 4}


def test_a_fail_silent_client_is_dropped_at_each_deadline():
    res = train(_task(), TrainConfig(policy="dane", steps=3, eval_every=3, round_deadline=0.3,
                                     timeout=20, batch=0, local_steps=5), local=3,
                faults=FailSilent([3], start=2))
    assert res.steps == 3 and not res.crashed and res.loss < F_0
    late = [m for m in res.metrics if 3 in m["dropped"]]
    assert late and all(3 not in m["workers"] for m in late)
    assert res.metrics[-1]["dropped"] == [3]


@pytest.mark.parametrize("policy", ["fedavg", "fsvrg", "dane", "adasync"])
def test_a_crashed_client_does_not_stop_training(policy):
    steps = 12
    res = train(_task(), TrainConfig(policy=policy, steps=steps, eval_every=steps, timeout=20,
                                     **CASES[policy]), local=4, faults=Die([3], at=4))
    assert res.steps == steps and res.crashed == [3]
    assert res.loss < F_0 and math.isfinite(res.loss)
    crash = next(i for i, m in enumerate(res.metrics) if m["crashed"])
    assert all(3 not in m["workers"] for m in res.metrics[crash:])


def test_a_round_where_no_client_reports_stops_with_a_clear_error():
    with pytest.raises(TrainingError, match=r"no client reported within timeout=0.5 s"):
        train(_task(), TrainConfig(policy="fedavg", steps=3, timeout=0.5, round_deadline=0.1),
              local=2, faults=FixedStragglers([1, 2], 3.0))


# ------------------------------------------------------------------ resume mid-round
class _Interrupt(Exception):
    pass


class _StopsAtCall:
    """A cluster that raises on its ``n``-th ``call``: the run dies in the middle of a round
    (between FSVRG's or DANE's two phases when ``n`` falls there)."""

    def __init__(self, cluster, n):
        self._cl, self._n, self._calls = cluster, n, 0

    def __getattr__(self, name):
        return getattr(self._cl, name)

    def call(self, *a, **kw):
        self._calls += 1
        if self._calls == self._n:
            raise _Interrupt(f"killed at call {self._n}")
        return self._cl.call(*a, **kw)


@pytest.mark.parametrize("policy,stop_call", [("fedavg", 7), ("fsvrg", 12), ("dane", 12)])
def test_resume_from_a_checkpoint_mid_round_gives_the_uninterrupted_trajectory(tmp_path, policy, stop_call):
    # fsvrg: call 1 gathers the frequencies, then 2 calls per round: call 12 is round 6's
    # second phase; dane: 2 calls per round, call 12 is round 6's second phase; fedavg: round 7.
    ck = str(tmp_path / "ck.pt")
    kw = dict(policy=policy, steps=10, eval_every=1, momentum=0.5, partition="dirichlet:0.5", **CASES[policy])
    ref = train(_task(), TrainConfig(**kw), local=4)
    task = _task()
    with LocalCluster(4, handlers=handlers(task)) as cl:
        with pytest.raises(_Interrupt):
            fit(_StopsAtCall(cl, stop_call), task, TrainConfig(**kw, checkpoint=ck, checkpoint_every=4))
    res = train(_task(), TrainConfig(**kw, resume=ck), local=4)
    assert [m["step"] for m in res.metrics] == list(range(5, 11))
    assert [m["loss"] for m in res.metrics] == [m["loss"] for m in ref.metrics[4:]]
    assert res.bits_sent == ref.bits_sent and res.gradients == ref.gradients


def test_adasync_keeps_k_in_its_checkpoint(tmp_path):
    ck = str(tmp_path / "ck.pt")
    kw = dict(policy="adasync", batch=10, lr=0.2, adasync_every=5)
    first = train(_task(), TrainConfig(steps=30, checkpoint=ck, checkpoint_every=30, **kw), local=4)
    k = first.metrics[-1]["k"]
    assert k > 1
    res = train(_task(), TrainConfig(steps=32, resume=ck, **kw), local=4)
    assert res.metrics[0]["k"] >= k and len(res.metrics[0]["workers"]) >= k


# ------------------------------------------------------------------ Dutta et al.'s step size
def test_the_norm_staleness_rule_is_min_c_over_squared_distance_and_lr():
    task = _task()
    with LocalCluster(2, handlers=handlers(task)) as cl:
        eng = Engine(cl, task, TrainConfig(policy="kasync", k=1, lr=0.5, staleness_lr="norm:0.02"))
        w = eng.flat()
        eng._versions[3] = w.copy()
        assert staleness_norm_weight(eng, 3) == 1.0            # fresh: lr_max
        eng._versions[2] = w - 0.1                               # ||dw||^2 = d * 0.01 = 0.18
        assert staleness_norm_weight(eng, 2) == pytest.approx((0.02 / (18 * 0.01)) / 0.5)
        eng._versions[1] = w - 0.001                             # tiny distance: capped at lr
        assert staleness_norm_weight(eng, 1) == 1.0
    # inside a run: only the versions still in flight are kept
    res = train(_task(), TrainConfig(policy="async", steps=30, lr=0.2, batch=10,
                                     staleness_lr="norm:0.05", eval_every=30), local=3)
    assert res.loss < F_0


# ------------------------------------------------------------------ python -m codedml train
def _codedml(*args, cwd, timeout=180, **env):
    import os
    import subprocess
    import sys

    e = {k: v for k, v in os.environ.items() if not k.startswith(("CODEDML_", "OMPI_", "PMIX_"))}
    e.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **env)
    return subprocess.run([sys.executable, "-m", "codedml", "train", *args], env=e, cwd=cwd,
                          timeout=timeout, capture_output=True, text=True)


def test_cli_runs_a_federated_policy_on_dirichlet_shards(tmp_path):
    import json

    (tmp_path / "c.toml").write_text('[train]\npolicy = "fedavg"\nfraction = 0.5\nlocal = 4\n'
                                     'partition = "dirichlet:0.5"\n')
    p = _codedml("--config", "c.toml", "--steps", "4", "--local-epochs", "2", "--no-progress",
                 cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    lines = [json.loads(ln) for ln in (tmp_path / "out/train.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2, 3, 4]
    assert all(len(m["workers"]) == 2 and m["dropped"] == [] for m in lines)
    rep = json.loads((tmp_path / "out/train.json").read_text())
    assert rep["config"]["partition"] == "dirichlet:0.5" and rep["config"]["local_epochs"] == 2
    assert rep["bits_sent"] == 4 * 2 * 650 * 32  # 4 rounds x 2 clients x d=650 float32


@pytest.mark.parametrize("args,env,match", [
    (["--policy", "fedavg", "--partition", "dirichlet:-1"], {},
     "`partition` dirichlet:ALPHA needs a finite ALPHA greater than 0, got '-1'"),
    (["--policy", "fedavg", "--fraction", "2"], {}, "`fraction` must be in (0, 1], got 2.0"),
    (["--policy", "kasync", "--staleness-lr", "norm:x"], {},
     "`staleness_lr` norm:C needs a finite C greater than 0, got 'x'"),
    (["--policy", "adasync", "--k", "9"], {}, "`k` must be between 1 and workers=3"),
    (["--policy", "dane"], {"CODEDML_TRAIN_DANE_MU": "-0.5"}, "`dane_mu` must be at least 0, got -0.5"),
    (["--policy", "fsvrg", "--qsgd", "4"], {}, "`qsgd` must be 0 under fsvrg"),
])
def test_cli_refuses_bad_federated_options_before_any_work(tmp_path, args, env, match):
    p = _codedml("--local", "3", "--steps", "2", "--no-progress", *args, cwd=tmp_path, **env)
    assert p.returncode == 2, p.stdout + p.stderr
    assert match in p.stderr
    assert not (tmp_path / "out").exists()  # nothing was trained or written


def test_help_lists_the_new_options(tmp_path):
    p = _codedml("--help", cwd=tmp_path)
    for flag in ("--partition", "--fraction", "--local-epochs", "--local-steps", "--dane-eta",
                 "--dane-mu", "--round-deadline", "--adasync-every", "norm:C", "fedavg", "fsvrg",
                 "dane", "adasync"):
        assert flag in p.stdout, flag
