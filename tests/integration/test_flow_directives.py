"""A script's #SBATCH directives in jobs the server makes itself, on real stores: a workflow
step's and a rule template's script fill what the step or template did not write (what it
wrote wins), and a refused directive is an error naming the step or rule and the line: when
the run is created or the rule applied, or (a directive holding an event template) when
the rule acts, as a rule.failed event."""

from __future__ import annotations

from bridgehead.controllers.rules import RuleEngine
from bridgehead.controllers.runner import WorkflowRunner
from bridgehead.domain.events import Event
from bridgehead.store import JobFilter
from tests.integration.test_api import Api, api  # noqa: F401 - the fixture

FLOW = """\
name: w
params: {cores: 2}
defaults: {cluster: c2, resources: {memory: 1G}}
steps:
  - id: a
    resources: {walltime: 60}
    script: |
      #!/bin/sh
      #SBATCH -c 8 --mem=4G -t 10
      #SBATCH --job-name=named
      echo a
  - id: b
    script: |
      #!/bin/sh
      #SBATCH --ntasks={{ params.cores }}
      echo b
"""


async def start(bh: Api, spec: str, **params: object) -> object:
    return await bh.http.post("/v1/workflows/runs", headers=bh.client,
                              json={"spec": spec, "filename": "w.yaml", "params": params})


async def test_a_steps_directives_fill_what_the_step_did_not_write(api: Api) -> None:  # noqa: F811
    r = await start(api, FLOW, cores=3)
    assert r.status_code == 201, r.text
    await WorkflowRunner(api.store).advance(r.json()["id"])
    jobs = {j.spec.labels["step"]: j for j in await api.store.list_jobs(JobFilter())}
    a, b = jobs["a"].spec, jobs["b"].spec
    # -c 8 is taken; memory (the defaults wrote it) and walltime (the step did) win
    assert (a.resources.cores, a.resources.memory_mb, a.resources.walltime_s) == (8, 1024, 60)
    assert a.name == "named" and b.name == "w.b"  # --job-name names it, else <workflow>.<step>
    assert (b.resources.cores, b.resources.memory_mb) == (3, 1024)  # the run's param


async def test_a_refused_directive_fails_the_run_at_creation(api: Api) -> None:  # noqa: F811
    refused = FLOW.replace("#SBATCH --job-name=named", "#SBATCH --export=ALL")
    r = await start(api, refused)
    assert r.status_code == 400
    assert r.json()["detail"] == (
        "w.yaml:7: steps[0].script: step 'a': script line 3: #SBATCH --export=ALL: not "
        "allowed: the job's environment is its env, which Bridgehead passes")
    r = await start(api, FLOW, cores="x")  # a directive made of a param: at run creation
    assert r.status_code == 400
    assert "step 'b': script line 2: #SBATCH --ntasks=x: expected a positive whole number" \
        in r.json()["detail"]
    assert await api.store.list_runs() == [] and await api.store.list_jobs(JobFilter()) == []


def rule(script: str, **template: object) -> dict[str, object]:
    return {"name": "reduce", "match": {"type": "file.created"}, "actions": [
        {"submit_job": {"cluster": "c2", "script": script, **template}}]}


async def test_a_rule_with_a_refused_directive_is_not_applied(api: Api) -> None:  # noqa: F811
    script = "#!/bin/sh\n#SBATCH -c 2\n#SBATCH --wrap=x\necho {{ data.path }}\n"
    r = await api.http.put("/v1/rules", headers=api.admin, json={"rules": [rule(script)]})
    assert r.status_code == 400
    assert r.json()["detail"] == (
        "rules[0].actions[0].submit_job.script: rule 'reduce': script line 3: #SBATCH "
        "--wrap=x: not allowed: the script itself is the job")
    assert await api.store.list_rules() == []


async def test_a_rules_directives_fill_its_job_or_fail_its_action(api: Api) -> None:  # noqa: F811
    script = ("#!/bin/sh\n#SBATCH -c {{ data.cores }} -t 10 --mem=2G\n#SBATCH -J from-script\n"
              "reduce {{ data.path }}\n")
    r = await api.http.put("/v1/rules", headers=api.admin, json={
        "rules": [rule(script, resources={"walltime": 60})]})
    assert r.status_code == 200, r.text
    await api.store.append_events([
        Event(type="file.created", source="watch", subject="f", id="1",
              data={"path": "/d/1", "cores": 4}),
        Event(type="file.created", source="watch", subject="f", id="2",
              data={"path": "/d/2", "cores": "four"})])
    await RuleEngine(api.store).handle(await api.store.events(after=0, limit=100))
    [job] = await api.store.list_jobs(JobFilter(labels=(("rule", "reduce"),)))
    res = job.spec.resources
    assert (res.cores, res.memory_mb, res.walltime_s, job.spec.name) == (4, 2048, 60,
                                                                         "from-script")
    [failed] = [e for e in await api.store.events(after=0, limit=100)
                if e.type == "bridgehead.rule.failed"]
    assert failed.data["rule"] == "reduce" and failed.data["error"] == (
        "script line 2: #SBATCH -c four: expected a positive whole number")
