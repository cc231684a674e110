"""scripts/unpinned_requirements.py: the requirement list `make test-latest` installs, derived from pyproject.toml."""
import pathlib
import re
import subprocess
import sys
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import unpinned_requirements as ur  # noqa: E402

PYPROJECT = {"project": {
    "dependencies": ["jax==0.10.2", "gymnasium[mujoco]==1.4.0", "Orbax_Checkpoint>=0.12,<0.13", "tqdm"],
    "optional-dependencies": {"test": ["pytest==9.2.0"], "cuda12": ["jax[cuda12]==0.10.2"]}}}


def test_pins_are_stripped_and_extras_kept():
  assert ur.unpinned_requirements(PYPROJECT, ["test"], []) == [
      "jax", "gymnasium[mujoco]", "Orbax_Checkpoint", "tqdm", "pytest"]


def test_overrides_replace_by_normalised_name_and_unknown_ones_are_appended():
  got = ur.unpinned_requirements(PYPROJECT, [], ["jax[cuda13]==0.11.2", "orbax-checkpoint==0.11.0", "optax==0.2.5"])
  assert got == ["jax[cuda13]==0.11.2", "gymnasium[mujoco]", "orbax-checkpoint==0.11.0", "tqdm", "optax==0.2.5"]


def test_unknown_extra_is_one_error_line():
  with pytest.raises(SystemExit, match=r"error: --extras names \['gpu'\]"):
    ur.unpinned_requirements(PYPROJECT, ["gpu"], [])


def test_the_real_pyproject_every_dependency_once_and_unpinned():
  out = subprocess.run([sys.executable, str(ROOT / "scripts" / "unpinned_requirements.py")], check=True,
                       capture_output=True, text=True).stdout.split()
  with open(ROOT / "pyproject.toml", "rb") as f:
    project = tomllib.load(f)["project"]
  pinned = project["dependencies"] + project["optional-dependencies"]["test"]
  assert [re.split(r"[=<>!~;\[ ]", line)[0] for line in out] == [re.split(r"[=<>!~;\[ ]", r)[0] for r in pinned]
  assert not any(re.search(r"[=<>!~]", line) for line in out)
  assert "jax" in out and "flax" in out and "orbax-checkpoint" in out
