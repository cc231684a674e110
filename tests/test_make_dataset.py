"""The built-in Reacher dataset: a real Minari dataset, loadable, with a clearly sub-optimal behaviour policy."""
import numpy as np

from common.data import load_dataset
from common.run import normalized_scores
from experiments import make_dataset


def test_builtin_dataset_is_loadable_and_suboptimal(tmp_path, monkeypatch):
  monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
  monkeypatch.chdir(tmp_path)  # MuJoCo may drop a log file in the working directory
  dataset = make_dataset.make_reacher_dataset("test/reacher/noisy-v0", episodes=12, reference_episodes=6)
  meta = dataset.storage.metadata
  average = make_dataset.dataset_average_return(dataset)
  # The scripted expert is far better than random, and the noisy data sits clearly below the expert.
  assert meta["ref_max_score"] > meta["ref_min_score"] + 20
  assert average < meta["ref_max_score"] - 10

  data, info = load_dataset("test/reacher/noisy-v0")
  assert 0 < float(normalized_scores(np.asarray(average), info)) < 75
  assert (data.size, data.obs_dim, data.action_dim) == (12 * 50, 10, 2)
  assert info["env_id"] == "Reacher-v5" and info["reward_kind"] == "none"
  assert float(np.abs(data.actions).max()) <= 1.0
  assert float(data.masks.min()) == 1.0  # Reacher never terminates; time-limit truncations are not terminals
  np.testing.assert_allclose(float(np.sum(data.rewards)) / 12, average, rtol=1e-5)
