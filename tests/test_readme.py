"""Every fenced ```bash command and ```python block of README.md and of the pages in docs/ works as written.

Bash: `make <target>` must name a target of the Makefile (checked with `make -n`, nothing runs); a
`.venv/bin/python -m experiments.<module>` command runs through its real entry point in a subprocess, with the
README's flags, on small data files this test writes where the command's env vars and dataset names point:
experiments.train up to the start of training (flags, config checks, dataset, env, workdir), and the first training
command for real at the `smoke` preset; other absl modules have their flags parsed. A command of any other shape
fails the test with how to add it, so no README command goes unchecked. Python: each block runs in a fresh namespace
with nothing injected.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")
DOCS = os.path.join(REPO, "docs")


def documents() -> list[str]:
  """README.md, then every page of docs/ (paths relative to the repository root)."""
  pages = sorted(f"docs/{p}" for p in os.listdir(DOCS) if p.endswith(".md")) if os.path.isdir(DOCS) else []
  return ["README.md", *pages]
VENV_PYTHON = ".venv/bin/python"  # the Makefile's $(VENV)/bin/python (checked below)
# experiments.* modules whose flags are absl's, so their flags can be parsed without running them.
ABSL_MODULES = ("experiments.train", "experiments.reproduce_d4rl", "experiments.check_antmaze",
                "experiments.make_dataset", "experiments.bench", "experiments.validate")
DATA_ENV_VARS = ("D4RL_DATASET_DIR", "MINARI_DATASETS_PATH")  # pointed at this test's own small data
HOW_TO_ADD = ("tests/test_readme.py checks README commands of these shapes only: `make <target> [VAR=value ...]`, "
              f"`[{'|'.join(DATA_ENV_VARS)}=...] {VENV_PYTHON} -m <one of {', '.join(ABSL_MODULES)}> --flags`. "
              "Write the command in one of these shapes, or teach `classify` (and a check) in tests/test_readme.py "
              "the new shape")


def fenced_blocks(text: str, lang: str) -> list[tuple[int, str]]:
  """(first line number, code) of every ```<lang> block of a markdown text."""
  blocks, lines = [], text.splitlines()
  i = 0
  while i < len(lines):
    if lines[i].strip() == f"```{lang}":
      end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
      blocks.append((i + 2, "\n".join(lines[i + 1:end])))
      i = end
    i += 1
  return blocks


def bash_commands(block: str, first_line: int) -> list[tuple[int, str]]:
  """(line number, command) of a bash block: backslash continuations joined, blank and comment-only lines dropped."""
  commands, pending, start = [], "", first_line
  for offset, line in enumerate(block.splitlines()):
    if not pending:
      start = first_line + offset
    pending += line.rstrip()
    if pending.endswith("\\"):
      pending = pending[:-1] + " "
      continue
    if shlex.split(pending, comments=True):
      commands.append((start, pending))
    pending = ""
  return commands


@dataclasses.dataclass
class Command:
  kind: str                 # "make" | "module"
  line: int                 # in `file`
  text: str
  env: dict[str, str]       # leading VAR=value assignments
  target: str = ""          # make
  module: str = ""          # module
  args: list[str] = dataclasses.field(default_factory=list)
  file: str = "README.md"

  @property
  def where(self) -> str:
    return f"{self.file} line {self.line}"


def classify(line: int, text: str, file: str = "README.md") -> Command:
  """The checked shape of one README command; raises AssertionError naming the command and how to add its shape."""
  words = shlex.split(text, comments=True)
  env = {}
  while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
    name, value = words.pop(0).split("=", 1)
    env[name] = value
  unknown = f"{file} line {line}: command {text.strip()!r} has a shape this test does not check. {HOW_TO_ADD}"
  if words[:1] == ["make"] and len(words) >= 2 and not env:
    targets = [w for w in words[1:] if "=" not in w and not w.startswith("-")]
    assert len(targets) == 1, unknown
    return Command("make", line, text, env, target=targets[0], args=words[1:], file=file)
  if words[:2] == [VENV_PYTHON, "-m"] and len(words) >= 3 and words[2] in ABSL_MODULES:
    assert set(env) <= set(DATA_ENV_VARS), unknown
    return Command("module", line, text, env, module=words[2], args=words[3:], file=file)
  raise AssertionError(unknown)


def readme_commands() -> list[Command]:
  """The bash commands of README.md and docs/*.md, in that order."""
  commands = []
  for doc in documents():
    text = open(os.path.join(REPO, doc)).read()
    commands += [classify(n, cmd, doc) for start, block in fenced_blocks(text, "bash")
                 for n, cmd in bash_commands(block, start)]
  return commands


