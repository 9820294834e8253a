"""The table of malformed inputs: every flag of ``run``, ``train`` and ``demo`` and every public
constructor, each with its expected outcome.

One row per case (:class:`Case`):

- ``argv`` (a command line after ``python -m codedml``, ``{tmp}`` standing for a scratch
  directory in which ``files`` are created first, ``env`` added to the environment), or
  ``call`` (a constructor call, made in-process);
- ``outcome``: ``"clear_error"`` (exit status 2 from the command line, a
  :class:`~codedml.errors.ConfigurationError` from a constructor) whose message contains every
  substring of ``must`` -- the argument's name, the valid range and the offending value --
  or ``"accepted"``, with ``reason`` saying where that odd input is documented as accepted
  (docs/cli.md lists them).

``tests/test_bad_cli.py`` checks every row (command lines through the CLI's own entry point
in-process, a representative subset as real subprocesses); ``benchmarks/bad_inputs.py`` runs
every row as a real subprocess or call with a timeout and counts the outcomes.

Run as a script, ``python tests/bad_input_cases.py --api-case ID`` makes one constructor call
and prints its outcome as JSON (for the cases that need a process of their own: MPI).
"""

from __future__ import annotations

import json
import math
import os
import pickle
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MAX_SEED = 2**63 - 1
FAULT_SEED = 2**32 - 1
MAXP = 2**31 - 1


@dataclass(frozen=True)
class Case:
    id: str
    outcome: str                                  # "clear_error" | "accepted"
    must: tuple[str, ...] = ()                    # substrings of the message (clear_error)
    reason: str = ""                              # why it is accepted (accepted)
    argv: tuple[str, ...] = ()                    # a command line (CLI cases)
    env: tuple[tuple[str, str], ...] = ()         # extra environment (CLI cases)
    files: tuple[tuple[str, Any], ...] = ()       # name -> text, bytes or callable(dir) -> bytes
    call: Callable[[], Any] | None = None         # a constructor call (API cases)
    own_process: bool = False                     # needs a process of its own (MPI, no --local)
    subprocess: bool = False                      # the test also runs it as a real subprocess

    @property
    def kind(self) -> str:
        return "cli" if self.argv else "api"

    def __post_init__(self) -> None:
        assert self.outcome in ("clear_error", "accepted"), self.id
        assert (self.outcome == "accepted") == bool(self.reason), self.id
        assert (self.outcome == "clear_error") == bool(self.must), self.id
        assert bool(self.argv) != (self.call is not None), self.id


CASES: list[Case] = []


def _add(case: Case) -> None:
    assert all(c.id != case.id for c in CASES), f"duplicate case id {case.id}"
    CASES.append(case)


def cli(id: str, base: tuple[str, ...], *extra: str, must: tuple[str, ...] = (), reason: str = "",
        env: dict[str, str] | None = None, files: dict[str, Any] | None = None,
        own_process: bool = False, subprocess: bool = False) -> None:
    _add(Case(id, "accepted" if reason else "clear_error", tuple(must), reason, (*base, *extra),
              tuple((env or {}).items()), tuple((files or {}).items()), None, own_process, subprocess))


def api(id: str, call: Callable[[], Any], *, must: tuple[str, ...] = (), reason: str = "",
        own_process: bool = False) -> None:
    _add(Case(id, "accepted" if reason else "clear_error", tuple(must), reason, call=call,
              own_process=own_process))


# ================================================================== command lines
RUN = ("run", "--local", "3", "--jobs", "1", "--rows", "24", "--inner", "12", "--cols", "8",
       "--stragglers", "none", "--soft-errors", "none", "--out", "{tmp}/run.json")
RUN_NF = RUN[:-6] + RUN[-2:]                 # without --stragglers none --soft-errors none
TRAIN = ("train", "--local", "2", "--steps", "2", "--eval-every", "2", "--no-progress",
         "--out", "{tmp}/t.json", "--metrics", "{tmp}/t.jsonl")
DEMO = ("demo", "--workers", "6", "--size", "24", "--delay", "0.01", "--out", "{tmp}/d.json")
NOT_A_DIR = "{tmp}/file.txt/out.json"        # the parent is a regular file
FILE_TXT = {"file.txt": "a file, not a directory\n"}

# ------------------------------------------------------------------ run: sizes and counts
for flag in ("rows", "inner", "cols", "jobs"):
    cli(f"run --{flag} 0", RUN, f"--{flag}", "0", must=(f"`--{flag}`", "at least 1", "got 0"))
    cli(f"run --{flag} -5", RUN, f"--{flag}", "-5", must=(f"`--{flag}`", "at least 1", "got -5"))
cli("run --rows abc", RUN, "--rows", "abc", must=("--rows", "int", "'abc'"), subprocess=True)
cli("run --jobs 1.5", RUN, "--jobs", "1.5", must=("--jobs", "int", "'1.5'"))
cli("run --rows huge", RUN, "--rows", "10000000", "--inner", "10000000",
    must=("`--rows`", "10000000", "memory", "available"), subprocess=True)
cli("run --errors -1", RUN, "--errors", "-1", must=("`--errors`", "at least 0", "got -1"))
cli("run --errors 100", RUN, "--errors", "100", "--code", "mds:k=1",
    must=("`--errors`", "between 0 and 1", "got 100"), subprocess=True)
cli("run --errors 0", RUN, "--errors", "0",
    reason="0: decode from the recovery threshold alone, no soft-error location")
# ------------------------------------------------------------------ run: timeouts
for v, shown in (("0", "got 0"), ("-1", "got -1"), ("nan", "got nan"), ("inf", "got inf")):
    cli(f"run --timeout {v}", RUN, "--timeout", v,
        must=("`--timeout`", "finite number of seconds greater than 0", shown),
        subprocess=v == "nan")
cli("run --timeout x", RUN, "--timeout", "x", must=("--timeout", "float", "'x'"))
# ------------------------------------------------------------------ run: backend, field, seed, local
cli("run --backend gpu", RUN, "--backend", "gpu", must=("`--backend`", "'numpy'", "'gpu'"))
cli("run --field -3", RUN, "--field", "-3", must=("`--field`", "at least 0", "got -3"))
cli("run --field 1", RUN, "--field", "1", must=("`field`", f"between 2 and 2**31-1={MAXP}", "got 1"))
cli("run --field 100", RUN, "--field", "100", must=("`field`", "prime", "got 100"))
cli("run --field 2", RUN, "--field", "2", must=("`field`", "prime larger than workers=3", "2"))
cli("run --field 2**61-1", RUN, "--field", str(2**61 - 1), must=("`field`", str(MAXP), str(2**61 - 1)))
cli("run --field 0", RUN, "--field", "0", reason="0 is the documented default: real arithmetic")
cli("run --field 101", RUN, "--field", "101", reason="a prime above the worker count: exact GF(p)")
cli("run --seed -1", RUN, "--seed", "-1", must=("`--seed`", f"between 0 and {MAX_SEED}", "got -1"))
cli("run --seed 2**63", RUN, "--seed", str(2**63), must=("`--seed`", str(MAX_SEED), str(2**63)))
cli("run --local -1", RUN, "--local", "-1", must=("`--local`", "between 0 and 256", "got -1"))
cli("run --local 257", RUN, "--local", "257", must=("`--local`", "between 0 and 256", "got 257"))
cli("run --local 1", RUN, "--local", "1",
    reason="one worker thread: the codes degenerate to an uncoded product (k=1)")
cli("run without mpiexec", ("run", "--jobs", "1", "--out", "{tmp}/r.json"),
    must=("`run` needs at least 2 MPI ranks", "--local N"), own_process=True, subprocess=True)
cli("run --bogus", RUN, "--bogus", "1", must=("unrecognized arguments", "--bogus"))
# ------------------------------------------------------------------ run: codes
cli("run --code bogus", RUN, "--code", "bogus", must=("`code`", "'mds'", "'bogus'"))
cli("run --code mds:k=x", RUN, "--code", "mds:k=x", must=("`code`", "key=integer", "'k=x'"))
cli("run --code mds:k=", RUN, "--code", "mds:k=", must=("`code`", "key=integer", "'k='"))
cli("run --code mds:q=2", RUN, "--code", "mds:q=2", must=("`code`", "['k']", "['q']"))
cli("run --code mds:k=0", RUN, "--code", "mds:k=0", must=("`k`", "between 1 and workers=3", "got 0"))
cli("run --code mds:k=4", RUN, "--code", "mds:k=4", must=("`k`", "between 1 and workers=3", "got 4"))
cli("run --code polynomial:p=2,q=2", RUN, "--code", "polynomial:p=2,q=2",
    must=("recovery threshold", "workers=3", "4"))
cli("run --code matdot:m=-1", RUN, "--code", "matdot:m=-1", must=("`inner_blocks`", "at least 1", "got -1"))
cli("run --code polydot:p=0", RUN, "--code", "polydot:p=0", must=("`row_blocks`", "at least 1", "got 0"))
cli("run --code mds:k=2,k=3", RUN, "--code", "mds:k=2,k=3", must=("`code`", "each key once", "'k' twice"))
cli("run --code auto:k=2", RUN, "--code", "auto:k=2", must=("`code`", "auto takes []", "['k']"))
cli("run --code ''", RUN, "--code", "", must=("`code`", "'mds'", "got ''"))
cli("run --code uncoded", RUN, "--code", "uncoded", reason="documented spec: k = workers, no redundancy")
# ------------------------------------------------------------------ run: output, config, environment
cli("run --out dir", RUN, "--out", "{tmp}", must=("`--out`", "file path", "directory"))
cli("run --out unwritable", RUN, "--out", NOT_A_DIR, files=FILE_TXT,
    must=("`--out`", "writable directory", "file.txt/out.json"), subprocess=True)
