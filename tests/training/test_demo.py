"""The demo's training stage trains each family once and reuses finished runs."""

import json

import pytest

from training import demo
from training.checkpoint import list_checkpoints

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"resolution": 16, "g_width": 8, "d_width": 8, "latent_dim": 16, "kimg": 0.064,
        "batch_size": 32, "eval_every": 0}  # fmt: skip


def test_train_demo_models_reuses_finished_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "DEMO_OPTIONS", {k: dict(TINY) for k in demo.DEMO_OPTIONS})
    runs = demo.train_demo_models(tmp_path, kinds=("dcgan", "cgan"), progress=False, jobs=1)
    assert set(runs) == {"dcgan", "cgan"}
    first = {k: list_checkpoints(v)[-1].stat().st_mtime_ns for k, v in runs.items()}
    again = demo.train_demo_models(tmp_path, kinds=("dcgan", "cgan"), progress=False, jobs=1)
    assert again == runs
    assert {k: list_checkpoints(v)[-1].stat().st_mtime_ns for k, v in again.items()} == first
    assert (runs["cgan"] / "samples").is_dir() and (runs["cgan"] / "progress.gif").is_file()


def test_families_train_side_by_side_in_worker_processes_that_are_reused(tmp_path, monkeypatch):
    """jobs=2: three families train in two worker processes, each with the options it was
    given; ``after`` (the demo's export + gate) runs once per family, once it is trained. The
    family a worker trains second (no new interpreter) gets the weights of a run trained alone."""
    import torch

    from training.checkpoint import load_checkpoint

    jobs: list[tuple[int, str]] = []  # (worker pid, family) in the order each worker got them
    train = demo._WorkerProcess.train

    def recording(self, kind, run_dir, options, seed):
        jobs.append((self.proc.pid, kind))
        train(self, kind, run_dir, options, seed)

    monkeypatch.setattr(demo._WorkerProcess, "train", recording)
    options = {k: {**TINY, "augment": "translation"} for k in ("dcgan", "cgan", "stylegan")}
    after = []

    def record(kind, run_dir):
        after.append((kind, demo._finished(run_dir)))

    runs = demo.train_demo_models(tmp_path / "demo", jobs=2, options=options, after=record)
    assert list(runs) == ["dcgan", "cgan", "stylegan"]
    assert sorted(after) == [("cgan", True), ("dcgan", True), ("stylegan", True)]
    for kind, run_dir in runs.items():
        config = json.loads((run_dir / "config.json").read_text())
        assert config["model"]["kind"] == kind and config["train"]["augment"] == "translation"
    pids = [pid for pid, _ in jobs]
    assert len(set(pids)) == 2 and not demo._all_workers  # two workers, both ended
    (second,) = [kind for i, (pid, kind) in enumerate(jobs) if pid in pids[:i]]
    alone = demo.train_one(second, tmp_path / "alone", options[second], progress=False)
    a = load_checkpoint(list_checkpoints(runs[second])[-1])["G_ema"]
    b = load_checkpoint(list_checkpoints(alone)[-1])["G_ema"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), second


def test_a_worker_that_dies_is_named_and_replaced(tmp_path):
    """A worker process that dies mid-job fails that family with its exit status; the thread's
    next family gets a fresh worker."""
    from training.errors import UserError

    worker = demo._WorkerProcess(1)
    worker.proc.kill()
    demo._workers.process = worker
    try:
        with pytest.raises(
            UserError, match=r"training the demo dcgan .* failed \(exit status -9\)"
        ):
            worker.train("dcgan", tmp_path / "dcgan-digits", dict(TINY), 0)
        demo._train_in_subprocess("dcgan", tmp_path / "dcgan-digits", dict(TINY), 0, 1)
        assert demo._workers.process is not worker and demo._finished(tmp_path / "dcgan-digits")
        # A refused recipe is an error reply; the same worker trains the next family.
        alive = demo._workers.process
        with pytest.raises(
            UserError, match=r"demo cgan .* failed \(error: learning rates must be > 0"
        ):
            demo._train_in_subprocess("cgan", tmp_path / "c", {**TINY, "lr": -1.0}, 0, 1)
        demo._train_in_subprocess("cgan", tmp_path / "cgan-digits", dict(TINY), 0, 1)
        assert demo._workers.process is alive and demo._finished(tmp_path / "cgan-digits")
    finally:
        demo._close_workers()
        demo._workers.process = None


def _fake_training(monkeypatch, behaviour):
    """Replace the training subprocess by ``behaviour[kind](kind)``; record what happens."""
    import threading

    events: list[tuple[str, str]] = []
    lock = threading.Lock()

    def fake(kind, run_dir, options, seed, threads):
        with lock:
            events.append(("train", kind))
        behaviour.get(kind, lambda k: None)(kind)

    monkeypatch.setattr(demo, "_train_in_subprocess", fake)
    return events, lock


