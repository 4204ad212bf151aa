"""``gan-train --minutes T``: the run measures its speed, plans its length and output intervals
for the budget, stops in time with a final checkpoint, records the plan, and resumes with more
minutes; bad budgets are refused with the values named."""

import json
import time

import pytest

from tests.training.conftest import TINY
from tests.training.test_cli import TINY_ARGS, _assert_user_error
from tests.training.test_ddp import _args, torchrun
from training import budget as B
from training.checkpoint import list_checkpoints
from training.cli import main
from training.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")
# TINY without the intervals, so that the plan chooses them.
BUDGET_OPTS = {k: v for k, v in TINY.items() if not k.endswith("_every")} | {"eval_every": 0}
# Seconds a run may end after its budget: one revision's steps, and the checkpoint and figures
# timed once (a loaded host can make one write slower than measured).
SLACK = 2.5


def test_steps_that_fit_pays_for_outputs_and_reserves_the_end():
    costs = B.OutputCosts(samples=0.5, checkpoint=1.0, evaluation=2.0, figures=1.5)
    intervals = {"sample_every": 10, "ckpt_every": 10, "eval_every": 10}
    # 100 s left, 5 s reserved for the end; each step 0.1 s + (0.5 + 1 + 2) / 10 s of outputs.
    assert B.steps_that_fit(100.0, 0.1, costs, intervals) == 211
    assert B.steps_that_fit(4.0, 0.1, costs, intervals) == 0  # not even the end fits
    no_eval = {**intervals, "eval_every": 0}
    assert B.steps_that_fit(100.0, 0.1, costs, no_eval) == int(95 / 0.25)


def test_measurement_takes_its_steps_but_at_most_a_tenth_of_the_budget():
    budget = B.TimeBudget(100.0)  # started now
    assert not B.measured_enough(5, 1.0, 1.0, budget)
    assert B.measured_enough(B.MEASURE_STEPS, B.MEASURE_SECONDS, 3.0, budget)
    assert not B.measured_enough(3, 0.5, 5.0, budget)
    # Slow steps: a tenth of the budget spent measuring is enough, however long start-up took.
    assert B.measured_enough(3, 9.0, 10.0, budget)
    late = B.TimeBudget(100.0, start=time.monotonic() - 60)
    assert not B.measured_enough(3, 0.5, 5.0, late)
    assert B.measured_enough(2, 0.1, 0.1, B.TimeBudget(1.0, start=time.monotonic() - 5))


def test_plan_intervals_spread_outputs_and_leave_user_choices():
    current = {"sample_every": 100, "ckpt_every": 250, "eval_every": 0}
    planned = B.plan_intervals(5000, current, given={"ckpt_every"})
    assert planned == {"sample_every": 500, "ckpt_every": 250, "eval_every": 0}
    assert B.plan_intervals(3, {**current, "eval_every": 50}, set())["eval_every"] == 1


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--minutes", "0"], ["--minutes 0", "> 0"]),
        (["--minutes", "-5"], ["--minutes -5", "> 0"]),
        (["--minutes", "nan"], ["--minutes nan", "> 0"]),
        (["--minutes", "10", "--kimg", "5"], ["--minutes 10", "--kimg 5", "give one"]),
        (["--minutes", "10", "--epochs", "3"], ["--minutes 10", "--epochs 3", "give one"]),
    ],
)
def test_bad_budgets_name_the_values(tmp_path, capsys, args, fragments):
    out = tmp_path / "run"
    code = main(["--no-progress", "--out", str(out), *TINY_ARGS, *args])
    err = capsys.readouterr().err
    _assert_user_error(type("P", (), {"returncode": code, "stderr": err}), *fragments)
    assert not out.exists()


