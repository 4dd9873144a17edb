"""`tinygrad-rnn sweep` on Dask distributed, at toy size: a LocalCluster sweep, the same grid
on a scheduler and a worker started here (same numbers), a worker killed mid-sweep, --resume
after an interrupted sweep, and bad grids refused before anything runs.

Every process these tests start listens on 127.0.0.1 only and is stopped by the test; every
wait is bounded.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("distributed", reason="the sweep extra: pip install 'tinygrad_rnn[sweep]'")

from tinygrad_rnn import sweep  # noqa: E402
from tinygrad_rnn.cli import build_parser, main  # noqa: E402

TINY = ["--steps", "4", "--hidden", "8", "--batch-size", "8", "--eval-size", "40"]
# rnn and gru take no forget bias: 3 combinations x 2 lengths = 6 runs, 2 combinations skipped
GRID = ["--cell", "rnn,gru,lstm", "--forget-bias", "1", "--seq-len", "6,8", *TINY]
WAIT = 120  # seconds: the longest any test waits for anything


def results(out: Path) -> list[dict]:
    path = out / "results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def by_args(records: list[dict]) -> dict:
    return {tuple(r["args"]): r for r in records}


def wait_for(condition, what: str, timeout: float = WAIT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


# --------------------------------------------------------------------------- clusters


class Cluster:
    """A `dask scheduler` and `dask worker`s on 127.0.0.1, as separate processes."""

    def __init__(self, directory: Path):
        self.directory, self.workers = directory, []
        self.scheduler_file = directory / "scheduler.json"
        self.scheduler = self._start("scheduler", "--host", "127.0.0.1", "--port", "0",
                                     "--no-dashboard", "--scheduler-file", self.scheduler_file)
        wait_for(lambda: self.scheduler_file.exists() and self.scheduler_file.stat().st_size,
                 "the scheduler to start")
        self.address = json.loads(self.scheduler_file.read_text())["address"]

    def _start(self, *args) -> subprocess.Popen:
        log = open(self.directory / f"{args[0]}-{len(self.workers)}.log", "w")
        return subprocess.Popen([sys.executable, "-m", "dask", *map(str, args)], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def add_worker(self) -> subprocess.Popen:
        # No nanny: killing this process kills the worker, and nothing restarts it.
        worker = self._start("worker", "--scheduler-file", self.scheduler_file, "--host",
                             "127.0.0.1", "--nthreads", "1", "--no-nanny", "--no-dashboard",
                             "--local-directory", self.directory / f"w{len(self.workers)}")
        self.workers.append(worker)
        return worker

    def close(self) -> None:
        for process in [*self.workers, self.scheduler]:
            stop(process)


@pytest.fixture
def cluster(tmp_path):
    cluster = Cluster(tmp_path)
    try:
        yield cluster
    finally:
        cluster.close()


def sweep_process(*args, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tinygrad_rnn", "sweep", *map(str, args),
                             "--no-progress"], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        text = (task / "children").read_text() if (task / "children").exists() else ""
        found += [int(child) for child in text.split()]
    return found


# --------------------------------------------------------------------------- a local sweep


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "sweep"
    assert main(["sweep", *GRID, "--out", str(out), "--workers", "2", "--no-progress"]) == 0
    return out


def test_local_sweep_writes_every_result_and_the_summary(local_sweep, capsys):
    records = results(local_sweep)
    assert len(records) == 6 and len(by_args(records)) == 6
    assert all(r["status"] == "completed" and r["error"] is None for r in records)
    assert {(r["params"]["cell"], r["params"]["seq_len"]) for r in records} == {
        (cell, length) for cell in ("rnn", "gru", "lstm") for length in (6, 8)}
    lstm = [r for r in records if r["params"]["cell"] == "lstm"]
    assert all(r["params"]["forget_bias"] == 1.0 for r in lstm)
    assert all("forget_bias" not in r["params"] for r in records if r["params"]["cell"] != "lstm")
    for record in records:
        assert record["metric_name"] == "mse" and record["target"] == "mse < 0.01"
        assert record["steps"] == 4 and record["seconds"] > 0
        assert record["command"].startswith("OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 ")
        assert " tinygrad-rnn train " in record["command"]
    summary = (local_sweep / "summary.md").read_text()
    assert "| cell | forget-bias | T=6 | T=8 |" in summary
    assert "| rnn  | -           | 0/1 | 0/1 |" in summary
    assert "--cell gru --forget-bias 1: --forget-bias applies to LSTM cells only" in summary
    assert "held-out mse below 0.01" in summary
    assert (local_sweep / "summary.png").stat().st_size > 1000
    assert json.loads((local_sweep / "sweep.json").read_text())["seeds"] == ["0"]


def test_each_row_carries_the_train_command_that_reruns_it(local_sweep, tmp_path):
    record = next(r for r in results(local_sweep) if r["params"]["cell"] == "lstm")
    words = shlex.split(record["command"])
    env = dict(word.split("=", 1) for word in words[:3])
    assert env == sweep.ONE_THREAD and words[3:5] == ["tinygrad-rnn", "train"]
    out = tmp_path / "rerun"
    argv = words[5:words.index("--out")] + ["--out", str(out)]
    subprocess.run([sys.executable, "-m", "tinygrad_rnn", "train", *argv],
                   env={**os.environ, **env}, check=True, capture_output=True, timeout=WAIT)
    rerun = json.loads((out / "metrics.json").read_text())
    assert rerun["metric"] == record["metric"]
    assert (local_sweep / "runs" / record["run"] / "metrics.json").exists()


# --------------------------------------------------------------------------- a cluster


def test_the_same_grid_on_a_scheduler_and_a_worker_gives_the_same_numbers(
        local_sweep, cluster, tmp_path):
    cluster.add_worker()
    out = tmp_path / "remote"
    assert main(["sweep", *GRID, "--out", str(out), "--scheduler", cluster.address,
                 "--no-progress"]) == 0
    local, remote = by_args(results(local_sweep)), by_args(results(out))
    assert local.keys() == remote.keys()
    for args, record in remote.items():
        assert record["worker"] and record["worker"].startswith("tcp://127.0.0.1:")
        assert record["metric"] == local[args]["metric"], args


@pytest.mark.skipif(sys.platform != "linux", reason="finds the worker's runs through /proc")
def test_a_worker_killed_mid_sweep_loses_no_result(cluster, tmp_path):
    victim = cluster.add_worker()
    cluster.add_worker()
    out = tmp_path / "sweep"
    process = sweep_process(*GRID, "--scheduler", cluster.address, "--out", out, cwd=tmp_path)
    try:
        runs = wait_for(lambda: children(victim.pid), "a run on the worker to be killed")
        victim.kill()  # in the middle of a run: Dask gives that run to the other worker
        victim.wait(timeout=10)
        output, _ = process.communicate(timeout=WAIT)
    finally:
        stop(process)
    assert process.returncode == 0, output
    records = results(out)
    assert len(by_args(records)) == 6
    assert all(r["status"] == "completed" for r in records), output
    assert "6 of 6 runs finished" in (out / "summary.md").read_text()
    time.sleep(0.5)
    assert not any(Path(f"/proc/{pid}").exists() for pid in runs), \
        "the killed worker's run outlived it"


# --------------------------------------------------------------------------- --resume


def test_resume_after_an_interrupted_sweep_runs_only_the_missing_rows(tmp_path):
    # seq_len 1 is a length the adding problem cannot use: those runs fail, are recorded
    # with their error, and do not stop the sweep.
    # One worker: the runs go one after another, so the interrupt lands with most of them
    # still to run.
    grid = ["--cell", "rnn,lstm", "--seq-len", "1,6", "--seed", "3,7", *TINY]
    out = tmp_path / "sweep"
    process = sweep_process(*grid, "--workers", "1", "--out", out, cwd=tmp_path)
    try:
        wait_for(lambda: len(results(out)) >= 1, "the first result")
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=WAIT)
    finally:
        stop(process)
    assert process.returncode == 130, output
    assert "--resume" in output
    before = results(out)
    assert 1 <= len(before) < 8

    assert main(["sweep", "--out", str(out), "--resume", "--no-progress"]) == 0
    after = results(out)
    assert len(after) == 8 and len(by_args(after)) == 8  # each row exactly once
    assert after[:len(before)] == before  # nothing rewritten
    new = {tuple(r["args"]) for r in after[len(before):]}
    assert new.isdisjoint({tuple(r["args"]) for r in before})
    failed = [r for r in after if r["params"]["seq_len"] == 1]
    assert len(failed) == 4 and all(r["status"] == "error" for r in failed)
    assert all("seq_len must be at least 2" in r["error"] for r in failed)
    assert all(r["status"] == "completed" for r in after if r["params"]["seq_len"] == 6)
    assert {r["params"]["seed"] for r in after} == {3, 7}

    # Nothing left to run: a second --resume runs nothing and rewrites only the summary.
    assert main(["sweep", "--out", str(out), "--resume", "--no-progress"]) == 0
    assert results(out) == after


def test_a_second_sweep_into_the_same_directory_needs_resume(local_sweep, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["sweep", *GRID, "--out", str(local_sweep)])
    assert exc.value.code == 2
    assert "add --resume" in capsys.readouterr().err


# --------------------------------------------------------------------------- the grid


def grid_of(*args) -> sweep.Grid:
    parser = build_parser()
    args = parser.parse_args(["sweep", *map(str, args)])
    train = parser._subparsers._group_actions[0].choices["train"]
    return sweep.grid_from_args(args, train)


def test_comma_lists_make_the_product_and_inapplicable_options_are_skipped():
    grid = grid_of("--cell", "gru,lstm,cifg", "--forget-bias", "0,1", "--seq-len", "25,50",
                   "--seeds", "3", "--hidden", "32,64")
    assert grid.axes == ["cell", "hidden", "seq_len", "forget_bias"]
    # gru: 2 hidden x 2 lengths; lstm and cifg: 2 hidden x 2 lengths x 2 biases; x 3 seeds
    assert len(grid.rows) == (4 + 8 + 8) * 3
    assert [s for s, _ in grid.skipped] == ["--cell gru --forget-bias 0",
                                           "--cell gru --forget-bias 1"]
    assert all("forget_bias" not in row.options for row in grid.rows
               if row.options["cell"] == "gru")
    assert sorted({row.options["seed"] for row in grid.rows}) == ["0", "1", "2"]
    assert grid_of("--seed", "3,7").seeds == ["3", "7"]
    assert len({row.name for row in grid.rows}) == len(grid.rows)


def test_a_grid_file_gives_the_grid_of_the_same_command_line(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text('task = "adding"\ncell = ["rnn", "lstm"]\nforget-bias = [0, 1]\n'
                    'seq_len = [25, 50]\nsteps = 2000\nlr = 3e-3\nseeds = 2\n')
    from_file = grid_of("--grid", path)
    from_line = grid_of("--task", "adding", "--cell", "rnn,lstm", "--forget-bias", "0,1",
                        "--seq-len", "25,50", "--steps", "2000", "--lr", "0.003", "--seeds", "2")
    assert [r.params for r in from_file.rows] == [r.params for r in from_line.rows]
    assert [r.params["cell"] for r in grid_of("--grid", path, "--cell", "gru").rows] == \
        ["gru"] * 4  # the command line wins over the file


@pytest.mark.parametrize("args,message", [
    (["--cell", "rnn,elman"], "--cell elman: unknown; expected one of rnn, rnn-relu, lstm"),
    (["--optimizer", "adam,lion"], "--optimizer lion: unknown"),
    (["--seq-len", "25,0"], "--seq-len 0: expected a positive integer"),
    (["--seq-len", "-5"], "--seq-len -5: expected a positive integer"),
    (["--lr", "0.01,fast"], "--lr fast: expected a number"),
    (["--cell", ""], "--cell: empty value in the list"),
    (["--seq-len", "25,,50"], "--seq-len: empty value in the list"),
    (["--seeds", "2", "--seed", "1"], "either --seeds N"),
    (["--task", "sine"], "--task sine has no standard target: give --target"),
])
def test_bad_grids_are_refused_before_anything_runs(args, message, tmp_path, capsys):
    out = tmp_path / "sweep"
    with pytest.raises(SystemExit) as exc:
        main(["sweep", *args, "--out", str(out)])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("text,message", [
    ('colour = "red"\n', "unknown option 'colour'"),
    ("cell = []\n", "--cell: empty list"),
    ("seq-len = [25, 0]\n", "--seq-len 0: expected a positive integer"),
    ("cell = [true]\n", "expected a number or a string"),
    ("cell = [\n", "not valid TOML"),
])
def test_bad_grid_files_are_refused_before_anything_runs(text, message, tmp_path, capsys):
    path, out = tmp_path / "grid.toml", tmp_path / "sweep"
    path.write_text(text)
    with pytest.raises(SystemExit):
        main(["sweep", "--grid", str(path), "--out", str(out)])
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_without_dask_the_error_says_what_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(SystemExit):
        main(["sweep", "--cell", "rnn", "--out", str(tmp_path / "sweep")])
    assert "pip install 'tinygrad_rnn[sweep]'" in capsys.readouterr().err
