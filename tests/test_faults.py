"""Failure models (codedml.faults): reproducibility per (seed, rank, job), statistics,
``corrupt`` bit-level semantics, parameter validation, and the TOML / flag configuration."""

from __future__ import annotations

import argparse
import random
import tomllib

import numpy as np
import pytest

from codedml.errors import ConfigurationError
from codedml.faults import (Bursty, Compose, Corruption, Die, FailSilent, Fault, FixedStragglers,
                            NoFaults, Pareto, Schedule, ShiftedExponential, SoftErrors,
                            add_fault_flags, config as fault_config, corrupt, fault_for,
                            faults_from_config, faults_from_flags)
from codedml.faults.models import CORRUPTION_KINDS

P = 2097143  # a prime below 2**21

RANKS = range(1, 7)
JOBS = range(0, 40)


def _schedule() -> Schedule:
    return Schedule({
        0: {1: Fault(delay=0.5)},
        3: {2: Fault(crash="silent"), 4: Fault(corruptions=(Corruption("nan"),))},
        7: {5: Fault(crash="die")},
    })


MODELS = {
    "none": NoFaults(),
    "fixed": FixedStragglers([1, 3], 0.5, start=2),
    "shifted_exponential": ShiftedExponential(shift=0.1, scale=0.2),
    "shifted_exponential_ranks": ShiftedExponential(shift=0.1, scale=0.2, ranks=frozenset({2, 5})),
    "pareto": Pareto(scale=0.01, alpha=2.0),
    "bursty": Bursty(p_slow=0.2, p_recover=0.3, delay=0.1, seed=4),
    "fail_silent": FailSilent([2], start=3),
    "die": Die([3], at=1),
    "soft_errors": SoftErrors("exponent", 0.3),
    "schedule": _schedule(),
    "compose": ShiftedExponential(0.0, 0.05) + SoftErrors("mantissa", 0.4) + FailSilent([6], 5),
}

# Models whose faults are random (so the experiment seed must matter).
RANDOM_MODELS = ["shifted_exponential", "pareto", "bursty", "soft_errors", "compose"]


def _table(model, seed: int, keys) -> dict:
    return {(r, j): fault_for(model, seed, r, j) for r, j in keys}


# --------------------------------------------------------------------------- reproducibility
@pytest.mark.parametrize("name", sorted(MODELS))
def test_fault_for_is_reproducible_whatever_the_call_order(name):
    model = MODELS[name]
    keys = [(r, j) for r in RANKS for j in JOBS]
    reference = _table(model, 7, keys)
    for shuffle_seed in range(3):
        order = keys[:]
        random.Random(shuffle_seed).shuffle(order)
        assert _table(model, 7, order) == reference
    # interleaving calls with other seeds and models changes nothing either
    order = keys[::-1]
    for r, j in order:
        fault_for(model, 8, r, j)
        fault_for(MODELS["soft_errors"], 7, r, j)
        assert fault_for(model, 7, r, j) == reference[(r, j)]


@pytest.mark.parametrize("name", RANDOM_MODELS)
def test_different_experiment_seeds_give_different_faults(name):
    model = MODELS[name]
    keys = [(r, j) for r in RANKS for j in range(60)]
    a, b = _table(model, 1, keys), _table(model, 2, keys)
    assert a != b, f"{name}: fault_for seeds 1 and 2 injected identical faults"


def test_bursty_own_seed_changes_the_pattern():
    keys = [(r, j) for r in RANKS for j in range(60)]
    a = _table(Bursty(0.2, 0.3, 0.1, seed=1), 0, keys)
    b = _table(Bursty(0.2, 0.3, 0.1, seed=2), 0, keys)
    assert a != b


def test_none_model_means_no_fault():
    assert fault_for(None, 0, 1, 0) == Fault()
    assert fault_for(NoFaults(), 3, 2, 9).is_clean


# --------------------------------------------------------------------------- semantics
def test_fixed_stragglers_semantics():
    m = FixedStragglers([1, 3], 0.5, start=2)
    for r in RANKS:
        for j in range(6):
            f = fault_for(m, 0, r, j)
            if r in (1, 3) and j >= 2:
                assert f == Fault(delay=0.5)
            else:
                assert f.is_clean