cli("run --out ''", RUN, "--out", "", reason="an empty --out writes no report (docs/cli.md)")
cli("run --config missing", RUN, "--config", "{tmp}/nope.toml",
    must=("`--config`", "not found", "nope.toml"))
cli("run --config broken", RUN, "--config", "{tmp}/c.toml", files={"c.toml": "[run\njobs = \n"},
    must=("`--config`", "not valid TOML", "c.toml"))
cli("run --config directory", RUN, "--config", "{tmp}", must=("`--config`", "TOML file", "directory"))
cli("run --config binary", RUN, "--config", "{tmp}/c.toml", files={"c.toml": b"\xff\xfe\x00bin"},
    must=("`--config`", "not valid TOML", "not UTF-8", "c.toml"))
cli("run --config unknown table", RUN, "--config", "{tmp}/c.toml", files={"c.toml": "[extra]\nx = 1\n"},
    must=("unknown table(s) ['extra']", "allowed: ['run', 'faults']"))
cli("run --config unknown key", RUN, "--config", "{tmp}/c.toml", files={"c.toml": "[run]\nrwos = 3\n"},
    must=("unknown key(s) ['rwos']", "[run]", "allowed:"))
cli("run --config jobs string", RUN[:3] + RUN[5:], "--config", "{tmp}/c.toml",
    files={"c.toml": '[run]\njobs = "many"\n'}, must=("`jobs`", "int", "'many'"))
cli("run --config seed float", RUN, "--config", "{tmp}/c.toml", files={"c.toml": "[run]\nseed = 1.5\n"},
    must=("`seed`", "int", "1.5"))
cli("run --config seed bool", RUN, "--config", "{tmp}/c.toml", files={"c.toml": "[run]\nseed = true\n"},
    must=("`seed`", "int", "True"))
cli("run --config out number", RUN[:-2], "--config", "{tmp}/c.toml", files={"c.toml": "[run]\nout = 5\n"},
    must=("`out`", "a string", "got 5"))
cli("run --config code number", RUN, "--config", "{tmp}/c.toml", files={"c.toml": "[run]\ncode = 4\n"},
    must=("`code`", "a string", "got 4"))
cli("run --config timeout string", RUN, "--config", "{tmp}/c.toml", files={"c.toml": '[run]\ntimeout = "60"\n'},
    must=("`timeout`", "float", "'60'"))
cli("run --config errors too many", RUN, "--config", "{tmp}/c.toml", files={"c.toml": "[run]\nerrors = 5\n"},
    must=("`--errors`", "between 0 and", "got 5"))
cli("run --config timeout int", RUN, "--config", "{tmp}/c.toml", files={"c.toml": "[run]\ntimeout = 30\n"},
    reason="a TOML integer where a float belongs is that float (30 -> 30.0)")
cli("run --config run not a table", RUN, "--config", "{tmp}/c.toml", files={"c.toml": "run = 3\n"},
    must=("[run]", "table", "3"))
cli("run --config faults seed -1", RUN_NF, "--config", "{tmp}/c.toml",
    files={"c.toml": "[faults]\nseed = -1\n"}, must=("`--fault-seed`", f"between 0 and {FAULT_SEED}", "-1"))
cli("run --config faults unknown", RUN_NF, "--config", "{tmp}/c.toml",
    files={"c.toml": "[faults]\nflakiness = 0.5\n"}, must=("unknown key(s) ['flakiness']", "[faults]"))
cli("run --config faults model", RUN_NF, "--config", "{tmp}/c.toml",
    files={"c.toml": '[faults]\nstragglers = { model = "lazy" }\n'}, must=("`model`", "'fixed'", "'lazy'"))
cli("run --config faults prob", RUN_NF, "--config", "{tmp}/c.toml",
    files={"c.toml": '[faults]\nsoft_errors = { kind = "nan", prob = 2 }\n'},
    must=("`prob`", "between 0 and 1", "got 2"))
cli("run --config faults die rank 0", RUN_NF, "--config", "{tmp}/c.toml",
    files={"c.toml": "[faults]\ndie = { ranks = [0], at = 1 }\n"}, must=("`ranks`", "at least 1", "got 0"))
cli("run --config faults fail_silent string", RUN_NF, "--config", "{tmp}/c.toml",
    files={"c.toml": '[faults]\nfail_silent = "3"\n'}, must=("[faults] fail_silent", "table", "'3'"))
cli("run --config faults not a table", RUN_NF, "--config", "{tmp}/c.toml",
    files={"c.toml": 'faults = 3\n'}, must=("[faults]", "table", "3"))
cli("run env CODEDML_JOBS=many", RUN[:3] + RUN[5:], env={"CODEDML_JOBS": "many"},
    must=("CODEDML_JOBS", "int", "'many'"), subprocess=True)
cli("run env CODEDML_TIMEOUT=nan", RUN, env={"CODEDML_TIMEOUT": "nan"},
    must=("`--timeout`", "greater than 0", "nan"))
cli("run env CODEDML_JOSB", RUN, env={"CODEDML_JOSB": "3"},
    must=("unknown environment setting CODEDML_JOSB", "CODEDML_JOBS"))
cli("run env CODEDML_TRAIN_STEPS", RUN, env={"CODEDML_TRAIN_STEPS": "3"},
    reason="CODEDML_TRAIN_* configures `train`; `run` leaves it alone (docs/cli.md)")
# ------------------------------------------------------------------ run: failure flags
cli("run --stragglers rank 9", RUN, "--stragglers", "fixed:ranks=9,delay=0.1",
    must=("`--stragglers` ranks", "between 1 and workers=3", "got 9"))
cli("run --stragglers rank 0", RUN, "--stragglers", "fixed:ranks=0,delay=0.1",
    must=("`ranks`", "at least 1", "got 0"))
cli("run --stragglers delay -1", RUN, "--stragglers", "fixed:ranks=1,delay=-1",
    must=("`delay`", "at least 0", "got -1"))
cli("run --stragglers delay nan", RUN, "--stragglers", "fixed:ranks=1,delay=nan",
    must=("`delay`", "finite number", "got nan"))
cli("run --stragglers delay inf", RUN, "--stragglers", "fixed:ranks=1,delay=inf",
    must=("`delay`", "finite number", "got inf"))
cli("run --stragglers bogus", RUN, "--stragglers", "lazy", must=("`model`", "'fixed'", "'lazy'"))
cli("run --stragglers no delay", RUN, "--stragglers", "fixed:ranks=1", must=("needs `delay`", "ranks"))
cli("run --stragglers unknown key", RUN, "--stragglers", "fixed:ranks=1,delay=0.1,jitter=2",
    must=("unknown key(s) ['jitter']", "allowed"))
cli("run --stragglers not k=v", RUN, "--stragglers", "fixed:ranks", must=("`--stragglers`", "key=value", "'ranks'"))
cli("run --stragglers ranks x", RUN, "--stragglers", "fixed:ranks=x,delay=0.1",
    must=("`ranks`", "list of worker ranks", "'x'"))
cli("run --stragglers exp scale 0", RUN, "--stragglers", "shifted_exponential:scale=0",
    must=("`scale`", "greater than 0", "got 0"))
cli("run --stragglers exp shift -1", RUN, "--stragglers", "shifted_exponential:shift=-1",
    must=("`shift`", "at least 0", "got -1"))
cli("run --stragglers pareto alpha -1", RUN, "--stragglers", "pareto:alpha=-1",
    must=("`alpha`", "greater than 0", "got -1"))
cli("run --stragglers bursty p_slow 1.5", RUN, "--stragglers", "bursty:p_slow=1.5",
    must=("`p_slow`", "between 0 and 1", "got 1.5"))
cli("run --stragglers fixed delay 0", RUN, "--stragglers", "fixed:ranks=1,delay=0",
    reason="a zero delay is a straggler model that never delays (docs/cli.md)")
cli("run --soft-errors prob 2", RUN, "--soft-errors", "exponent:2", must=("`prob`", "between 0 and 1", "got 2"))
cli("run --soft-errors prob -0.1", RUN, "--soft-errors", "exponent:-0.1",
    must=("`prob`", "between 0 and 1", "got -0.1"))
cli("run --soft-errors prob nan", RUN, "--soft-errors", "exponent:nan", must=("`prob`", "between 0 and 1", "got nan"))
cli("run --soft-errors prob x", RUN, "--soft-errors", "exponent:x",
    must=("`--soft-errors`", "exponent:0.05", "'exponent:x'"))
cli("run --soft-errors kind", RUN, "--soft-errors", "cosmic:0.1", must=("`kind`", "'exponent'", "'cosmic'"))
cli("run --soft-errors prob 0", RUN, "--soft-errors", "exponent:0",
    reason="probability 0: a soft-error model that never fires")
cli("run --fail-silent 0@0", RUN, "--fail-silent", "0@0",
    must=("`--fail-silent` ranks", "at least 1 (rank 0 is the root)", "got 0"))
cli("run --fail-silent 1@-5", RUN, "--fail-silent", "1@-5", must=("`--fail-silent` job", "at least 0", "got -5"))
cli("run --fail-silent 99@0", RUN, "--fail-silent", "99@0",
    must=("`--fail-silent` ranks", "between 1 and workers=3", "got 99"), subprocess=True)
cli("run --fail-silent x@1", RUN, "--fail-silent", "x@1", must=("`--fail-silent`", "1+3@2", "'x@1'"))
cli("run --fail-silent 1@x", RUN, "--fail-silent", "1@x", must=("`--fail-silent`", "1+3@2", "'1@x'"))
cli("run --fail-silent 3", RUN, "--fail-silent", "3", "--errors", "0",
    reason="RANK without @JOB means from job 0 (docs/cli.md)")
