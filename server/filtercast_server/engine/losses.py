"""Each row's objective inside a compiled step, from its layers' activations and its own data.

A batch's rows share a Structure (objectives.py): the same slots, each a kind
of term on a layer. Each row brings, per slot, its weight and what the term
needs (a channel, a position, a vector); a slot it does not use has weight 0.
A plain filter request computes the seeds' loss untouched (one channel's
mean, no weights), so its pictures keep their bytes.

Rows are independent except within a group: a diversity term couples the
rows of one group through their Gram matrices, and `segment` says which rows
those are. Rows of other groups add exact zeros to each other's gradients.

An accentuated structure (structure.pull) adds each row's start image, in
0..1 (`anchor`), and the weight of its pull towards it (accentuation.py).
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from filtercast_server.engine.rows import Row, filter_losses
from filtercast_server.engine.tf import tf
from filtercast_server.objectives import Structure

COSSIM_FLOOR = 0.1  # Lucid's direction_cossim: max(cos, 0.1) ** power
# Interpolation frames share the spectrum's coefficients below this frequency
# (cycles per pixel): what is coarser than 8 px is common to every frame.
SHARED_BELOW = 1.0 / 8
Data = dict[str, tf.Tensor]


@dataclass(frozen=True)
class Loss:
    """A structure's objective in a compiled step: its inputs, each row's data, its value."""

    structure: Structure
    border: int
    widths: tuple[tuple[str, int], ...]  # channels (or units) of each of its layers
    channels: int = 3  # of the image

    def specs(self) -> dict[str, tf.TensorSpec]:
        """The input signature of the per-row data."""
        specs = data_specs(self.structure, dict(self.widths))
        if self.structure.pull:
            specs["pull_weight"] = tf.TensorSpec([None], tf.float32)
            specs["anchor"] = tf.TensorSpec([None, None, None, self.channels], tf.float32)
        return specs

    def data(self, rows: Sequence[Row], size: int) -> Data:
        """The rows' data for one step on images of `size` px."""
        data = row_data(self.structure, rows, dict(self.widths))
        if self.structure.pull:
            starts = [row.job.start for row in rows]
            assert all(starts), "an accentuated batch holds only rows with a start image"
            data["pull_weight"] = tf.constant([s.pull for s in starts], tf.float32)  # type: ignore[union-attr]
            data["anchor"] = tf.constant(np.stack([s.at(size) for s in starts]))  # type: ignore[union-attr]
        return data

    def __call__(self, outputs: tf.Tensor | Sequence[tf.Tensor], data: Data) -> tf.Tensor:
        """Each row's objective (B,) from the extractor's output(s)."""
        return objective_losses(_listed(outputs), data, self.structure, self.border)

    def penalty(
        self, outputs: tf.Tensor | Sequence[tf.Tensor], data: Data, losses: tf.Tensor
    ) -> tf.Tensor | None:
        """Each row's diversity term (B,), or None when the structure has none."""
        layer = self.structure.diversity_layer
        if layer is None:
            return None
        index = self.structure.layers.index(layer)
        return diversity_penalty(_listed(outputs)[index], data, losses)

    def pull(
        self,
        images: tf.Tensor,
        outputs: tf.Tensor | Sequence[tf.Tensor],
        anchor_outputs: tf.Tensor | Sequence[tf.Tensor] | None,
        data: Data,
        losses: tf.Tensor,
    ) -> tf.Tensor:
        """Each row's pull (B,), to subtract: weight x |objective| x its distance to the start.

        pixels: the mean squared difference of `images` (0..1) and the anchor;
        features: per layer of the structure, the mean squared difference of
        its activations and the anchor's, over the anchor's mean square.
        """
        if self.structure.pull == "pixels":
            distance = tf.reduce_mean(tf.square(images - data["anchor"]), axis=[1, 2, 3])
        else:
            assert anchor_outputs is not None
            pairs = zip(_listed(outputs), _listed(anchor_outputs), strict=True)
            distance = tf.add_n([_feature_distance(now, start) for now, start in pairs])
            distance /= len(self.structure.layers)
        return data["pull_weight"] * tf.stop_gradient(tf.abs(losses)) * distance


