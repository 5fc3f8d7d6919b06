"""#SBATCH directives read as sbatch reads them (src/sbatch/opt.c _opt_batch_script and
_get_argument; sbatch(1): "Once the first non-comment, non-whitespace line has been reached in
the script, no more #SBATCH directives will be processed"), and applied to a job."""

from __future__ import annotations

import pytest

from bridgehead.domain import sbatch
from bridgehead.domain.jobs import JobSpec, Resources
from bridgehead.errors import InvalidSpec


def opts(script: str) -> list[tuple[str, str | None, int]]:
    return [(d.option, d.value, d.line) for d in sbatch.directives(script)]


@pytest.mark.parametrize(("script", "expected"), [
    # long forms, = or a space; short forms, attached or not; clustered flags
    ("#!/bin/sh\n#SBATCH --cpus-per-task=8\n", [("cpus-per-task", "8", 2)]),
    ("#!/bin/sh\n#SBATCH --ntasks 4\n", [("ntasks", "4", 2)]),
    ("#!/bin/sh\n#SBATCH -n 4 -c8 -N 2-3\n",
     [("ntasks", "4", 2), ("cpus-per-task", "8", 2), ("nodes", "2-3", 2)]),
    ("#!/bin/sh\n#SBATCH -Hn4\n", [("hold", None, 2), ("ntasks", "4", 2)]),
    ("#!/bin/sh\n#SBATCH -t 10 -p debug -A lab -q low -J x -o o.txt -e e.txt -a 0-3 -G 2\n",
     [("time", "10", 2), ("partition", "debug", 2), ("account", "lab", 2), ("qos", "low", 2),
      ("job-name", "x", 2), ("output", "o.txt", 2), ("error", "e.txt", 2),
      ("array", "0-3", 2), ("gpus", "2", 2)]),
    # a '#' after the options starts a comment; quotes group; a backslash escapes
    ("#!/bin/sh\n#SBATCH --mem=4G  # four gigabytes -n 9\n", [("mem", "4G", 2)]),
    ("#!/bin/sh\n#SBATCH -J 'my job' --output=\"a b.out\"\n",
     [("job-name", "my job", 2), ("output", "a b.out", 2)]),
    ("#!/bin/sh\n#SBATCH -J a\\#b\n", [("job-name", "a#b", 2)]),
    # blank lines and comments (also indented) do not stop reading; the first command does
    ("#!/bin/bash\n\n# setup\n   # indented comment\n#SBATCH -n 2\necho hi\n#SBATCH -n 9\n",
     [("ntasks", "2", 5)]),
    ("#!/bin/sh\nexport X=1\n#SBATCH -n 2\n", []),
    # only lines starting exactly with #SBATCH: not ' #SBATCH', '# SBATCH', '#sbatch'
    ("#!/bin/sh\n #SBATCH -n 2\n# SBATCH -n 3\n#sbatch -n 4\n", []),
    # flags, optional values, unknown options passed on as written
    ("#!/bin/sh\n#SBATCH --exclusive --mail-type END --constraint=haswell\n",
     [("exclusive", None, 2), ("mail-type", "END", 2), ("constraint", "haswell", 2)]),
    ("#!/bin/sh\n#SBATCH --workdir=/data\n", [("chdir", "/data", 2)]),
])
def test_directives_are_read_as_sbatch_reads_them(script: str, expected: list) -> None:
    assert opts(script) == expected


@pytest.mark.parametrize(("script", "message"), [
    ("#!/bin/sh\n#SBATCH -J 'open\n", "script line 2: unmatched '"),
    ("#!/bin/sh\n\n#SBATCH -n 2 foo\n", "script line 3: 'foo' is not an option"),
    ("#!/bin/sh\n#SBATCH -Z 1\n", "script line 2: -Z is not an sbatch option"),
    ("#!/bin/sh\n#SBATCH -n\n", "script line 2: -n needs a value"),
    ("#!/bin/sh\n#SBATCH -n 1\n#SBATCH hetjob\n#SBATCH -n 2\n", "script line 3: heterogeneous"),
    ("#!/bin/sh\n#SBATCH --comm=x\n", "write the option's full name (--comment)"),
])
def test_what_sbatch_refuses_is_refused_with_its_line(script: str, message: str) -> None:
    with pytest.raises(InvalidSpec, match=message.replace("(", r"\(").replace(")", r"\)")):
        sbatch.directives(script)


@pytest.mark.parametrize(("text", "seconds"), [
    ("10", 600), ("1:30", 90), ("2:00:00", 7200), ("1-0", 86400), ("1-2", 93600),
    ("1-2:30", 95400), ("0-0:00:05", 5), ("UNLIMITED", None), ("infinite", None)])
def test_sbatch_time_formats(text: str, seconds: int | None) -> None:
    assert sbatch.time_s(text) == seconds


@pytest.mark.parametrize("text", ["1:2:3:4", "1h", "-5", "1-", ""])
def test_bad_times_are_errors(text: str) -> None:
    with pytest.raises(ValueError):
        sbatch.time_s(text)


@pytest.mark.parametrize(("text", "mb"), [
    ("4000", 4000), ("500M", 500), ("4G", 4096), ("1T", 1 << 20), ("2048K", 2), ("1k", 1),
    ("4g", 4096)])
def test_sbatch_memory_units_default_megabytes(text: str, mb: int) -> None:
    assert sbatch.memory_mb(text) == mb


def spec(script: str, **kw: object) -> JobSpec:
    return JobSpec(cluster="alpha", script=script, **kw)  # type: ignore[arg-type]


HEAD = "#!/bin/sh\n"


