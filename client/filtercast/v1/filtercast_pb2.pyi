from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Precision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRECISION_UNSPECIFIED: _ClassVar[Precision]
    PRECISION_AUTO: _ClassVar[Precision]
    PRECISION_FLOAT32: _ClassVar[Precision]
    PRECISION_BFLOAT16: _ClassVar[Precision]

class Preset(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRESET_UNSPECIFIED: _ClassVar[Preset]
    PRESET_CLASSIC: _ClassVar[Preset]
    PRESET_UPSCALE: _ClassVar[Preset]
    PRESET_KERAS_IO: _ClassVar[Preset]
    PRESET_ROBUST: _ClassVar[Preset]

class ImageFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_FORMAT_UNSPECIFIED: _ClassVar[ImageFormat]
    IMAGE_FORMAT_PNG: _ClassVar[ImageFormat]
    IMAGE_FORMAT_RAW: _ClassVar[ImageFormat]

class TermKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TERM_KIND_UNSPECIFIED: _ClassVar[TermKind]
    TERM_KIND_CHANNEL: _ClassVar[TermKind]
    TERM_KIND_NEURON: _ClassVar[TermKind]
    TERM_KIND_LAYER: _ClassVar[TermKind]
    TERM_KIND_DIRECTION: _ClassVar[TermKind]
    TERM_KIND_UNIT: _ClassVar[TermKind]

class PullSpace(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PULL_SPACE_UNSPECIFIED: _ClassVar[PullSpace]
    PULL_SPACE_PIXELS: _ClassVar[PullSpace]
    PULL_SPACE_FEATURES: _ClassVar[PullSpace]

class IndexState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INDEX_STATE_UNSPECIFIED: _ClassVar[IndexState]
    INDEX_STATE_QUEUED: _ClassVar[IndexState]
    INDEX_STATE_BUILDING: _ClassVar[IndexState]
    INDEX_STATE_READY: _ClassVar[IndexState]
PRECISION_UNSPECIFIED: Precision
PRECISION_AUTO: Precision
PRECISION_FLOAT32: Precision
PRECISION_BFLOAT16: Precision
PRESET_UNSPECIFIED: Preset
PRESET_CLASSIC: Preset
PRESET_UPSCALE: Preset
PRESET_KERAS_IO: Preset
PRESET_ROBUST: Preset
IMAGE_FORMAT_UNSPECIFIED: ImageFormat
IMAGE_FORMAT_PNG: ImageFormat
IMAGE_FORMAT_RAW: ImageFormat
TERM_KIND_UNSPECIFIED: TermKind
TERM_KIND_CHANNEL: TermKind
TERM_KIND_NEURON: TermKind
TERM_KIND_LAYER: TermKind
TERM_KIND_DIRECTION: TermKind
TERM_KIND_UNIT: TermKind
PULL_SPACE_UNSPECIFIED: PullSpace
PULL_SPACE_PIXELS: PullSpace
PULL_SPACE_FEATURES: PullSpace
INDEX_STATE_UNSPECIFIED: IndexState
INDEX_STATE_QUEUED: IndexState
INDEX_STATE_BUILDING: IndexState
INDEX_STATE_READY: IndexState

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "presets", "limits")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    PRESETS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    presets: _containers.RepeatedCompositeFieldContainer[PresetInfo]
    limits: ServerLimits
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., presets: _Optional[_Iterable[_Union[PresetInfo, _Mapping]]] = ..., limits: _Optional[_Union[ServerLimits, _Mapping]] = ...) -> None: ...

class PresetInfo(_message.Message):
    __slots__ = ("preset", "name", "defaults", "default_filters")
    PRESET_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DEFAULTS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_FILTERS_FIELD_NUMBER: _ClassVar[int]
    preset: Preset
    name: str
    defaults: ResolvedParams
    default_filters: int
    def __init__(self, preset: _Optional[_Union[Preset, str]] = ..., name: _Optional[str] = ..., defaults: _Optional[_Union[ResolvedParams, _Mapping]] = ..., default_filters: _Optional[int] = ...) -> None: ...

