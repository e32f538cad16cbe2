"""Device selection and precision detection.

``auto`` precision means bfloat16 compute where the hardware runs it natively
(NVIDIA compute capability >= 8.0; CPUs with AMX-BF16 or AVX512-BF16) and
float32 elsewhere. It is detected from the hardware, never assumed.
"""

import contextlib
from dataclasses import dataclass
from pathlib import Path

from filtercast_server.engine.tf import native_logs_captured, tf
from filtercast_server.jobs import Precision

CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@dataclass(frozen=True)
class Device:
    """Where the models live: a TensorFlow device name and what it can do."""

    name: str  # "/GPU:0" or "/CPU:0"
    kind: str  # "gpu" or "cpu"
    description: str
    native_bf16: bool
    # What a request asking for AUTO gets: the server's --precision, else the best here.
    preferred: Precision = Precision.AUTO

    def batch_limits(self) -> tuple[int, int]:
        """Default (rows, pixels) per batch.

        Rows trade latency for throughput: a row finishes after `steps` steps
        of the whole batch, so time to first result grows with the rows in
        flight. On a CPU the cost per row is nearly flat past a few rows
        (bfloat16 VGG16 here: 47.1 ms per row-step at 8 rows, 45.4 at 32), so 8
        rows keep streams trickling at ~4% throughput cost. A GPU's cost per
        row keeps falling with the batch: 256 rows. Pixels bound memory: 1 Mpx
        (~2 GB of VGG16 activations) on a CPU, 8 Mpx on a GPU.
        """
        if self.kind == "gpu":
            return 256, 512 * 128 * 128
        return 8, 64 * 128 * 128

    def resolve(self, precision: Precision | str) -> Precision:
        """AUTO: the preferred precision, else the one this device runs best."""
        precision = Precision(precision)
        if precision is Precision.AUTO:
            precision = self.preferred
        if precision is Precision.AUTO:
            return Precision.BFLOAT16 if self.native_bf16 else Precision.FLOAT32
        return precision


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The feature flags of the first CPU listed in /proc/cpuinfo (empty if unreadable)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name, or "CPU" when it cannot be read."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "CPU"


def select_device(requested: str = "auto", preferred: Precision | str = "auto") -> Device:
    """Pick the GPU when present (``auto``), else the CPU; AUTO requests get `preferred`.

    GPU memory growth is switched on so the process never grabs all device
    memory up front. ``requested`` is ``auto``, ``cpu`` or ``gpu``; asking for a
    GPU on a machine without one is an error, not a silent fallback.
    """
    if requested not in ("auto", "cpu", "gpu"):
        raise ValueError(f"device must be auto, cpu or gpu, got {requested!r}")
    with native_logs_captured():  # the first look for a GPU logs cuInit failures
        gpus = tf.config.list_physical_devices("GPU")
    if requested == "gpu" and not gpus:
        raise RuntimeError("device=gpu was requested but TensorFlow sees no GPU")
    if gpus and requested != "cpu":
        for gpu in gpus:
            # RuntimeError: already initialised, growth was set by an earlier call.
            with contextlib.suppress(RuntimeError):
                tf.config.experimental.set_memory_growth(gpu, True)
        details = tf.config.experimental.get_device_details(gpus[0])
        capability = details.get("compute_capability") or (0, 0)
        name = details.get("device_name", "GPU")
        return Device(
            name="/GPU:0",
            kind="gpu",
            description=f"{name} (compute capability {capability[0]}.{capability[1]})",
            native_bf16=tuple(capability) >= (8, 0),
            preferred=Precision(preferred),
        )
    flags = cpu_flags()
    bf16 = sorted(flag for flag in CPU_BF16_FLAGS if flag in flags)
    suffix = f" ({', '.join(bf16)})" if bf16 else ""
    return Device(
        name="/CPU:0",
        kind="cpu",
        description=cpu_model() + suffix,
        native_bf16=bool(bf16),
        preferred=Precision(preferred),
    )


def memory_in_use(device: Device, peak: bool = False) -> int | None:
    """Bytes of accelerator memory TensorFlow holds on `device`; None for a CPU.

    With `peak`, the most it held since the last reset_memory_peak (or start).
    """
    if device.kind != "gpu":
        return None
    info = tf.config.experimental.get_memory_info(device.name.lstrip("/"))
    return int(info["peak" if peak else "current"])


def reset_memory_peak(device: Device) -> None:
    """Start memory_in_use(device, peak=True) afresh from what is held now (no-op on a CPU)."""
    if device.kind == "gpu":
        tf.config.experimental.reset_memory_stats(device.name.lstrip("/"))