def test_fail_silent_and_die_semantics():
    s, d = FailSilent([2, 4], start=3), Die([5], at=1)
    for r in RANKS:
        for j in range(6):
            fs, fd = fault_for(s, 0, r, j), fault_for(d, 0, r, j)
            assert fs.crash == ("silent" if r in (2, 4) and j >= 3 else None)
            assert fd.crash == ("die" if r == 5 and j >= 1 else None)
            assert fs.delay == fd.delay == 0 and not fs.corruptions and not fd.corruptions


def test_schedule_returns_its_table():
    m = _schedule()
    assert fault_for(m, 0, 1, 0) == Fault(delay=0.5)
    assert fault_for(m, 5, 2, 3).crash == "silent"
    assert fault_for(m, 5, 4, 3).corruptions == (Corruption("nan"),)
    assert fault_for(m, 5, 5, 7).crash == "die"
    assert fault_for(m, 5, 1, 1).is_clean and fault_for(m, 5, 6, 0).is_clean


def test_rank_filters():
    m = ShiftedExponential(0.1, 0.2, ranks=frozenset({2, 5}))
    p = Pareto(0.01, 2.0, ranks=frozenset({3}))
    s = SoftErrors("sign", 1.0, ranks=frozenset({4}))
    for r in RANKS:
        for j in range(10):
            assert (fault_for(m, 0, r, j).delay >= 0.1) == (r in (2, 5))
            assert (fault_for(p, 0, r, j).delay >= 0.01) == (r == 3)
            assert bool(fault_for(s, 0, r, j).corruptions) == (r == 4)


def test_compose_with_plus():
    a, b, c = FixedStragglers([1], 0.5), SoftErrors("nan", 1.0), SoftErrors("exponent", 1.0)
    ab = a + b
    assert isinstance(ab, Compose) and ab.models == (a, b)
    abc = ab + c
    assert abc.models == (a, b, c)  # flattened, in order
    assert (a + (b + c)).models == (a, b, c)
    f = fault_for(abc, 3, 1, 0)
    assert f.delay == 0.5
    assert [x.kind for x in f.corruptions] == ["nan", "exponent"]  # corruptions accumulate
    assert fault_for(abc, 3, 2, 0).delay == 0
    # delays add
    two = FixedStragglers([1], 0.5) + FixedStragglers([1], 0.25)
    assert fault_for(two, 0, 1, 0).delay == 0.75
    # any crash wins, "die" before "silent", in either order
    for m in (FailSilent([1]) + Die([1]), Die([1]) + FailSilent([1])):
        assert fault_for(m, 0, 1, 0).crash == "die"
    assert fault_for(FailSilent([1]) + NoFaults(), 0, 1, 0).crash == "silent"


def test_fault_addition():
    f = Fault(0.1, None, (Corruption("nan"),)) + Fault(0.2, "silent", (Corruption("inf"),))
    assert f.delay == pytest.approx(0.3) and f.crash == "silent"
    assert [c.kind for c in f.corruptions] == ["nan", "inf"]
    assert (Fault(crash="silent") + Fault(crash="die")).crash == "die"
    assert (Fault(crash="die") + Fault(crash="silent")).crash == "die"


# --------------------------------------------------------------------------- statistics
def test_shifted_exponential_mean_and_minimum():
    m = ShiftedExponential(shift=0.1, scale=0.2)
    d = np.array([fault_for(m, 11, r, j).delay for r in RANKS for j in range(700)])
    assert d.min() >= 0.1
    assert abs(d.mean() - 0.3) <= 0.1 * 0.3
    # the exponential part has standard deviation == scale
    assert abs(d.std() - 0.2) <= 0.1 * 0.2


def test_pareto_minimum_and_median():
    m = Pareto(scale=0.01, alpha=2.0)
    d = np.array([fault_for(m, 12, r, j).delay for r in RANKS for j in range(700)])
    assert d.min() >= 0.01
    # classical Pareto(x_m=scale, alpha): median = scale * 2**(1/alpha)
    assert abs(np.median(d) - 0.01 * 2 ** 0.5) <= 0.1 * 0.01 * 2 ** 0.5
    assert d.max() > 5 * 0.01  # heavy tail