class ServerLimits(_message.Message):
    __slots__ = ("min_size", "max_size", "max_steps", "max_filters", "max_request_cost", "max_grid_n", "max_grid_margin", "max_message_bytes", "max_request_bytes", "queue_limit", "client_queue_limit", "max_concurrent_streams", "client_max_streams", "max_stream_seconds", "stall_seconds", "max_objective_terms", "max_direction_values", "max_group_pictures", "max_image_bytes", "max_image_pixels", "max_analyzed_channels", "client_new_steps_per_minute", "min_preview_every")
    MIN_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    MAX_FILTERS_FIELD_NUMBER: _ClassVar[int]
    MAX_REQUEST_COST_FIELD_NUMBER: _ClassVar[int]
    MAX_GRID_N_FIELD_NUMBER: _ClassVar[int]
    MAX_GRID_MARGIN_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_REQUEST_BYTES_FIELD_NUMBER: _ClassVar[int]
    QUEUE_LIMIT_FIELD_NUMBER: _ClassVar[int]
    CLIENT_QUEUE_LIMIT_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_STREAMS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_MAX_STREAMS_FIELD_NUMBER: _ClassVar[int]
    MAX_STREAM_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STALL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_OBJECTIVE_TERMS_FIELD_NUMBER: _ClassVar[int]
    MAX_DIRECTION_VALUES_FIELD_NUMBER: _ClassVar[int]
    MAX_GROUP_PICTURES_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_PIXELS_FIELD_NUMBER: _ClassVar[int]
    MAX_ANALYZED_CHANNELS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_NEW_STEPS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    MIN_PREVIEW_EVERY_FIELD_NUMBER: _ClassVar[int]
    min_size: int
    max_size: int
    max_steps: int
    max_filters: int
    max_request_cost: int
    max_grid_n: int
    max_grid_margin: int
    max_message_bytes: int
    max_request_bytes: int
    queue_limit: int
    client_queue_limit: int
    max_concurrent_streams: int
    client_max_streams: int
    max_stream_seconds: float
    stall_seconds: float
    max_objective_terms: int
    max_direction_values: int
    max_group_pictures: int
    max_image_bytes: int
    max_image_pixels: int
    max_analyzed_channels: int
    client_new_steps_per_minute: int
    min_preview_every: int
    def __init__(self, min_size: _Optional[int] = ..., max_size: _Optional[int] = ..., max_steps: _Optional[int] = ..., max_filters: _Optional[int] = ..., max_request_cost: _Optional[int] = ..., max_grid_n: _Optional[int] = ..., max_grid_margin: _Optional[int] = ..., max_message_bytes: _Optional[int] = ..., max_request_bytes: _Optional[int] = ..., queue_limit: _Optional[int] = ..., client_queue_limit: _Optional[int] = ..., max_concurrent_streams: _Optional[int] = ..., client_max_streams: _Optional[int] = ..., max_stream_seconds: _Optional[float] = ..., stall_seconds: _Optional[float] = ..., max_objective_terms: _Optional[int] = ..., max_direction_values: _Optional[int] = ..., max_group_pictures: _Optional[int] = ..., max_image_bytes: _Optional[int] = ..., max_image_pixels: _Optional[int] = ..., max_analyzed_channels: _Optional[int] = ..., client_new_steps_per_minute: _Optional[int] = ..., min_preview_every: _Optional[int] = ...) -> None: ...

class DescribeModelRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class DescribeModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: ModelInfo
    def __init__(self, model: _Optional[_Union[ModelInfo, _Mapping]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "weights_source", "weights_sha256", "device", "auto_precision", "layers", "default_layer", "input_size", "input_channels", "preprocessing", "default_preset", "display_name", "description", "kind", "dense_layers", "datasets")
    NAME_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_SOURCE_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_SHA256_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    AUTO_PRECISION_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_LAYER_FIELD_NUMBER: _ClassVar[int]
    INPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    INPUT_CHANNELS_FIELD_NUMBER: _ClassVar[int]
    PREPROCESSING_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_PRESET_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DENSE_LAYERS_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    name: str
    weights_source: str
    weights_sha256: str
    device: str
    auto_precision: Precision
    layers: _containers.RepeatedCompositeFieldContainer[LayerInfo]
    default_layer: str
    input_size: int
    input_channels: int
    preprocessing: str
    default_preset: Preset
    display_name: str
    description: str
    kind: str
    dense_layers: _containers.RepeatedCompositeFieldContainer[DenseLayerInfo]
    datasets: _containers.RepeatedCompositeFieldContainer[DatasetInfo]
    def __init__(self, name: _Optional[str] = ..., weights_source: _Optional[str] = ..., weights_sha256: _Optional[str] = ..., device: _Optional[str] = ..., auto_precision: _Optional[_Union[Precision, str]] = ..., layers: _Optional[_Iterable[_Union[LayerInfo, _Mapping]]] = ..., default_layer: _Optional[str] = ..., input_size: _Optional[int] = ..., input_channels: _Optional[int] = ..., preprocessing: _Optional[str] = ..., default_preset: _Optional[_Union[Preset, str]] = ..., display_name: _Optional[str] = ..., description: _Optional[str] = ..., kind: _Optional[str] = ..., dense_layers: _Optional[_Iterable[_Union[DenseLayerInfo, _Mapping]]] = ..., datasets: _Optional[_Iterable[_Union[DatasetInfo, _Mapping]]] = ...) -> None: ...

class DatasetInfo(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DenseLayerInfo(_message.Message):
    __slots__ = ("name", "type", "units", "activation")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    units: int
    activation: str
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., units: _Optional[int] = ..., activation: _Optional[str] = ...) -> None: ...

class LayerInfo(_message.Message):
    __slots__ = ("name", "type", "channels", "output_stride", "dtype")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_STRIDE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    channels: int
    output_stride: int
    dtype: str
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., channels: _Optional[int] = ..., output_stride: _Optional[int] = ..., dtype: _Optional[str] = ...) -> None: ...

class FilterSelection(_message.Message):
    __slots__ = ("range", "list", "ranges")
    RANGE_FIELD_NUMBER: _ClassVar[int]
    LIST_FIELD_NUMBER: _ClassVar[int]
    RANGES_FIELD_NUMBER: _ClassVar[int]
    range: FilterRange
    list: FilterList
    ranges: FilterRanges
    def __init__(self, range: _Optional[_Union[FilterRange, _Mapping]] = ..., list: _Optional[_Union[FilterList, _Mapping]] = ..., ranges: _Optional[_Union[FilterRanges, _Mapping]] = ...) -> None: ...

class FilterRange(_message.Message):
    __slots__ = ("start", "stop")
    START_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    start: int
    stop: int
    def __init__(self, start: _Optional[int] = ..., stop: _Optional[int] = ...) -> None: ...

class FilterRanges(_message.Message):
    __slots__ = ("ranges",)
    RANGES_FIELD_NUMBER: _ClassVar[int]
    ranges: _containers.RepeatedCompositeFieldContainer[FilterRange]
    def __init__(self, ranges: _Optional[_Iterable[_Union[FilterRange, _Mapping]]] = ...) -> None: ...

class FilterList(_message.Message):
    __slots__ = ("indices",)
    INDICES_FIELD_NUMBER: _ClassVar[int]
    indices: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, indices: _Optional[_Iterable[int]] = ...) -> None: ...

class Overrides(_message.Message):
    __slots__ = ("size", "steps", "step_size", "upscale_rounds", "upscale_factor", "deprocess_std", "border", "crop", "objective", "preprocessing", "revive", "pad", "jitter", "scale_jitter", "rotate_degrees", "init_scale")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    STEP_SIZE_FIELD_NUMBER: _ClassVar[int]
    UPSCALE_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    UPSCALE_FACTOR_FIELD_NUMBER: _ClassVar[int]
    DEPROCESS_STD_FIELD_NUMBER: _ClassVar[int]
    BORDER_FIELD_NUMBER: _ClassVar[int]
    CROP_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    PREPROCESSING_FIELD_NUMBER: _ClassVar[int]
    REVIVE_FIELD_NUMBER: _ClassVar[int]
    PAD_FIELD_NUMBER: _ClassVar[int]
    JITTER_FIELD_NUMBER: _ClassVar[int]
    SCALE_JITTER_FIELD_NUMBER: _ClassVar[int]
    ROTATE_DEGREES_FIELD_NUMBER: _ClassVar[int]
    INIT_SCALE_FIELD_NUMBER: _ClassVar[int]
    size: int
    steps: int
    step_size: float
    upscale_rounds: int
    upscale_factor: float
    deprocess_std: float
    border: int
    crop: int
    objective: str
    preprocessing: str
    revive: int
    pad: int
    jitter: int
    scale_jitter: float
    rotate_degrees: float
    init_scale: float
    def __init__(self, size: _Optional[int] = ..., steps: _Optional[int] = ..., step_size: _Optional[float] = ..., upscale_rounds: _Optional[int] = ..., upscale_factor: _Optional[float] = ..., deprocess_std: _Optional[float] = ..., border: _Optional[int] = ..., crop: _Optional[int] = ..., objective: _Optional[str] = ..., preprocessing: _Optional[str] = ..., revive: _Optional[int] = ..., pad: _Optional[int] = ..., jitter: _Optional[int] = ..., scale_jitter: _Optional[float] = ..., rotate_degrees: _Optional[float] = ..., init_scale: _Optional[float] = ...) -> None: ...