def test_budget_that_is_not_a_number_exits_2_without_traceback(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--out", str(tmp_path / "run"), "--minutes", "ten"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    assert "--minutes 'ten' is not a number" in err


def test_too_short_budget_says_the_minimum(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["--no-progress", "--out", str(out), *TINY_ARGS, "--minutes", "0.001"])
    err = capsys.readouterr().err
    _assert_user_error(type("P", (), {"returncode": code, "stderr": err}), "--minutes 0.001",
                       "too short", "the minimum is about --minutes")  # fmt: skip
    minimum = float(err.strip().rsplit("--minutes ", 1)[1])
    assert 0.001 < minimum < 1
    assert not out.exists()


def test_budgeted_run_stops_in_time_records_its_plan_and_resumes_with_more(tmp_path, capsys):
    out = tmp_path / "run"
    started = time.monotonic()
    result = train({**BUDGET_OPTS, "minutes": 0.2}, out, progress=True, started=started)
    wall = time.monotonic() - started
    assert 12 - SLACK < wall < 12 + SLACK, wall
    bar = capsys.readouterr().err
    assert "left=0:0" in bar  # the progress bar counts the time down
    config = json.loads((out / "config.json").read_text())
    plan, cfg = config["plan"], config["train"]
    assert result.step == result.total_steps == plan["finished"]["step"] > 20
    assert plan["minutes"] == 0.2 and plan["measured"]["img_per_s"] > 0
    assert plan["finished"]["wall_seconds"] <= 12 + SLACK
    # The plan set the length (as kimg, which a plain --resume continues to) and the intervals.
    assert cfg["kimg"] == pytest.approx(result.step * 32 / 1000)
    assert cfg["ckpt_every"] == plan["intervals"]["ckpt_every"] == cfg["sample_every"]
    assert plan["intervals"]["ckpt_every"] == max(
        1, (plan["planned_steps"] - plan["start_step"]) // 10
    )
    ckpts = [int(p.stem.split("-")[1]) for p in list_checkpoints(out)]
    assert ckpts[-1] == result.step  # the final checkpoint
    assert all(s % cfg["ckpt_every"] == 0 for s in ckpts[:-1])
    assert "minutes" in config["given"] and "ckpt_every" not in config["given"]
    assert (out / "loss.png").is_file() and (out / "progress.gif").is_file()

    started = time.monotonic()
    more = train({"minutes": 0.1}, out, resume=True, progress=False, started=started)
    wall = time.monotonic() - started
    assert 6 - SLACK < wall < 6 + SLACK, wall
    assert more.step > result.step + 10
    plan = json.loads((out / "config.json").read_text())["plan"]
    assert plan["start_step"] > result.step and plan["finished"]["step"] == more.step
    assert list_checkpoints(out)[-1].name == f"ckpt-{more.step:08d}.pt"


def test_resume_with_a_budget_and_a_length_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--no-progress", "--out", str(out), *TINY_ARGS, "--kimg", "0.064"]) == 0
    code = main(["--no-progress", "--out", str(out), "--resume", "--minutes", "1", "--kimg", "1"])
    err = capsys.readouterr().err
    _assert_user_error(type("P", (), {"returncode": code, "stderr": err}), "--minutes 1",
                       "--kimg 1")  # fmt: skip


@pytest.mark.slow
def test_budget_under_torchrun_every_rank_stops_at_the_planned_step(tmp_path):
    out = tmp_path / "two"
    opts = {**BUDGET_OPTS, "minutes": 0.6}  # two processes take ~20 s to start on 2 cores
    proc = torchrun("--out", str(out), *_args(opts), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())
    plan = config["plan"]
    assert config["distributed"] == {"world_size": 2}
    # Both ranks left the loop at the same step (exit 0: else one would wait in a collective
    # until it timed out), after revising the plan together.
    step = plan["finished"]["step"]
    assert plan["revisions"] > 0 and f"step {step}/{step} " in proc.stderr
    assert list_checkpoints(out)[-1].name == f"ckpt-{plan['finished']['step']:08d}.pt"
    assert plan["finished"]["wall_seconds"] <= 36 + SLACK


@pytest.mark.slow
def test_ctrl_c_during_a_budgeted_run_saves_and_resumes(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from tests.training.conftest import REPO

    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "training.cli", "--no-progress", "--out", str(out), *TINY_ARGS,
         "--minutes", "2"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # A shell that starts the tests in the background (`make test &`) ignores SIGINT, and
        # the child would inherit that: give it the default, as a terminal's Ctrl-C finds it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:  # wait for the plan, then interrupt mid-run
        config = out / "config.json"
        if config.is_file() and "plan" in json.loads(config.read_text()):
            break
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=180)  # saving under a loaded machine can be slow
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted at step" in err and "Traceback" not in err
    stopped = int(list_checkpoints(out)[-1].stem.split("-")[1])
    plan = json.loads((out / "config.json").read_text())["plan"]
    assert "finished" not in plan and stopped < plan["planned_steps"]
    result = train({"minutes": 0.1}, out, resume=True, progress=False)
    assert result.step > stopped and list_checkpoints(out)[-1].name == f"ckpt-{result.step:08d}.pt"