cli("run --die 99@0", RUN, "--die", "99@0", must=("`--die` ranks", "between 1 and workers=3", "got 99"))
cli("run --die 0@1", RUN, "--die", "0@1", must=("`--die` ranks", "at least 1", "got 0"))
cli("run --die 1@-1", RUN, "--die", "1@-1", must=("`--die` job", "at least 0", "got -1"))
cli("run --die 1@", RUN, "--die", "1@", must=("`--die`", "1+3@2", "'1@'"))
cli("run --die ''", RUN, "--die", "", must=("`--die`", "1+3@2", "''"))
cli("run --fail-silent ''", RUN, "--fail-silent", "", must=("`--fail-silent`", "1+3@2", "''"))
cli("run --stragglers ''", RUN, "--stragglers", "", must=("`model`", "'fixed'", "got ''"))
cli("run --soft-errors ''", RUN, "--soft-errors", "", must=("`kind`", "'exponent'", "got ''"))
cli("run --stragglers start -1", RUN, "--stragglers", "fixed:ranks=1,delay=0.1,start=-1",
    must=("`start`", "at least 0", "got -1"))
cli("run --stragglers start 1.5", RUN, "--stragglers", "fixed:ranks=1,delay=0.1,start=1.5",
    must=("`start`", "integer job index", "1.5"))
cli("run --stragglers pareto rank 9", RUN, "--stragglers", "pareto:ranks=1+9",
    must=("`--stragglers` ranks", "between 1 and workers=3", "got 9"))
cli("run --stragglers bursty seed -1", RUN, "--stragglers", "bursty:seed=-1", must=("`seed`", "at least 0", "-1"))
cli("run --row 24", RUN, "--row", "30",
    reason="argparse takes an unambiguous prefix of a long flag (--row for --rows); docs/cli.md")
cli("run --rows twice", RUN, "--rows", "30", "--rows", "20",
    reason="a flag given twice: the last value wins (argparse); docs/cli.md")
cli("run --backend torch", RUN, "--backend", "torch", reason="a registered backend usable here (torch installed)")
cli("run --field with torch", RUN, "--field", "101", "--backend", "torch",
    reason="GF(p) products on the torch backend are exact (int64 / float64 chunks)")
cli("run --die 1+x@1", RUN, "--die", "1+x@1", must=("`--die`", "1+3@2", "'1+x@1'"))
cli("run --die after the last job", RUN, "--die", "3@50",
    reason="a job index past the run: the fault never fires (a schedule need not fit the run)")
cli("run --fault-seed -1", RUN, "--fault-seed", "-1",
    must=("`--fault-seed`", f"between 0 and {FAULT_SEED}", "-1"))
cli("run --fault-seed 2**32", RUN, "--fault-seed", str(2**32),
    must=("`--fault-seed`", f"between 0 and {FAULT_SEED}", str(2**32)))
cli("run --fault-seed x", RUN, "--fault-seed", "x", must=("--fault-seed", "int", "'x'"))

# ------------------------------------------------------------------ train: TrainConfig flags
T = TRAIN
cli("train --policy bogus", T, "--policy", "bogus", must=("`policy`", "'sync'", "'bogus'"), subprocess=True)
cli("train --k -1", T, "--k", "-1", must=("`k`", "at least 0", "got -1"))
cli("train --k 5 ksync", T, "--policy", "ksync", "--k", "5", must=("`k`", "between 1 and workers=2", "got 5"))
cli("train --k 5 kasync", T, "--policy", "kasync", "--k", "5", must=("`k`", "between 1 and workers=2", "got 5"))
cli("train --k 0", T, "--policy", "ksync", "--k", "0", reason="0 means workers - 1 (docs/train.md)")
cli("train --k 9 kbatch", T, "--policy", "kbatch_sync", "--k", "9",
    reason="the K-batch policies take any K >= 1: K mini-batches from whichever workers answer")
cli("train --steps 0", T, "--steps", "0", must=("`steps`", "at least 1", "got 0"))
cli("train --steps x", T, "--steps", "x", must=("--steps", "int", "'x'"))
cli("train --max-time -1", T, "--max-time", "-1", must=("`max_time`", "at least 0", "got -1"))
cli("train --max-time nan", T, "--max-time", "nan", must=("`max_time`", "finite", "nan"))
cli("train --max-time 0", T, "--max-time", "0", reason="0 means no time limit (docs/train.md)")
cli("train --lr 0", T, "--lr", "0", must=("`lr`", "greater than 0", "got 0"))
cli("train --lr -1", T, "--lr", "-1", must=("`lr`", "greater than 0", "got -1"))
cli("train --lr nan", T, "--lr", "nan", must=("`lr`", "greater than 0", "nan"))
cli("train --lr inf", T, "--lr", "inf", must=("`lr`", "greater than 0", "inf"))
cli("train --momentum 1", T, "--momentum", "1", must=("`momentum`", "[0, 1)", "got 1"))
cli("train --momentum -0.1", T, "--momentum", "-0.1", must=("`momentum`", "[0, 1)", "got -0.1"))
cli("train --batch -1", T, "--batch", "-1", must=("`batch`", "at least 0", "got -1"))
cli("train --batch 0", T, "--batch", "0", reason="0 means the whole shard (docs/train.md)")
cli("train --staleness-lr bogus", T, "--staleness-lr", "bogus", must=("`staleness_lr`", "'inverse'", "'bogus'"))
cli("train --scheme bogus", T, "--scheme", "bogus", must=("`scheme`", "'cyclic'", "'bogus'"))
cli("train --gc-stragglers -1", T, "--gc-stragglers", "-1", must=("`gc_stragglers`", "at least 0", "got -1"))
cli("train --gc-stragglers 5", T, "--policy", "gradient_coding", "--gc-stragglers", "5",
    must=("`gc_stragglers`", "between 0 and workers-1=1", "got 5"))
cli("train --gc-errors -1", T, "--gc-errors", "-1", must=("`gc_errors`", "at least 0", "got -1"))
cli("train --gc-errors 1", T, "--policy", "gradient_coding", "--local", "3", "--gc-stragglers", "1",
    "--gc-errors", "1", must=("`gc_errors`", "at most", "got 1"))
cli("train fractional_repetition", T, "--policy", "gradient_coding", "--local", "3",
    "--scheme", "fractional_repetition", "--gc-stragglers", "1", must=("`gc_stragglers`", "divide workers=3", "2"))
cli("train --qsgd -1", T, "--qsgd", "-1", must=("`qsgd`", "between 0 and 32768", "got -1"))
cli("train --qsgd 40000", T, "--qsgd", "40000", must=("`qsgd`", "between 0 and 32768", "got 40000"))
cli("train --qsgd with gradient coding", T, "--policy", "gradient_coding", "--qsgd", "4",
    must=("`qsgd`", "0 under gradient coding", "4"))
cli("train --data-bits -1", T, "--data-bits", "-1", must=("`data_bits`", "between 0 (off) and 32", "got -1"))
cli("train --data-bits 33", T, "--data-bits", "33", must=("`data_bits`", "between 0 (off) and 32", "got 33"))
cli("train --data-bits with qsgd", T, "--data-bits", "4", "--qsgd", "2",
    must=("`qsgd`", "must be 0 with data quantization", "got 2"))
cli("train --data-bits with gradient coding", T, "--policy", "gradient_coding", "--data-bits", "4",
    must=("`data_bits`", "0 under gradient coding", "got 4"))
cli("train --refine-bits 16", T, "--data-bits", "4", "--refine-bits", "16",
    must=("`refine_bits`", "between 0 (off) and 15", "got 16"))
cli("train --refine-bits without data-bits", T, "--refine-bits", "2",
    must=("refine_bits", "data_bits", "refine_bits=2"))
cli("train --importance bogus", T, "--data-bits", "4", "--importance", "most",
    must=("`importance`", "'loss:THRESH', 'norm:THRESH' or 'budget:FRACTION'", "'most'"))
cli("train --importance budget:2", T, "--data-bits", "4", "--importance", "budget:2",
    must=("`importance`", "0 < FRACTION <= 1", "'2'"))
cli("train --importance loss:-1", T, "--data-bits", "4", "--importance", "loss:-1",
    must=("`importance`", "THRESH >= 0", "'-1'"))
cli("train --quad-dim 0", T, "--model", "quadratic", "--quad-dim", "0",
    must=("`quad_dim`", "between 1 and 100000", "got 0"))
cli("train --quad-dim 200000", T, "--model", "quadratic", "--quad-dim", "200000",
    must=("`quad_dim`", "between 1 and 100000", "got 200000"))
cli("train --quad-rank 0", T, "--model", "quadratic", "--quad-rank", "0",
    must=("`quad_rank`", "between 1 and 20", "got 0"))
cli("train --quad-rank 30", T, "--model", "quadratic", "--quad-rank", "30",
    must=("`quad_rank`", "between 1 and 20 (quad_dim=20)", "got 30"))
cli("train --quad-samples 1", T, "--model", "quadratic", "--quad-samples", "1",
    must=("`quad_samples`", "between 2 and 10000000", "got 1"))
cli("train --quad-samples huge", T, "--model", "quadratic", "--quad-samples", "10000000", "--quad-dim", "100000",
    must=("`--quad-samples` 10000000", "`--quad-dim` 100000", "memory", "available"))
cli("train --partition bogus", T, "--partition", "skewed", must=("`partition`", "'iid' or 'dirichlet:ALPHA'", "'skewed'"))
cli("train --partition dirichlet:0", T, "--partition", "dirichlet:0",
    must=("`partition`", "finite ALPHA greater than 0", "got '0'"))