class Position(_message.Message):
    __slots__ = ("y", "x")
    Y_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    y: int
    x: int
    def __init__(self, y: _Optional[int] = ..., x: _Optional[int] = ...) -> None: ...

class ObjectiveTerm(_message.Message):
    __slots__ = ("kind", "layer", "index", "position", "vector", "cossim_power", "weight")
    KIND_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    COSSIM_POWER_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    kind: TermKind
    layer: str
    index: int
    position: Position
    vector: _containers.RepeatedScalarFieldContainer[float]
    cossim_power: float
    weight: float
    def __init__(self, kind: _Optional[_Union[TermKind, str]] = ..., layer: _Optional[str] = ..., index: _Optional[int] = ..., position: _Optional[_Union[Position, _Mapping]] = ..., vector: _Optional[_Iterable[float]] = ..., cossim_power: _Optional[float] = ..., weight: _Optional[float] = ...) -> None: ...

class Objective(_message.Message):
    __slots__ = ("terms",)
    TERMS_FIELD_NUMBER: _ClassVar[int]
    terms: _containers.RepeatedCompositeFieldContainer[ObjectiveTerm]
    def __init__(self, terms: _Optional[_Iterable[_Union[ObjectiveTerm, _Mapping]]] = ...) -> None: ...

class Diversity(_message.Message):
    __slots__ = ("k", "weight", "layer")
    K_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    k: int
    weight: float
    layer: str
    def __init__(self, k: _Optional[int] = ..., weight: _Optional[float] = ..., layer: _Optional[str] = ...) -> None: ...

class Interpolation(_message.Message):
    __slots__ = ("start", "end", "frames")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    start: Objective
    end: Objective
    frames: int
    def __init__(self, start: _Optional[_Union[Objective, _Mapping]] = ..., end: _Optional[_Union[Objective, _Mapping]] = ..., frames: _Optional[int] = ...) -> None: ...

class Accentuation(_message.Message):
    __slots__ = ("image", "pull", "pull_space")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    PULL_FIELD_NUMBER: _ClassVar[int]
    PULL_SPACE_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    pull: float
    pull_space: PullSpace
    def __init__(self, image: _Optional[bytes] = ..., pull: _Optional[float] = ..., pull_space: _Optional[_Union[PullSpace, str]] = ...) -> None: ...

class GridOptions(_message.Message):
    __slots__ = ("disabled", "n", "margin")
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    disabled: bool
    n: int
    margin: int
    def __init__(self, disabled: _Optional[bool] = ..., n: _Optional[int] = ..., margin: _Optional[int] = ...) -> None: ...

class VisualizeFiltersRequest(_message.Message):
    __slots__ = ("model", "layer", "filters", "preset", "overrides", "seed", "precision", "image_format", "grid", "keep_dead_filters", "objectives", "diversity", "interpolation", "accentuate", "preview_every")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    GRID_FIELD_NUMBER: _ClassVar[int]
    KEEP_DEAD_FILTERS_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVES_FIELD_NUMBER: _ClassVar[int]
    DIVERSITY_FIELD_NUMBER: _ClassVar[int]
    INTERPOLATION_FIELD_NUMBER: _ClassVar[int]
    ACCENTUATE_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_EVERY_FIELD_NUMBER: _ClassVar[int]
    model: str
    layer: str
    filters: FilterSelection
    preset: Preset
    overrides: Overrides
    seed: int
    precision: Precision
    image_format: ImageFormat
    grid: GridOptions
    keep_dead_filters: bool
    objectives: _containers.RepeatedCompositeFieldContainer[Objective]
    diversity: Diversity
    interpolation: Interpolation
    accentuate: Accentuation
    preview_every: int
    def __init__(self, model: _Optional[str] = ..., layer: _Optional[str] = ..., filters: _Optional[_Union[FilterSelection, _Mapping]] = ..., preset: _Optional[_Union[Preset, str]] = ..., overrides: _Optional[_Union[Overrides, _Mapping]] = ..., seed: _Optional[int] = ..., precision: _Optional[_Union[Precision, str]] = ..., image_format: _Optional[_Union[ImageFormat, str]] = ..., grid: _Optional[_Union[GridOptions, _Mapping]] = ..., keep_dead_filters: _Optional[bool] = ..., objectives: _Optional[_Iterable[_Union[Objective, _Mapping]]] = ..., diversity: _Optional[_Union[Diversity, _Mapping]] = ..., interpolation: _Optional[_Union[Interpolation, _Mapping]] = ..., accentuate: _Optional[_Union[Accentuation, _Mapping]] = ..., preview_every: _Optional[int] = ...) -> None: ...