# ---------------------------------------------------------------------------------------------------------------
# The parser itself (fast): the oracle for what the README holds, and the refusal of unknown shapes.


def test_bash_blocks_are_split_into_commands():
  block = "make demo     # comment\n\nX=1 \\\n  .venv/bin/python -m experiments.train --a=1 \\\n    --b=2   # c\n"
  assert [(n, shlex.split(c, comments=True)) for n, c in bash_commands(block, 10)] == [
      (10, ["make", "demo"]), (12, ["X=1", ".venv/bin/python", "-m", "experiments.train", "--a=1", "--b=2"])]
  text = "intro\n```bash\nmake test\n```\n```python\nx = 1\n```\n"
  assert fenced_blocks(text, "bash") == [(3, "make test")] and fenced_blocks(text, "python") == [(6, "x = 1")]


@pytest.mark.parametrize("text", [
    "python -m experiments.train --algo=srpo",            # not the virtualenv's interpreter: fails on a fresh clone
    ".venv/bin/python -m experiments.demo",                # argparse module: flags cannot be checked without running
    ".venv/bin/python experiments/train.py --algo=swg",
    "FOO=1 .venv/bin/python -m experiments.train --algo=swg",
    "pip install swg-srpo-jax",
])
def test_unknown_command_shapes_fail_with_how_to_add_them(text):
  with pytest.raises(AssertionError, match=r"line 7: command .* has a shape this test does not check.*teach"):
    classify(7, text)


def test_the_pages_in_docs_are_checked_too():
  commands = readme_commands()
  assert {c.file for c in commands} >= {"README.md", "docs/datasets.md", "docs/training.md"}
  assert any(c.file == "docs/datasets.md" and c.target == "datasets" for c in commands)


def test_readme_venv_is_the_makefiles():
  makefile = open(os.path.join(REPO, "Makefile")).read()
  assert re.search(r"^VENV \?= \.venv$", makefile, re.M) and "PY := $(VENV)/bin/python" in makefile


# ---------------------------------------------------------------------------------------------------------------
# Running the README's commands


def make_targets_exist(commands: list[Command]) -> None:
  for c in commands:
    out = subprocess.run(["make", "-n", *c.args], cwd=REPO, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "MAKEFLAGS": ""})
    assert out.returncode == 0, f"{c.where}: `make -n {' '.join(c.args)}` failed: {out.stderr[-500:]}"


def flag_value(args: list[str], name: str) -> str | None:
  for i, a in enumerate(args):
    if a.startswith(f"--{name}="):
      return a.split("=", 1)[1]
    if a == f"--{name}" and i + 1 < len(args):
      return args[i + 1]
  return None


def train_dataset(args: list[str]) -> str:
  """The dataset a train command names: --dataset, else the dataset inside --config=path:<dataset>:<preset>."""
  dataset = flag_value(args, "dataset")
  if dataset:
    return dataset
  parts = (flag_value(args, "config") or "").split(":")
  assert len(parts) == 3, f"cannot tell the dataset of train command {args}"
  return parts[1]


def train_datasets(args: list[str]) -> list[str]:
  """Every dataset a train command names (--dataset=a,b trains a population of them)."""
  return train_dataset(args).split(",")


def population_settings(args: list[str]) -> set[tuple]:
  """The (dataset, swept values) settings a population command asks for (--dataset=a,b x every --sweep combination);
  empty for a plain run."""
  import itertools

  sweeps = [a.split("=", 1)[1] for a in args if a.startswith("--sweep=")]
  datasets = train_datasets(args)
  if len(datasets) == 1 and not sweeps:
    return set()
  fields = [(text.split("=", 1)[0], [float(v) for v in text.split("=", 1)[1].split(",")]) for text in sweeps]
  combos = itertools.product(*(values for _, values in fields))
  return {(d, tuple(sorted(zip([f for f, _ in fields], c)))) for c in list(combos) for d in datasets}


