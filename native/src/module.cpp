// pybind11 bindings of filtercast's image kernels.
//
// Every entry point validates its input completely (dtype, rank, shape,
// parameter ranges) while holding the GIL, then releases the GIL and spreads
// the batch over threads. Arrays of another layout are copied into C order,
// never read with the wrong strides.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "image_ops.hpp"

namespace py = pybind11;
using filtercast::DeprocessParams;

namespace {

std::atomic<int> g_default_threads{filtercast::available_cores()};

int resolve_threads(std::optional<int> threads) {
  if (!threads) return g_default_threads.load();
  if (*threads < 1) {
    throw py::value_error("threads must be >= 1, got " + std::to_string(*threads));
  }
  return *threads;
}

std::string shape_of(const py::array& a) {
  std::ostringstream s;
  s << "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s << (i ? ", " : "") << a.shape(i);
  s << (a.ndim() == 1 ? ",)" : ")");
  return s.str();
}

std::string dtype_of(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

// A batch of (H, W, C) images viewed as (N, H, W, C), C = 3 (RGB) or 1
// (grayscale); `single` remembers that the caller passed one image so the
// result drops the batch axis again.
template <typename T>
struct Batch {
  py::array_t<T, py::array::c_style | py::array::forcecast> data;
  std::size_t n, height, width, channels;
  bool single;

  std::size_t image_values() const { return height * width * channels; }
};

template <typename T>
Batch<T> as_batch(const py::array& images, const char* what) {
  const py::ssize_t rank = images.ndim();
  if (rank != 3 && rank != 4) {
    throw py::value_error(std::string(what) + " must have shape (N, H, W, C) or (H, W, C), got rank " +
                          std::to_string(rank) + " array of shape " + shape_of(images));
  }
  const py::ssize_t channels = images.shape(rank - 1);
  if (channels != 3 && channels != 1) {
    throw py::value_error(std::string(what) + " must have 3 channels (RGB) or 1 (grayscale) in the last axis, got " +
                          std::to_string(channels) + " (shape " + shape_of(images) + ")");
  }
  const bool single = rank == 3;
  const std::size_t n = single ? 1 : static_cast<std::size_t>(images.shape(0));
  const std::size_t height = static_cast<std::size_t>(images.shape(rank - 3));
  const std::size_t width = static_cast<std::size_t>(images.shape(rank - 2));
  if (n == 0) throw py::value_error(std::string(what) + " is an empty batch (N = 0)");
  if (height == 0 || width == 0) {
    throw py::value_error(std::string(what) + " has an empty image (shape " + shape_of(images) + ")");
  }
  auto data = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(images);
  if (!data) throw py::type_error(std::string("could not convert ") + what + " to a C-ordered array");
  return {std::move(data), n, height, width, static_cast<std::size_t>(channels), single};
}

void require_kind(const py::array& a, char kind, const char* what, const char* expected) {
  if (a.dtype().kind() != kind) {
    throw py::type_error(std::string(what) + " must be " + expected + ", got dtype " + dtype_of(a));
  }
}

void require_finite_positive(double value, const char* name) {
  if (!std::isfinite(value) || value <= 0.0) {
    std::ostringstream s;
    s << name << " must be a finite number > 0, got " << value;
    throw py::value_error(s.str());
  }
}

// The shape of a batch's pictures with `crop` pixels removed from each side;
// a crop that leaves nothing is a ValueError naming the largest that works.
std::vector<py::ssize_t> cropped_shape(const Batch<float>& batch, std::size_t crop) {
  if (2 * crop >= batch.height || 2 * crop >= batch.width) {
    throw py::value_error("crop=" + std::to_string(crop) + " removes the whole " +
                          std::to_string(batch.height) + "x" + std::to_string(batch.width) +
                          " image; crop must be <= " +
                          std::to_string((std::min(batch.height, batch.width) - 1) / 2));
  }
  std::vector<py::ssize_t> shape = {static_cast<py::ssize_t>(batch.height - 2 * crop),
                                    static_cast<py::ssize_t>(batch.width - 2 * crop),
                                    static_cast<py::ssize_t>(batch.channels)};
  if (!batch.single) shape.insert(shape.begin(), static_cast<py::ssize_t>(batch.n));
  return shape;
}

py::array_t<std::uint8_t> deprocess(const py::array& images, double std, py::ssize_t crop_arg,
                                    double eps, std::optional<int> threads) {
  require_kind(images, 'f', "images", "a floating-point array (float32 preferred)");
  require_finite_positive(std, "std");
  require_finite_positive(eps, "eps");
  const int workers = resolve_threads(threads);
  if (crop_arg < 0) throw py::value_error("crop must be >= 0, got " + std::to_string(crop_arg));
  const std::size_t crop = static_cast<std::size_t>(crop_arg);
  Batch<float> batch = as_batch<float>(images, "images");
  const std::vector<py::ssize_t> shape = cropped_shape(batch, crop);
  const std::size_t out_h = batch.height - 2 * crop, out_w = batch.width - 2 * crop;
  py::array_t<std::uint8_t> out(shape);

  const float* in_ptr = batch.data.data();
  std::uint8_t* out_ptr = out.mutable_data();
  const std::size_t in_stride = batch.image_values(), out_stride = out_h * out_w * batch.channels;
  const DeprocessParams params{std, eps, crop};
  std::vector<char> finite(batch.n, 1);
  {
    py::gil_scoped_release release;
    filtercast::parallel_for(batch.n, workers, [&](std::size_t i) {
      finite[i] = filtercast::deprocess_image(in_ptr + i * in_stride, batch.height, batch.width,
                                              batch.channels, params, out_ptr + i * out_stride);
    });
  }
  for (std::size_t i = 0; i < batch.n; ++i) {
    if (!finite[i]) {
      throw py::value_error("images contain non-finite values (NaN or inf) in image " +
                            std::to_string(i));
    }
  }
  return out;
}

py::array_t<std::uint8_t> sigmoid_pixels(const py::array& images,
                                         const py::array_t<double, py::array::c_style | py::array::forcecast>& mix,
                                         py::ssize_t crop_arg, std::optional<int> threads) {
  require_kind(images, 'f', "images", "a floating-point array (float32 preferred)");
  const int workers = resolve_threads(threads);
  if (crop_arg < 0) throw py::value_error("crop must be >= 0, got " + std::to_string(crop_arg));
  const std::size_t crop = static_cast<std::size_t>(crop_arg);
  Batch<float> batch = as_batch<float>(images, "images");
  const py::ssize_t c = static_cast<py::ssize_t>(batch.channels);
  if (mix.ndim() != 2 || mix.shape(0) != c || mix.shape(1) != c) {
    throw py::value_error("mix must have shape (" + std::to_string(c) + ", " + std::to_string(c) +
                          ") for " + std::to_string(c) + "-channel images, got shape " + shape_of(mix));
  }
  for (py::ssize_t i = 0; i < mix.size(); ++i) {  // computed in float32: within its range
    if (!(std::fabs(mix.data()[i]) <= 3.0e38)) {
      throw py::value_error("mix must be finite and within float32's range");
    }
  }
  const std::vector<py::ssize_t> shape = cropped_shape(batch, crop);
  const std::size_t out_h = batch.height - 2 * crop, out_w = batch.width - 2 * crop;
  py::array_t<std::uint8_t> out(shape);
  const float* in_ptr = batch.data.data();
  const double* mix_ptr = mix.data();
  std::uint8_t* out_ptr = out.mutable_data();
  const std::size_t in_stride = batch.image_values(), out_stride = out_h * out_w * batch.channels;
  std::vector<char> finite(batch.n, 1);
  {
    py::gil_scoped_release release;
    filtercast::parallel_for(batch.n, workers, [&](std::size_t i) {
      finite[i] = filtercast::sigmoid_pixels_image(in_ptr + i * in_stride, batch.height, batch.width,
                                                   batch.channels, mix_ptr, crop, out_ptr + i * out_stride);
    });
  }
  for (std::size_t i = 0; i < batch.n; ++i) {
    if (!finite[i]) {
      throw py::value_error("images contain non-finite values (NaN or inf) in image " + std::to_string(i));
    }
  }
  return out;
}

// mean/std: a scalar for every image, or one value per image.
std::vector<double> per_image(const py::array_t<double, py::array::forcecast>& values,
                              std::size_t n, const char* name) {
  std::vector<double> result;
  if (values.ndim() == 0) {
    result.assign(n, *values.data());
  } else if (values.ndim() == 1 && static_cast<std::size_t>(values.shape(0)) == n) {
    result.assign(values.data(), values.data() + n);
  } else {
    throw py::value_error(std::string(name) + " must be a scalar or have one value per image (" +
                          std::to_string(n) + "), got shape " + shape_of(values));
  }
  for (double v : result) {
    if (!std::isfinite(v)) throw py::value_error(std::string(name) + " must be finite");
  }
  return result;
}

py::array_t<float> process(const py::array& images, const py::array_t<double, py::array::forcecast>& mean,
                           const py::array_t<double, py::array::forcecast>& std, double target_std,
                           std::optional<int> threads) {
  require_kind(images, 'u', "images", "a uint8 array");
  if (images.itemsize() != 1) {
    throw py::type_error("images must be a uint8 array, got dtype " + dtype_of(images));
  }
  require_finite_positive(target_std, "target_std");
  const int workers = resolve_threads(threads);
  Batch<std::uint8_t> batch = as_batch<std::uint8_t>(images, "images");
  const std::vector<double> means = per_image(mean, batch.n, "mean");
  const std::vector<double> stds = per_image(std, batch.n, "std");
  for (double s : stds) {
    if (s < 0.0) throw py::value_error("std must be >= 0");
  }
  py::array_t<float> out(images.request().shape);
  const std::uint8_t* in_ptr = batch.data.data();
  float* out_ptr = out.mutable_data();
  const std::size_t stride = batch.image_values();
  {
    py::gil_scoped_release release;
    filtercast::parallel_for(batch.n, workers, [&](std::size_t i) {
      filtercast::process_image(in_ptr + i * stride, stride, means[i], stds[i], target_std,
                                out_ptr + i * stride);
    });
  }
  return out;
}

py::array_t<std::uint8_t> stitch(const py::array& images, std::optional<std::vector<py::ssize_t>> order,
                                 py::ssize_t n, py::ssize_t margin, std::optional<int> threads) {
  require_kind(images, 'u', "images", "a uint8 array");
  if (images.itemsize() != 1) {
    throw py::type_error("images must be a uint8 array, got dtype " + dtype_of(images));
  }
  if (images.ndim() != 4) {
    throw py::value_error("images must have shape (N, H, W, C), got shape " + shape_of(images));
  }
  if (n < 1) throw py::value_error("n must be >= 1, got " + std::to_string(n));
  if (margin < 0) throw py::value_error("margin must be >= 0, got " + std::to_string(margin));
  const int workers = resolve_threads(threads);
  Batch<std::uint8_t> batch = as_batch<std::uint8_t>(images, "images");
  const std::size_t tiles = static_cast<std::size_t>(n) * static_cast<std::size_t>(n);
  if (tiles > batch.n) {
    throw py::value_error("an n x n grid with n=" + std::to_string(n) + " needs " + std::to_string(tiles) +
                          " images, got " + std::to_string(batch.n) + "; n must be <= " +
                          std::to_string(static_cast<std::size_t>(std::sqrt(static_cast<double>(batch.n)))));
  }
  std::vector<std::size_t> positions(tiles);
  if (order) {
    if (order->size() < tiles) {
      throw py::value_error("order has " + std::to_string(order->size()) + " entries, an n x n grid with n=" +
                            std::to_string(n) + " needs " + std::to_string(tiles));
    }
    for (std::size_t i = 0; i < tiles; ++i) {
      const py::ssize_t index = (*order)[i];
      if (index < 0 || static_cast<std::size_t>(index) >= batch.n) {
        throw py::value_error("order[" + std::to_string(i) + "] = " + std::to_string(index) +
                              " is out of range; valid image indices are 0.." + std::to_string(batch.n - 1));
      }
      positions[i] = static_cast<std::size_t>(index);
    }
  } else {
    for (std::size_t i = 0; i < tiles; ++i) positions[i] = i;
  }
  const std::size_t m = static_cast<std::size_t>(margin), side = static_cast<std::size_t>(n);
  const std::size_t grid_h = side * batch.height + (side - 1) * m;
  const std::size_t grid_w = side * batch.width + (side - 1) * m;
  py::array_t<std::uint8_t> grid({static_cast<py::ssize_t>(grid_h), static_cast<py::ssize_t>(grid_w),
                                  static_cast<py::ssize_t>(batch.channels)});
  const std::uint8_t* in_ptr = batch.data.data();
  std::uint8_t* grid_ptr = grid.mutable_data();
  const std::size_t stride = batch.image_values();
  {
    py::gil_scoped_release release;
    // Zero only the margins' share is not worth the bookkeeping: one memset.
    std::memset(grid_ptr, 0, grid_h * grid_w * batch.channels);
    filtercast::parallel_for(tiles, workers, [&](std::size_t i) {
      filtercast::place_tile(in_ptr + positions[i] * stride, batch.height, batch.width, batch.channels, i,
                             side, m, grid_ptr);
    });
  }
  return grid;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "filtercast image kernels: deprocess, process (its inverse), sigmoid_pixels and stitch";
#ifdef FILTERCAST_VERSION
  m.attr("__version__") = FILTERCAST_VERSION;
#else
  m.attr("__version__") = "0+unknown";
#endif

  m.def("deprocess", &deprocess, py::arg("images"), py::kw_only(), py::arg("std") = 0.1,
        py::arg("crop") = 0, py::arg("eps") = 1e-7, py::arg("threads") = py::none(),
        "Standardise each image, scale to `std`, shift to 0.5, clip to [0, 1] and\n"
        "convert to uint8 (truncating), then remove `crop` pixels from each side.");
  m.def("sigmoid_pixels", &sigmoid_pixels, py::arg("images"), py::arg("mix"), py::kw_only(),
        py::arg("crop") = 0, py::arg("threads") = py::none(),
        "Mix each pixel's channels by `mix` (C x C), apply a sigmoid, scale to 0..255 and\n"
        "round to uint8, then remove `crop` pixels from each side.");
  m.def("process", &process, py::arg("images"), py::arg("mean"), py::arg("std"), py::kw_only(),
        py::arg("target_std"), py::arg("threads") = py::none(),
        "Map uint8 images back to float32: (x / 255 - 0.5) / target_std * std + mean.");
  m.def("stitch", &stitch, py::arg("images"), py::arg("order") = py::none(), py::kw_only(),
        py::arg("n"), py::arg("margin") = 5, py::arg("threads") = py::none(),
        "Place images[order[i]] row-major into an n x n grid with black margins.");
  m.def("set_num_threads", [](int threads) { g_default_threads.store(resolve_threads(threads)); },
        py::arg("threads"), "Set the default number of threads used by every kernel.");
  m.def("get_num_threads", []() { return g_default_threads.load(); },
        "Default number of threads (initially the cores this process may use).");
}