class VisualizeFiltersResponse(_message.Message):
    __slots__ = ("accepted", "filter", "grid", "summary", "preview")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    GRID_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    accepted: Accepted
    filter: FilterResult
    grid: Grid
    summary: Summary
    preview: FilterPreview
    def __init__(self, accepted: _Optional[_Union[Accepted, _Mapping]] = ..., filter: _Optional[_Union[FilterResult, _Mapping]] = ..., grid: _Optional[_Union[Grid, _Mapping]] = ..., summary: _Optional[_Union[Summary, _Mapping]] = ..., preview: _Optional[_Union[FilterPreview, _Mapping]] = ...) -> None: ...

class FilterPreview(_message.Message):
    __slots__ = ("index", "step", "loss", "image", "target", "member")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    index: int
    step: int
    loss: float
    image: Image
    target: int
    member: int
    def __init__(self, index: _Optional[int] = ..., step: _Optional[int] = ..., loss: _Optional[float] = ..., image: _Optional[_Union[Image, _Mapping]] = ..., target: _Optional[int] = ..., member: _Optional[int] = ...) -> None: ...

class ResolvedParams(_message.Message):
    __slots__ = ("model", "layer", "preset", "precision", "seed", "size", "steps", "step_size", "init_scale", "init_offset", "gradient_norm", "border", "dead_threshold", "upscale_rounds", "upscale_factor", "deprocess_std", "deprocess_eps", "crop", "grid_n", "grid_margin", "grid_order", "grid_disabled", "image_format", "parameterization", "objective", "preprocessing", "revive", "pad", "jitter", "scale_jitter", "rotate_degrees", "start_image_sha256", "pull", "pull_space")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    STEP_SIZE_FIELD_NUMBER: _ClassVar[int]
    INIT_SCALE_FIELD_NUMBER: _ClassVar[int]
    INIT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_NORM_FIELD_NUMBER: _ClassVar[int]
    BORDER_FIELD_NUMBER: _ClassVar[int]
    DEAD_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    UPSCALE_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    UPSCALE_FACTOR_FIELD_NUMBER: _ClassVar[int]
    DEPROCESS_STD_FIELD_NUMBER: _ClassVar[int]
    DEPROCESS_EPS_FIELD_NUMBER: _ClassVar[int]
    CROP_FIELD_NUMBER: _ClassVar[int]
    GRID_N_FIELD_NUMBER: _ClassVar[int]
    GRID_MARGIN_FIELD_NUMBER: _ClassVar[int]
    GRID_ORDER_FIELD_NUMBER: _ClassVar[int]
    GRID_DISABLED_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    PARAMETERIZATION_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    PREPROCESSING_FIELD_NUMBER: _ClassVar[int]
    REVIVE_FIELD_NUMBER: _ClassVar[int]
    PAD_FIELD_NUMBER: _ClassVar[int]
    JITTER_FIELD_NUMBER: _ClassVar[int]
    SCALE_JITTER_FIELD_NUMBER: _ClassVar[int]
    ROTATE_DEGREES_FIELD_NUMBER: _ClassVar[int]
    START_IMAGE_SHA256_FIELD_NUMBER: _ClassVar[int]
    PULL_FIELD_NUMBER: _ClassVar[int]
    PULL_SPACE_FIELD_NUMBER: _ClassVar[int]
    model: str
    layer: str
    preset: Preset
    precision: Precision
    seed: int
    size: int
    steps: int
    step_size: float
    init_scale: float
    init_offset: float
    gradient_norm: str
    border: int
    dead_threshold: float
    upscale_rounds: int
    upscale_factor: float
    deprocess_std: float
    deprocess_eps: float
    crop: int
    grid_n: int
    grid_margin: int
    grid_order: str
    grid_disabled: bool
    image_format: ImageFormat
    parameterization: str
    objective: str
    preprocessing: str
    revive: int
    pad: int
    jitter: int
    scale_jitter: float
    rotate_degrees: float
    start_image_sha256: str
    pull: float
    pull_space: str
    def __init__(self, model: _Optional[str] = ..., layer: _Optional[str] = ..., preset: _Optional[_Union[Preset, str]] = ..., precision: _Optional[_Union[Precision, str]] = ..., seed: _Optional[int] = ..., size: _Optional[int] = ..., steps: _Optional[int] = ..., step_size: _Optional[float] = ..., init_scale: _Optional[float] = ..., init_offset: _Optional[float] = ..., gradient_norm: _Optional[str] = ..., border: _Optional[int] = ..., dead_threshold: _Optional[float] = ..., upscale_rounds: _Optional[int] = ..., upscale_factor: _Optional[float] = ..., deprocess_std: _Optional[float] = ..., deprocess_eps: _Optional[float] = ..., crop: _Optional[int] = ..., grid_n: _Optional[int] = ..., grid_margin: _Optional[int] = ..., grid_order: _Optional[str] = ..., grid_disabled: _Optional[bool] = ..., image_format: _Optional[_Union[ImageFormat, str]] = ..., parameterization: _Optional[str] = ..., objective: _Optional[str] = ..., preprocessing: _Optional[str] = ..., revive: _Optional[int] = ..., pad: _Optional[int] = ..., jitter: _Optional[int] = ..., scale_jitter: _Optional[float] = ..., rotate_degrees: _Optional[float] = ..., start_image_sha256: _Optional[str] = ..., pull: _Optional[float] = ..., pull_space: _Optional[str] = ...) -> None: ...