cli("train --fraction 0", T, "--fraction", "0", must=("`fraction`", "in (0, 1]", "got 0"))
cli("train --fraction 1.5", T, "--fraction", "1.5", must=("`fraction`", "in (0, 1]", "got 1.5"))
cli("train --fraction nan", T, "--fraction", "nan", must=("`fraction`", "finite", "nan"))
cli("train --local-epochs 0", T, "--local-epochs", "0", must=("`local_epochs`", "at least 1", "got 0"))
cli("train --local-steps 0", T, "--local-steps", "0", must=("`local_steps`", "at least 1", "got 0"))
cli("train --dane-eta 0", T, "--dane-eta", "0", must=("`dane_eta`", "greater than 0", "got 0"))
cli("train --dane-eta inf", T, "--dane-eta", "inf", must=("`dane_eta`", "finite", "inf"))
cli("train --dane-mu -1", T, "--dane-mu", "-1", must=("`dane_mu`", "at least 0", "got -1"))
cli("train --round-deadline -1", T, "--round-deadline", "-1", must=("`round_deadline`", "at least 0", "got -1"))
cli("train --round-deadline nan", T, "--round-deadline", "nan", must=("`round_deadline`", "finite", "nan"))
cli("train --adasync-every 0", T, "--adasync-every", "0", must=("`adasync_every`", "at least 1", "got 0"))
cli("train --suspect bogus", T, "--suspect", "bogus", must=("`suspect`", "'drop'", "'bogus'"))
cli("train --outlier 1", T, "--outlier", "1", must=("`outlier`", "greater than 1", "got 1"))
cli("train --outlier nan", T, "--outlier", "nan", must=("`outlier`", "greater than 1", "nan"))
for v in ("0", "-1", "nan", "inf"):
    cli(f"train --timeout {v}", T, "--timeout", v, must=("`timeout`", "greater than 0", v),
        subprocess=v == "0")
cli("train --eval-every 0", T, "--eval-every", "0", must=("`eval_every`", "at least 1", "got 0"))
cli("train --checkpoint-every -1", T, "--checkpoint-every", "-1", must=("`checkpoint_every`", "at least 0", "got -1"))
cli("train --keep-metrics -1", T, "--keep-metrics", "-1", must=("`keep_metrics`", "at least 0", "got -1"))
cli("train --checkpoint-every without path", T, "--checkpoint-every", "2",
    must=("`checkpoint_every`", "needs a `checkpoint` path", "none"))
cli("train --checkpoint directory", T, "--checkpoint", "{tmp}", "--checkpoint-every", "1",
    must=("`--checkpoint`", "file path", "directory"))
cli("train --metrics ''", T, "--metrics", "", reason="an empty --metrics writes no per-step file (docs/cli.md)")
cli("train --out ''", T, "--out", "", reason="an empty --out writes no summary (docs/cli.md)")
cli("train --config directory", T, "--config", "{tmp}", must=("`--config`", "TOML file", "directory"))
cli("train --local 1 gradient_coding", T, "--policy", "gradient_coding", "--local", "1",
    must=("`gc_stragglers`", "between 0 and workers-1=0", "got 1"))
cli("train --checkpoint unwritable", T, "--checkpoint", NOT_A_DIR, "--checkpoint-every", "1",
    files=FILE_TXT, must=("`--checkpoint`", "writable directory", "file.txt/out.json"))
cli("train --seed -1", T, "--seed", "-1", must=("`seed`", f"between 0 and {MAX_SEED}", "got -1"))
cli("train --seed 2**63", T, "--seed", str(2**63), must=("`seed`", str(MAX_SEED), str(2**63)))
cli("train --data-seed -1", T, "--data-seed", "-1", must=("`data_seed`", f"between 0 and {MAX_SEED}", "got -1"))
# ------------------------------------------------------------------ train: --resume (checkpoint refusals)
cli("train --resume missing", T, "--resume", "{tmp}/nope.pt", must=("`resume`", "not found", "nope.pt"))
cli("train --resume directory", T, "--resume", "{tmp}", must=("`resume`", "checkpoint file", "directory"))
cli("train --resume corrupt", T, "--resume", "{tmp}/ck.pt", files={"ck.pt": "corrupt_checkpoint"},
    must=("`resume`", "ck.pt", "corrupt, truncated or not a torch checkpoint"), subprocess=True)
cli("train --resume truncated", T, "--resume", "{tmp}/ck.pt", files={"ck.pt": "truncated_checkpoint"},
    must=("`resume`", "ck.pt", "corrupt, truncated or not a torch checkpoint"))
cli("train --resume toml", T, "--resume", "{tmp}/ck.toml", files={"ck.toml": '[train]\nsteps = 3\n'},
    must=("`resume`", "ck.toml", "not a torch checkpoint"))
cli("train --resume empty", T, "--resume", "{tmp}/ck.pt", files={"ck.pt": b""},
    must=("`resume`", "ck.pt", "not a torch checkpoint"))
cli("train --resume pickle", T, "--resume", "{tmp}/ck.pt", files={"ck.pt": "evil_pickle"},
    must=("`resume`", "ck.pt", "not a torch checkpoint"))
cli("train --resume pickle protocol 2", T, "--resume", "{tmp}/ck.pt", files={"ck.pt": "evil_pickle_p2"},
    must=("`resume`", "ck.pt", "pickle that would call code", "weights_only=True"))
cli("train --resume other hidden", T, "--model", "mlp", "--hidden", "16", "--resume", "{tmp}/ck.pt",
    files={"ck.pt": "mlp_checkpoint"}, must=("`resume`", "another model", "(32, 64)", "(16, 64)", "--hidden"))
cli("train --resume torch pickle", T, "--resume", "{tmp}/ck.pt", files={"ck.pt": "evil_torch_save"},
    must=("`resume`", "ck.pt", "pickle that would call code", "weights_only=True"), subprocess=True)
cli("train --resume tensor", T, "--resume", "{tmp}/ck.pt", files={"ck.pt": "tensor_file"},
    must=("`resume`", "ck.pt", "not a codedml training checkpoint", "codedml.train/"))
cli("train --resume other task", T, "--model", "mlp", "--resume", "{tmp}/ck.pt",
    files={"ck.pt": "logreg_checkpoint"}, must=("`resume`", "ck.pt", "task 'digits-logreg'", "'digits-mlp'"))
cli("train --resume other dtype", T, "--dtype", "float64", "--resume", "{tmp}/ck.pt",
    files={"ck.pt": "logreg_checkpoint"}, must=("`resume`", "another model", "torch.float32", "torch.float64"))
cli("train --resume other policy", T, "--policy", "ksync", "--resume", "{tmp}/ck.pt",
    files={"ck.pt": "logreg_checkpoint"}, must=("`resume`", "written by policy 'sync'", "'ksync'"))
cli("train --resume other version", T, "--resume", "{tmp}/ck.pt", files={"ck.pt": "old_version_checkpoint"},
    must=("`resume`", "ck.pt", "format 'codedml.train/1'", "codedml.train/2"))
cli("train --resume damaged", T, "--resume", "{tmp}/ck.pt", files={"ck.pt": "damaged_checkpoint"},
    must=("`resume`", "ck.pt", "damaged checkpoint", "`step`"))
# ------------------------------------------------------------------ train: TrainJob flags
cli("train --model cnn", T, "--model", "cnn", must=("`model`", "'logreg', 'mlp' or 'quadratic'", "'cnn'"))
cli("train --hidden 0", T, "--model", "mlp", "--hidden", "0", must=("`hidden`", "at least 1", "got 0"))
cli("train --hidden huge", T, "--model", "mlp", "--hidden", "10000000000",
    must=("`--hidden` 10000000000", "memory", "available"))
cli("train --hidden with logreg", T, "--hidden", "7",
    reason="--hidden sizes the mlp only; logreg has no hidden layer and ignores it")
cli("train --quad-dim with logreg", T, "--quad-dim", "5",
    reason="the --quad-* flags size only the quadratic model; logreg ignores them")
cli("train --dtype float16", T, "--dtype", "float16", must=("`dtype`", "'float32' or 'float64'", "'float16'"))
cli("train --local -1", T, "--local", "-1", must=("`local`", "between 0 and 256", "got -1"))
cli("train --local 300", T, "--local", "300", must=("`local`", "between 0 and 256", "got 300"))
cli("train without mpiexec", ("train", "--steps", "1", "--out", "{tmp}/t.json"),
    must=("`train` needs at least 2 MPI ranks", "--local N"), own_process=True)
cli("train --out unwritable", T, "--out", NOT_A_DIR, files=FILE_TXT,
    must=("`--out`", "writable directory", "file.txt/out.json"))
cli("train --metrics dir", T, "--metrics", "{tmp}", must=("`--metrics`", "file path", "directory"))
cli("train --plot unwritable", T, "--plot", NOT_A_DIR, files=FILE_TXT,
    must=("`--plot`", "writable directory", "file.txt/out.json"))
cli("train --plot ''", T, "--plot", "", reason="empty --plot (the default) draws no plot")
cli("train --progress env maybe", T[:7] + T[8:], env={"CODEDML_TRAIN_PROGRESS": "maybe"},
    must=("CODEDML_TRAIN_PROGRESS", "boolean", "'maybe'"))
cli("train env typo", T, env={"CODEDML_TRAIN_STPES": "3"},
    must=("unknown environment setting CODEDML_TRAIN_STPES", "CODEDML_TRAIN_STEPS"))
cli("train env lr", T, env={"CODEDML_TRAIN_LR": "fast"}, must=("CODEDML_TRAIN_LR", "float", "'fast'"))
cli("train --config unknown key", T, "--config", "{tmp}/c.toml", files={"c.toml": "[train]\nstpes = 3\n"},
    must=("unknown key(s) ['stpes']", "[train]"))
cli("train --config unknown table", T, "--config", "{tmp}/c.toml", files={"c.toml": "[run]\njobs = 3\n"},
    must=("unknown key(s) ['run']", "allowed"))
