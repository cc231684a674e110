"""How datasets are made: SAC in JAX (`sac`), its online loop (`sac_online`) and D4RL's dataset recipes on
Gymnasium MuJoCo (`datasets`)."""
