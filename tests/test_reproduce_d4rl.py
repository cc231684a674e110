"""reproduce_d4rl at smoke scale: a tiny hopper-medium-v2 file trains and evaluates all three policies on Hopper-v4,
a missing walker2d file is reported with the exact path it needs, and a second invocation skips finished runs."""
import os

import pytest

from experiments import reproduce_d4rl
from tests.datasets import d4rl_arrays, write_hdf5


def test_report_with_a_present_and_a_missing_dataset(tmp_path, monkeypatch, capsys):
  d4rl_dir = tmp_path / "d4rl"
  d4rl_dir.mkdir()
  monkeypatch.setenv("D4RL_DATASET_DIR", str(d4rl_dir))
  write_hdf5(d4rl_dir / "hopper_medium-v2.hdf5",
             d4rl_arrays((60, 80, 50, 70), ("terminal", "terminal", "timeout", "terminal"), obs_dim=11,
                         action_dim=3))
  datasets = ["hopper-medium-v2", "walker2d-medium-v2"]
  out, report_path = str(tmp_path / "runs"), str(tmp_path / "d4rl.md")
  outcomes = reproduce_d4rl.reproduce(datasets, reproduce_d4rl.POLICIES, [0, 1], "smoke", out, report_path,
                                      download=False)
  assert set(outcomes) == {(d, a) for d in datasets for a in ("swg", "srpo")}
  assert all("summary" in outcomes[("hopper-medium-v2", a)] for a in ("swg", "srpo"))
  assert "missing" in outcomes[("walker2d-medium-v2", "swg")]
  report = open(report_path).read()
  hopper_row = next(line for line in report.splitlines() if line.startswith("| hopper-medium-v2 |"))
  cells = [c.strip() for c in hopper_row.strip("|").split("|")]
  assert len(cells) == 5 and cells[4] == "95.5"  # SWG, SWG-R, SRPO, then the published SRPO number
  for cell in cells[1:4]:
    mean, std = (float(x) for x in cell.split(" ± "))
    assert std >= 0
  assert "| walker2d-medium-v2 | no data | no data | no data | 84.4 |" in report
  assert f"put it at {d4rl_dir / 'walker2d_medium-v2.hdf5'}" in report
  assert "Hopper-v4" in report and "n/a (1 of 2)" in report
  assert "![D4RL normalised scores](d4rl.png)" in report
  assert open(tmp_path / "d4rl.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"
  first = os.path.getmtime(os.path.join(out, "hopper-medium-v2", "srpo", "summary.json"))

  capsys.readouterr()
  again = reproduce_d4rl.reproduce(datasets[:1], ["srpo"], [0, 1], "smoke", out, report_path, download=False)
  assert "finished earlier, skipped" in capsys.readouterr().out
  assert os.path.getmtime(os.path.join(out, "hopper-medium-v2", "srpo", "summary.json")) == first
  assert again[("hopper-medium-v2", "srpo")]["summary"]["eval"]["srpo"]["score"] is not None


def test_no_figure_before_any_run_has_a_score(tmp_path):
  missing = {("hopper-medium-v2", "srpo"): {"missing": "no file"}, ("hopper-medium-v2", "swg"): {"failed": "bug"}}
  assert reproduce_d4rl.plot_scores(missing, ["hopper-medium-v2"], reproduce_d4rl.POLICIES,
                                    str(tmp_path / "d4rl.png")) is None
  assert not (tmp_path / "d4rl.png").exists()


def test_dataset_selection():
  assert len(reproduce_d4rl.parse_datasets("all")) == 15
  assert reproduce_d4rl.parse_datasets("antmaze,hopper-medium-v2")[-1] == "hopper-medium-v2"
  with pytest.raises(ValueError, match="unknown dataset 'hopper-v9'"):
    reproduce_d4rl.parse_datasets("hopper-v9")