def test_bursty_stationary_slow_fraction():
    p_slow, p_recover = 0.2, 0.3
    m = Bursty(p_slow=p_slow, p_recover=p_recover, delay=0.1, seed=3)
    burn_in, jobs, ranks = 20, 140, range(1, 41)
    slow = np.array([[fault_for(m, 0, r, j).delay > 0 for j in range(burn_in, jobs)] for r in ranks])
    assert set(np.unique([fault_for(m, 0, 1, j).delay for j in range(jobs)])) <= {0.0, 0.1}
    expected = p_slow / (p_slow + p_recover)
    assert abs(slow.mean() - expected) <= 0.05
    # bursts: the chance of staying slow is 1 - p_recover, much more than the marginal
    stay = slow[:, 1:][slow[:, :-1]].mean()
    assert abs(stay - (1 - p_recover)) <= 0.07
    # slow() agrees with the fault
    assert all(m.slow(5, j) == (fault_for(m, 0, 5, j).delay > 0) for j in range(30))


@pytest.mark.parametrize("prob", [0.05, 0.3])
def test_soft_error_frequency(prob):
    m = SoftErrors("exponent", prob)
    hits = np.array([bool(fault_for(m, 13, r, j).corruptions) for r in RANKS for j in range(800)])
    assert abs(hits.mean() - prob) <= max(0.1 * prob, 0.015)
    assert not any(fault_for(SoftErrors("nan", 0.0), 1, r, j).corruptions
                   for r in RANKS for j in range(50))
    assert all(fault_for(SoftErrors("nan", 1.0), 1, r, j).corruptions for r in RANKS for j in range(50))


# --------------------------------------------------------------------------- corrupt()
def _bits(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x)
    if x.dtype in (np.float64, np.complex128):
        return x.reshape(-1).view(np.float64).view(np.uint64)
    return x.reshape(-1).view(np.float32).view(np.uint32)


BIT_RANGES = {
    (np.float64, "mantissa"): (26, 52), (np.float64, "exponent"): (52, 63), (np.float64, "sign"): (63, 64),
    (np.float32, "mantissa"): (11, 23), (np.float32, "exponent"): (23, 31), (np.float32, "sign"): (31, 32),
}


def _sample(dtype, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "c":
        return (rng.standard_normal((7, 5)) + 1j * rng.standard_normal((7, 5))).astype(dtype)
    return rng.standard_normal((7, 5)).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.complex128])
@pytest.mark.parametrize("kind", ["mantissa", "exponent", "sign"])
def test_bit_flips_flip_exactly_one_bit_in_the_stated_range(dtype, kind):
    x = _sample(dtype)
    before = x.copy()
    part = np.float64 if dtype in (np.float64, np.complex128) else np.float32
    lo, hi = BIT_RANGES[(part, kind)]
    seen = set()
    for s in range(500):
        out = corrupt(x, Corruption(kind), np.random.default_rng(s))
        assert out.dtype == x.dtype and out.shape == x.shape
        diff = _bits(out) ^ _bits(x)
        nz = np.flatnonzero(diff)
        assert len(nz) == 1, f"{kind} flip changed {len(nz)} words"
        d = int(diff[nz[0]])
        assert d & (d - 1) == 0, "more than one bit flipped"
        bit = d.bit_length() - 1
        assert lo <= bit < hi
        seen.add(bit)
    np.testing.assert_array_equal(x, before)  # the input is not modified
    assert seen == set(range(lo, hi))  # the whole stated range is used, nothing outside it


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.complex128])
@pytest.mark.parametrize("kind", ["nan", "inf", "gross"])
def test_value_kinds_set_one_entry(dtype, kind):
    x = _sample(dtype, 1)
    for s in range(20):
        out = corrupt(x, Corruption(kind, 123.5), np.random.default_rng(s))
        assert out.dtype == x.dtype and out.shape == x.shape
        changed = np.flatnonzero((out != x).reshape(-1) | np.isnan(out).reshape(-1))
        assert len(changed) == 1
        v = out.reshape(-1)[changed[0]]
        if kind == "nan":
            assert np.isnan(v)
        elif kind == "inf":
            assert np.isinf(v) and np.real(v) > 0
        else:
            assert v == 123.5
        mask = np.ones(x.size, bool)
        mask[changed[0]] = False
        np.testing.assert_array_equal(out.reshape(-1)[mask], x.reshape(-1)[mask])


