"""The hosted FLUX Outpainting API as a backend, against a loopback conformance server
written from ../shared/bfl-api.md (tests/bfl_server.py): real HTTP on 127.0.0.1, tasks
that go Pending -> Ready, signed expiring result URLs on another port, a polling URL on a
third, the account's active-task limit, moderation, errors, 402/403/422."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline import config as config_mod
from pipeline.backends import Job, RowError
from pipeline.backends.bfl import BflApiBackend
from pipeline.backends.bfl_client import ApiClient, Journal

from ..bfl_server import BflServer
from ..conftest import BFL_KEY_ENV, BFL_WRONG_KEY_ENV, write_config, write_manifest

KEY = os.environ[BFL_KEY_ENV]


def api_model(server: BflServer, **api) -> config_mod.ModelConfig:
    return config_mod.ModelConfig(
        backend="bfl-api",
        api={
            "endpoint": server.endpoint,
            "key_env": BFL_KEY_ENV,
            "poll_interval_s": 0.05,
            "poll_max_interval_s": 0.2,
            **api,
        },
    )


@pytest.fixture
def refs(photos) -> list[np.ndarray]:
    img = np.asarray(Image.open(photos["coffee"]).convert("RGB"))
    return [
        np.ascontiguousarray(img[i * 10 : i * 10 + 120, i * 20 : i * 20 + 160]) for i in range(8)
    ]


def job(ref, i, prompt="") -> Job:
    return Job(
        ref=ref,
        width=256,
        height=160,
        x0=48,
        y0=20,
        seed=0,
        prompt=prompt,
        key=f"{i:032x}",
        row_id=f"r{i}",
    )


def test_tasks_run_within_the_accounts_limit_and_come_back_exact(tmp_path, refs):
    with BflServer(key=KEY, max_active=2, latency=(0.2, 0.3)) as srv:
        backend = BflApiBackend(
            api_model(srv, max_active=2), journal=Journal(str(tmp_path / "out"))
        )
        jobs = [job(r, i) for i, r in enumerate(refs)]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:  # as the actor's concurrent calls
            images = list(pool.map(lambda j: backend.outpaint([j])[0], jobs))
        assert len(srv.submissions) == 8 and srv.max_seen_active <= 2 and srv.refused["429"] == 0
        for j, img in zip(jobs, images):
            assert img.shape == (160, 256, 3)
            assert np.array_equal(
                img[20:140, 48:208], j.ref
            )  # the server placed the reference where asked
            assert j.info["api_task_id"] and j.info["cost_credits"] == 2.5 and j.fill_color == "api"
        assert backend.counts["ready"] == 8 and backend.spent == 20.0 and srv.credits == 1000 - 20
        # the results were saved as soon as downloaded: a second backend (a rerun) pays nothing
        again = BflApiBackend(api_model(srv), journal=Journal(str(tmp_path / "out")))
        assert np.array_equal(again.outpaint([jobs[3]])[0], images[3]) and len(srv.submissions) == 8
        assert jobs[3].info["api_note"].startswith("result reused")


def test_429_past_the_limit_waits_and_loses_nothing(tmp_path, refs):
    with BflServer(key=KEY, max_active=1, latency=(0.1, 0.2)) as srv:
        backend = BflApiBackend(
            api_model(srv, max_active=4), journal=None
        )  # more than the account allows
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            images = list(
                pool.map(lambda p: backend.outpaint([job(p[1], p[0])])[0], enumerate(refs[:4]))
            )
        assert len(images) == 4 and srv.refused["429"] > 0 and srv.max_seen_active == 1
        assert len(srv.submissions) == 4  # every row submitted once, after waiting its turn


def test_outcomes_have_their_codes(tmp_path, refs):
    with BflServer(key=KEY, latency=(0.05, 0.1)) as srv:
        backend = BflApiBackend(api_model(srv), journal=None)
        for prompt, code, words in (
            ("moderate-request", "moderated", "input"),
            ("moderate-content", "moderated", "output"),
            ("please fail", "generation_failed", "reported Error"),
            ("x" * 2500, "invalid_request", "prompt: String should have at most 2000"),
        ):
            j = job(refs[0], 1, prompt)
            with pytest.raises(RowError) as e:
                backend.one(j)
            assert e.value.code == code and words in e.value.message, e.value.message
        assert (
            srv.refused["422"] == 1 and srv.credits == 1000
        )  # moderated and failed tasks are not charged
        assert backend.counts == {
            "submitted": 3,
            "ready": 0,
            "moderated": 2,
            "errors": 1,
            "resumed": 0,
            "reused": 0,
        }


def outcomes(backend, refs) -> list[str]:
    """Each row in turn: "ok" or its code."""
    out = []
    for i, r in enumerate(refs):
        res = backend.outpaint([job(r, i)])[0]  # a row's failure comes back in the list, not raised
        out.append(res.code if isinstance(res, RowError) else "ok")
    return out


def test_402_and_the_budget_stop_submitting(refs):
    with BflServer(key=KEY, credits=6.0, cost=2.5, latency=(0.05, 0.1)) as srv:
        backend = BflApiBackend(api_model(srv), journal=None)
        assert outcomes(backend, refs[:5]) == ["ok", "ok"] + ["insufficient_credits"] * 3
        assert (
            len(srv.submissions) == 2 and srv.refused["402"] == 1
        )  # one 402, then nothing more is sent
    with BflServer(key=KEY, cost=2.5, latency=(0.05, 0.1)) as srv:
        backend = BflApiBackend(api_model(srv, max_cost_credits=6.0), journal=None)
        assert outcomes(backend, refs[:4]) == ["ok", "ok", "budget_exhausted", "budget_exhausted"]
        assert len(srv.submissions) == 2


def test_a_journaled_task_is_polled_not_paid_again(tmp_path, refs):
    """A task submitted by a run that died before its result came: the next run polls it
    (another regional cluster's polling_url, as given) instead of submitting again."""
    with BflServer(key=KEY, latency=(0.5, 0.6)) as srv:
        client = ApiClient(api_model(srv).api, KEY)
        j = job(refs[2], 2)
        body = BflApiBackend(api_model(srv), journal=None, client=client)._payload(j)
        r = client.call("POST", srv.endpoint + "/v1/flux-tools/outpainting-v1", body)
        assert r.status == 200 and not r.body["polling_url"].startswith(
            srv.endpoint
        )  # another host:port
        journal = Journal(str(tmp_path / "out"))
        journal.write_task(
            j.key,
            {"id": r.body["id"], "polling_url": r.body["polling_url"], "cost": r.body["cost"]},
        )
        backend = BflApiBackend(api_model(srv), journal=Journal(str(tmp_path / "out")))
        img = backend.outpaint([j])[0]
        assert (
            img.shape == (160, 256, 3)
            and len(srv.submissions) == 1
            and backend.counts["resumed"] == 1
        )
        # an expired / unknown task is submitted again
        lost = job(refs[3], 15)
        Journal(str(tmp_path / "out")).write_task(
            lost.key,
            {
                "id": "nope",
                "polling_url": r.body["polling_url"].replace(r.body["id"], "nope"),
                "cost": 2.5,
            },
        )
        BflApiBackend(api_model(srv), journal=Journal(str(tmp_path / "out"))).outpaint([lost])
        assert len(srv.submissions) == 2 and "no longer retrievable" in lost.info["api_note"]


# ------------------------------------------------------------------ through outpaint run


def api_rows(photos, tmp_path, n: int) -> list[dict]:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    base = Image.open(photos["chelsea"]).convert("RGB")
    rows = []
    for i in range(n):
        base.crop((i * 7, i * 3, i * 7 + 200, i * 3 + 150)).save(src / f"p{i}.png")
        rows.append(
            {"id": f"sku-{i:03d}", "image": str(src / f"p{i}.png"), "width": 320, "height": 240}
        )
    return rows


def api_config(tmp_path, srv, rows, name="out", **api) -> dict:
    return {
        "input": {"manifest": write_manifest(tmp_path / f"{name}.parquet", rows)},
        "output": {"uri": str(tmp_path / name)},
        "model": {
            "backend": "bfl-api",
            "api": {
                "endpoint": srv.endpoint,
                "key_env": BFL_KEY_ENV,
                "poll_interval_s": 0.1,
                "poll_max_interval_s": 0.3,
                **api,
            },
        },
    }


@pytest.mark.ray
def test_outpaint_run_with_the_api(tmp_path, photos, ray_local):
    from pipeline.run.runner import run

    rows = api_rows(photos, tmp_path, 10)
    rows[3]["prompt"] = "moderate-content"
    with BflServer(key=KEY, max_active=3, latency=(0.2, 0.5)) as srv:
        result = run(
            config_mod.from_dict(api_config(tmp_path, srv, rows, max_active=3)), quiet=True
        )
        assert srv.max_seen_active <= 3 and srv.refused["429"] == 0 and len(srv.submissions) == 10
    meta = {r["id"]: r for r in pq.read_table(tmp_path / "out" / "metadata").to_pylist()}
    assert meta["sku-003"]["status"] == "failed" and meta["sku-003"]["error_code"] == "moderated"
    for rid, r in meta.items():
        assert r["api_task_id"] and r["seed"] is None and r["model"] == f"bfl-api:{srv.endpoint}"
        if rid == "sku-003":
            assert r["cost_credits"] == 0.0
            continue
        assert (
            r["status"] == "ok"
            and r["cost_credits"] == 2.5
            and r["digital_source_type"] == "compositeWithTrainedAlgorithmicMedia"
        )
        out = np.asarray(Image.open(tmp_path / "out" / "images" / f"{rid}.png").convert("RGB"))
        src = np.asarray(Image.open(r["image"]).convert("RGB"))
        assert out.shape == (240, 320, 3) and np.array_equal(
            out[45:195, 60:260], src
        )  # original pixels exact
    api = result["api"]
    assert (api["submitted"], api["ready"], api["moderated"], api["errors"]) == (10, 9, 1, 0)
    assert api["cost_credits"] == 22.5 and api["credits_left"] == 1000 - 22.5
    assert not os.listdir(tmp_path / "out" / "_api" / "tasks")  # ended tasks leave the journal
    # the key is nowhere under the output
    for dirpath, _, files in os.walk(tmp_path / "out"):
        for f in files:
            assert KEY.encode() not in Path(dirpath, f).read_bytes(), f


@pytest.mark.ray
def test_budget_stop_then_resume(tmp_path, photos, ray_local):
    from pipeline.run.runner import run

    rows = api_rows(photos, tmp_path, 8)
    with BflServer(key=KEY, max_active=2, latency=(0.1, 0.2), cost=2.5) as srv:
        first = run(
            config_mod.from_dict(
                api_config(tmp_path, srv, rows, max_active=2, max_cost_credits=10.0)
            ),
            quiet=True,
        )
        assert (
            first["manifest"]["by_status"]["ok"]
            + first["manifest"]["by_code"].get("budget_exhausted", 0)
            == 8
        )
        assert (
            first["api"]["cost_credits"] <= 10.0 + 2 * 2.5
            and first["manifest"]["by_code"]["budget_exhausted"]
        )
        second = run(
            config_mod.from_dict(api_config(tmp_path, srv, rows, max_active=2)), quiet=True
        )
        assert second["manifest"]["by_status"] == {"ok": 8, "rejected": 0, "failed": 0}
        assert len(srv.submissions) == 8  # every row paid once over both runs


def test_a_wrong_or_missing_key_stops_at_start_naming_the_variable(tmp_path, photos):
    rows = api_rows(photos, tmp_path, 2)
    with BflServer(key=KEY) as srv:
        for env, words in (
            (BFL_WRONG_KEY_ENV, f"refused the key in {BFL_WRONG_KEY_ENV}"),
            (
                "OUTPAINT_NO_SUCH_VARIABLE",
                "model.api.key_env: the environment variable OUTPAINT_NO_SUCH_VARIABLE",
            ),
        ):
            data = api_config(tmp_path, srv, rows)
            data["model"]["api"]["key_env"] = env
            cfg = write_config(tmp_path / "c.yaml", data)
            r = subprocess.run(
                [sys.executable, "-m", "pipeline", "run", cfg],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert (
                r.returncode == 2 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1
            ), r.stderr
            assert os.environ[BFL_WRONG_KEY_ENV] not in r.stderr
        assert srv.submissions == [] and srv.refused["403"] == 1


def test_sigkill_mid_run_then_rerun_pays_each_row_once(tmp_path, photos):
    """The run is killed while tasks are in flight; the rerun polls the journaled ones
    and uses the saved results: no row is submitted twice."""
    rows = api_rows(photos, tmp_path, 12)
    with BflServer(key=KEY, max_active=4, latency=(1.0, 1.5)) as srv:
        cfg = write_config(tmp_path / "c.yaml", api_config(tmp_path, srv, rows, max_active=4))
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "run", cfg],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.time() + 120
        while len(srv.submissions) < 7 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        killed_at = len(srv.submissions)
        assert 7 <= killed_at < 12
        r = subprocess.run(
            [sys.executable, "-m", "pipeline", "run", cfg, "--quiet"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr[-2000:]
        per_input = {}
        for s in srv.submissions:
            per_input[s["input"]] = per_input.get(s["input"], 0) + 1
        assert len(per_input) == 12 and max(per_input.values()) == 1, (
            per_input
        )  # every row paid exactly once
    run_json = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run_json["manifest"]["by_status"]["ok"] == 12
    assert len(os.listdir(tmp_path / "out" / "images")) == 12


def test_plan_counts_the_api_tasks(tmp_path, photos):
    """A dry run says how many tasks the API would be asked for (variants count; rows
    that fill their canvas or are rejected cost none), without calling it."""
    rows = api_rows(photos, tmp_path, 3)
    rows.append(
        {"id": "same", "image": rows[0]["image"], "width": 200, "height": 150}
    )  # fills its canvas
    rows.append({"id": "tiny", "image": rows[0]["image"], "width": 32, "height": 32})  # rejected
    rows[1]["num_variants"] = 3
    cfg = write_config(
        tmp_path / "c.yaml",
        {
            "input": {"manifest": write_manifest(tmp_path / "m.parquet", rows)},
            "output": {"uri": str(tmp_path / "out")},
            "model": {"backend": "bfl-api", "api": {"endpoint": "http://127.0.0.1:9"}},
        },
    )
    r = subprocess.run(
        [sys.executable, "-m", "pipeline", "plan", cfg, "--out", str(tmp_path / "plan")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "API tasks: 5 (one per generated row and variant" in r.stdout
    assert json.loads((tmp_path / "plan" / "summary.json").read_text())["api_tasks"] == 5
