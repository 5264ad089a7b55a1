// damo-embedding's initializers: the weights a key gets when Lookup creates it.
//
//   name             parameters (default)
//   zeros            -
//   ones             -
//   random_uniform   min (-1), max (1): uniform in [min, max)
//   random_normal    mean (0), stddev (1)
//   truncate_normal  mean (0), stddev (1): normal, redrawn while |x - mean| > 2 * stddev
//
// damo seeded one std::default_random_engine per initializer with time(NULL); here each thread has
// its own generator seeded from std::random_device, so concurrent Lookups need no lock.
//
// Thread-safety: an Initializer is immutable after Make; Fill may run concurrently.
#pragma once

#include <memory>
#include <string>

#include "stores/common/status.h"
#include "stores/embeddings/embedding_store.h"

namespace modelfs::embeddings {

class Initializer {
 public:
  virtual ~Initializer() = default;
  virtual void Fill(float* weights, int dim) const = 0;
};

// InvalidArgument: unknown initializer, unknown parameter name, a non-finite value, max <= min,
// stddev <= 0.
Result<std::unique_ptr<Initializer>> MakeInitializer(const std::string& name, const Params& params);

}  // namespace modelfs::embeddings
