#include "image_ops.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <sched.h>
#endif

// The hot loops are compiled three times (AVX-512, AVX2, baseline x86-64) and
// the loader picks the best one the CPU runs: one portable wheel, full SIMD
// width where the hardware has it. Every clone sums in the same order, so the
// results are identical whichever runs.
#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
#define FILTERCAST_SIMD_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FILTERCAST_SIMD_CLONES
#endif

namespace filtercast {
namespace {

// Eight independent accumulators keep the sums accurate and give the CPU
// parallel dependency chains without -ffast-math; the order is fixed, so the
// result does not depend on threading.
constexpr std::size_t kLanes = 8;

FILTERCAST_SIMD_CLONES
double sum(const float* x, std::size_t count) {
  double acc[kLanes] = {};
  std::size_t i = 0;
  for (; i + kLanes <= count; i += kLanes) {
    for (std::size_t l = 0; l < kLanes; ++l) acc[l] += x[i + l];
  }
  double total = 0.0;
  for (; i < count; ++i) total += x[i];
  for (double a : acc) total += a;
  return total;
}

FILTERCAST_SIMD_CLONES
double sum_squared_deviation(const float* x, std::size_t count, double mean) {
  double acc[kLanes] = {};
  std::size_t i = 0;
  for (; i + kLanes <= count; i += kLanes) {
    for (std::size_t l = 0; l < kLanes; ++l) {
      const double d = static_cast<double>(x[i + l]) - mean;
      acc[l] += d * d;
    }
  }
  double total = 0.0;
  for (; i < count; ++i) {
    const double d = static_cast<double>(x[i]) - mean;
    total += d * d;
  }
  for (double a : acc) total += a;
  return total;
}

// out[i] = uint8(clip((x[i] - mean) * scale + 0.5, 0, 1) * 255). The
// subtraction comes first, in double: folding the mean into an offset
// (x * scale + offset) cancels catastrophically when mean * scale is large.
FILTERCAST_SIMD_CLONES
void normalise_row(const float* x, std::size_t count, double mean, double scale,
                   std::uint8_t* out) {
  for (std::size_t i = 0; i < count; ++i) {
    double v = (static_cast<double>(x[i]) - mean) * scale + 0.5;
    v = v < 0.0 ? 0.0 : v;
    v = v > 1.0 ? 1.0 : v;
    out[i] = static_cast<std::uint8_t>(static_cast<int>(v * 255.0));
  }
}

}  // namespace

bool deprocess_image(const float* image, std::size_t height, std::size_t width,
                     std::size_t channels, const DeprocessParams& params, std::uint8_t* out) {
  const std::size_t count = height * width * channels;
  const double total = sum(image, count);
  // A finite sum of float32 values cannot overflow a double, so a non-finite
  // sum means a NaN or an infinity somewhere in the image.
  if (!std::isfinite(total)) return false;
  const double mean = total / static_cast<double>(count);
  const double std = std::sqrt(sum_squared_deviation(image, count, mean) /
                               static_cast<double>(count));
  const double scale = params.target_std / (std + params.eps);

  const std::size_t crop = params.crop;
  const std::size_t out_width = width - 2 * crop;
  const std::size_t row_values = out_width * channels;
  for (std::size_t y = crop; y < height - crop; ++y) {
    const float* row = image + (y * width + crop) * channels;
    normalise_row(row, row_values, mean, scale, out + (y - crop) * row_values);
  }
  return true;
}

namespace {

// round(255 * sigmoid(m)) as a float in [0, 255.5). Beyond |m| = 8 the byte is
// 0 or 255 either way, so m is clamped there and e^-m = (e^(-m/16))^16 with a
// degree-7 Taylor polynomial on |m/16| <= 0.5: relative error ~3e-6, far
// below a byte's 1/255, and only arithmetic, so the loop vectorises (libm's
// exp does not without -ffast-math).
inline float sigmoid_byte(float m) {
  m = m > -8.0f ? m : -8.0f;  // written so that a NaN (inf - inf in the mix) becomes -8
  m = m < 8.0f ? m : 8.0f;
  const float x = m * (-1.0f / 16.0f);
  float e = 1.0f + x * (1.0f + x * (1.0f / 2 + x * (1.0f / 6 + x * (1.0f / 24 + x * (1.0f / 120 +
                   x * (1.0f / 720 + x * (1.0f / 5040)))))));
  e *= e;
  e *= e;
  e *= e;
  e *= e;
  return 255.0f / (1.0f + e) + 0.5f;
}

FILTERCAST_SIMD_CLONES
void sigmoid_row3(const float* x, std::size_t pixels, const float* mix, std::uint8_t* out) {
  for (std::size_t p = 0; p < pixels; ++p) {
    const float r = x[3 * p], g = x[3 * p + 1], b = x[3 * p + 2];
    for (std::size_t i = 0; i < 3; ++i) {
      const float m = mix[3 * i] * r + mix[3 * i + 1] * g + mix[3 * i + 2] * b;
      out[3 * p + i] = static_cast<std::uint8_t>(sigmoid_byte(m));
    }
  }
}

FILTERCAST_SIMD_CLONES
void sigmoid_row1(const float* x, std::size_t pixels, float mix, std::uint8_t* out) {
  for (std::size_t p = 0; p < pixels; ++p) {
    out[p] = static_cast<std::uint8_t>(sigmoid_byte(mix * x[p]));
  }
}

}  // namespace

bool sigmoid_pixels_image(const float* image, std::size_t height, std::size_t width,
                          std::size_t channels, const double* mix, std::size_t crop,
                          std::uint8_t* out) {
  if (channels != 1 && channels != 3) return false;
  if (!std::isfinite(sum(image, height * width * channels))) return false;
  float mix_f[9];
  for (std::size_t i = 0; i < channels * channels; ++i) mix_f[i] = static_cast<float>(mix[i]);
  const std::size_t out_width = width - 2 * crop;
  for (std::size_t y = crop; y < height - crop; ++y) {
    const float* row = image + (y * width + crop) * channels;
    std::uint8_t* target = out + (y - crop) * out_width * channels;
    if (channels == 3) {
      sigmoid_row3(row, out_width, mix_f, target);
    } else {
      sigmoid_row1(row, out_width, mix_f[0], target);
    }
  }
  return true;
}

FILTERCAST_SIMD_CLONES
void process_image(const std::uint8_t* image, std::size_t count, double mean,
                   double std, double target_std, float* out) {
  // (x / 255 - 0.5) / target_std * std + mean  ==  x * a + b
  const double a = std / (255.0 * target_std);
  const double b = mean - 0.5 * std / target_std;
  for (std::size_t i = 0; i < count; ++i) {
    out[i] = static_cast<float>(static_cast<double>(image[i]) * a + b);
  }
}

void place_tile(const std::uint8_t* tile, std::size_t height, std::size_t width,
                std::size_t channels, std::size_t position, std::size_t n, std::size_t margin,
                std::uint8_t* grid) {
  const std::size_t grid_width = n * width + (n - 1) * margin;
  const std::size_t top = (position / n) * (height + margin);
  const std::size_t left = (position % n) * (width + margin);
  const std::size_t row_bytes = width * channels;
  for (std::size_t y = 0; y < height; ++y) {
    std::memcpy(grid + ((top + y) * grid_width + left) * channels, tile + y * row_bytes,
                row_bytes);
  }
}

void parallel_for(std::size_t count, int threads,
                  const std::function<void(std::size_t)>& fn) {
  const std::size_t workers =
      std::min<std::size_t>(count, static_cast<std::size_t>(std::max(threads, 1)));
  if (workers <= 1) {
    for (std::size_t i = 0; i < count; ++i) fn(i);
    return;
  }
  std::atomic<std::size_t> next{0};
  auto work = [&]() {
    for (std::size_t i = next.fetch_add(1); i < count; i = next.fetch_add(1)) fn(i);
  };
  std::vector<std::thread> pool;
  pool.reserve(workers - 1);
  for (std::size_t t = 1; t < workers; ++t) pool.emplace_back(work);
  work();
  for (auto& thread : pool) thread.join();
}

int available_cores() {
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int count = CPU_COUNT(&set);
    if (count > 0) return count;
  }
#endif
  const unsigned hw = std::thread::hardware_concurrency();
  return hw > 0 ? static_cast<int>(hw) : 1;
}

}  // namespace filtercast
