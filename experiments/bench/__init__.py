"""`make bench`: training-step throughput of the fused trainer, with the machine named.

Measures steps/s of each stage's step for 1, 4 and 8 vmapped seeds, fused (`steps_per_call` steps per jit call with
lax.scan) and one step per call, next to the machine's measured float32 matmul rate; the critic and SRPO stages
also as populations (members spread over 3 datasets, each sampling its own rows) against one-seed runs one after
another; the wall time of one
action-selection call, each SWG sampler next to its sample quality on a toy trained here; the paper pipelines'
training time for 5 seeds, estimated from those rates; and the project's targets (the 2-core CPU's on a CPU,
seed scaling and the SRPO pipeline hour on an accelerator). Median of several timed repeats after a warm-up call.
Writes results/bench.json and results/bench.md. The rows come from bench_training (training steps), bench_latency
(action selection, toy quality) and bench_report (targets, pipeline estimates, markdown); their names are re-exported
here.

  python -m experiments.bench --seeds=1,4,8 --repeats=5
  python -m experiments.bench --seeds=1 --repeats=1 --fused_steps=2 --latency_states=1 --toy_steps=100 \
      --out_dir=/tmp/bench   # a smoke run of every code path (its numbers mean nothing)
"""
from __future__ import annotations

import os
import time  # noqa: F401  (tests patch bench.time.perf_counter)

from absl import app, flags

from common.checkpoint import write_json_atomic, write_text_atomic
from common.training import seed_keys  # noqa: F401
from experiments.bench.latency import (DIFFUSION_POLICY, DIFFUSION_POLICY_32, SRPO_ACT, SWG_REFERENCE,  # noqa: F401
                                       SWG_SAMPLERS, TOY_BETA, TOY_DATASET, action_latency, toy_sampler_quality)
from experiments.bench.report import (CPU_TARGETS, PIPELINE_SEEDS, SCALING_SEEDS, SEED_SCALING_GOAL,  # noqa: F401
                                      population_gains, population_markdown,
                                      SRPO_PIPELINE_HOURS, evaluate_accelerator_targets, evaluate_targets,
                                      paper_pipelines, pipeline_estimates, same_toy_quality, seconds_per_step,
                                      seed_scaling, seed_scaling_markdown, to_markdown)
from experiments.bench.training import (CRITIC, HOPPER, SRPO_BEHAVIOUR, SRPO_POLICY, STAGES,  # noqa: F401
                                        SWG_DIFFUSION, Stage, apply_overrides, flops_per_step, machine_description,
                                        matmul_gflops, measure_stage, random_data, run_benchmarks, time_chunk)

FLAGS = flags.FLAGS
flags.DEFINE_list("seeds", ["1", "4", "8"], "Seed counts to measure.")
flags.DEFINE_integer("repeats", 5, "Timed repeats per measurement (median reported).")
flags.DEFINE_integer("fused_steps", 0, "Steps per jit call in fused mode (0: the stage's default, ~seconds a call).")
flags.DEFINE_float("min_repeat_s", 0.5, "Each timed repeat makes calls for at least this long.")
flags.DEFINE_string("out_dir", "results", "Where bench.json / bench.md go.")
flags.DEFINE_list("stages", ["critic", "swg", "srpo_behavior", "srpo_policy"], "Training stages to measure.")
flags.DEFINE_list("latency_states", ["1", "64", "256"], "State counts for action-selection latency (the diffusion "
                  "samplers up to 64).")
flags.DEFINE_integer("toy_steps", 4000, "Training steps of the toy model that scores each SWG sampler (0: no scores).")
flags.DEFINE_integer("toy_samples", 2000, "Samples per score of a SWG sampler on the toy.")


def main(_):
  results = run_benchmarks([int(s) for s in FLAGS.seeds], FLAGS.repeats, FLAGS.stages, FLAGS.fused_steps,
                           FLAGS.min_repeat_s)
  results["latency"] = action_latency(FLAGS.repeats, [int(n) for n in FLAGS.latency_states])
  for row in results["latency"]:
    print(f"{row['method']:55s} states={row['states']:<4d} {row['ms']:8.3f} ms", flush=True)
  if FLAGS.toy_steps:
    results["toy"] = toy_sampler_quality(FLAGS.toy_steps, FLAGS.toy_samples)
    for name, sc in results["toy"]["scores"].items():
      print(f"toy {name:45s} ED {sc['energy_distance']:.4f} off support {sc['off_support']:.3f} "
            f"mean E {sc['mean_energy']:.3f}", flush=True)
  results["pipelines"] = pipeline_estimates(results)
  cpu = results["machine"]["platform"] == "cpu"  # the CPU targets were set for the development CPU
  results["targets"] = evaluate_targets(results) if cpu else evaluate_accelerator_targets(results)
  os.makedirs(FLAGS.out_dir, exist_ok=True)
  write_json_atomic(os.path.join(FLAGS.out_dir, "bench.json"), results)
  markdown = to_markdown(results)
  write_text_atomic(os.path.join(FLAGS.out_dir, "bench.md"), markdown)
  print(markdown)