class Accepted(_message.Message):
    __slots__ = ("request_id", "params", "filter_count", "filters", "weights_source", "weights_sha256", "device", "cached_filters", "objectives")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    FILTER_COUNT_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_SOURCE_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_SHA256_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    CACHED_FILTERS_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVES_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    params: ResolvedParams
    filter_count: int
    filters: _containers.RepeatedScalarFieldContainer[int]
    weights_source: str
    weights_sha256: str
    device: str
    cached_filters: _containers.RepeatedScalarFieldContainer[int]
    objectives: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, request_id: _Optional[str] = ..., params: _Optional[_Union[ResolvedParams, _Mapping]] = ..., filter_count: _Optional[int] = ..., filters: _Optional[_Iterable[int]] = ..., weights_source: _Optional[str] = ..., weights_sha256: _Optional[str] = ..., device: _Optional[str] = ..., cached_filters: _Optional[_Iterable[int]] = ..., objectives: _Optional[_Iterable[str]] = ...) -> None: ...

class Image(_message.Message):
    __slots__ = ("format", "data", "width", "height", "channels")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    format: ImageFormat
    data: bytes
    width: int
    height: int
    channels: int
    def __init__(self, format: _Optional[_Union[ImageFormat, str]] = ..., data: _Optional[bytes] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., channels: _Optional[int] = ...) -> None: ...

class FilterResult(_message.Message):
    __slots__ = ("index", "loss", "dead", "image", "steps", "seconds", "done", "total", "revived", "cached", "image_key", "target", "member", "loss_curve")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    DEAD_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    REVIVED_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    IMAGE_KEY_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    LOSS_CURVE_FIELD_NUMBER: _ClassVar[int]
    index: int
    loss: float
    dead: bool
    image: Image
    steps: int
    seconds: float
    done: int
    total: int
    revived: int
    cached: bool
    image_key: str
    target: int
    member: int
    loss_curve: bytes
    def __init__(self, index: _Optional[int] = ..., loss: _Optional[float] = ..., dead: _Optional[bool] = ..., image: _Optional[_Union[Image, _Mapping]] = ..., steps: _Optional[int] = ..., seconds: _Optional[float] = ..., done: _Optional[int] = ..., total: _Optional[int] = ..., revived: _Optional[int] = ..., cached: _Optional[bool] = ..., image_key: _Optional[str] = ..., target: _Optional[int] = ..., member: _Optional[int] = ..., loss_curve: _Optional[bytes] = ...) -> None: ...