def test_gross_default_value():
    x = _sample(np.float64)
    out = corrupt(x, Corruption("gross"), np.random.default_rng(0))
    assert np.count_nonzero(out != x) == 1 and 1e6 in out


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.complex128])
def test_scale_multiplies_everything(dtype):
    x = _sample(dtype, 2)
    out = corrupt(x, Corruption("scale", 3.0), np.random.default_rng(0))
    assert out.dtype == x.dtype
    np.testing.assert_array_equal(out, x * dtype(3.0))
    assert np.all(out != x)


@pytest.mark.parametrize("kind", CORRUPTION_KINDS)
@pytest.mark.parametrize("field", [P, None])
def test_integer_results_get_a_nonzero_residue_change(kind, field):
    p = field or 2**31 - 1
    rng = np.random.default_rng(5)
    x = rng.integers(0, p, (6, 4), dtype=np.int64)
    x[0, 0], x[0, 1] = 0, p - 1  # the edges of the range
    for s in range(100):
        out = corrupt(x, Corruption(kind, 7.0), np.random.default_rng(s), field)
        assert out.dtype == np.int64 and out.shape == x.shape
        changed = np.flatnonzero(out != x)
        assert len(changed) == 1
        i = changed[0]
        assert (int(out.reshape(-1)[i]) - int(x.reshape(-1)[i])) % p != 0
        assert out.min() >= 0 and out.max() < p


def test_corrupt_empty_array_is_a_copy():
    x = np.zeros((0, 3))
    out = corrupt(x, Corruption("nan"), np.random.default_rng(0))
    assert out.shape == (0, 3) and out is not x


# --------------------------------------------------------------------------- bad parameters
BAD = [
    (lambda: FixedStragglers([1], -0.5), "delay"),
    (lambda: FixedStragglers([-1], 0.5), "ranks"),
    (lambda: FixedStragglers(["x"], 0.5), "ranks"),
    (lambda: ShiftedExponential(shift=-1.0), "shift"),
    (lambda: ShiftedExponential(scale=0.0), "scale"),
    (lambda: ShiftedExponential(scale=-2.0), "scale"),
    (lambda: Pareto(scale=-1.0), "scale"),
    (lambda: Pareto(alpha=0.0), "alpha"),
    (lambda: Bursty(p_slow=1.5), "p_slow"),
    (lambda: Bursty(p_recover=-0.1), "p_recover"),
    (lambda: Bursty(delay=-1.0), "delay"),
    (lambda: FailSilent([-3]), "ranks"),
    (lambda: Die([-1], at=2), "ranks"),
    (lambda: SoftErrors("exponent", 1.2), "prob"),
    (lambda: SoftErrors("exponent", -0.1), "prob"),
    (lambda: SoftErrors("cosmic_ray", 0.1), "kind"),
    (lambda: Corruption("cosmic_ray"), "kind"),
]


@pytest.mark.parametrize("make,arg", BAD, ids=[f"{i}-{a}" for i, (_, a) in enumerate(BAD)])
def test_bad_parameters_raise_configuration_error_naming_the_argument(make, arg):
    with pytest.raises(ConfigurationError, match=rf"`?{arg}`?"):
        make()


# --------------------------------------------------------------------------- config: TOML tables
def test_empty_table_means_no_faults():
    model, seed = faults_from_config({})
    assert model == NoFaults() and seed == 0