cli("train --config steps string", T[:3] + T[5:], "--config", "{tmp}/c.toml",
    files={"c.toml": '[train]\nsteps = "5"\n'}, must=("`steps`", "int", "'5'"))
cli("train --config progress string", T[:7] + T[8:], "--config", "{tmp}/c.toml",
    files={"c.toml": '[train]\nprogress = "yes"\n'}, must=("`progress`", "a boolean", "'yes'"))
cli("train --config policy number", T, "--config", "{tmp}/c.toml", files={"c.toml": "[train]\npolicy = 1\n"},
    must=("`policy`", "a string", "got 1"))
cli("train --config faults not a table", T, "--config", "{tmp}/c.toml", files={"c.toml": "faults = [1, 2]\n"},
    must=("[faults]", "table", "[1, 2]"))
cli("train --config train not a table", T, "--config", "{tmp}/c.toml", files={"c.toml": "train = 5\n"},
    must=("[train]", "table", "5"))
cli("train --bogus", T, "--bogus", must=("unrecognized arguments", "--bogus"))
# ------------------------------------------------------------------ train: failure flags
cli("train --die 9@0", T, "--die", "9@0", must=("`--die` ranks", "between 1 and workers=2", "got 9"))
cli("train --fail-silent 0@0", T, "--fail-silent", "0@0", must=("`--fail-silent` ranks", "at least 1", "got 0"))
cli("train --stragglers rank 5", T, "--stragglers", "fixed:ranks=5,delay=0.1",
    must=("`--stragglers` ranks", "between 1 and workers=2", "got 5"))
cli("train --soft-errors prob 3", T, "--soft-errors", "sign:3", must=("`prob`", "between 0 and 1", "got 3"))
cli("train --fault-seed -1", T, "--fault-seed", "-1", must=("`--fault-seed`", f"between 0 and {FAULT_SEED}", "-1"))

# ------------------------------------------------------------------ demo
D = DEMO
cli("demo --code bogus", D, "--code", "bogus", must=("--code", "invalid choice", "'bogus'"), subprocess=True)
cli("demo --workers 0", D, "--workers", "0", must=("`--workers`", "between 1 and 256", "got 0"))
cli("demo --workers 300", D, "--workers", "300", must=("`--workers`", "between 1 and 256", "got 300"))
cli("demo --workers x", D, "--workers", "x", must=("--workers", "int", "'x'"))
cli("demo --size 0", D, "--size", "0", must=("`--size`", "at least 1", "got 0"))
cli("demo --size -1", D, "--size", "-1", must=("`--size`", "at least 1", "got -1"))
cli("demo --size huge", D, "--size", "10000000", must=("`--size` 10000000", "memory", "available"))
cli("demo --stragglers -1", D, "--stragglers", "-1", must=("`--stragglers`", "between 0 and 6", "got -1"))
cli("demo --stragglers 7", D, "--stragglers", "7", must=("`--stragglers`", "between 0 and 6", "got 7"))
cli("demo --corrupt -1", D, "--corrupt", "-1", must=("`--corrupt`", "between 0 and 6", "got -1"))
cli("demo --corrupt 3", D, "--corrupt", "3", "--stragglers", "0", must=("`--corrupt`", "at most", "got 3"))
cli("demo --stragglers + --corrupt", D, "--stragglers", "4", "--corrupt", "3",
    must=("`--stragglers` + `--corrupt`", "at most workers=6", "4 + 3 = 7"))
cli("demo --delay -1", D, "--delay", "-1", must=("`--delay`", "at least 0", "got -1"))
cli("demo --delay nan", D, "--delay", "nan", must=("`--delay`", "finite", "nan"))
cli("demo --delay inf", D, "--delay", "inf", must=("`--delay`", "finite", "inf"))
cli("demo --field 1", D, "--field", "1", must=("`--field`", "at least 2", "got 1"))
cli("demo --field 100", D, "--field", "100", must=("`field`", "prime", "got 100"))
cli("demo --field 5", D, "--field", "5", must=("`field`", "prime larger than workers=6", "5"))
cli("demo --seed -1", D, "--seed", "-1", must=("`--seed`", f"between 0 and {MAX_SEED}", "got -1"))
cli("demo --out unwritable", D, "--out", NOT_A_DIR, files=FILE_TXT,
    must=("`--out`", "writable directory", "file.txt/out.json"))
cli("demo env size", D[:3] + D[5:], env={"CODEDML_DEMO_SIZE": "big"}, must=("CODEDML_DEMO_SIZE", "`size` must be int", "'big'"))
cli("demo env workers 2.5", D[:1] + D[3:], env={"CODEDML_DEMO_WORKERS": "2.5"},
    must=("CODEDML_DEMO_WORKERS", "`workers` must be int", "'2.5'"))
cli("demo env delay", D[:5] + D[7:], env={"CODEDML_DEMO_DELAY": "soon"},
    must=("CODEDML_DEMO_DELAY", "`delay` must be float", "'soon'"))
cli("demo env field x", D, env={"CODEDML_DEMO_FIELD": "x"}, must=("CODEDML_DEMO_FIELD", "`field` must be int", "'x'"))
cli("demo env field none", D, env={"CODEDML_DEMO_FIELD": "none"}, reason="none: real arithmetic, as without it")
cli("demo env typo", D, env={"CODEDML_DEMO_SIEZ": "3"},
    must=("unknown environment setting CODEDML_DEMO_SIEZ", "CODEDML_DEMO_SIZE"))
cli("demo --bogus", D, "--bogus", must=("unrecognized arguments", "--bogus"))
cli("demo --field 2**61-1", D, "--field", str(2**61 - 1), must=("`field`", f"between 2 and 2**31-1={MAXP}", str(2**61 - 1)))
cli("demo polydot too few workers", D, "--code", "polydot", "--workers", "3", "--stragglers", "0", "--corrupt", "0",
    must=("recovery threshold", "= 5", "at most workers=3"))
cli("demo --corrupt 3 replication", D, "--code", "replication", "--corrupt", "3", "--stragglers", "0",
    must=("`--corrupt`", "at most 2", "got 3"))
cli("demo no faults", D, "--stragglers", "0", "--corrupt", "0", "--delay", "0",
    reason="a fault-free demo: the code decodes from the first results")
cli("demo --field 7", D, "--field", "7", reason="the smallest prime above 6 workers: exact GF(7)")
cli("no subcommand", ("frobnicate",), must=("usage: python -m codedml", "run,demo,train"))


# ================================================================== constructors
def _codes():
    import codedml.codes as c

    return c


def _f():
    import codedml.faults as f

    return f


CODE_MAKERS = {
    "MDSCode": lambda w: _codes().MDSCode(w, 1),
    "PolyDotCode": lambda w: _codes().PolyDotCode(w),
    "MatDotCode": lambda w: _codes().MatDotCode(w, 1),
    "PolynomialCode": lambda w: _codes().PolynomialCode(w, 1, 1),
    "ReplicationCode": lambda w: _codes().ReplicationCode(w, 1),
    "GradientCode": lambda w: _codes().GradientCode(w, 0),
}
for cname, make in CODE_MAKERS.items():
    for w, text in ((0, "at least 1, got 0"), (-3, "at least 1, got -3"),
                    (2.5, "an integer, got 2.5 (float)"), (6.0, "an integer, got 6.0 (float)"),
                    (True, "an integer, got True (bool)"), ("6", "an integer, got '6' (str)"),
                    (None, "an integer, got None")):
        api(f"{cname}(workers={w!r})", (lambda m, w: lambda: m(w))(make, w), must=("`workers`", text))
api("MDSCode(6, 7)", lambda: _codes().MDSCode(6, 7), must=("`k`", "between 1 and workers=6", "got 7"))
api("MDSCode(6, 0)", lambda: _codes().MDSCode(6, 0), must=("`k`", "between 1 and workers=6", "got 0"))
api("ReplicationCode(6, 7)", lambda: _codes().ReplicationCode(6, 7), must=("`k`", "between 1 and workers=6", "got 7"))
api("PolyDotCode(6, 2, 2, 2)", lambda: _codes().PolyDotCode(6, 2, 2, 2),
    must=("recovery threshold", "workers=6", "= 9 "))
api("MatDotCode(6, 4)", lambda: _codes().MatDotCode(6, 4), must=("recovery threshold", "workers=6", "= 7 "))
api("PolynomialCode(6, 3, 3)", lambda: _codes().PolynomialCode(6, 3, 3),
    must=("recovery threshold", "workers=6", "= 9 "))
api("PolyDotCode(row_blocks=0)", lambda: _codes().PolyDotCode(6, row_blocks=0), must=("`row_blocks`", "at least 1", "got 0"))
api("PolyDotCode(inner_blocks=1.5)", lambda: _codes().PolyDotCode(6, inner_blocks=1.5),
    must=("`inner_blocks`", "integer", "1.5"))
api("PolyDotCode(col_blocks=-1)", lambda: _codes().PolyDotCode(6, col_blocks=-1), must=("`col_blocks`", "at least 1", "got -1"))
api("GradientCode(6, 6)", lambda: _codes().GradientCode(6, 6),
    must=("`stragglers`", "between 0 and workers-1=5", "got 6"))
api("GradientCode(6, -1)", lambda: _codes().GradientCode(6, -1),
    must=("`stragglers`", "between 0 and workers-1=5", "got -1"))
api("GradientCode(scheme='cyclical')", lambda: _codes().GradientCode(6, 1, "cyclical"),
    must=("`scheme`", "'fractional_repetition', 'cyclic'", "'cyclical'"))
api("GradientCode(6, 3, fractional_repetition)", lambda: _codes().GradientCode(6, 3, "fractional_repetition"),
    must=("stragglers+1=4", "divide workers=6"))
