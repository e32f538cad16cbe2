"""Cache keys: a hash of everything a filter's picture depends on.

(engine version, TensorFlow and Keras versions, the model's identity, every
resolved ascent parameter, the precision used, the seed, the filter index;
an accentuated picture's start image (its pixels' hash) and pull;
for an objective's picture, in place of the index, everything its target is:
its terms, its noise, its group and place in it).
Grid parameters are not in it: the grid is stitched again from the pictures.
A dataset index has a key of its own (`index_key`): the model, the layer,
the size its images were seen at and the folder's content hash.

ENGINE_VERSION names the ascent's arithmetic. Any change that moves a
preset's numbers (a new step rule, another noise draw, a deprocess change)
must bump it, or old pictures would be served for the new algorithm;
tests/engine/test_cache_keys.py fails when the numbers move and the version did not.
"""

import hashlib
import json
from dataclasses import asdict
from functools import lru_cache
from importlib import metadata

from filtercast_server.jobs import Plan

ENGINE_VERSION = 2  # 2: robust takes 45 steps of 0.2 (was 100 of 0.05)
INDEX_VERSION = 1  # a dataset index's ranking and layout: bump when either changes
KEY_HEX = 32  # 128 bits: collisions are out of reach, keys stay short in URLs


# Each library under the distribution names it ships as (the first installed counts).
RUNTIME = {
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tf-nightly"),
    "keras": ("keras", "keras-nightly"),
    "numpy": ("numpy",),
    "filtercast": ("filtercast",),  # the native deprocess kernels
}


@lru_cache(maxsize=1)
def runtime_versions() -> str:
    """The libraries whose versions can move a picture's bits."""
    versions = []
    for library, distributions in RUNTIME.items():
        found = "-"
        for distribution in distributions:
            try:
                found = f"{distribution} {metadata.version(distribution)}"
                break
            except metadata.PackageNotFoundError:
                continue
        versions.append(f"{library}={found}")
    return ",".join(versions)


def filter_keys(plan: Plan, model_identity: str) -> dict[int, str]:
    """The cache key of each filter of `plan`, on the model identified by `model_identity`."""
    material = json.dumps(
        {
            "engine": ENGINE_VERSION,
            "runtime": runtime_versions(),
            "model": model_identity,
            "params": asdict(plan.params),
            "precision": plan.precision.value,
            "seed": plan.seed,
            # accentuated pictures only: keys of the others stay as they were
            **({"start": plan.start.identity()} if plan.start is not None else {}),
        },
        sort_keys=True,
    ).encode()
    prefix = hashlib.sha256(material).digest()
    if plan.targets:  # what each picture maximizes, whatever its number in the request
        return {
            index: hashlib.blake2b(
                plan.targets[index].identity().encode(), key=prefix, digest_size=KEY_HEX // 2
            ).hexdigest()
            for index in plan.filters
        }
    return {
        index: hashlib.blake2b(
            index.to_bytes(4, "little"), key=prefix, digest_size=KEY_HEX // 2
        ).hexdigest()
        for index in plan.filters
    }


def index_key(model_identity: str, layer: str, size: int, content_sha256: str, depth: int) -> str:
    """The key of a dataset's index: the model, layer and size it was seen at, its content."""
    material = json.dumps(
        {
            "index": INDEX_VERSION,
            "runtime": runtime_versions(),
            "model": model_identity,
            "layer": layer,
            "size": size,
            "content": content_sha256,
            "depth": depth,
        },
        sort_keys=True,
    ).encode()
    return hashlib.blake2b(material, digest_size=KEY_HEX // 2).hexdigest()


def is_key(text: str) -> bool:
    """Whether `text` has the shape of a cache key (32 lowercase hex digits)."""
    return len(text) == KEY_HEX and all(c in "0123456789abcdef" for c in text)