def test_a_trained_family_is_exported_while_the_next_one_trains(tmp_path, monkeypatch):
    """``after`` (the demo's export + gate) runs on its own worker: the cGAN's gate can wait
    for the DCGAN's training to start, which the worker that trained the cGAN must begin
    without waiting for that gate (StyleGAN-lite keeps the other worker busy meanwhile)."""
    import threading

    dcgan_started, stylegan_may_end = threading.Event(), threading.Event()
    behaviour = {"dcgan": lambda k: dcgan_started.set(),
                 "stylegan": lambda k: stylegan_may_end.wait(30)}  # fmt: skip
    events, lock = _fake_training(monkeypatch, behaviour)

    def after(kind, run_dir):
        if kind == "cgan":
            assert dcgan_started.wait(20), "the DCGAN waited for the cGAN's export"
            stylegan_may_end.set()
        with lock:
            events.append(("after", kind))

    options = {k: {"eval_every": 0} for k in demo.DEMO_OPTIONS}
    runs = demo.train_demo_models(tmp_path, jobs=2, options=options, after=after)
    assert list(runs) == ["dcgan", "cgan", "stylegan"]
    assert sorted(e for e in events if e[0] == "after") == [
        ("after", "cgan"), ("after", "dcgan"), ("after", "stylegan")]  # fmt: skip
    assert events.index(("train", "dcgan")) < events.index(("after", "cgan"))


def test_the_last_two_families_are_exported_side_by_side(tmp_path, monkeypatch):
    """Two families that end their training together are exported at once, not one after the
    other: each export here waits until the other has started."""
    import threading

    events, lock = _fake_training(monkeypatch, {})
    started = {"dcgan": threading.Event(), "stylegan": threading.Event()}
    together = []

    def after(kind, run_dir):
        if kind in started:
            started[kind].set()
            other = "stylegan" if kind == "dcgan" else "dcgan"
            together.append(started[other].wait(20))

    options = {k: {"eval_every": 0} for k in demo.DEMO_OPTIONS}
    demo.train_demo_models(tmp_path, jobs=2, options=options, after=after)
    assert together == [True, True]


def test_a_failed_training_still_lets_the_others_train_and_export(tmp_path, monkeypatch):
    """One family's failure is raised, after every other family has trained and been
    exported (nothing already trained is thrown away)."""
    from training.errors import UserError

    def fail(kind):
        raise UserError(f"training the demo {kind} failed (exit status 1)")

    events, lock = _fake_training(monkeypatch, {"cgan": fail})
    exported = []
    options = {k: {"eval_every": 0} for k in demo.DEMO_OPTIONS}
    with pytest.raises(UserError, match="training the demo cgan failed"):
        demo.train_demo_models(
            tmp_path, jobs=2, options=options, after=lambda k, d: exported.append(k)
        )
    assert sorted(exported) == ["dcgan", "stylegan"]
    assert sorted(k for what, k in events if what == "train") == ["cgan", "dcgan", "stylegan"]


def test_a_run_trained_with_another_recipe_is_moved_aside_and_retrained(tmp_path, capsys):
    """After an upgrade that changes the demo recipe, ``make demo`` must not serve the old
    model as if it were the new one: the old run folder is kept beside, renamed, and the
    family trains anew with the recipe it is given."""
    run_dir = tmp_path / "dcgan-digits"
    demo.train_one("dcgan", run_dir, dict(TINY), progress=False)
    first = list_checkpoints(run_dir)[-1].stat().st_mtime_ns
    demo.train_one("dcgan", run_dir, dict(TINY), progress=False)  # same recipe: reused
    assert list_checkpoints(run_dir)[-1].stat().st_mtime_ns == first
    demo.train_one("dcgan", run_dir, {**TINY, "latent_code": 4}, progress=False)
    err = capsys.readouterr().err
    assert "was trained with another recipe (latent_code 10 -> 4); moved it to" in err
    (aside,) = tmp_path.glob("dcgan-digits.old-*")
    assert json.loads((aside / "config.json").read_text())["model"]["latent_code"] == 10
    assert json.loads((run_dir / "config.json").read_text())["model"]["latent_code"] == 4
    assert demo._finished(run_dir) and list_checkpoints(aside)


def test_a_run_trained_before_the_rules_changed_is_not_reused(tmp_path, capsys):
    """Same options, but the run was trained when a rule chose otherwise (here: no R1): the
    demo trains anew instead of serving the old model."""
    run_dir = tmp_path / "dcgan-digits"
    demo.train_one("dcgan", run_dir, dict(TINY), progress=False)
    config = json.loads((run_dir / "config.json").read_text())
    config["train"]["r1_gamma"] = 0.0  # as an older ganforge's rules would have written it
    (run_dir / "config.json").write_text(json.dumps(config))
    demo.train_one("dcgan", run_dir, dict(TINY), progress=False)
    assert "(r1_gamma 0.0 -> 1.0)" in capsys.readouterr().err
    assert len(list(tmp_path.glob("dcgan-digits.old-*"))) == 1
