"""Result files follow the umask (group-readable on a shared cluster), even though they are written atomically
through temporary files (mkstemp and NamedTemporaryFile make theirs 0o600 whatever the umask)."""
import io
import json
import os
import stat
import urllib.request

import pytest

from common import checkpoint, run
from common.run.plots import plot_learning_curves
from tests import datasets


@pytest.fixture(params=[0o022, 0o002], ids=["umask022", "umask002"])
def umask(request):
  old = os.umask(request.param)
  try:
    yield request.param
  finally:
    os.umask(old)


def mode(path) -> int:
  return stat.S_IMODE(os.stat(path).st_mode)


def test_current_umask_reads_the_umask_without_changing_it(umask):
  assert checkpoint.current_umask() == umask
  assert os.umask(umask) == umask  # unchanged by the read
  assert checkpoint.umask_file_mode() == 0o666 & ~umask


def test_run_result_files_get_the_umask_mode(tmp_path, umask):
  want = 0o666 & ~umask
  workdir = str(tmp_path / "run")
  config = run.add_run_fields(__import__("ml_collections").ConfigDict(), episode_rule="episodes")
  run.prepare_workdir(workdir, config, "srpo")  # config.json
  run.evaluate_policy(None, config, {"eval_note": "no env"}, workdir, "srpo")  # eval_srpo.json (skipped: no env)
  checkpoint.write_text_atomic(os.path.join(workdir, "report.md"), "# report\n")  # demo / reproduce reports
  with open(os.path.join(workdir, "metrics_critic.jsonl"), "w") as f:
    f.write(json.dumps({"step": 10, "steps_per_sec": 5.0, "metrics": {"loss": [1.0, 2.0]}}) + "\n")
  run.write_summary(workdir, "srpo", config, {}, {})  # summary.json and plots/critic.png
  plot_learning_curves(os.path.join(workdir, "metrics_critic.jsonl"), os.path.join(workdir, "curves.png"))
  written = ["config.json", "eval_srpo.json", "report.md", "summary.json", "plots/critic.png", "curves.png"]
  assert {name: oct(mode(os.path.join(workdir, name))) for name in written} == {name: oct(want) for name in written}
  assert not [f for f in os.listdir(workdir) if f.startswith(".tmp_")]  # no temporary file left behind


def test_downloaded_d4rl_file_gets_the_umask_mode(tmp_path, monkeypatch, umask):
  from common import data

  monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "d4rl"))
  payload = datasets.d4rl_hdf5(tmp_path / "src.hdf5", obs_dim=17, action_dim=6).read_bytes()
  monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(payload))
  path = data.fetch_d4rl_file("halfcheetah-medium-v2")
  assert oct(mode(path)) == oct(0o666 & ~umask)