for cname, make in (("MDSCode", lambda: _codes().MDSCode(6, 3, construction="random")),
                    ("PolyDotCode", lambda: _codes().PolyDotCode(6, 1, 2, 1, construction="Circle")),
                    ("MatDotCode", lambda: _codes().MatDotCode(6, 2, construction=None))):
    api(f"{cname}(construction=bad)", make, must=("`construction`", "('circle', 'equispaced', 'chebyshev')", "got"))
FIELD_MAKERS = {
    "MDSCode": lambda f: _codes().MDSCode(6, 3, field=f),
    "ReplicationCode": lambda f: _codes().ReplicationCode(6, 2, field=f),
    "GradientCode": lambda f: _codes().GradientCode(6, 1, field=f),
    "MatDotCode": lambda f: _codes().MatDotCode(6, 2, field=f),
}
for cname, make in FIELD_MAKERS.items():
    for f, must in ((100, ("`field`", "a prime", "got 100, which is not prime")),
                    (2**31 - 3, ("`field`", "a prime", f"got {2**31 - 3}, which is not prime")),
                    (5, ("`field`", "a prime larger than workers=6", "got 5")),
                    (2147483659, ("`field`", f"between 2 and 2**31-1={MAXP}", "got 2147483659")),
                    (-7, ("`field`", f"between 2 and 2**31-1={MAXP}", "got -7")),
                    (7.0, ("`field`", "an integer", "got 7.0 (float)")),
                    ("7", ("`field`", "an integer", "got '7' (str)"))):
        api(f"{cname}(field={f!r})", (lambda m, f: lambda: m(f))(make, f), must=must)
api("MDSCode(np.int64(6), np.int32(3))", lambda: _codes().MDSCode(np.int64(6), np.int32(3)),
    reason="numpy integers are integers (docs/codes.md)")
api("MDSCode(6, 3, field=7)", lambda: _codes().MDSCode(6, 3, field=7),
    reason="the smallest prime above the worker count")
api("MDSCode(7, 3, field=7)", lambda: _codes().MDSCode(7, 3, field=7),
    must=("`field`", "a prime larger than workers=7", "got 7"))
api(f"MDSCode(6, 3, field={MAXP})", lambda: _codes().MDSCode(6, 3, field=MAXP),
    reason="the largest supported prime, 2**31-1")
# ------------------------------------------------------------------ fault models
api("FixedStragglers([0], 0.1)", lambda: _f().FixedStragglers([0], 0.1), must=("`ranks`", "at least 1", "got 0"))
api("FixedStragglers([1], -1)", lambda: _f().FixedStragglers([1], -1), must=("`delay`", "at least 0", "got -1"))
api("FixedStragglers([1], nan)", lambda: _f().FixedStragglers([1], math.nan), must=("`delay`", "finite", "got nan"))
api("FixedStragglers('12', 0.1)", lambda: _f().FixedStragglers("12", 0.1), must=("`ranks`", "list of worker ranks", "'12'"))
api("FixedStragglers([1.5], 0.1)", lambda: _f().FixedStragglers([1.5], 0.1), must=("`ranks`", "integer worker ranks", "1.5"))
api("FixedStragglers(start=-1)", lambda: _f().FixedStragglers([1], 0.1, start=-1), must=("`start`", "at least 0", "got -1"))
api("FixedStragglers(delay='x')", lambda: _f().FixedStragglers([1], "x"), must=("`delay`", "a number", "'x'"))
api("ShiftedExponential(scale=0)", lambda: _f().ShiftedExponential(scale=0), must=("`scale`", "greater than 0", "got 0"))
api("ShiftedExponential(shift=-1)", lambda: _f().ShiftedExponential(shift=-1), must=("`shift`", "at least 0", "got -1"))
api("ShiftedExponential(ranks=[0])", lambda: _f().ShiftedExponential(ranks=[0]), must=("`ranks`", "at least 1", "got 0"))
api("Pareto(alpha=0)", lambda: _f().Pareto(alpha=0), must=("`alpha`", "greater than 0", "got 0"))
api("Pareto(scale=inf)", lambda: _f().Pareto(scale=math.inf), must=("`scale`", "finite", "got inf"))
api("Bursty(p_slow=2)", lambda: _f().Bursty(p_slow=2), must=("`p_slow`", "between 0 and 1", "got 2"))
api("Bursty(p_recover=-0.1)", lambda: _f().Bursty(p_recover=-0.1), must=("`p_recover`", "between 0 and 1", "got -0.1"))
api("Bursty(delay=nan)", lambda: _f().Bursty(delay=math.nan), must=("`delay`", "finite", "nan"))
api("Bursty(seed=-1)", lambda: _f().Bursty(seed=-1), must=("`seed`", "at least 0", "-1"))
api("FailSilent([0])", lambda: _f().FailSilent([0]), must=("`ranks`", "at least 1 (rank 0 is the root)", "got 0"))
api("FailSilent(start=-1)", lambda: _f().FailSilent([1], start=-1), must=("`start`", "at least 0", "got -1"))
api("Die([0])", lambda: _f().Die([0]), must=("`ranks`", "at least 1", "got 0"))
api("Die(at=1.5)", lambda: _f().Die([1], at=1.5), must=("`at`", "integer job index", "1.5"))
api("SoftErrors(kind='cosmic')", lambda: _f().SoftErrors(kind="cosmic"), must=("`kind`", "'exponent'", "'cosmic'"))
api("SoftErrors(prob=1.5)", lambda: _f().SoftErrors(prob=1.5), must=("`prob`", "between 0 and 1", "got 1.5"))
api("SoftErrors(value=inf)", lambda: _f().SoftErrors(kind="gross", value=math.inf), must=("`value`", "finite", "got inf"))
api("SoftErrors(ranks=[0])", lambda: _f().SoftErrors(ranks=[0]), must=("`ranks`", "at least 1", "got 0"))
api("StorageErrors(prob=-1)", lambda: _f().StorageErrors(prob=-1), must=("`prob`", "between 0 and 1", "got -1"))
api("Schedule(table=5)", lambda: _f().Schedule(5), must=("`table`", "mapping", "got 5"))
api("Schedule({-1: {}})", lambda: _f().Schedule({-1: {}}), must=("`table job`", "at least 0", "got -1"))
api("Schedule({0: {0: Fault()}})", lambda: _f().Schedule({0: {0: _f().Fault()}}), must=("ranks", "at least 1", "got 0"))
api("Schedule({0: {1: 'x'}})", lambda: _f().Schedule({0: {1: "x"}}), must=("`table[0][1]`", "a Fault", "'x'"))
api("Compose((1,))", lambda: _f().Compose((1,)), must=("`models`", "tuple of FaultModel", "(1,)"))
api("Fault(delay=-1)", lambda: _f().Fault(delay=-1), must=("`delay`", "at least 0", "got -1"))
api("Fault(crash='boom')", lambda: _f().Fault(crash="boom"), must=("`crash`", "'silent' or 'die'", "'boom'"))
api("Corruption('cosmic')", lambda: _f().Corruption("cosmic"), must=("`kind`", "'mantissa'", "'cosmic'"))
api("FixedStragglers([1], 0)", lambda: _f().FixedStragglers([1], 0),
    reason="a zero delay: a straggler model that never delays")


# ------------------------------------------------------------------ clusters
def _local(*args: Any, **kw: Any) -> Any:
    from codedml.runtime import LocalCluster

    c = LocalCluster(*args, **kw)
    c.close()
    return c


api("LocalCluster(0)", lambda: _local(0), must=("`workers`", "at least 1", "got 0"))
api("LocalCluster(-1)", lambda: _local(-1), must=("`workers`", "at least 1", "got -1"))
api("LocalCluster(2.5)", lambda: _local(2.5), must=("`workers`", "integer", "2.5"))
api("LocalCluster(backend='gpu')", lambda: _local(2, backend="gpu"), must=("`backend`", "'numpy'", "'gpu'"))
api("LocalCluster(faults=5)", lambda: _local(2, faults=5), must=("`faults`", "FaultModel", "got 5"))
api("LocalCluster(seed=-1)", lambda: _local(2, seed=-1), must=("`seed`", f"between 0 and {FAULT_SEED}", "got -1"))
api("LocalCluster(seed=2**32)", lambda: _local(2, seed=2**32),
    must=("`seed`", f"between 0 and {FAULT_SEED}", f"got {2**32}"))
api("LocalCluster(seed=1.5)", lambda: _local(2, seed=1.5), must=("`seed`", "integer", "1.5"))
for v in (0, -1, math.nan, math.inf):
    api(f"LocalCluster(timeout={v})", (lambda v: lambda: _local(2, timeout=v))(v),
        must=("`timeout`", "finite number of seconds > 0", repr(v)))
api("LocalCluster(timeout='1')", lambda: _local(2, timeout="1"), must=("`timeout`", "seconds > 0", "'1'"))
api("LocalCluster(handlers=5)", lambda: _local(2, handlers=5), must=("`handlers`", "mapping", "got 5"))
api("LocalCluster(handlers={'f': 1})", lambda: _local(2, handlers={"f": 1}), must=("`handlers`", "callable", "1"))
api("LocalCluster(faults=Die([7]))", lambda: _local(4, faults=_f().Die([7])),
    must=("`faults` (Die)", "between 1 and workers=4", "got 7"))
api("LocalCluster(faults=FixedStragglers([1])+SoftErrors(ranks={9}))",
    lambda: _local(4, faults=_f().FixedStragglers([1], 0.1) + _f().SoftErrors(prob=0.1, ranks={9})),
    must=("`faults` (SoftErrors)", "between 1 and workers=4", "got 9"))
api("TaskPool(-5)", lambda: __import__("codedml.codes._pool", fromlist=["TaskPool"]).TaskPool(-5),
    must=("`limit`", "integer number of bytes >= 0", "-5"))