def _listed(outputs: tf.Tensor | Sequence[tf.Tensor]) -> list[tf.Tensor]:
    return list(outputs) if isinstance(outputs, list | tuple) else [outputs]


def _feature_distance(now: tf.Tensor, start: tf.Tensor) -> tf.Tensor:
    """(B,) mean squared difference of two activations, over the start's mean square."""
    now, start = tf.cast(now, tf.float32), tf.stop_gradient(tf.cast(start, tf.float32))
    axes = list(range(1, len(start.shape)))
    energy = tf.reduce_mean(tf.square(start), axis=axes) + 1e-6
    return tf.reduce_mean(tf.square(now - start), axis=axes) / energy


def data_specs(structure: Structure, widths: dict[str, int]) -> dict[str, tf.TensorSpec]:
    """The input signature of a structure's per-row data (`widths`: channels per layer)."""
    if structure.plain:
        return {"index_0": tf.TensorSpec([None], tf.int32)}
    specs: dict[str, tf.TensorSpec] = {}
    for s, slot in enumerate(structure.slots):
        specs[f"weight_{s}"] = tf.TensorSpec([None], tf.float32)
        if slot.kind in ("channel", "unit", "neuron"):
            specs[f"index_{s}"] = tf.TensorSpec([None], tf.int32)
        if slot.kind == "neuron":
            specs[f"position_{s}"] = tf.TensorSpec([None, 2], tf.int32)
        if slot.kind == "direction":
            specs[f"vector_{s}"] = tf.TensorSpec([None, widths[slot.layer]], tf.float32)
            specs[f"cossim_{s}"] = tf.TensorSpec([None], tf.float32)
    if structure.grouped:
        specs["segment"] = tf.TensorSpec([None], tf.int32)
        specs["segments"] = tf.TensorSpec([], tf.int32)
    if structure.diversity_layer:
        specs["diversity_weight"] = tf.TensorSpec([None], tf.float32)
    return specs


def row_data(structure: Structure, rows: Sequence[Row], widths: dict[str, int]) -> Data:
    """The rows' data for one step, as tensors matching data_specs."""
    if structure.plain:
        # the filter: a plain request's index, or the channel of an objective that is one
        return {"index_0": tf.constant([r.target.objective.terms[0].index for r in rows], tf.int32)}
    n = len(rows)
    arrays: dict[str, np.ndarray] = {}
    for s, slot in enumerate(structure.slots):
        arrays[f"weight_{s}"] = np.zeros(n, np.float32)
        if slot.kind in ("channel", "unit", "neuron"):
            arrays[f"index_{s}"] = np.zeros(n, np.int32)
        if slot.kind == "neuron":
            arrays[f"position_{s}"] = np.zeros((n, 2), np.int32)
        if slot.kind == "direction":
            arrays[f"vector_{s}"] = np.zeros((n, widths[slot.layer]), np.float32)
            arrays[f"cossim_{s}"] = np.zeros(n, np.float32)
    for r, row in enumerate(rows):
        for s, term in structure.assign(row.target.objective):
            arrays[f"weight_{s}"][r] = term.weight
            if f"index_{s}" in arrays:
                arrays[f"index_{s}"][r] = term.index
            if term.position is not None:
                arrays[f"position_{s}"][r] = term.position
            if term.vector:
                arrays[f"vector_{s}"][r] = term.vector
                arrays[f"cossim_{s}"][r] = term.cossim_power
    data = {name: tf.constant(array) for name, array in arrays.items()}
    if structure.grouped:
        tokens = [row.job.group if row.job.group is not None else row for row in rows]
        segments = {id(token): i for i, token in enumerate(dict.fromkeys(tokens))}
        data["segment"] = tf.constant([segments[id(t)] for t in tokens], tf.int32)
        data["segments"] = tf.constant(len(segments), tf.int32)
    if structure.diversity_layer:
        weights = [g.diversity_weight if (g := row.target.group) else 0.0 for row in rows]
        data["diversity_weight"] = tf.constant(weights, tf.float32)
    return data


