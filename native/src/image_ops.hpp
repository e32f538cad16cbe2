// Pure C++ kernels behind the filtercast_native Python module.
//
// Nothing here knows about Python: the bindings in module.cpp validate the
// input, own the buffers and release the GIL before calling these.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>

namespace filtercast {

// Parameters of the seeds' deprocessing formula.
struct DeprocessParams {
  double target_std;  // multiplier after standardisation (0.1 classic, 0.25 upscale, 0.15 keras_io)
  double eps;         // added to the std before dividing (1e-7; keras_io uses 1e-5)
  std::size_t crop;   // pixels removed from each side after normalisation
};

// Deprocesses one float32 (height, width, channels) image into uint8
// (height - 2*crop, width - 2*crop, channels). Statistics are taken over the
// full image (every channel) in double precision. Returns false (and writes
// nothing) when the image holds a NaN or an infinity.
bool deprocess_image(const float* image, std::size_t height, std::size_t width,
                     std::size_t channels, const DeprocessParams& params, std::uint8_t* out);

// The robust preset's last step for one float32 (height, width, channels)
// image: each pixel's channels mixed by the row-major (channels x channels)
// matrix `mix`, a sigmoid, x 255 rounded to uint8, `crop` pixels removed from
// each side. In float32 with a polynomial exponential accurate to far below a
// byte (within 1 LSB of the float64 reference). Returns false (and writes
// nothing) when the image holds a NaN or an infinity.
bool sigmoid_pixels_image(const float* image, std::size_t height, std::size_t width,
                          std::size_t channels, const double* mix, std::size_t crop,
                          std::uint8_t* out);

// Inverse of deprocess used between upscaling rounds:
// (x / 255 - 0.5) / target_std * std + mean, for `count` values.
void process_image(const std::uint8_t* image, std::size_t count, double mean,
                   double std, double target_std, float* out);

// Copies tile `tile` of an n x n grid: row-major position `position`,
// `margin` black pixels between tiles. `grid` is pre-zeroed.
void place_tile(const std::uint8_t* tile, std::size_t height, std::size_t width,
                std::size_t channels, std::size_t position, std::size_t n, std::size_t margin,
                std::uint8_t* grid);

// Runs fn(i) for i in [0, count) on up to `threads` threads (the caller's
// thread included). Items are handed out one at a time, so the split never
// changes what fn computes for an item.
void parallel_for(std::size_t count, int threads,
                  const std::function<void(std::size_t)>& fn);

// Number of CPU cores this process may run on.
int available_cores();

}  // namespace filtercast