def write_dataset(name: str, d4rl_dir: str, minari_root: str) -> None:
  """A small dataset stored where the loaders look for `name`: a D4RL file with the env's dims, or the built-in
  Minari Reacher dataset (a few episodes)."""
  from common.data import D4RL_DATASETS
  from experiments.make_dataset import DEFAULT_ID
  from tests.datasets import d4rl_arrays, write_hdf5

  if name in D4RL_DATASETS:
    spec = D4RL_DATASETS[name]
    arrays = d4rl_arrays((30, 40, 25, 20), ("terminal",) * 4, obs_dim=spec.obs_dim, action_dim=spec.action_dim)
    write_hdf5(os.path.join(d4rl_dir, spec.filename), arrays)
  elif name == DEFAULT_ID:
    code = f"from experiments.make_dataset import make_reacher_dataset; make_reacher_dataset({name!r}, episodes=6, "\
           "reference_episodes=2)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=300,
                   env={**os.environ, "MINARI_DATASETS_PATH": minari_root})
  else:
    pytest.fail(f"README dataset {name!r}: teach write_dataset in tests/test_readme.py to write a small one")


# Runs an absl entry point as `python -m <module> <flags>` would, but stops where the README command's effects would
# start: "flags" parses the flags only; "until-training" runs experiments.train up to the training call (flags,
# config checks, dataset loading and its env check, the workdir) and prints the resolved config.
HARNESS = r"""
import json, runpy, sys, types
from absl import app, flags

module, mode = sys.argv[1], sys.argv[2]
if mode == "flags":
  def parse_only(main, argv=None, **kwargs):
    flags.FLAGS(sys.argv if argv is None else argv)
    print("FLAGS-PARSED")
    sys.exit(0)
  app.run = parse_only
else:
  from common import run as run_lib
  from experiments import report

  real_package = report.algorithm_package

  def until_training(algo):
    def train_and_evaluate(config, workdir):
      data, info = run_lib.load_run_data(config)
      run_lib.prepare_workdir(workdir, config, algo)
      print("RESOLVED " + json.dumps({"algo": algo, "config": config.to_dict(), "obs_dim": data.obs_dim,
                                      "action_dim": data.action_dim, "env_id": info["eval_env_id"]}, default=str))
      sys.exit(0)
    def train_and_evaluate_population(settings, workdir):
      from common.run import populations
      datasets, infos = run_lib.load_population_data([s.config for s in settings])
      run_lib.prepare_workdir(workdir, populations.population_config(settings), algo)
      data = next(iter(datasets.values()))
      print("RESOLVED " + json.dumps({"algo": algo, "config": settings[0].config.to_dict(), "obs_dim": data.obs_dim,
                                      "action_dim": data.action_dim,
                                      "env_id": next(iter(infos.values()))["eval_env_id"],
                                      "settings": [{"dataset": s.config.dataset, "values": dict(s.values)}
                                                   for s in settings]}, default=str))
      sys.exit(0)
    real = real_package(algo)
    return types.SimpleNamespace(configs=real.configs, get_config=real.get_config,
                                 train_and_evaluate=train_and_evaluate,
                                 train_and_evaluate_population=train_and_evaluate_population)
  report.algorithm_package = until_training
sys.argv = [module, *sys.argv[3:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def smoke_args(args: list[str], workdir: str) -> list[str]:
  """A train command's flags at the smoke preset (same dataset), writing to `workdir`, evaluated briefly."""
  config = flag_value(args, "config")
  out = [a for a in args if not a.startswith(("--workdir", "--config="))]
  if config:
    path, _, rest = config.partition(":")
    out.append(f"--config={path}:{':'.join(rest.split(':')[:-1] + ['smoke']) if ':' in rest else 'smoke'}")
  else:
    out.append(f"--config={flag_value(args, 'algo')}_jax/configs.py:smoke")
  return out + [f"--workdir={workdir}", "--config.eval.episodes=1", "--config.eval.max_episode_steps=10"]


def expected_config(c: Command) -> dict:
  """What the command's flags say the resolved config holds (the oracle for the until-training run)."""
  want = {"dataset": train_datasets(c.args)[0]}
  seeds = flag_value(c.args, "seeds")
  if seeds:
    want["seeds"] = [int(s) for s in seeds.split(",")]
  for a in c.args:
    if a.startswith("--config.") and "=" in a:
      path, value = a[len("--config."):].split("=", 1)
      want[path] = json.loads(value) if re.match(r"^-?[\d.e+-]+$", value) else value
  return want


def run_module(c: Command, mode: str, args: list[str], env: dict) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-c", HARNESS, c.module, mode, *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)