def test_resource_directives_become_the_request() -> None:
    s = sbatch.apply(spec(HEAD + "#SBATCH -n 2 -c 4 -N 1-2 --mem=2G -t 1-0 -p debug -A lab\n"
                          "#SBATCH -J named --gres=gpu:tesla:2 -a 0-9%2 -D /data/run\n"),
                     given=())
    r = s.resources
    assert (r.cores, r.nodes, r.memory_mb, r.walltime_s, r.partition, r.account, r.gpus) == (
        8, 1, 2048, 86400, "debug", "lab", 2)
    assert (s.name, s.array, s.working_dir) == ("named", "0-9%2", "/data/run")


@pytest.mark.parametrize(("directives", "cores", "nodes"), [
    ("-N 2 --ntasks-per-node=4", 8, 2), ("-N 3", 3, 3), ("-c 8", 8, 1),
    ("--ntasks-per-node=2 -c 2", 4, 1), ("-n 2 -n 3", 3, 1)])
def test_cores_count_tasks_times_cpus(directives: str, cores: int, nodes: int) -> None:
    r = sbatch.apply(spec(f"{HEAD}#SBATCH {directives}\n"), given=()).resources
    assert (r.cores, r.nodes) == (cores, nodes)


def test_what_the_submit_gave_wins() -> None:
    script = HEAD + "#SBATCH -c 8 -N 2 -t 10 -J dir --mem=1G\n"
    s = sbatch.apply(spec(script, name="mine", resources=Resources(cores=2, walltime_s=60)),
                     given={"cores", "walltime_s", "name"})
    assert (s.resources.cores, s.resources.walltime_s, s.name) == (2, 60, "mine")
    assert (s.resources.nodes, s.resources.memory_mb) == (2, 1024)  # not given: directives


def test_caps_are_kept_to_clamp_directives() -> None:
    s = sbatch.apply(spec(HEAD + "#SBATCH -c 8\n", resources=Resources(max_cores=4)), given=())
    assert (s.resources.cores, s.resources.max_cores, s.resources.capped_cores) == (8, 4, 4)


@pytest.mark.parametrize(("line", "message"), [
    ("--comment=x", "line 3: #SBATCH --comment=x: not allowed: Bridgehead tags"),
    ("--export=NONE", "line 3: #SBATCH --export=NONE: not allowed"),
    ("--wrap='echo hi'", "not allowed: the script itself is the job"),
    ("-W", "line 3: #SBATCH -W: not allowed: the agent follows"),
    ("-M beta", "not allowed: the job's cluster"),
    ("--parsable", "not allowed"),
    ("-c many", "line 3: #SBATCH -c many: expected a positive whole number"),
    ("-t 2h", "expected minutes, M:S"),
    ("--mem=lots", "expected a size"),
    ("-N 3-2", "expected N or MIN-MAX"),
    ("-o /x/%t.out", "line 3: #SBATCH -o /x/%t.out: %t is not supported in a log path"),
    ("-e /x/%n.err", "%n is not supported in a log path"),
    ("-D relative/dir", "give an absolute path"),
    ("--array=5-1", "line 3: #SBATCH --array=5-1: array '5-1'"),
])
def test_refused_directives_name_their_line(line: str, message: str) -> None:
    with pytest.raises(InvalidSpec, match=message.replace("(", r"\(")):
        sbatch.apply(spec(f"{HEAD}# a comment\n#SBATCH {line}\n"), given=())


def test_other_directives_stay_in_the_script_untouched() -> None:
    s = spec(HEAD + "#SBATCH --qos=low --mail-type=END --exclusive --mem-per-cpu=1G\n")
    assert sbatch.apply(s, given=()) == s


def test_given_by_default_counts_what_differs_from_the_defaults() -> None:
    s = spec(HEAD, name="n", resources=Resources(cores=1, gpus=2, max_cores=4))
    assert sbatch.given_by_default(s) == {"gpus", "name"}


@pytest.mark.parametrize(("pattern", "path"), [
    ("slurm-%j.out", "/w/slurm-42.out"),
    ("/logs/%x-%u-%A_%a.%%.out", "/logs/job-alice-42_4294967294.%.out"),
    ("%5j-%J.txt", "/w/00042-42.txt"),
    ("none", "/dev/null"),
    ("%N-%j.out", "/w/node01-42.out"),
    ("/logs/%5N.%%N", "/logs/node01.%N"),
])
def test_log_paths_expand_sbatch_patterns(pattern: str, path: str) -> None:
    assert sbatch.log_path(pattern, working_dir="/w", job_id="42", name="job",
                           user="alice", node="node01") == path


def test_a_node_named_log_path_is_taken_and_waits_for_the_node() -> None:
    s = sbatch.apply(spec(HEAD + "#SBATCH -o %x-%N.out -e /logs/%N.err\n"), given=())
    want = sbatch.asked(sbatch.directives(s.script or ""))
    assert (want.output, want.error) == ("%x-%N.out", "/logs/%N.err")
    assert [sbatch.needs_node(p) for p in ("%x-%N.out", "a-%%N.out", "none")] == [
        True, False, False]
    with pytest.raises(ValueError, match="%N needs the job's node"):
        sbatch.log_path("%N.out", working_dir="/w", job_id="42", name="job", user="alice")


@pytest.mark.parametrize(("nodelist", "first"), [
    ("node[01-03]", "node01"), ("localhost", "localhost"), ("beta1,beta2", "beta1"),
    ("gpu[7,9-12],cpu1", "gpu7"), ("rack[2-3]n[05-06]", "rack2n05"), (" node5 ", "node5"),
    ("", None), ("None assigned", None), ("n/a", None), ("(null)", None),
])
def test_the_first_host_of_a_node_list(nodelist: str, first: str | None) -> None:
    assert sbatch.first_host(nodelist) == first
