"""Deployments: entrypoints point at real files and flows, and a cron deployment makes a real
Prefect server's scheduler create flow runs (the guard against sqlalchemy>=2.1, which
silently stops the scheduler while manual runs keep working — ECOSYSTEM.md)."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from datetime import timezone
from pathlib import Path

import httpx
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PREFECT_YAML = REPO / "deployments" / "prefect.yaml"


def _deployments() -> list[dict]:
    return yaml.safe_load(PREFECT_YAML.read_text())["deployments"]


def test_prefect_yaml_entrypoints_resolve_to_the_audit_flow():
    from prefect.flows import load_flow_from_entrypoint

    deps = _deployments()
    assert deps, "prefect.yaml declares no deployment"
    for d in deps:
        path, func = d["entrypoint"].split(":")
        assert (REPO / path).is_file(), f"entrypoint file {path} does not exist"
        fl = load_flow_from_entrypoint(f"{REPO / path}:{func}")
        assert fl.name == "otaudit-audit"
        assert set(d["parameters"]) <= set(fl.parameters.properties)
        assert "manifest" in fl.parameters.required
        # the cron is what the check-env build step prints (the manifest's schedule)
        assert [s["cron"] for s in d["schedules"]] == ["{{ check-env.stdout }}"]
    build = yaml.safe_load(PREFECT_YAML.read_text())["build"]
    step = build[0]["prefect.deployments.steps.run_shell_script"]
    assert step["id"] == "check-env" and "deployments/check_env.py" in step["script"]


def test_serve_script_builds_a_cron_deployment_of_the_audit_flow(tmp_path):
    """The deployment's cron: ``--cron``, else the manifest's ``schedule``, else the default."""
    from otaudit import config
    from otaudit.errors import InputError

    spec = importlib.util.spec_from_file_location("otaudit_serve", REPO / "deployments/serve.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    body = f"name: reg\noutput: {tmp_path / 'out'}\ndatasets:\n  - {{name: a, uri: /d/a.parquet}}\n"
    plain, weekly = tmp_path / "plain.yaml", tmp_path / "weekly.yaml"
    plain.write_text(body)
    weekly.write_text(body + 'schedule: "30 4 * * 1"\n')
    dep = mod.build_deployment(str(plain))
    assert dep.name == "nightly"
    assert dep.parameters == {"manifest": str(plain)}
    assert [s.schedule.cron for s in dep.schedules] == [config.DEFAULT_CRON]
    path, func = dep.entrypoint.split(":")
    assert func == "audit" and Path(path).resolve() == (REPO / "flows/audit.py").resolve()
    dep = mod.build_deployment(str(weekly))
    assert [s.schedule.cron for s in dep.schedules] == ["30 4 * * 1"]
    dep = mod.build_deployment(str(weekly), cron="0 5 * * *")  # --cron wins
    assert [s.schedule.cron for s in dep.schedules] == ["0 5 * * *"]
    with pytest.raises(InputError, match="not found"):
        mod.build_deployment(str(tmp_path / "missing.yaml"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """A real ``prefect server start`` (with its scheduler service) on a free loopback port."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
        "PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": "1",
    }
    env.pop("PREFECT_API_URL", None)
    log = open(home / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
         "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 300  # ~20 s on an idle 2-core machine; minutes when shared
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError((home / "server.log").read_text()[-2000:])
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("prefect server did not start in 300 s")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_cron_deployment_gets_scheduled_runs(prefect_server):
    """Create the nightly deployment from prefect.yaml via the client; the server's scheduler
    must create future runs at the cron times (02:00 UTC)."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.settings import PREFECT_API_URL, temporary_settings

    d = _deployments()[0]
    sched = d["schedules"][0]
    cron = _check_env_module().DEFAULT_CRON  # what check-env prints without a schedule

    async def scenario() -> list:
        async with get_client() as client:
            flow_id = await client.create_flow_from_name("otaudit-audit")
            dep_id = await client.create_deployment(
                flow_id=flow_id,
                name=d["name"],
                entrypoint=d["entrypoint"],
                parameters={"manifest": "/registry/manifest.yaml"},
                schedules=[
                    DeploymentScheduleCreate(
                        schedule=CronSchedule(cron=cron, timezone=sched["timezone"]),
                        active=True,
                    )
                ],
            )
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                runs = await client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep_id]))
                )
                if runs:
                    return runs
                await asyncio.sleep(0.5)
            return []

    with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
        runs = asyncio.run(scenario())
    assert runs, "the scheduler created no flow run for a cron deployment (sqlalchemy>=2.1?)"
    assert {r.state.type.value for r in runs} == {"SCHEDULED"}
    for r in runs:
        t = r.expected_start_time.astimezone(timezone.utc)
        assert (t.hour, t.minute) == (2, 0)
        assert r.parameters == {"manifest": "/registry/manifest.yaml"}


# --- refusing broken deployments (issue 17, item 5) -------------------------------------


def _check_env_module():
    spec = importlib.util.spec_from_file_location(
        "otaudit_check_env", REPO / "deployments/check_env.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_check_env_names_every_problem_and_the_cron(tmp_path):
    from otaudit import config

    mod = _check_env_module()
    assert mod.DEFAULT_CRON == config.DEFAULT_CRON
    assert mod.problems({}) == ["OTAUDIT_REPO is not set", "OTAUDIT_MANIFEST is not set"]
    bad = mod.problems({"OTAUDIT_REPO": str(tmp_path), "OTAUDIT_MANIFEST": "m.yaml"})
    assert "has no flows/audit.py" in bad[0] and "is relative" in bad[1]
    missing = mod.problems({"OTAUDIT_REPO": str(REPO), "OTAUDIT_MANIFEST": "/no/such.yaml"})
    assert missing == ["OTAUDIT_MANIFEST='/no/such.yaml' does not exist"]
    manifest = tmp_path / "m.yaml"
    manifest.write_text('name: r\noutput: /o\ndatasets: []\nschedule: "30 4 * * 1"\n')
    env = {"OTAUDIT_REPO": str(REPO), "OTAUDIT_MANIFEST": str(manifest)}
    assert mod.problems(env) == []
    assert mod.cron_of(env) == "30 4 * * 1"  # the manifest's schedule
    assert mod.cron_of({**env, "OTAUDIT_CRON": "0 5 * * *"}) == "0 5 * * *"  # override
    manifest.write_text("name: r\noutput: /o\ndatasets: []\n")
    assert mod.cron_of(env) == config.DEFAULT_CRON
    assert mod.cron_of({**env, "OTAUDIT_MANIFEST": "s3://b/m.yaml"}) == config.DEFAULT_CRON


def test_deploy_script_refuses_in_one_line_before_prefect_starts():
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTAUDIT_")}
    env["PREFECT"] = "/bin/false"  # never reached: the check fails first
    res = subprocess.run(
        ["sh", str(REPO / "deployments/deploy.sh"), "--all"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 1
    lines = (res.stdout + res.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("otaudit: error: deployment refused: OTAUDIT_REPO is not set")


def _prefect_deploy(server: str, env_extra: dict[str, str], home: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTAUDIT_")}
    env.update(PREFECT_API_URL=server, PREFECT_HOME=str(home), DO_NOT_TRACK="1", **env_extra)
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    cmd = [sys.executable, "-m", "prefect", "--no-prompt", "deploy"]
    cmd += ["--prefect-file", "deployments/prefect.yaml", "--all"]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)


def _nightly(server: str):
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def read():
        async with get_client() as client:
            try:
                return await client.read_deployment_by_name("otaudit-audit/nightly")
            except ObjectNotFound:
                return None

    with temporary_settings(updates={PREFECT_API_URL: server}):
        return asyncio.run(read())


async def _delete_deployment(dep_id) -> None:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        await client.delete_deployment(dep_id)


@pytest.mark.slow
def test_prefect_deploy_refuses_without_env_and_follows_the_manifest_schedule(
    prefect_server, tmp_path
):
    """The real ``prefect deploy`` against a real server: without OTAUDIT_REPO/MANIFEST the
    check-env build step stops it (exit != 0, our one-line reason, no deployment); with them
    the deployment is created with the manifest's ``schedule`` as its cron."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def pool():
        async with get_client() as client:
            await client.create_work_pool(WorkPoolCreate(name="otaudit", type="process"))

    with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
        asyncio.run(pool())
    old = _nightly(prefect_server)  # the cron test's, when it ran first on this server
    if old is not None:
        with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
            asyncio.run(_delete_deployment(old.id))
    assert _nightly(prefect_server) is None

    res = _prefect_deploy(prefect_server, {}, tmp_path)
    assert res.returncode != 0
    refusal = [x for x in res.stderr.splitlines() if x.startswith("otaudit: error:")]
    assert refusal and "OTAUDIT_REPO is not set; OTAUDIT_MANIFEST is not set" in refusal[0]
    assert _nightly(prefect_server) is None  # nothing was created

    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        f"name: reg\noutput: {tmp_path / 'out'}\ndatasets:\n  - {{name: a, uri: /d/a.parquet}}\n"
        'schedule: "30 4 * * 1"\n'
    )
    ok = {"OTAUDIT_REPO": str(REPO), "OTAUDIT_MANIFEST": str(manifest)}
    res = _prefect_deploy(prefect_server, ok, tmp_path)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    dep = _nightly(prefect_server)
    assert dep is not None and dep.parameters == {"manifest": str(manifest)}
    assert dep.work_pool_name == "otaudit"
    assert [s.schedule.cron for s in dep.schedules] == ["30 4 * * 1"]
    step = dep.pull_steps[0]["prefect.deployments.steps.set_working_directory"]
    assert step["directory"] == str(REPO)
