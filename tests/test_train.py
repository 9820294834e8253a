"""Data-parallel training (``codedml.train``) on LocalCluster: every policy converges on
digits logistic regression, stragglers are skipped, gradient coding gives the exact full
gradient, crashes and soft errors, QSGD, checkpoints and the ``train`` subcommand."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from _mpirun import run_process  # noqa: E402
from codedml import LocalCluster  # noqa: E402
from codedml.errors import ConfigurationError, TrainingError  # noqa: E402
from codedml.faults import (Corruption, Die, FailSilent, Fault, FixedStragglers,  # noqa: E402
                            Schedule)
from codedml.train import (POLICIES, Engine, TrainConfig, digits_task, handlers,  # noqa: E402
                           qsgd_bits, qsgd_decode, qsgd_encode, train)
from codedml.train.policies import gradient_coding  # noqa: E402

TASK = digits_task("logreg")
#: Loss of the seeded initial model is ~2.3 (10 classes); every policy must get below this.
CONVERGED = 1.3


@pytest.mark.parametrize("policy", POLICIES)
def test_every_policy_converges(policy):
    res = train(TASK, TrainConfig(policy=policy, k=2, steps=100, eval_every=100, seed=1), local=4)
    assert res.steps == 100 and len(res.metrics) == 100
    assert res.loss < CONVERGED, (policy, res.loss)
    assert res.accuracy > 0.8
    if policy in ("sync", "ksync", "kbatch_sync", "gradient_coding"):
        assert all(s == 0 for m in res.metrics for s in m["staleness"])
    if policy == "kasync":
        assert all(len(m["workers"]) == 2 == len(set(m["workers"])) for m in res.metrics)


@pytest.mark.parametrize("policy,k", [("ksync", 3), ("kbatch_sync", 3), ("async", 0),
                                      ("kasync", 2), ("gradient_coding", 0)])
def test_a_2s_straggler_is_not_waited_for(policy, k):
    steps = 8
    res = train(TASK, TrainConfig(policy=policy, k=k, steps=steps, eval_every=steps), local=4,
                faults=FixedStragglers([1], 2.0))
    assert res.wall < 2.0, res.wall        # waiting for it would take 2 s per step: 16 s
    assert all(1 not in m["workers"] for m in res.metrics)


def _full_gradient(model, X, y):
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(torch.from_numpy(X)), torch.from_numpy(y)).backward()
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()]).numpy()


@pytest.mark.parametrize("scheme,n,s", [("cyclic", 5, 2), ("fractional_repetition", 4, 1)])
def test_gradient_coding_decodes_the_exact_full_gradient(scheme, n, s):
    task = digits_task("mlp", dtype="float64", hidden=8)
    cfg = TrainConfig(policy="gradient_coding", scheme=scheme, gc_stragglers=s, batch=0)
    silent = FailSilent(range(1, s + 1))  # s workers never answer: any n - s suffice
    with LocalCluster(n, handlers=handlers(task), faults=silent, timeout=10) as c:
        eng = Engine(c, task, cfg)
        out = gradient_coding(eng, eng.st)
        ref = _full_gradient(eng.model, task.X, task.y)
    g = out.contributions[0].grad
    assert all(w >= s for w in out.used)
    assert np.linalg.norm(g - ref) <= 1e-10 * np.linalg.norm(ref)


@pytest.mark.parametrize("policy,k", [("ksync", 3), ("async", 0), ("kasync", 2),
                                      ("kbatch_async", 2), ("gradient_coding", 0)])
def test_a_fail_silent_worker_does_not_stop_training(policy, k):
    res = train(TASK, TrainConfig(policy=policy, k=k, steps=20, eval_every=20, timeout=5), local=4,
                faults=FailSilent([2], start=1))
    assert res.steps == 20 and res.loss < 2.0
    # rank 2 answers job 0 only (the first request), whenever that lands
    assert sum(2 in m["workers"] for m in res.metrics) <= 1


def test_a_fail_silent_worker_stops_sync_with_a_clear_error():
    t = time.perf_counter()
    with pytest.raises(TrainingError) as exc:
        train(TASK, TrainConfig(policy="sync", steps=20, timeout=0.5), local=4,
              faults=FailSilent([3], start=2))
    msg = str(exc.value)
    assert "step 3" in msg and "policy 'sync' waits for every worker" in msg
    assert "no answer from ranks [3]" in msg and "ksync" in msg and "gradient_coding" in msg
    assert time.perf_counter() - t < 5


def test_a_dead_worker_is_reported_and_tolerated():
    res = train(TASK, TrainConfig(policy="kbatch_async", k=2, steps=20, eval_every=20), local=4,
                faults=Die([2], at=3))
    assert res.crashed == [2] and res.steps == 20
    with pytest.raises(TrainingError, match=r"crashed ranks \[2\]"):
        train(TASK, TrainConfig(policy="sync", steps=10, timeout=5), local=3, faults=Die([2], at=3))


@pytest.mark.parametrize("policy,k", [("async", 0), ("kbatch_async", 2)])
def test_a_lone_async_worker_is_never_stale(policy, k):
    # The finisher that completes an update pulls the parameters after it: with one worker
    # nothing else moves them, so every gradient is fresh (was [0, 1, 1, ...] for async).
    res = train(TASK, TrainConfig(policy=policy, k=k, steps=12, eval_every=12), local=1)
    assert [s for m in res.metrics for s in m["staleness"]] == [0] * 12 * max(k, 1)


def test_async_staleness_is_about_n_minus_one():
    n = 4
    res = train(TASK, TrainConfig(policy="async", steps=80, eval_every=80), local=n,
                faults=FixedStragglers(range(1, n + 1), 0.01))  # equal speeds, root not the bottleneck
    tau = [s for m in res.metrics[2 * n:] for s in m["staleness"]]  # past the start-up
    assert n - 1.5 <= np.mean(tau) <= n - 0.5, np.mean(tau)


def test_staleness_weights_scale_the_step_and_are_not_renormalised():
    with LocalCluster(1, handlers=handlers(TASK)) as c:
        eng = Engine(c, TASK, TrainConfig(policy="async", lr=0.5))
        w0 = eng.flat()
        g, h = np.random.default_rng(0).standard_normal((2, eng.d))
        eng.apply([(0.5, g), (0.25, h)])
        # (1/m) sum lambda_i g_i with m = 2, not divided by sum lambda_i = 0.75
        assert np.allclose(eng.flat(), w0 - 0.5 * (0.5 * g + 0.25 * h) / 2, atol=1e-6)
        eng.apply([(1 / 3, g)])  # async: one gradient of staleness 2 makes a third of a step
        assert np.allclose(eng.flat(), w0 - 0.5 * (0.5 * g + 0.25 * h) / 2 - 0.5 * g / 3, atol=1e-6)


def test_sync_on_a_cluster_with_a_known_dead_worker_names_it():
    # A reused cluster whose worker rank 2 died in an earlier run: sync must say so, not fail
    # on the runtime's "`count` must be ..." check.
    with LocalCluster(3, handlers=handlers(TASK), faults=Die([2], at=1), timeout=10) as c:
        first = Engine(c, TASK, TrainConfig(policy="ksync", k=2, steps=5, eval_every=5)).run()
        assert first.crashed == [2] and 1 in c.dead_workers
        with pytest.raises(TrainingError) as exc:
            Engine(c, TASK, TrainConfig(policy="sync", steps=5, timeout=5)).run()
        msg = str(exc.value)
        assert "policy 'sync' waits for every worker; ranks [2] crashed" in msg, msg
        assert "ksync" in msg and "gradient_coding" in msg and "count" not in msg
        again = Engine(c, TASK, TrainConfig(policy="async", steps=5, eval_every=5)).run()
        assert again.crashed == [2] and all(2 not in m["workers"] for m in again.metrics)


def test_soft_errors_are_located_under_gradient_coding():
    bad = Fault(corruptions=(Corruption("gross", 1e3),))
    faults = Schedule({2: {3: bad}, 4: {1: bad}, 5: {4: Fault(corruptions=(Corruption("exponent"),))}})
    res = train(TASK, TrainConfig(policy="gradient_coding", gc_stragglers=2, gc_errors=1, steps=8,
                                  eval_every=8), local=5, faults=faults)
    # job j is step j + 1 (one request per step)
    assert {c["step"]: c["ranks"] for c in res.corrected} == {3: [3], 5: [1], 6: [4]}
    assert not res.suspects and res.loss < 2.3


def test_soft_errors_are_reported_under_other_policies():
    faults = Schedule({1: {2: Fault(corruptions=(Corruption("nan"),))},
                       7: {3: Fault(corruptions=(Corruption("scale", 1e4),))}})
    res = train(TASK, TrainConfig(policy="sync", steps=10, eval_every=10), local=3, faults=faults)
    assert res.suspects == [{"step": 2, "ranks": [2], "action": "drop"},
                            {"step": 8, "ranks": [3], "action": "drop"}]
    assert math.isfinite(res.loss)
    kept = train(TASK, TrainConfig(policy="sync", steps=3, suspect="keep"), local=3, faults=faults)
    assert kept.suspects[0]["action"] == "keep" and math.isnan(kept.loss)


def test_in_memory_metrics_are_bounded_and_the_file_keeps_every_step(tmp_path):
    """A long run's per-step records, suspects and corrections stay within ``keep_metrics``
    (the latest ones, the rest counted in ``dropped``); the metrics file keeps every step, and
    the cap changes nothing in the training itself."""
    nan = Fault(corruptions=(Corruption("nan"),))
    faults = Schedule({j: {2: nan} for j in range(0, 30, 3)})  # steps 1, 4, ..., 28 flagged
    jl = tmp_path / "m.jsonl"
    cfg = dict(policy="sync", steps=30, eval_every=7)
    ref = train(TASK, TrainConfig(**cfg), local=3, faults=faults)
    assert len(ref.metrics) == 30 and len(ref.suspects) == 10
    assert ref.dropped == {"metrics": 0, "suspects": 0, "corrected": 0}
    res = train(TASK, TrainConfig(**cfg, keep_metrics=4), local=3, faults=faults, metrics=jl)
    assert [m["step"] for m in res.metrics] == [27, 28, 29, 30]
    assert [m["batch_loss"] for m in res.metrics] == [m["batch_loss"] for m in ref.metrics[-4:]]
    assert [s["step"] for s in res.suspects] == [19, 22, 25, 28]
    assert res.dropped == {"metrics": 26, "suspects": 6, "corrected": 0}
    assert [json.loads(l)["step"] for l in jl.read_text().splitlines()] == list(range(1, 31))
    assert res.loss == ref.loss and res.steps == 30
    none = train(TASK, TrainConfig(**cfg, keep_metrics=0), local=3, faults=faults)
    assert none.metrics == [] and none.suspects == [] and none.loss == ref.loss
    assert none.dropped == {"metrics": 30, "suspects": 10, "corrected": 0}
    with pytest.raises(ConfigurationError, match=r"`keep_metrics` must be at least 0, got -1"):
        TrainConfig(keep_metrics=-1)


def test_qsgd_is_unbiased_and_counts_its_bits():
    rng = np.random.default_rng(0)
    v = rng.standard_normal(50)
    s, M = 4, 4000
    mean = np.mean([qsgd_decode(qsgd_encode(v, s, rng), v.size, s) for _ in range(M)], axis=0)
    # Var[Q_i] <= |v|^2 / (4 s^2): the mean of M is within 5 standard errors (p ~ 3e-5 per run
    # for 50 coordinates), plus the float32 rounding of the norm.
    tol = 5 * np.linalg.norm(v) / (2 * s * math.sqrt(M)) + 1e-6 * np.linalg.norm(v)
    assert np.max(np.abs(mean - v)) <= tol
    assert np.max(np.abs(mean - v)) > 0  # it is random, not the identity
    # A floor quantiser (biased) would miss by far more than the tolerance:
    floor = np.linalg.norm(v) * np.sign(v) * np.floor(np.abs(v) * s / np.linalg.norm(v)) / s
    assert np.max(np.abs(floor - v)) > 10 * tol
    d = 650  # 64 x 10 + 10 parameters of the logistic regression
    for levels in (1, 4, 255):
        msg = qsgd_encode(rng.standard_normal(d), levels, rng)
        assert 8 * msg.size == qsgd_bits(d, levels) == 32 + 8 * math.ceil(d * (1 + math.ceil(math.log2(levels + 1))) / 8)
    res = train(TASK, TrainConfig(policy="ksync", k=3, qsgd=4, steps=40, eval_every=40), local=4)
    assert res.bits_sent == res.gradients * qsgd_bits(d, 4)
    assert res.bits_full_precision == res.gradients * 32 * d
    assert res.bits_sent < 0.15 * res.bits_full_precision and res.loss < 1.6


def test_checkpoint_resume_reproduces_the_uninterrupted_run(tmp_path):
    cfg = TrainConfig(policy="sync", steps=10, momentum=0.9, lr=0.1, eval_every=5)
    ref = train(TASK, cfg, local=3)
    ref_params = torch.nn.utils.parameters_to_vector(digits_task("logreg").model().parameters())
    ck = str(tmp_path / "ck.pt")
    # The first run "dies" after step 7; its last checkpoint is step 6 (interval 3).
    jl = tmp_path / "m.jsonl"
    first = train(TASK, TrainConfig(policy="sync", steps=7, momentum=0.9, lr=0.1, eval_every=5,
                                    checkpoint=ck, checkpoint_every=3), local=3, metrics=jl)
    assert first.steps == 7 and not Path(ck + ".tmp").exists()
    with jl.open("a") as f:
        f.write('{"step": 8, "wa')  # the crash tore the last line
    task = digits_task("logreg")
    with LocalCluster(3, handlers=handlers(task)) as c:
        eng = Engine(c, task, TrainConfig(policy="sync", steps=10, momentum=0.9, lr=0.1,
                                          eval_every=5, resume=ck), metrics=jl)
        res = eng.run()
    assert res.steps == 4 and [m["step"] for m in res.metrics] == [7, 8, 9, 10]  # lost step 7 only
    # the metrics file lists every step once: step 7 of the first run was cut on resume
    lines = [json.loads(l) for l in jl.read_text().splitlines()]
    assert [m["step"] for m in lines] == list(range(1, 11))
    assert lines[6] == res.metrics[0] and not Path(str(jl) + ".tmp").exists()
    assert res.loss == ref.loss and res.metrics[-1]["batch_loss"] == ref.metrics[-1]["batch_loss"]
    with LocalCluster(3, handlers=handlers(TASK)) as c:
        eng2 = Engine(c, TASK, cfg)
        eng2.run()
    assert torch.equal(torch.nn.utils.parameters_to_vector(eng.model.parameters()),
                       torch.nn.utils.parameters_to_vector(eng2.model.parameters()))
    assert not torch.equal(ref_params, torch.nn.utils.parameters_to_vector(eng.model.parameters()))
    with pytest.raises(ConfigurationError, match="written by policy 'sync'"):
        train(TASK, TrainConfig(policy="ksync", steps=10, resume=ck), local=3)


def test_a_resumed_run_uses_a_worker_that_had_crashed(tmp_path):
    # Dead workers are not restored: the resumed run's cluster has fresh workers.
    ck = str(tmp_path / "ck.pt")
    first = train(TASK, TrainConfig(policy="ksync", k=2, steps=6, checkpoint=ck, checkpoint_every=3),
                  local=3, faults=Die([2], at=1))
    assert first.crashed == [2]
    res = train(TASK, TrainConfig(policy="ksync", k=3, steps=9, resume=ck), local=3)
    assert res.steps == 3 and res.crashed == []
    assert all(sorted(m["workers"]) == [1, 2, 3] for m in res.metrics)


@pytest.mark.parametrize("kw,match", [
    ({"policy": "bogus"}, r"`policy` must be one of .* got 'bogus'"),
    ({"lr": 0.0}, r"`lr` must be greater than 0, got 0.0"),
    ({"steps": 0}, r"`steps` must be at least 1, got 0"),
    ({"steps": "5"}, r"`steps` must be int, got '5'"),
    ({"checkpoint_every": 2}, r"`checkpoint_every` needs a `checkpoint` path"),
])
def test_bad_config_names_the_argument(kw, match):
    with pytest.raises(ConfigurationError, match=match):
        TrainConfig(**kw)


def test_bad_config_for_the_worker_count():
    with pytest.raises(ConfigurationError, match=r"`k` must be between 1 and workers=3 for ksync, got 4"):
        TrainConfig(policy="ksync", k=4).check_workers(3)
    with pytest.raises(ConfigurationError, match=r"\+ 1 = 3 must divide workers=4"):
        TrainConfig(policy="gradient_coding", scheme="fractional_repetition", gc_stragglers=2).check_workers(4)
    with pytest.raises(ConfigurationError, match=r"`gc_errors` must be at most"):
        TrainConfig(policy="gradient_coding", gc_stragglers=1, gc_errors=1).check_workers(4)


# ------------------------------------------------------------------ python -m codedml train
def _codedml(*args: str, cwd: Path, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("CODEDML_", "OMPI_", "PMIX_"))}
    e.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **env)
    return run_process([sys.executable, "-m", "codedml", "train", *args], env=e, cwd=cwd, timeout=timeout)


def test_cli_end_to_end_with_precedence_and_json_lines(tmp_path):
    (tmp_path / "c.toml").write_text('[train]\npolicy = "kasync"\nk = 2\nsteps = 5\nlocal = 3\n'
                                     '[faults]\nstragglers = { model = "fixed", ranks = [1], delay = 0.05 }\n')
    p = _codedml("--config", "c.toml", "--steps", "12", "--plot", "p.png", "--no-progress",
                 "--keep-metrics", "4", cwd=tmp_path, CODEDML_TRAIN_STEPS="9", CODEDML_TRAIN_K="1")
    assert p.returncode == 0, p.stdout + p.stderr
    lines = [json.loads(l) for l in (tmp_path / "out/train.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == list(range(1, 13))            # flag beats env and TOML
    assert all(len(m["workers"]) == 1 for m in lines)                    # env k=1 beats TOML k=2
    assert {"loss", "accuracy", "wall", "staleness", "workers", "bits", "suspect"} <= set(lines[0])
    rep = json.loads((tmp_path / "out/train.json").read_text())
    assert rep["policy"] == "kasync" and rep["steps"] == 12 and "FixedStragglers" in rep["faults"]
    # the report keeps the latest --keep-metrics records; the metrics file (and the plot) all
    assert [m["step"] for m in rep["metrics"]] == [9, 10, 11, 12] and rep["dropped"]["metrics"] == 8
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_the_plot_reads_every_evaluated_step():
    from codedml.train.cli import _loss_points

    recs = [{"step": 1, "wall": 0.5, "loss": 2.0}, {"step": 2, "wall": 0.7, "loss": None},
            {"step": 3, "wall": 0.9, "loss": 1.5}]
    assert _loss_points(recs) == [(0.5, 2.0), (0.9, 1.5)]
    assert _loss_points(json.dumps(r) + "\n" for r in recs) == [(0.5, 2.0), (0.9, 1.5)]


@pytest.mark.parametrize("args,env,code,match", [
    (["--local", "3", "--policy", "nope"], {}, 2, "`policy` must be one of"),
    (["--local", "3", "--policy", "ksync", "--k", "5"], {}, 2, "`k` must be between 1 and workers=3"),
    (["--local", "3"], {"CODEDML_TRAIN_STPES": "3"}, 2, "unknown environment setting CODEDML_TRAIN_STPES"),
    (["--local", "3", "--config", "bad.toml"], {}, 2, "unknown key(s) ['stpes'] in [train]"),
    (["--local", "3", "--policy", "sync", "--timeout", "0.5", "--fail-silent", "2@1"], {}, 3,
     "policy 'sync' waits for every worker"),
])
def test_cli_errors_and_exit_codes(tmp_path, args, env, code, match):
    (tmp_path / "bad.toml").write_text("[train]\nstpes = 3\n")
    p = _codedml(*args, "--steps", "3", cwd=tmp_path, **env)
    assert p.returncode == code, p.stdout + p.stderr
    assert match in p.stderr


def test_import_codedml_train_is_lazy_and_light():
    code = ("import sys, codedml, codedml.codes; assert 'torch' not in sys.modules; "
            "t = codedml.train; t.TrainConfig(policy='ksync'); assert 'torch' not in sys.modules; "
            "t.digits_task(); assert 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_screen_median_is_numpys() -> None:
    """The outlier screen's median of recent gradient norms is np.median's value, bit for bit,
    for odd and even counts (the mean of the two middle values)."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from codedml.train.trainer import _median

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.floats(0, 1e300, allow_nan=False), min_size=1, max_size=60))
    def same(xs):
        assert _median(xs) == float(np.median(xs))

    same()
    assert _median([3.0, 1.0, 2.0, 10.0]) == 2.5
