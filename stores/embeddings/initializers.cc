// Read from damo-embedding's src/initializer.cpp (c64a5cbb9061, the version with defaults; the
// distributions and the truncation at two standard deviations are the same in every version).
#include "stores/embeddings/initializers.h"

#include <cmath>
#include <random>

namespace modelfs::embeddings {
namespace {

std::mt19937_64& ThreadGenerator() {
  thread_local std::mt19937_64 generator{std::random_device{}()};
  return generator;
}

// The value of `name` in params, or `fallback`; InvalidArgument for any other name or a non-finite
// value. `known` lists the parameter names the initializer takes.
Result<double> Param(const std::string& what, const Params& params, const char* name,
                     double fallback, std::initializer_list<const char*> known) {
  for (const auto& [k, v] : params) {
    bool ok = false;
    for (const char* n : known) ok = ok || k == n;
    if (!ok) {
      std::string names;
      for (const char* n : known) names += std::string(names.empty() ? "" : ", ") + n;
      return InvalidArgument(what + ": unknown parameter '" + k +
                             "' (known: " + (names.empty() ? "none" : names) + ")");
    }
    if (!std::isfinite(v)) return InvalidArgument(what + ": parameter '" + k + "' must be finite");
  }
  auto it = params.find(name);
  return it == params.end() ? fallback : it->second;
}

class Constant final : public Initializer {
 public:
  explicit Constant(float value) : value_(value) {}
  void Fill(float* w, int dim) const override {
    for (int i = 0; i < dim; ++i) w[i] = value_;
  }

 private:
  const float value_;
};

class RandomUniform final : public Initializer {
 public:
  RandomUniform(double min, double max) : min_(min), max_(max) {}
  void Fill(float* w, int dim) const override {
    std::uniform_real_distribution<double> dist(min_, max_);
    for (int i = 0; i < dim; ++i) w[i] = static_cast<float>(dist(ThreadGenerator()));
  }

 private:
  const double min_, max_;
};

class RandomNormal final : public Initializer {
 public:
  RandomNormal(double mean, double stddev, bool truncate)
      : mean_(mean), stddev_(stddev), truncate_(truncate) {}
  void Fill(float* w, int dim) const override {
    std::normal_distribution<double> dist(mean_, stddev_);
    for (int i = 0; i < dim; ++i) {
      double x = dist(ThreadGenerator());
      // Rejection: about 4.6% of draws fall outside two standard deviations.
      while (truncate_ && std::fabs(x - mean_) > 2.0 * stddev_) x = dist(ThreadGenerator());
      w[i] = static_cast<float>(x);
    }
  }

 private:
  const double mean_, stddev_;
  const bool truncate_;
};

}  // namespace

Result<std::unique_ptr<Initializer>> MakeInitializer(const std::string& name,
                                                     const Params& params) {
  const std::string what = "initializer " + name;
  if (name == "zeros" || name == "ones") {
    ASSIGN_OR_RETURN(double unused, Param(what, params, "", 0, {}));
    (void)unused;
    return std::unique_ptr<Initializer>(new Constant(name == "ones" ? 1.0f : 0.0f));
  }
  if (name == "random_uniform") {
    ASSIGN_OR_RETURN(double min, Param(what, params, "min", -1.0, {"min", "max"}));
    ASSIGN_OR_RETURN(double max, Param(what, params, "max", 1.0, {"min", "max"}));
    if (!(max > min)) return InvalidArgument(what + ": max must be greater than min");
    return std::unique_ptr<Initializer>(new RandomUniform(min, max));
  }
  if (name == "random_normal" || name == "truncate_normal") {
    ASSIGN_OR_RETURN(double mean, Param(what, params, "mean", 0.0, {"mean", "stddev"}));
    ASSIGN_OR_RETURN(double stddev, Param(what, params, "stddev", 1.0, {"mean", "stddev"}));
    if (!(stddev > 0)) return InvalidArgument(what + ": stddev must be > 0");
    return std::unique_ptr<Initializer>(new RandomNormal(mean, stddev, name == "truncate_normal"));
  }
  return InvalidArgument("unknown initializer '" + name +
                         "' (zeros, ones, random_uniform, random_normal, truncate_normal)");
}

}  // namespace modelfs::embeddings
