# syntax=docker/dockerfile:1
# filtercast: multi-stage build.
#   builder: compiles the native module into a wheel (same Python as the runtime).
#   runtime: TensorFlow GPU base, the wheel with its `server` extra, non-root.
#
#   docker build -t filtercast .                                  # weights mounted at run time
#   docker build --build-arg BAKE_IMAGENET=1 -t filtercast .      # ImageNet weights baked in
#   docker run --gpus all -p 50051:50051 -p 9464:9464 \
#       -v /models/vgg16.weights.h5:/weights/vgg16.weights.h5:ro \
#       -e FILTERCAST_WEIGHTS=/weights/vgg16.weights.h5 filtercast

ARG TF_IMAGE=tensorflow/tensorflow:2.21.0-gpu

FROM ${TF_IMAGE} AS builder
# The compiler's exact version does not change the module's ABI, and the base
# image already fixes the distribution: pinning would only break rebuilds.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ cmake make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml CMakeLists.txt README.md ./
COPY native/ native/
COPY server/ server/
COPY client/ client/
COPY proto/ proto/
# The wheel `make wheel` builds (and .ci/wheel_check.sh builds in CI).
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM ${TF_IMAGE} AS runtime
ARG BAKE_IMAGENET=0
# MALLOC_ARENA_MAX: glibc gives each thread (TF, gRPC, encoders) its own
# arena; two keep RSS ~5% lower and flat sooner under load (docs/benchmarks.md).
ENV PYTHONUNBUFFERED=1 \
    MALLOC_ARENA_MAX=2 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    KERAS_HOME=/home/filtercast/.keras \
    FILTERCAST_HOST=0.0.0.0 \
    FILTERCAST_PORT=50051 \
    FILTERCAST_METRICS_PORT=9464 \
    FILTERCAST_WEIGHTS=imagenet
RUN groupadd --system --gid 10001 filtercast \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/filtercast filtercast
COPY --from=builder /wheels /wheels
# Installs this build's own wheel file; its dependencies are bounded in pyproject.toml.
# hadolint ignore=DL3013
RUN wheel="$(ls /wheels/filtercast-*.whl)" \
    && python -m pip install --no-cache-dir "${wheel}[server]" \
    && rm -rf /wheels
USER 10001:10001
WORKDIR /home/filtercast
# Bake the ImageNet weights into the image (Keras' cache) when asked to.
RUN if [ "${BAKE_IMAGENET}" = "1" ]; then \
        python -c "import keras; keras.applications.VGG16(weights='imagenet', include_top=False)"; \
    fi
EXPOSE 50051 9464
# Asks $FILTERCAST_HEALTH_PORT (plaintext, health only) when set, else the main port.
HEALTHCHECK --interval=15s --timeout=6s --start-period=120s --retries=3 \
    CMD ["python", "-m", "filtercast_client.health"]
# The same entry point CI starts: `filtercast serve` == `python -m filtercast_server`.
ENTRYPOINT ["python", "-m", "filtercast_server"]