class Grid(_message.Message):
    __slots__ = ("image", "n", "margin", "order")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    image: Image
    n: int
    margin: int
    order: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, image: _Optional[_Union[Image, _Mapping]] = ..., n: _Optional[int] = ..., margin: _Optional[int] = ..., order: _Optional[_Iterable[int]] = ...) -> None: ...

class Summary(_message.Message):
    __slots__ = ("kept", "dead", "total_seconds", "mean_filter_seconds", "revived", "cached")
    KEPT_FIELD_NUMBER: _ClassVar[int]
    DEAD_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MEAN_FILTER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REVIVED_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    kept: int
    dead: int
    total_seconds: float
    mean_filter_seconds: float
    revived: int
    cached: int
    def __init__(self, kept: _Optional[int] = ..., dead: _Optional[int] = ..., total_seconds: _Optional[float] = ..., mean_filter_seconds: _Optional[float] = ..., revived: _Optional[int] = ..., cached: _Optional[int] = ...) -> None: ...

class AnalyzeImageRequest(_message.Message):
    __slots__ = ("model", "layer", "image", "size", "top_k", "channels", "raw_maps")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    RAW_MAPS_FIELD_NUMBER: _ClassVar[int]
    model: str
    layer: str
    image: bytes
    size: int
    top_k: int
    channels: _containers.RepeatedScalarFieldContainer[int]
    raw_maps: bool
    def __init__(self, model: _Optional[str] = ..., layer: _Optional[str] = ..., image: _Optional[bytes] = ..., size: _Optional[int] = ..., top_k: _Optional[int] = ..., channels: _Optional[_Iterable[int]] = ..., raw_maps: _Optional[bool] = ...) -> None: ...

class AnalyzeImageResponse(_message.Message):
    __slots__ = ("model", "layer", "seen", "preprocessing", "source_format", "source_mode", "source_width", "source_height", "map_height", "map_width", "channel_count", "layer_total", "top", "named")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    SEEN_FIELD_NUMBER: _ClassVar[int]
    PREPROCESSING_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_MODE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_WIDTH_FIELD_NUMBER: _ClassVar[int]
    SOURCE_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    MAP_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    MAP_WIDTH_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAYER_TOTAL_FIELD_NUMBER: _ClassVar[int]
    TOP_FIELD_NUMBER: _ClassVar[int]
    NAMED_FIELD_NUMBER: _ClassVar[int]
    model: str
    layer: str
    seen: Image
    preprocessing: str
    source_format: str
    source_mode: str
    source_width: int
    source_height: int
    map_height: int
    map_width: int
    channel_count: int
    layer_total: float
    top: _containers.RepeatedCompositeFieldContainer[ChannelActivation]
    named: _containers.RepeatedCompositeFieldContainer[ChannelActivation]
    def __init__(self, model: _Optional[str] = ..., layer: _Optional[str] = ..., seen: _Optional[_Union[Image, _Mapping]] = ..., preprocessing: _Optional[str] = ..., source_format: _Optional[str] = ..., source_mode: _Optional[str] = ..., source_width: _Optional[int] = ..., source_height: _Optional[int] = ..., map_height: _Optional[int] = ..., map_width: _Optional[int] = ..., channel_count: _Optional[int] = ..., layer_total: _Optional[float] = ..., top: _Optional[_Iterable[_Union[ChannelActivation, _Mapping]]] = ..., named: _Optional[_Iterable[_Union[ChannelActivation, _Mapping]]] = ...) -> None: ...

class ChannelActivation(_message.Message):
    __slots__ = ("channel", "mean", "share", "max", "peak", "heatmap", "raw_map")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    PEAK_FIELD_NUMBER: _ClassVar[int]
    HEATMAP_FIELD_NUMBER: _ClassVar[int]
    RAW_MAP_FIELD_NUMBER: _ClassVar[int]
    channel: int
    mean: float
    share: float
    max: float
    peak: Position
    heatmap: Image
    raw_map: bytes
    def __init__(self, channel: _Optional[int] = ..., mean: _Optional[float] = ..., share: _Optional[float] = ..., max: _Optional[float] = ..., peak: _Optional[_Union[Position, _Mapping]] = ..., heatmap: _Optional[_Union[Image, _Mapping]] = ..., raw_map: _Optional[bytes] = ...) -> None: ...