@pytest.mark.parametrize("table,expected", [
    ({"model": "fixed", "ranks": [1, 2], "delay": 0.5, "start": 1}, FixedStragglers([1, 2], 0.5, 1)),
    ({"model": "shifted_exponential", "shift": 0.0, "scale": 0.05},
     ShiftedExponential(0.0, 0.05)),
    ({"model": "shifted_exponential", "shift": 0.1, "scale": 0.05, "ranks": [3]},
     ShiftedExponential(0.1, 0.05, frozenset({3}))),
    ({"model": "pareto", "scale": 0.02, "alpha": 3.0, "ranks": [1, 4]},
     Pareto(0.02, 3.0, frozenset({1, 4}))),
    ({"model": "bursty", "p_slow": 0.1, "p_recover": 0.4, "delay": 0.3, "seed": 5},
     Bursty(0.1, 0.4, 0.3, 5)),
])
def test_each_straggler_model_from_config(table, expected):
    original = dict(table)
    model, seed = faults_from_config({"seed": 3, "stragglers": table})
    assert model == expected and seed == 3
    assert table == original  # the caller's table is not modified


def test_other_models_from_config():
    model, _ = faults_from_config({"soft_errors": {"kind": "nan", "prob": 0.2, "ranks": [2]}})
    assert model == SoftErrors("nan", 0.2, ranks=frozenset({2}))
    model, _ = faults_from_config({"soft_errors": {"kind": "scale", "prob": 0.5, "value": -4.0}})
    assert model == SoftErrors("scale", 0.5, -4.0)
    model, _ = faults_from_config({"fail_silent": {"ranks": [3], "start": 2}})
    assert model == FailSilent([3], 2)
    model, _ = faults_from_config({"die": {"ranks": [5], "at": 4}})
    assert model == Die([5], 4)


def test_module_docstring_toml_example():
    doc = fault_config.__doc__
    block = doc[doc.index("\n    [faults]\n"):doc.index("Straggler models")]
    data = tomllib.loads("\n".join(line.strip() for line in block.splitlines()))
    model, seed = faults_from_config(data["faults"])
    assert seed == 1
    assert isinstance(model, Compose)
    assert model.models == (ShiftedExponential(0.0, 0.05), SoftErrors("exponent", 0.05),
                            SoftErrors("nan", 0.01), FailSilent([3], 2), Die([5], 4))


def test_several_stragglers_tables_compose():
    model, _ = faults_from_config({"stragglers": [
        {"model": "fixed", "ranks": [1], "delay": 0.2},
        {"model": "pareto", "scale": 0.01}]})
    assert model.models == (FixedStragglers([1], 0.2), Pareto(0.01))
    assert fault_for(model, 0, 1, 0).delay >= 0.21


@pytest.mark.parametrize("table,key", [
    ({"bogus": 1}, "bogus"),
    ({"stragglers": {"model": "fixed", "ranks": [1], "delay": 0.1, "jitter": 2}}, "jitter"),
    ({"stragglers": {"model": "pareto", "delay": 0.1}}, "delay"),
    ({"stragglers": {"model": "bursty", "ranks": [1]}}, "ranks"),
    ({"soft_errors": [{"kind": "nan", "prob": 0.1}, {"kind": "inf", "rate": 0.1}]}, "rate"),
    ({"fail_silent": {"ranks": [1], "at": 2}}, "at"),
    ({"die": {"ranks": [1], "start": 2}}, "start"),
])
def test_unknown_keys_are_named(table, key):
    with pytest.raises(ConfigurationError, match=f"'{key}'"):
        faults_from_config(table)


def test_bad_config_values():
    with pytest.raises(ConfigurationError, match="model"):
        faults_from_config({"stragglers": {"model": "gaussian"}})
    with pytest.raises(ConfigurationError, match="model"):
        faults_from_config({"stragglers": {"delay": 1.0}})
    for seed in ("x", 1.5, True):
        with pytest.raises(ConfigurationError, match="seed"):
            faults_from_config({"seed": seed})
    with pytest.raises(ConfigurationError, match="delay"):
        faults_from_config({"stragglers": {"model": "fixed", "ranks": [1], "delay": -1}})
    with pytest.raises(ConfigurationError, match="prob"):
        faults_from_config({"soft_errors": {"kind": "nan", "prob": 2}})