def test_every_readme_bash_command_runs_as_written(tmp_path):
  commands = readme_commands()
  assert commands, "README.md has no ```bash block"
  make_targets_exist([c for c in commands if c.kind == "make"])
  modules = [c for c in commands if c.kind == "module"]
  d4rl_dir, minari_root = str(tmp_path / "d4rl"), str(tmp_path / "minari")
  os.makedirs(d4rl_dir)
  env = {**os.environ, "D4RL_DATASET_DIR": d4rl_dir, "MINARI_DATASETS_PATH": minari_root}
  trains = [c for c in modules if c.module == "experiments.train"]
  for name in sorted({d for c in trains for d in train_datasets(c.args)}):
    write_dataset(name, d4rl_dir, minari_root)

  for i, c in enumerate(modules):
    where = f"{c.where}: {c.text.strip()}"
    if c.module != "experiments.train":
      out = run_module(c, "flags", c.args, env)
      assert out.returncode == 0 and "FLAGS-PARSED" in out.stdout, f"{where}\n{out.stderr[-2000:]}"
      continue
    # As written (its own preset and workdir, here under tmp_path), up to the start of training.
    args = [a for a in c.args if not a.startswith("--workdir")] + [f"--workdir={tmp_path / f'run{i}'}"]
    out = run_module(c, "until-training", args, env)
    assert out.returncode == 0, f"{where}\n{out.stderr[-3000:]}"
    resolved = json.loads(out.stdout.split("RESOLVED ", 1)[1])
    assert resolved["algo"] == flag_value(c.args, "algo"), where
    for path, value in expected_config(c).items():
      node = resolved["config"]
      for key in path.split("."):
        node = node[key]
      assert node == value, f"{where}: config.{path} = {node!r}, the command says {value!r}"
    assert resolved["env_id"] and resolved["obs_dim"] > 0, where
    settings = {(st["dataset"], tuple(sorted((k, float(v)) for k, v in st["values"].items())))
                for st in resolved.get("settings", [])}
    assert settings == population_settings(c.args), f"{where}: the population's settings"
    assert os.path.exists(tmp_path / f"run{i}" / "config.json"), where

  # The first training command for real, at the smoke preset: trained, evaluated, reported.
  first = trains[0]
  workdir = tmp_path / "real"
  out = subprocess.run([sys.executable, "-m", first.module, *smoke_args(first.args, str(workdir))], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, f"{first.where}\n{out.stderr[-3000:]}"
  summary = json.load(open(workdir / "summary.json"))
  assert summary["dataset"] == train_dataset(first.args) and summary["eval"], summary
  for ev in summary["eval"].values():
    assert np.all(np.isfinite(ev["returns"])), ev


# ---------------------------------------------------------------------------------------------------------------
# Python blocks


def test_every_readme_python_block_runs():
  blocks = [(doc, line, code) for doc in documents()
            for line, code in fenced_blocks(open(os.path.join(REPO, doc)).read(), "python")]
  assert any(doc == "README.md" for doc, _, _ in blocks), "README.md has no ```python block"
  for doc, line, code in blocks:
    namespace = {"__name__": "__readme__"}  # nothing injected: the block makes its own imports and data
    exec(compile(code, f"{doc}:{line}", "exec"), namespace)
    if "swg_jax.sample(" in code:
      check_swg_sample_temperature(code, namespace)


def check_swg_sample_temperature(code: str, namespace: dict) -> None:
  """The snippet samples at temperature 1 and says why: at the default temperature 0 every call with one
  observation gives the same action (checked here on the snippet's own model)."""
  import jax
  import swg_jax

  assert "temperature=1.0" in code and re.search(r"default temperature 0 .*same", code, re.S), code
  model = namespace["model"]
  # The snippet's own call shape (64 states, DPM-Solver++ 10 steps), all 64 rows one observation: at temperature 0
  # every row and every key give one action; at temperature 1 they differ.
  one = np.repeat(np.asarray(namespace["observations"][:1]), 64, axis=0)
  opts = dict(guidance_scale=1.0, sampler="dpm", num_steps=10)
  at_zero = np.asarray(swg_jax.sample(model, one, jax.random.PRNGKey(5), **opts)[0])
  again = np.asarray(swg_jax.sample(model, one, jax.random.PRNGKey(6), **opts)[0])
  np.testing.assert_array_equal(at_zero, again)
  np.testing.assert_array_equal(at_zero, np.broadcast_to(at_zero[:1], at_zero.shape))
  at_one = np.asarray(swg_jax.sample(model, one, jax.random.PRNGKey(5), temperature=1.0, **opts)[0])
  # Many distinct actions (not all 64: samples that land outside [-1, 1] are clipped to the same corner).
  assert np.unique(at_one.round(6), axis=0).shape[0] > 8
