"""The accelerators the project compiles for without having one: their published figures and how to get a JAX
topology of N of them on a CPU-only machine (deviceless ahead-of-time compilation).

GPU: `jax.experimental.topologies.get_topology_desc(platform="cuda", target_config=...)` with a
`stream_executor.GpuTargetConfigProto` in text form; XLA needs the compute capability, the core count, memory size
and bandwidth, shared memory and the clock, plus the runtime and cuDNN versions. Needs JAX's CUDA plugin and ptxas
(`pip install .[aot]`), no driver and no CUDA libraries.
TPU: `get_topology_desc("v5e:1x1", "tpu", ...)` with libtpu installed; it must not look for a TPU VM's metadata.
"""
from __future__ import annotations

import dataclasses
import os

GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class Chip:
  """Published figures of one accelerator chip (dense matrix rates; no sparsity)."""

  name: str
  platform: str  # "cuda" | "tpu"
  memory_bytes: int
  memory_bandwidth: float  # bytes/s
  bf16_flops: float  # matrix FLOP/s in bf16
  f32_flops: float  # matrix FLOP/s of a float32 matmul at JAX's default precision (TF32 on NVIDIA, bf16 passes on TPU)
  tpu_name: str = ""  # get_topology_desc's topology name prefix, e.g. "v5e"
  tpu_chip_config: str = ""  # v4: "megacore" (both cores of a chip as one device)
  core_count: int = 0  # GPU: streaming multiprocessors
  clock_ghz: float = 0.0

  @property
  def is_gpu(self) -> bool:
    return self.platform == "cuda"

  def matrix_flops(self, dtype: str) -> float:
    return self.bf16_flops if dtype == "bfloat16" else self.f32_flops


# NVIDIA's H100 SXM5 and H200 SXM datasheets (dense tensor-core rates: TF32 494.7, BF16 989.4 TFLOP/s; HBM3 80 GB at
# 3.35 TB/s, HBM3e 141 GB at 4.8 TB/s; 132 SMs at up to 1.98 GHz); memory as the device reports it. Google's TPU v5e
# (197 TFLOP/s bf16, 16 GiB HBM2e at 819 GB/s) and v4 (275 TFLOP/s bf16, 32 GiB HBM2 at 1.2 TB/s).
CHIPS = {
    "h100": Chip("NVIDIA H100 80GB HBM3", "cuda", memory_bytes=84_942_979_072, memory_bandwidth=3.35e12,
                 bf16_flops=989.4e12, f32_flops=494.7e12, core_count=132, clock_ghz=1.98),
    "h200": Chip("NVIDIA H200 141GB HBM3e", "cuda", memory_bytes=151_397_597_184, memory_bandwidth=4.8e12,
                 bf16_flops=989.4e12, f32_flops=494.7e12, core_count=132, clock_ghz=1.98),
    "tpu-v5e": Chip("TPU v5 lite", "tpu", memory_bytes=16 * GIB, memory_bandwidth=819e9, bf16_flops=197e12,
                    f32_flops=197e12, tpu_name="v5e"),
    "tpu-v4": Chip("TPU v4", "tpu", memory_bytes=32 * GIB, memory_bandwidth=1.2e12, bf16_flops=275e12,
                   f32_flops=275e12, tpu_name="v4", tpu_chip_config="megacore"),
}
DEFAULT_TARGETS = ("h100", "h200", "tpu-v5e", "tpu-v4")


def gpu_target_config(chip: Chip) -> str:
  """A GpuTargetConfigProto (text) for a Hopper GPU (compute capability 9.0) with the chip's figures."""
  return f"""
gpu_device_info {{
  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  shared_memory_per_block_optin: 232448
  shared_memory_per_core: 233472
  threads_per_core_limit: 2048
  core_count: {chip.core_count}
  fpus_per_core: 128
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  memory_bandwidth: {int(chip.memory_bandwidth)}
  l2_cache_size: 52428800
  clock_rate_ghz: {chip.clock_ghz}
  device_memory_size: {chip.memory_bytes}
  cuda_compute_capability {{ major: 9 minor: 0 }}
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
}}
platform_name: "CUDA"
dnn_version_info {{ major: 9 minor: 8 patch: 0 }}
runtime_version {{ major: 12 minor: 8 patch: 0 }}
device_description_str: "{chip.name}"
"""


def prepare_environment() -> None:
  """Before jax is imported: compute on the CPU, and let libtpu start without a TPU VM around it."""
  os.environ["JAX_PLATFORMS"] = "cpu"
  os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
  os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")


def topology(chip: Chip, num_devices: int):
  """A jax TopologyDescription of `num_devices` chips (GPU: one host; TPU: 1 or a 2 x 4 slice)."""
  from jax.experimental import topologies

  if chip.is_gpu:
    return topologies.get_topology_desc(platform="cuda", target_config=gpu_target_config(chip),
                                        topology=f"1x1x{num_devices}")
  shapes = {1: "1x1" if chip.tpu_name == "v5e" else "1x1x1", 8: "2x4" if chip.tpu_name == "v5e" else "2x2x2"}
  if num_devices not in shapes:
    raise ValueError(f"no TPU topology of {num_devices} chips here; one of {sorted(shapes)}")
  extra = {"chip_config_name": chip.tpu_chip_config} if chip.tpu_chip_config else {}
  bounds = (1, 1, 1) if num_devices == 1 else None
  if bounds:
    extra["chips_per_host_bounds"] = bounds
  return topologies.get_topology_desc(f"{chip.tpu_name}:{shapes[num_devices]}", "tpu", **extra)


def mesh(chip: Chip, num_devices: int):
  from jax.experimental import topologies

  return topologies.make_mesh(topology(chip, num_devices), (num_devices,), ("seeds",))