api("LocalCluster(seed=2**32-1)", lambda: _local(2, seed=FAULT_SEED),
    reason="the largest fault seed, as --fault-seed accepts")


class _FakeComm:
    """Enough of a communicator for the checks MPICluster makes before it uses one."""

    def __init__(self, size: int) -> None:
        self.size = size

    def Get_size(self) -> int:
        return self.size


def _mpi(comm: Any, **kw: Any) -> Any:
    from codedml.runtime import MPICluster

    return MPICluster(comm, **kw)


def _comm_self() -> Any:
    from mpi4py import MPI

    return MPI.COMM_SELF


api("MPICluster(None)", lambda: _mpi(None), must=("`comm`", "communicator", "None"), own_process=True)
api("MPICluster(COMM_SELF)", lambda: _mpi(_comm_self()), must=("at least 2 ranks", "size 1"), own_process=True)
api("MPICluster(root=5)", lambda: _mpi(_FakeComm(3), root=5), must=("`root`", "between 0 and 2", "5"),
    own_process=True)
api("MPICluster(seed=-1)", lambda: _mpi(_FakeComm(3), seed=-1),
    must=("`seed`", f"between 0 and {FAULT_SEED}", "-1"), own_process=True)
api("MPICluster(timeout=nan)", lambda: _mpi(_FakeComm(3), timeout=math.nan),
    must=("`timeout`", "seconds > 0", "nan"), own_process=True)
api("MPICluster(faults='x')", lambda: _mpi(_FakeComm(3), faults="x"), must=("`faults`", "FaultModel", "'x'"),
    own_process=True)
api("MPICluster(faults=Die([5]))", lambda: _mpi(_FakeComm(3), faults=_f().Die([5])),
    must=("`faults` (Die)", "between 1 and workers=2", "got 5"), own_process=True)


# ------------------------------------------------------------------ coded layers
def _layer(*args: Any, **kw: Any) -> Any:
    from codedml.nn import CodedLinear
    from codedml.runtime import LocalCluster

    with LocalCluster(5) as c:
        return CodedLinear(*args, cluster=c, **kw) if "cluster" not in kw else CodedLinear(*args, **kw)


def _torch():
    import torch

    return torch


api("CodedLinear(0, 3)", lambda: _layer(0, 3), must=("`in_features`", "at least 1", "got 0"))
api("CodedLinear(3, -1)", lambda: _layer(3, -1), must=("`out_features`", "at least 1", "got -1"))
api("CodedLinear(3.5, 3)", lambda: _layer(3.5, 3), must=("`in_features`", "integer", "3.5"))
api("CodedLinear(cluster=None)", lambda: __import__("codedml.nn", fromlist=["x"]).CodedLinear(3, 3, cluster=None),
    must=("`cluster`", "None", "root"))
api("CodedLinear(cluster='x')", lambda: __import__("codedml.nn", fromlist=["x"]).CodedLinear(3, 3, cluster="x"),
    must=("`cluster`", "LocalCluster or MPICluster", "str"))
api("CodedLinear(errors=-1)", lambda: _layer(3, 3, errors=-1), must=("`errors`", "between 0 and 5", "got -1"))
api("CodedLinear(errors=3)", lambda: _layer(3, 3, errors=3), must=("`errors`", "at most 2", "got 3"))
api("CodedLinear(dtype=int64)", lambda: _layer(3, 3, dtype=_torch().int64),
    must=("`dtype`", "torch.float16, torch.bfloat16, torch.float32, torch.float64", "torch.int64"))
api("CodedLinear(dtype=float16)", lambda: _layer(3, 3, dtype=_torch().float16),
    reason="float16 / bfloat16 layers are supported: the stored blocks are float64 (docs/layers.md)")
for v in (0, -1, math.nan, math.inf):
    api(f"CodedLinear(timeout={v})", (lambda v: lambda: _layer(3, 3, timeout=v))(v),
        must=("`timeout`", "seconds > 0", repr(v)))
api("CodedLinear(retries=-1)", lambda: _layer(3, 3, retries=-1), must=("`retries`", "at least 0", "got -1"))
api("CodedLinear(code=GradientCode)", lambda: _layer(3, 3, code=_codes().GradientCode(5, 1)),
    must=("`code`", "an MDSCode or a ReplicationCode", "GradientCode"))
api("CodedLinear(code of 4 workers)", lambda: _layer(3, 3, code=_codes().MDSCode(4, 2)),
    must=("`code`", "workers=5", "4"))


def _conv(*args: Any, **kw: Any) -> Any:
    from codedml.nn import CodedConv2d
    from codedml.runtime import LocalCluster

    with LocalCluster(5) as c:
        return CodedConv2d(*args, cluster=c, **kw)


api("CodedConv2d(in_channels=0)", lambda: _conv(0, 2, 3), must=("`in_channels`", "integer >= 1", "got 0"))
api("CodedConv2d(out_channels=1.5)", lambda: _conv(1, 1.5, 3), must=("`out_channels`", "integer >= 1", "1.5"))
api("CodedConv2d(groups=2)", lambda: _conv(2, 2, 3, groups=2), must=("`groups`", "must be 1", "got 2"))
api("CodedConv2d(padding_mode='mirror')", lambda: _conv(1, 2, 3, padding_mode="mirror"),
    must=("`padding_mode`", "'zeros'", "'mirror'"))
api("CodedConv2d(padding='full')", lambda: _conv(1, 2, 3, padding="full"),
    must=("`padding`", "'same', 'valid', an integer >= 0", "'full'"))
api("CodedConv2d(padding='same', stride=2)", lambda: _conv(1, 2, 3, padding="same", stride=2),
    must=("`padding`='same'", "stride 1", "stride=(2, 2)"))
api("CodedConv2d(timeout=nan)", lambda: _conv(1, 2, 3, timeout=math.nan), must=("`timeout`", "seconds > 0", "nan"))


def _sgd(**kw: Any) -> Any:
    from codedml.nn import CodedSGD

    return CodedSGD(_torch().nn.Linear(2, 2), **kw)


api("CodedSGD(model=5)", lambda: __import__("codedml.nn", fromlist=["x"]).CodedSGD(5),
    must=("`model`", "nn.Module", "int"))
api("CodedSGD(empty model)", lambda: __import__("codedml.nn", fromlist=["x"]).CodedSGD(_torch().nn.ReLU()),
    must=("`model`", "no parameters",))
api("CodedSGD(scrub_every=0)", lambda: _sgd(scrub_every=0), must=("`scrub_every`", "positive integer", "0"))
api("CodedSGD(scrub_every=1.5)", lambda: _sgd(scrub_every=1.5), must=("`scrub_every`", "positive integer", "1.5"))
api("CodedSGD(lr=-1)", lambda: _sgd(lr=-1), must=("`lr`", "greater than 0", "-1"))
api("CodedSGD(lr=nan)", lambda: _sgd(lr=math.nan), must=("`lr`", "greater than 0", "nan"))
api("CodedSGD(momentum=-0.5)", lambda: _sgd(momentum=-0.5), must=("`momentum`", "at least 0", "-0.5"))
api("CodedSGD(momentum=inf)", lambda: _sgd(momentum=math.inf), must=("`momentum`", "finite", "inf"))
api("CodedSGD(weight_decay=-1)", lambda: _sgd(weight_decay=-1), must=("`weight_decay`", "at least 0", "-1"))
api("CodedSGD(dampening=nan)", lambda: _sgd(dampening=math.nan), must=("`dampening`", "finite", "nan"))
api("CodedSGD(nesterov, momentum=0)", lambda: _sgd(nesterov=True),
    must=("`nesterov`", "momentum greater than 0", "momentum=0"))
api("CodedSGD(scrub_timeout=nan)", lambda: _sgd(scrub_timeout=math.nan),
    must=("`scrub_timeout`", "seconds > 0", "nan"))


# ------------------------------------------------------------------ train configs
def _tc(**kw: Any) -> Any:
    from codedml.train import TrainConfig

    return TrainConfig(**kw)


def _tj(**kw: Any) -> Any:
    from codedml.train.cli import TrainJob

    return TrainJob(**kw)


for kw, must in (({"policy": "bogus"}, ("`policy`", "'sync'", "'bogus'")),
                 ({"steps": "5"}, ("`steps`", "int", "'5'")),
                 ({"steps": 0}, ("`steps`", "at least 1", "got 0")),
                 ({"k": -1}, ("`k`", "at least 0", "got -1")),
                 ({"lr": 0.0}, ("`lr`", "greater than 0", "got 0.0")),
                 ({"lr": "0.1"}, ("`lr`", "float", "'0.1'")),
                 ({"timeout": math.inf}, ("`timeout`", "greater than 0", "inf")),
                 ({"momentum": 1.0}, ("`momentum`", "[0, 1)", "1.0")),
                 ({"seed": -1}, ("`seed`", f"between 0 and {MAX_SEED}", "-1")),
                 ({"qsgd": True}, ("`qsgd`", "int", "True")),
                 ({"checkpoint_every": 2}, ("`checkpoint_every`", "needs a `checkpoint` path", "none"))):
    api(f"TrainConfig({kw})", (lambda kw: lambda: _tc(**kw))(kw), must=must)
api("TrainConfig(ksync k=4).check_workers(3)", lambda: _tc(policy="ksync", k=4).check_workers(3),
    must=("`k`", "between 1 and workers=3", "got 4"))