# --------------------------------------------------------------------------- config: flags
def _ns(*argv: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    add_fault_flags(ap)
    return ap.parse_args(list(argv))


def test_flags_build_every_model():
    ns = _ns("--stragglers", "fixed:ranks=1+2,delay=0.5", "--soft-errors", "exponent:0.1",
             "--fail-silent", "3@2", "--die", "4@1", "--fault-seed", "9")
    table = faults_from_flags(ns)
    assert table == {"stragglers": {"model": "fixed", "ranks": [1, 2], "delay": 0.5},
                     "soft_errors": [{"kind": "exponent", "prob": 0.1}],
                     "fail_silent": {"ranks": [3], "start": 2},
                     "die": {"ranks": [4], "at": 1}, "seed": 9}
    model, seed = faults_from_config(table)
    assert seed == 9
    assert model == Compose((FixedStragglers([1, 2], 0.5), SoftErrors("exponent", 0.1),
                             FailSilent([3], 2), Die([4], 1)))


@pytest.mark.parametrize("spec,expected", [
    ("fixed:ranks=3,delay=1", FixedStragglers([3], 1.0)),
    ("shifted_exponential:shift=0.01,scale=0.05", ShiftedExponential(0.01, 0.05)),
    ("shifted_exponential:scale=0.05,ranks=2+4", ShiftedExponential(0.0, 0.05, frozenset({2, 4}))),
    ("pareto:scale=0.01,alpha=2", Pareto(0.01, 2.0)),
    ("bursty:p_slow=0.1,p_recover=0.5,delay=0.3,seed=2", Bursty(0.1, 0.5, 0.3, 2)),
])
def test_straggler_flag_specs(spec, expected):
    model, _ = faults_from_config(faults_from_flags(_ns("--stragglers", spec)))
    assert model == expected


def test_flags_override_a_base_table():
    base = {"seed": 1, "stragglers": {"model": "shifted_exponential", "scale": 0.05},
            "soft_errors": [{"kind": "nan", "prob": 0.5}], "die": {"ranks": [5], "at": 4}}
    frozen = {k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v)
              for k, v in base.items()}
    table = faults_from_flags(_ns("--stragglers", "fixed:ranks=2,delay=0.1", "--fault-seed", "7"), base)
    assert table["stragglers"] == {"model": "fixed", "ranks": [2], "delay": 0.1}
    assert table["seed"] == 7
    assert table["soft_errors"] == base["soft_errors"] and table["die"] == base["die"]
    assert base == frozen  # the base table is not modified
    model, seed = faults_from_config(table)
    assert seed == 7 and model.models[0] == FixedStragglers([2], 0.1)
    # no flags: the base as it is
    assert faults_from_flags(_ns(), base) == base
    # "none" removes a base entry
    table = faults_from_flags(_ns("--stragglers", "none", "--soft-errors", "none"), base)
    assert "stragglers" not in table and table["soft_errors"] == []
    model, _ = faults_from_config(table)
    assert model == Die([5], 4)


def test_repeated_soft_error_flags_and_default_prob():
    table = faults_from_flags(_ns("--soft-errors", "exponent:0.05", "--soft-errors", "nan"))
    assert table["soft_errors"] == [{"kind": "exponent", "prob": 0.05}, {"kind": "nan", "prob": 1.0}]


@pytest.mark.parametrize("argv,name", [
    (["--fail-silent", "x@1"], "--fail-silent"),
    (["--die", "1@later"], "--die"),
    (["--stragglers", "fixed:delay"], "--stragglers"),
    (["--soft-errors", "exponent:lots"], "--soft-errors"),
])
def test_bad_flags_are_named(argv, name):
    with pytest.raises(ConfigurationError, match=name):
        faults_from_flags(_ns(*argv))


def test_flag_unknown_parameter_is_named():
    with pytest.raises(ConfigurationError, match="'jitter'"):
        faults_from_config(faults_from_flags(_ns("--stragglers", "fixed:ranks=1,delay=1,jitter=2")))


def test_flag_negative_rank_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="ranks"):
        faults_from_config(faults_from_flags(_ns("--stragglers", "fixed:ranks=-1,delay=1")))
