// damo-embedding's optimizers: one step on one key's weights and slots, with damo's parameter
// names, defaults, slot layouts and arithmetic (see the comment at the top of optimizers.cc for the
// damo version matched and the judgement calls).
//
// A value's floats are the dim weights followed by SlotsPerWeight() * dim slot floats, in the order
// the table in optimizers.cc gives (e.g. adam: m[dim], then v[dim]).
//
// Thread-safety: an Optimizer is immutable after Make; Step may run concurrently on different data.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "stores/common/status.h"
#include "stores/embeddings/embedding_store.h"

namespace modelfs::embeddings {

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  // Slot floats per weight that follow the weights in a value.
  virtual int SlotsPerWeight() const = 0;
  // One step. data: dim weights then the slots; step: the key's update_num after this update's
  // increment (1 for the first gradient), which is what damo's bias corrections use.
  virtual void Step(float* data, const float* grads, int dim, uint64_t step) const = 0;
};

// InvalidArgument: unknown optimizer, unknown parameter name, or a value damo would divide by or
// that is not finite.
Result<std::unique_ptr<Optimizer>> MakeOptimizer(const std::string& name, const Params& params);

}  // namespace modelfs::embeddings
