"""Print the project's requirements without their version pins, one per line (for `make test-latest`).

The pins live in one place, pyproject.toml; this strips them so pip resolves the newest releases. Requirements given
as arguments (e.g. `jax==0.11.2`, to match an accelerator image) replace the unpinned entry of the same name.

  python scripts/unpinned_requirements.py [--extras=test] [NAME==VERSION ...]
  python scripts/unpinned_requirements.py --installed   # the versions they resolved to, on one line
"""
import argparse
import importlib.metadata
import pathlib
import re
import sys
import tomllib

# A requirement's name and extras, e.g. "gymnasium[mujoco]" from "gymnasium[mujoco]==1.4.0".
_NAME_AND_EXTRAS = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?")


def canonical_name(name: str) -> str:
  """PEP 503 normalised project name: `Orbax_Checkpoint` -> `orbax-checkpoint`."""
  return re.sub(r"[-_.]+", "-", name).lower()


def split_requirement(requirement: str) -> tuple[str, str]:
  """`'gymnasium[mujoco]==1.4.0'` -> `('gymnasium', '[mujoco]')`; exits with an error line if it has no name."""
  match = _NAME_AND_EXTRAS.match(requirement)
  if match is None:
    sys.exit(f"error: requirement {requirement!r} does not start with a project name")
  return match.group(1), match.group(2) or ""


def unpinned_requirements(pyproject: dict, extras: list[str], overrides: list[str]) -> list[str]:
  """The dependencies (and those of `extras`) of a parsed pyproject.toml, pins removed, `overrides` substituted."""
  project = pyproject["project"]
  optional = project.get("optional-dependencies", {})
  unknown = [extra for extra in extras if extra not in optional]
  if unknown:
    sys.exit(f"error: --extras names {unknown}, pyproject.toml has only {sorted(optional)}")
  requirements = list(project["dependencies"])
  for extra in extras:
    requirements += optional[extra]
  by_name = {canonical_name(split_requirement(override)[0]): override.strip() for override in overrides}
  lines = []
  for requirement in requirements:
    name, name_extras = split_requirement(requirement)
    lines.append(by_name.pop(canonical_name(name), name + name_extras))
  return lines + list(by_name.values())  # overrides of projects that are not direct dependencies come last


def installed_versions(requirements: list[str]) -> str:
  """`'Python 3.12.1, jax 0.12.0.1, ...'`: the interpreter and the installed version of each requirement."""
  parts = [f"Python {sys.version.split()[0]}"]
  for requirement in requirements:
    name = split_requirement(requirement)[0]
    try:
      parts.append(f"{name} {importlib.metadata.version(name)}")
    except importlib.metadata.PackageNotFoundError:
      parts.append(f"{name} (not installed)")
  return ", ".join(parts)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--pyproject", default=str(pathlib.Path(__file__).resolve().parents[1] / "pyproject.toml"))
  parser.add_argument("--extras", default="test", help="comma-separated optional-dependency groups")
  parser.add_argument("--installed", action="store_true", help="print the installed versions instead")
  parser.add_argument("overrides", nargs="*", help="requirements that replace the unpinned entry, e.g. jax==0.11.2")
  args = parser.parse_args(argv)
  with open(args.pyproject, "rb") as f:
    pyproject = tomllib.load(f)
  extras = [extra for extra in args.extras.split(",") if extra]
  requirements = unpinned_requirements(pyproject, extras, args.overrides)
  print(installed_versions(requirements) if args.installed else "\n".join(requirements))


if __name__ == "__main__":
  main()
