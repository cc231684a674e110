"""`make demo` writes to a run folder git ignores and only reads the committed reference (results/demo/); its report
puts this run beside that reference. The smoke preset runs the real pipeline (tiny dataset, smoke networks)."""
import hashlib
import json
import os
import shutil
import subprocess

import pytest

from experiments import demo
from experiments.demo import compare as demo_compare

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IN_GIT = shutil.which("git") is not None and subprocess.run(
    ["git", "rev-parse"], cwd=REPO, capture_output=True).returncode == 0


def reference_files() -> dict[str, str]:
  """sha256 of every file under results/demo that git tracks (every file there, outside a git checkout)."""
  if IN_GIT:
    names = subprocess.run(["git", "ls-files", "-z", "results/demo"], cwd=REPO, capture_output=True, check=True,
                           text=True).stdout.split("\0")
  else:
    names = [os.path.relpath(os.path.join(d, f), REPO) for d, _, fs in os.walk(demo.REFERENCE_DIR) for f in fs]
  hashes = {}
  for name in filter(None, names):
    with open(os.path.join(REPO, name), "rb") as f:
      hashes[name] = hashlib.sha256(f.read()).hexdigest()
  return hashes


def cells(line: str) -> list[str]:
  return [c.strip() for c in line.strip().strip("|").split("|")]


@pytest.mark.skipif(not IN_GIT, reason="needs a git checkout")
def test_default_run_folder_is_ignored_and_apart_from_the_reference():
  out = demo.build_parser().parse_args([]).out
  probe = os.path.join(out, "report.md")
  assert subprocess.run(["git", "check-ignore", "-q", probe], cwd=REPO).returncode == 0, f"{probe} is not ignored"
  assert not os.path.realpath(os.path.join(REPO, out)).startswith(demo.REFERENCE_DIR + os.sep)
  assert "results/demo/report.md" in reference_files()  # the reference the report compares with is committed


def test_out_in_the_reference_folder_is_refused_before_any_work(tmp_path, capsys):
  reference = tmp_path / "reference"
  reference.mkdir()
  with pytest.raises(SystemExit) as exit_info:
    demo.main([f"--reference={reference}", f"--out={reference / 'run'}"])
  assert exit_info.value.code == 2
  assert capsys.readouterr().err.startswith(f"error: --out='{reference / 'run'}' is the committed reference folder")
  assert os.listdir(reference) == []


@pytest.mark.slow  # the real pipeline at smoke size: ~45 s of CPU
def test_smoke_demo_leaves_the_reference_alone_and_reports_both(tmp_path, monkeypatch):
  monkeypatch.delenv("MINARI_DATASETS_PATH", raising=False)  # the demo keeps its dataset in its run folder
  monkeypatch.chdir(tmp_path)  # MuJoCo may drop a log file in the working directory
  before = reference_files()
  out = tmp_path / "run"
  try:
    demo.main(["--preset=smoke", "--skip_toys", f"--out={out}"])
  finally:
    os.environ.pop("MINARI_DATASETS_PATH", None)  # main sets it for this process
  assert reference_files() == before
  if IN_GIT:
    status = subprocess.run(["git", "status", "--porcelain", "--", "results"], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout
    assert status == "", status

  report = (out / "report.md").read_text().splitlines()
  header = next(line for line in report if line.startswith("| policy |"))
  assert cells(header)[1:3] == ["return: this run", "return: reference"]
  reference_rows = {cells(line)[0]: cells(line) for line in open(os.path.join(demo.REFERENCE_DIR, "report.md"))
                    if line.startswith("| SWG") or line.startswith("| SRPO")}
  for policy, file in (("SWG", "swg/eval_swg.json"), ("SWG-R", "swg/eval_swgr.json"), ("SRPO", "srpo/eval_srpo.json")):
    row = cells(next(line for line in report if line.startswith(f"| {policy} |")))
    with open(out / "reacher" / file) as f:
      ret = json.load(f)["return"]
    assert row[1] == f"{ret['mean']:.2f} ± {ret['std']:.2f}"  # this run, from its own evaluation
    assert row[2] == reference_rows[policy][1]  # the committed reference, as its report has it
    assert row[4] == reference_rows[policy][2]
  assert (out / "reacher.md").exists() and (out / "reacher_returns.png").read_bytes()[:4] == b"\x89PNG"
  assert (out / "minari").is_dir()


def test_report_puts_toy_metrics_side_by_side(tmp_path):
  run, ref = tmp_path / "run", tmp_path / "ref"
  rows = lambda values: [{"dataset": "moons", "inv_beta": b, "dist_to_target": v, "dist_to_data": v / 10}
                         for b, v in values]
  for directory, values, size in ((run, [(0.0, 0.25), (1.0, 0.5)], "smoke"), (ref, [(1.0, 0.75), (3.0, 1.0)], "small")):
    (directory / "toy_srpo").mkdir(parents=True)
    (directory / "toy_srpo" / "metrics.json").write_text(json.dumps({"meta": {"size": size}, "rows": rows(values)}))
  text = demo_compare.comparison_report(str(run), str(ref))
  assert "| moons | 0 | 0.250 | — | 0.025 | — |" in text  # only this run has 1/beta = 0
  assert "| moons | 1 | 0.500 | 0.750 | 0.050 | 0.075 |" in text
  assert "| moons | 3 | — | 1.000 | — | 0.100 |" in text
  assert "This run: size `smoke`; reference: size `small`." in text
  assert "This run: not run; reference: not run." in text  # the SWG toy, on neither side
  assert "- this run: not run" in text and f"- reference: none at {ref / 'report.md'}" in text


def test_reacher_table_reads_back_what_the_demo_writes(tmp_path):
  ref = {"dataset": -28.7, "random": -42.5, "controller": -5.6, "steps": 500}
  rows = [{"policy": "SWG", "return": -6.644, "std": 0.47, "score": 97.13, "gain": 22.056, "env": "Reacher-v5",
           "episodes": "2 x 20", "train_s": 91.0},
          {"policy": "SRPO", "return": -31.0, "std": 1.0, "score": -5.0, "gain": -2.3, "env": "Reacher-v5",
           "episodes": "2 x 20", "train_s": 9.0}]
  path = tmp_path / "report.md"
  path.write_text(demo.pipeline_report(rows, ref, "builtin/reacher/noisy-v0", 60.0))
  first, parsed = demo_compare.reacher_table(str(path))
  assert first.startswith("Dataset `builtin/reacher/noisy-v0` (500 transitions)")
  assert parsed == {"SWG": {"return": -6.64, "std": 0.47, "score": 97.1, "gain": 22.06},
                    "SRPO": {"return": -31.0, "std": 1.0, "score": -5.0, "gain": -2.3}}