def objective_losses(
    outputs: Sequence[tf.Tensor], data: Data, structure: Structure, border: int
) -> tf.Tensor:
    """Each row's objective (B,) from the outputs of structure.layers, in order."""
    if structure.plain:
        return filter_losses(outputs[0], data["index_0"], border)
    by_layer = dict(zip(structure.layers, outputs, strict=True))
    total = tf.zeros_like(data["weight_0"])
    for s, slot in enumerate(structure.slots):
        activations = tf.cast(by_layer[slot.layer], tf.float32)
        total += data[f"weight_{s}"] * _term(slot.kind, activations, data, s, border)
    return total


def _term(kind: str, activations: tf.Tensor, data: Data, s: int, border: int) -> tf.Tensor:
    """One slot's value per row."""
    if kind == "unit":
        return tf.gather(activations, data[f"index_{s}"], axis=1, batch_dims=1)
    if kind == "neuron":
        at = tf.concat([data[f"position_{s}"], data[f"index_{s}"][:, None]], axis=1)
        return tf.gather_nd(activations, at, batch_dims=1)
    spatial = len(activations.shape) == 4
    if spatial and border:
        activations = activations[:, border:-border, border:-border, :]
    axes = list(range(1, len(activations.shape)))
    if kind == "channel":
        chosen = tf.gather(activations, data[f"index_{s}"], axis=len(axes), batch_dims=1)
        return tf.reduce_mean(chosen, axis=axes[:-1])
    if kind == "layer":
        return tf.reduce_mean(tf.square(activations), axis=axes)
    # direction: each position's dot product, weighted by its cosine to the power p
    vector = data[f"vector_{s}"]
    shape = [-1] + [1] * (len(axes) - 1) + [vector.shape[-1]]
    vector = tf.reshape(vector, shape)
    dot = tf.reduce_sum(activations * vector, axis=-1)
    # sqrt(x + eps): a position whose activations are all 0 (ReLU) keeps a finite gradient
    norms = tf.sqrt(tf.reduce_sum(tf.square(activations), axis=-1) + 1e-12) * tf.norm(
        vector, axis=-1
    )
    power = tf.reshape(data[f"cossim_{s}"], [-1] + [1] * (len(axes) - 1))
    weighted = dot * tf.pow(tf.maximum(dot / norms, COSSIM_FLOOR), power)
    return tf.reduce_mean(weighted, axis=axes[:-1]) if spatial else weighted


def diversity_penalty(activations: tf.Tensor, data: Data, losses: tf.Tensor) -> tf.Tensor:
    """Each row's diversity term (B,): -weight x |objective| x its mean Gram cosine to its group.

    Lucid's diversity objective: the Gram matrix of a picture's activations
    (channels x channels, over positions) says which features it combines,
    wherever they are; pictures whose Gram matrices point the same way repeat
    each other. Only rows of the same segment (group) count. The weight is
    relative to the row's own objective (held constant in the gradient), so
    one weight means the same on every layer and model, whatever the scale of
    its activations.
    """
    activations = tf.cast(activations, tf.float32)
    batch, channels = tf.shape(activations)[0], tf.shape(activations)[-1]
    flat = tf.reshape(activations, [batch, -1, channels])
    gram = tf.reshape(tf.einsum("bpc,bpd->bcd", flat, flat), [batch, -1])
    unit = tf.math.l2_normalize(gram, axis=1)
    cosine = tf.matmul(unit, unit, transpose_b=True)
    segment = data["segment"]
    same = tf.cast(tf.equal(segment[:, None], segment[None, :]), tf.float32)
    others = same - tf.eye(batch)
    size = tf.reduce_sum(same, axis=1)
    scale = data["diversity_weight"] * tf.stop_gradient(tf.abs(losses))
    return -scale * tf.reduce_sum(cosine * others, axis=1) / size


def share_within_groups(grads: tf.Tensor, data: Data, shared: tf.Tensor) -> tf.Tensor:
    """Gradients whose `shared` coefficients are the mean over each row's group.

    Frames of an interpolation start from the same spectrum; averaging the
    gradient of its low frequencies over the group keeps them equal through
    Adam, so every frame has the same low-resolution component (Lucid's
    shared lowres tensor) and the frames line up.
    """
    mean = tf.math.unsorted_segment_mean(grads, data["segment"], data["segments"])
    return tf.where(shared, tf.gather(mean, data["segment"]), grads)
