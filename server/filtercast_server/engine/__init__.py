"""The engine room: everything that runs TensorFlow and Keras, and nothing else does.

`tf` imports them once (quietly); `devices` picks the CPU or GPU and what it
runs best; `architectures` and `introspection` build and read networks;
`models` holds a loaded one and cuts feature extractors from it; `loading`
loads the configured models and warms them up; `ascent` is the batched
gradient-ascent engine, which keeps rows (`rows`) and steps one *method* per
kind of image: `pixels` (the seeds) and `fourier` (the robust preset).

May import the TF-free core at the package's root (params, jobs, errors,
the model registry) and the native kernels; never `serving`, `cache`,
`observability` or the composition root.
"""