class DatasetExamplesRequest(_message.Message):
    __slots__ = ("model", "layer", "dataset", "filters", "top_k")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    model: str
    layer: str
    dataset: str
    filters: FilterSelection
    top_k: int
    def __init__(self, model: _Optional[str] = ..., layer: _Optional[str] = ..., dataset: _Optional[str] = ..., filters: _Optional[_Union[FilterSelection, _Mapping]] = ..., top_k: _Optional[int] = ...) -> None: ...

class DatasetExamplesResponse(_message.Message):
    __slots__ = ("progress", "channel", "summary")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    progress: IndexProgress
    channel: ChannelExamples
    summary: ExamplesSummary
    def __init__(self, progress: _Optional[_Union[IndexProgress, _Mapping]] = ..., channel: _Optional[_Union[ChannelExamples, _Mapping]] = ..., summary: _Optional[_Union[ExamplesSummary, _Mapping]] = ...) -> None: ...

class IndexProgress(_message.Message):
    __slots__ = ("state", "images_done", "images_total", "skipped")
    STATE_FIELD_NUMBER: _ClassVar[int]
    IMAGES_DONE_FIELD_NUMBER: _ClassVar[int]
    IMAGES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    state: IndexState
    images_done: int
    images_total: int
    skipped: int
    def __init__(self, state: _Optional[_Union[IndexState, str]] = ..., images_done: _Optional[int] = ..., images_total: _Optional[int] = ..., skipped: _Optional[int] = ...) -> None: ...

class ChannelExamples(_message.Message):
    __slots__ = ("channel", "examples")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    channel: int
    examples: _containers.RepeatedCompositeFieldContainer[DatasetExample]
    def __init__(self, channel: _Optional[int] = ..., examples: _Optional[_Iterable[_Union[DatasetExample, _Mapping]]] = ...) -> None: ...

class DatasetExample(_message.Message):
    __slots__ = ("image", "image_sha256", "value", "position", "box", "crop")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SHA256_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    CROP_FIELD_NUMBER: _ClassVar[int]
    image: str
    image_sha256: str
    value: float
    position: Position
    box: CropBox
    crop: Image
    def __init__(self, image: _Optional[str] = ..., image_sha256: _Optional[str] = ..., value: _Optional[float] = ..., position: _Optional[_Union[Position, _Mapping]] = ..., box: _Optional[_Union[CropBox, _Mapping]] = ..., crop: _Optional[_Union[Image, _Mapping]] = ...) -> None: ...

class CropBox(_message.Message):
    __slots__ = ("top", "left", "height", "width")
    TOP_FIELD_NUMBER: _ClassVar[int]
    LEFT_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    top: int
    left: int
    height: int
    width: int
    def __init__(self, top: _Optional[int] = ..., left: _Optional[int] = ..., height: _Optional[int] = ..., width: _Optional[int] = ...) -> None: ...

class ExamplesSummary(_message.Message):
    __slots__ = ("model", "layer", "dataset", "content_sha256", "images", "skipped", "size", "map_height", "map_width", "receptive_field", "from_store", "index_seconds", "total_seconds")
    class SkippedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    CONTENT_SHA256_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MAP_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    MAP_WIDTH_FIELD_NUMBER: _ClassVar[int]
    RECEPTIVE_FIELD_FIELD_NUMBER: _ClassVar[int]
    FROM_STORE_FIELD_NUMBER: _ClassVar[int]
    INDEX_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    model: str
    layer: str
    dataset: str
    content_sha256: str
    images: int
    skipped: _containers.ScalarMap[str, int]
    size: int
    map_height: int
    map_width: int
    receptive_field: int
    from_store: bool
    index_seconds: float
    total_seconds: float
    def __init__(self, model: _Optional[str] = ..., layer: _Optional[str] = ..., dataset: _Optional[str] = ..., content_sha256: _Optional[str] = ..., images: _Optional[int] = ..., skipped: _Optional[_Mapping[str, int]] = ..., size: _Optional[int] = ..., map_height: _Optional[int] = ..., map_width: _Optional[int] = ..., receptive_field: _Optional[int] = ..., from_store: _Optional[bool] = ..., index_seconds: _Optional[float] = ..., total_seconds: _Optional[float] = ...) -> None: ...
