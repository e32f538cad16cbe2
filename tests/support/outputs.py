"""What every output folder's manifest holds."""

from filtercast import manifest

FIELDS = manifest.header(
    model="vgg16",
    layer="block5_conv1",
    preset="classic",
    precision="float32",
    seed=1,
    params={},
    weights_source="random",
    weights_sha256="",
    device="cpu",
    requested=[0, 1],
)

# Every manifest, from render or visualize, has exactly these fields.
MANIFEST_KEYS = {*FIELDS, "complete", "seconds", "filters", "grid"}