api("TrainJob(model='cnn')", lambda: _tj(model="cnn"), must=("`model`", "'logreg', 'mlp' or 'quadratic'", "'cnn'"))
api("TrainJob(quad_rank=30)", lambda: _tj(quad_rank=30), must=("`quad_rank`", "between 1 and 20", "got 30"))
api("TrainJob(hidden=0)", lambda: _tj(hidden=0), must=("`hidden`", "at least 1", "got 0"))
api("TrainJob(dtype='float16')", lambda: _tj(dtype="float16"), must=("`dtype`", "'float32' or 'float64'", "'float16'"))
api("TrainJob(local=-1)", lambda: _tj(local=-1), must=("`local`", "between 0 and 256", "got -1"))
api("TrainConfig(max_time=0)", lambda: _tc(max_time=0.0), reason="0 means no time limit")


# ------------------------------------------------------------------ backends, tasks, layer codes
def _backends():
    import codedml.backends as b

    return b


def _digits(*args: Any, **kw: Any) -> Any:
    from codedml.train import digits_task

    return digits_task(*args, **kw)


def _default_code(*args: Any, **kw: Any) -> Any:
    from codedml.nn import default_code

    return default_code(*args, **kw)


api("TorchBackend('quantum')", lambda: _backends().TorchBackend("quantum"),
    must=("`device`", "'cpu' or 'cuda:0'", "'quantum'"))
api("TorchBackend(5)", lambda: _backends().TorchBackend(5), must=("`device`", "'cpu' or 'cuda:0'", "got 5"))
api("get_backend('gpu')", lambda: _backends().get_backend("gpu"), must=("`backend`", "'numpy'", "'gpu'"))
api("register_backend(5, f)", lambda: _backends().register_backend(5, lambda: None),
    must=("`name`", "non-empty string", "got 5"))
api("register_backend('x', 1)", lambda: _backends().register_backend("x", 1),
    must=("`factory`", "callable", "got 1"))
api("digits_task('cnn')", lambda: _digits("cnn"), must=("`model`", "'logreg' or 'mlp'", "'cnn'"))
api("digits_task(hidden=0)", lambda: _digits("mlp", hidden=0), must=("`hidden`", "at least 1", "got 0"))
api("digits_task(seed=-1)", lambda: _digits(seed=-1), must=("`seed`", f"between 0 and {MAX_SEED}", "got -1"))
api("digits_task(dtype='float16')", lambda: _digits(dtype="float16"),
    must=("`dtype`", "'float32' or 'float64'", "'float16'"))
api("digits_task(test_fraction=1.5)", lambda: _digits(test_fraction=1.5),
    must=("`test_fraction`", "between 0 and 1", "1.5"))
api("digits_task(test_fraction=0)", lambda: _digits(test_fraction=0),
    must=("`test_fraction`", "between 0 and 1", "got 0"))
api("default_code(0)", lambda: _default_code(0), must=("`workers`", "at least 1", "got 0"))
api("default_code(5, errors=-1)", lambda: _default_code(5, errors=-1), must=("`errors`", "at least 0", "got -1"))
api("default_code(5, errors=3)", lambda: _default_code(5, errors=3), must=("`errors`", "at most 2", "got 3"))
api("default_code(5, out_features=0)", lambda: _default_code(5, out_features=0),
    must=("`out_features`", "at least 1", "got 0"))


# ================================================================== files the CLI cases read
def _evil_class(marker: Path) -> Any:
    class Evil:
        """Unpickling this would create ``marker`` (builtins.open(marker, 'w'))."""

        def __reduce__(self) -> Any:
            return (open, (str(marker), "w"))

    return Evil()


def _checkpoint(tmp: Path, model: str = "logreg") -> bytes:
    """A real ``model`` / sync checkpoint, written by the trainer once per directory."""
    ck = tmp / f"_real_{model}_checkpoint.pt"
    if not ck.exists():
        from codedml.train import TrainConfig, digits_task, train

        train(digits_task(model), TrainConfig(policy="sync", steps=1, eval_every=1,
                                                 checkpoint=str(ck), checkpoint_every=1), local=2)
    return ck.read_bytes()


def _modified_checkpoint(tmp: Path, change: Callable[[dict], None]) -> bytes:
    import io

    import torch

    ck = torch.load(io.BytesIO(_checkpoint(tmp)), weights_only=True)
    change(ck)
    buf = io.BytesIO()
    torch.save(ck, buf)
    return buf.getvalue()


def _torch_bytes(obj: Any) -> bytes:
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


#: Named file contents for ``files``: each a function of the scratch directory. The evil
#: pickles would create ``{tmp}/MARKER`` if anything ever unpickled them with code execution.
MARKER = "PWNED_MARKER"
FILE_MAKERS: dict[str, Callable[[Path], bytes]] = {
    "corrupt_checkpoint": lambda tmp: bytes(range(256)) * 8,
    "truncated_checkpoint": lambda tmp: _checkpoint(tmp)[: len(_checkpoint(tmp)) // 2],
    "evil_pickle": lambda tmp: pickle.dumps({"format": "codedml.train/2", "x": _evil_class(tmp / MARKER)}),
    "evil_pickle_p2": lambda tmp: pickle.dumps({"x": _evil_class(tmp / MARKER)}, protocol=2),
    "mlp_checkpoint": lambda tmp: _checkpoint(tmp, "mlp"),
    "evil_torch_save": lambda tmp: _torch_bytes({"format": "codedml.train/2", "x": _evil_class(tmp / MARKER)}),
    "tensor_file": lambda tmp: _torch_bytes({"w": __import__("torch").zeros(3)}),
    "logreg_checkpoint": _checkpoint,
    "old_version_checkpoint": lambda tmp: _modified_checkpoint(tmp, lambda ck: ck.update(format="codedml.train/1")),
    "damaged_checkpoint": lambda tmp: _modified_checkpoint(tmp, lambda ck: ck.update(step="seven")),
}


def materialise(case: Case, tmp: Path) -> tuple[list[str], dict[str, str]]:
    """Create the case's files in ``tmp``; return its argv and extra environment with
    ``{tmp}`` filled in."""
    for name, content in case.files:
        if isinstance(content, str) and content in FILE_MAKERS:
            data = FILE_MAKERS[content](tmp)
        else:
            data = content.encode() if isinstance(content, str) else content
        (tmp / name).write_bytes(data)
    fill = lambda s: s.replace("{tmp}", str(tmp))  # noqa: E731
    return [fill(a) for a in case.argv], {k: fill(v) for k, v in case.env}


# ================================================================== judging an outcome
def judge_cli(case: Case, status: int | None, output: str) -> str:
    """The measured outcome of a command line: ``hang`` (no status: killed at its timeout),
    ``traceback``, ``clear_error`` (status 2 and every substring), ``unclear_error`` (status 2
    without them), ``accepted`` (status 0) or ``exit_<status>``."""
    if status is None:
        return "hang"
    if "Traceback (most recent call last)" in output:
        return "traceback"
    if status == 2:
        return "clear_error" if all(m in output for m in case.must) else "unclear_error"
    if status == 0:
        return "accepted"
    return f"exit_{status}"


def call_api(case: Case, timeout: float = 60.0) -> tuple[str, str]:
    """Make the constructor call in a thread, at most ``timeout`` s; returns (outcome, message)."""
    from codedml.errors import ConfigurationError

    box: dict[str, Any] = {}

    def target() -> None:
        try:
            case.call()
            box["outcome"] = ("accepted", "")
        except ConfigurationError as exc:
            msg = str(exc)
            box["outcome"] = ("clear_error" if all(m in msg for m in case.must) else "unclear_error", msg)
        except BaseException:  # noqa: BLE001 - anything else is what the table hunts
            box["outcome"] = ("traceback", traceback.format_exc())

    t = threading.Thread(target=target, daemon=True, name=f"case {case.id}")
    t.start()
    t.join(timeout)
    if t.is_alive():
        return "hang", f"no return within {timeout} s"
    return box["outcome"]


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without CODEDML_* and MPI launcher variables, one BLAS
    thread, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CODEDML_", "OMPI_COMM", "PMIX_", "PMI_"))}
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONUNBUFFERED="1")
    env.update(extra or {})
    return env


def run_cli_subprocess(case: Case, tmp: Path, timeout: float = 120.0) -> tuple[str, str]:
    """``python -m codedml ARGV`` in ``tmp``, in a session of its own, killed (as a group) at
    ``timeout``; returns (outcome, stdout + stderr)."""
    import signal
    import subprocess

    argv, env = materialise(case, tmp)
    root = str(Path(__file__).resolve().parent.parent)
    env = clean_env(env)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.Popen([sys.executable, "-m", "codedml", *argv], cwd=tmp, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        status: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        status = None
    return judge_cli(case, status, out + err), out + err


def run_api_subprocess(case: Case, timeout: float = 120.0) -> tuple[str, str]:
    """The constructor call in a process of its own (``--api-case ID``)."""
    import signal
    import subprocess

    root = str(Path(__file__).resolve().parent.parent)
    env = clean_env({"PYTHONPATH": root})
    proc = subprocess.Popen([sys.executable, __file__, "--api-case", case.id], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return "hang", f"no verdict within {timeout} s"
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if not lines:
        return "traceback", out + err
    got = json.loads(lines[-1])
    return got["outcome"], got["message"]


def by_id(case_id: str) -> Case:
    for c in CASES:
        if c.id == case_id:
            return c
    raise KeyError(case_id)


if __name__ == "__main__":  # python tests/bad_input_cases.py --api-case ID
    if len(sys.argv) == 3 and sys.argv[1] == "--api-case":
        outcome, message = call_api(by_id(sys.argv[2]))
        print(json.dumps({"outcome": outcome, "message": message}))
        sys.stdout.flush()
        os._exit(0)  # an MPI singleton may not finalize cleanly; the verdict is printed
    print(f"{len(CASES)} cases: "
          f"{sum(c.kind == 'cli' for c in CASES)} command lines, {sum(c.kind == 'api' for c in CASES)} calls")
