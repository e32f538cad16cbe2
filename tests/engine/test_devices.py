"""The GPU path of device selection, memory and placement, on a machine without a GPU.

No GPU has run these tests; TensorFlow's device queries are replaced by what
it reports on one (an H100: compute capability 9.0; a T4: 7.5), so each
branch a GPU takes is exercised here. bench/device_check.py measures the rest
on a real card (docs/operations.md says what has and has not run on one).
"""

import dataclasses

import pytest

from filtercast_server.engine import devices, loading
from filtercast_server.engine.ascent import AscentEngine
from filtercast_server.engine.devices import memory_in_use, reset_memory_peak, select_device
from filtercast_server.engine.models import LoadedModel
from filtercast_server.engine.tf import tf
from filtercast_server.errors import ModelLoadError
from filtercast_server.jobs import Precision
from filtercast_server.planning import make_plan
from tests.support.engine import CPU

GPU = dataclasses.replace(CPU, name="/GPU:0", kind="gpu", description="fake GPU")


class FakeConfig:
    """What tf.config reports on a machine with `gpus` cards of one compute capability."""

    def __init__(self, gpus: int, capability: tuple[int, int], name: str) -> None:
        self.gpus = [f"PhysicalDevice(GPU:{i})" for i in range(gpus)]
        self.details = {"compute_capability": capability, "device_name": name}
        self.growth: list[str] = []
        self.memory = {"current": 3 << 30, "peak": 5 << 30}
        self.resets: list[str] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> "FakeConfig":
        config, experimental = devices.tf.config, devices.tf.config.experimental
        monkeypatch.setattr(config, "list_physical_devices", lambda kind: list(self.gpus))
        monkeypatch.setattr(experimental, "get_device_details", lambda gpu: self.details)
        monkeypatch.setattr(experimental, "set_memory_growth", self._grow)
        monkeypatch.setattr(experimental, "get_memory_info", self._memory)
        monkeypatch.setattr(experimental, "reset_memory_stats", self.resets.append)
        return self

    def _grow(self, gpu: str, enable: bool) -> None:
        assert enable
        self.growth.append(gpu)

    def _memory(self, name: str) -> dict[str, int]:
        assert name == "GPU:0"
        return self.memory


def test_an_ampere_or_later_gpu_is_chosen_and_computes_in_bfloat16(monkeypatch) -> None:
    fake = FakeConfig(2, (9, 0), "NVIDIA H100 80GB HBM3").install(monkeypatch)
    device = select_device("auto")
    assert (device.name, device.kind, device.native_bf16) == ("/GPU:0", "gpu", True)
    assert device.description == "NVIDIA H100 80GB HBM3 (compute capability 9.0)"
    assert fake.growth == fake.gpus  # memory growth on every card: nothing grabbed up front
    assert device.resolve("auto") is Precision.BFLOAT16
    assert select_device("auto", "float32").resolve("auto") is Precision.FLOAT32
    assert device.batch_limits() == (256, 512 * 128 * 128)


def test_an_older_gpu_computes_in_float32(monkeypatch) -> None:
    FakeConfig(1, (7, 5), "Tesla T4").install(monkeypatch)
    device = select_device("gpu")
    assert device.kind == "gpu" and not device.native_bf16
    assert device.resolve("auto") is Precision.FLOAT32


def test_cpu_can_be_asked_for_beside_a_gpu_and_gpu_is_never_faked(monkeypatch) -> None:
    FakeConfig(1, (9, 0), "NVIDIA H100").install(monkeypatch)
    assert select_device("cpu").kind == "cpu"
    FakeConfig(0, (0, 0), "").install(monkeypatch)
    with pytest.raises(RuntimeError, match="no GPU"):
        select_device("gpu")
    assert select_device("auto").kind == "cpu"


def test_gpu_memory_is_read_from_the_card_and_its_peak_reset(monkeypatch) -> None:
    fake = FakeConfig(1, (9, 0), "NVIDIA H100").install(monkeypatch)
    assert memory_in_use(GPU) == 3 << 30 and memory_in_use(GPU, peak=True) == 5 << 30
    reset_memory_peak(GPU)
    assert fake.resets == ["GPU:0"]
    assert memory_in_use(CPU) is None and memory_in_use(CPU, peak=True) is None
    reset_memory_peak(CPU)
    assert fake.resets == ["GPU:0"]


def test_host_memory_bounds_a_cpu_start_but_not_a_gpu_one(monkeypatch) -> None:
    model = {"vgg16": LoadedModel("vgg16", "random", CPU, seed=0)}
    monkeypatch.setattr(loading, "available_memory", lambda: 1 << 20)
    with pytest.raises(ModelLoadError, match="lower --max-batch-pixels"):
        loading.check_memory(model, 64 * 128 * 128, "cpu")
    loading.check_memory(model, 512 * 128 * 128, "gpu")  # the card's memory is not the host's


@pytest.mark.parametrize("preset", ["classic", "robust"])
def test_every_step_is_placed_on_the_models_device(preset: str) -> None:
    """With soft placement off, a model on a GPU that is not there fails: nothing runs elsewhere."""
    models = {"vgg16": LoadedModel("vgg16", "random", CPU, seed=0)}
    models["vgg16"].device = GPU
    plan = make_plan(models, preset=preset, overrides={"size": 32, "steps": 1}, filters="0:1")
    tf.config.set_soft_device_placement(False)
    try:
        with pytest.raises((tf.errors.InvalidArgumentError, RuntimeError, ValueError), match="GPU"):
            list(AscentEngine(models).run(plan))
    finally:
        tf.config.set_soft_device_placement(True)
