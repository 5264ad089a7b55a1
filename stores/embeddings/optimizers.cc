// damo-embedding's optimizers, rewritten from a reading of damo's source.
//
// Version matched: uopensail/damo-embedding at the storage generation of seed 001, i.e. commit
// 55222c5109e6f2522b552d194bb92ede8045f357 (include/common.h: packed MetaData {int group; u64 key;
// u64 update_time /*ms*/; u64 update_num; int dim; float data[]}, key_mask 0x00FFFFFFFFFFFFFF,
// 256 groups; include/optimizer.h: call(data, gds, dim, u_int64_t global_step)) together with
// 18b4d67c6798c239e7c828bd721ea15abbe51147 (src/embedding.cpp: the merge operator does
// `update_num++` and then `optimizer->call(data, gds, dim, update_num)`, so the step used for bias
// correction is the key's update_num after the increment, 1 on the first gradient).
// The optimizer arithmetic itself did not change across damo's versions except where noted below;
// it was read from src/optimizer.cpp at 62a0d28134d0d8dc8adbbd5651d7043991ea4bf1 (the nearest
// stored version with default values for every parameter) and checked against 1b36737d94a3 and
// 2a2b2ef9785e.
//
// Layout of a value's floats: weights[dim], then the slots below, each slot an array of dim floats
// (damo's get_space(dim) is dim * (1 + slots)):
//
//   name     slots            parameters (default)
//   sgd      -                gamma (0.001), lambda (0)
//   adagrad  m (sum of g^2)   gamma (0.01), lambda (0), eta (0, accepted, unused), epsilon (1e-10)
//   adam     m, v             gamma (0.001), beta1 (0.9), beta2 (0.999), lambda (0), epsilon (1e-8)
//   adamw    m, v             gamma (0.001), beta1 (0.9), beta2 (0.999), lambda (0.01), epsilon
//   (1e-8) amsgrad  m, v, v_max      gamma (0.001), beta1 (0.9), beta2 (0.999), lambda (0), epsilon
//   (1e-8) ftrl     z, n             alpha (0.005), beta (0), lambda1 (0), lambda2 (0) lion     m
//   eta (0.0003), beta1 (0.9), beta2 (0.99), lambda (0.01)
//
// Parameters are held as float, as damo's Float members did, and the arithmetic keeps damo's mix of
// float and double (its `1.0 - beta` terms are double), so a step gives the same float as damo's.
//
// Judgement calls:
// - No learning-rate scheduler: damo's optional scheduler was a separate object outside the stored
//   configuration; without one damo's get_lr returns the configured rate, which is what we do.
// - adamw: 62a0d281 and later decay first (w -= lambda*lr*w, then the Adam step) with lambda 0.01,
//   which is torch's AdamW and damo's documentation; the older 1b36737d folded the decay into the
//   step with lambda 0. We follow the newer one.
// - sgd: gamma defaults to 0.001 (62a0d281 and later; 1b36737d required it).
// - adagrad: some versions forgot it in the factory; the SPEC lists it, so it is available.
// - ftrl: damo's documentation names the rate `gamma`, its code `alpha`; the code wins. As in damo,
//   n only accumulates when |z| > lambda1 (w is zeroed otherwise).
// - Values damo would divide by are refused at configuration (ftrl alpha <= 0, adam-family betas
//   outside [0, 1)), and every value must be finite; damo asserted nothing.
#include "stores/embeddings/optimizers.h"

#include <cmath>
#include <initializer_list>
#include <vector>

namespace modelfs::embeddings {
namespace {

struct ParamSpec {
  const char* name;
  double default_value;
};

// The named parameters in spec order, as float; InvalidArgument for an unknown or non-finite one.
Result<std::vector<float>> ResolveParams(const std::string& what,
                                         std::initializer_list<ParamSpec> specs,
                                         const Params& given) {
  for (const auto& [name, value] : given) {
    bool known = false;
    for (const ParamSpec& s : specs) known = known || name == s.name;
    if (!known) {
      std::string names;
      for (const ParamSpec& s : specs) names += std::string(names.empty() ? "" : ", ") + s.name;
      return InvalidArgument(what + ": unknown parameter '" + name +
                             "' (known: " + (names.empty() ? "none" : names) + ")");
    }
    if (!std::isfinite(value)) {
      return InvalidArgument(what + ": parameter '" + name + "' must be a finite number");
    }
  }
  std::vector<float> out;
  for (const ParamSpec& s : specs) {
    auto it = given.find(s.name);
    out.push_back(static_cast<float>(it == given.end() ? s.default_value : it->second));
  }
  return out;
}

// damo's helpers: the square root of a negative is 0, the sign of 0 is +1.
inline float SafeSqrt(float x) { return x >= 0.0f ? std::sqrt(x) : 0.0f; }
inline float Sign(float x) { return x >= 0.0f ? 1.0f : -1.0f; }

// beta * s + (1 - beta) * x, with damo's types: the first product in float, the rest in double.
inline float Ema(float beta, float s, float x) {
  return static_cast<float>(static_cast<double>(beta * s) + (1.0 - beta) * x);
}
// beta * s + (1 - beta) * x * x, likewise (damo multiplies left to right in double).
inline float EmaOfSquare(float beta, float s, float x) {
  return static_cast<float>(static_cast<double>(beta * s) + (1.0 - beta) * x * x);
}

class Sgd final : public Optimizer {
 public:
  explicit Sgd(const std::vector<float>& p) : gamma_(p[0]), lambda_(p[1]) {}
  int SlotsPerWeight() const override { return 0; }
  void Step(float* w, const float* g, int dim, uint64_t) const override {
    for (int i = 0; i < dim; ++i) {
      w[i] -= gamma_ * (lambda_ != 0 ? g[i] + lambda_ * w[i] : g[i]);
    }
  }

 private:
  const float gamma_, lambda_;
};

class Adagrad final : public Optimizer {
 public:
  explicit Adagrad(const std::vector<float>& p) : gamma_(p[0]), lambda_(p[1]), epsilon_(p[3]) {}
  int SlotsPerWeight() const override { return 1; }
  void Step(float* w, const float* g, int dim, uint64_t) const override {
    float* m = w + dim;
    for (int i = 0; i < dim; ++i) {
      const float gi = lambda_ != 0 ? g[i] + lambda_ * w[i] : g[i];
      m[i] += gi * gi;
      w[i] -= gamma_ * gi / (SafeSqrt(m[i]) + epsilon_);
    }
  }

 private:
  const float gamma_, lambda_, epsilon_;
};

// adam and amsgrad: L2 regularization folded into the gradient; amsgrad keeps the running maximum
// of the bias-corrected second moment in a third slot.
class Adam final : public Optimizer {
 public:
  Adam(const std::vector<float>& p, bool amsgrad)
      : gamma_(p[0]),
        beta1_(p[1]),
        beta2_(p[2]),
        lambda_(p[3]),
        epsilon_(p[4]),
        amsgrad_(amsgrad) {}
  int SlotsPerWeight() const override { return amsgrad_ ? 3 : 2; }
  void Step(float* w, const float* g, int dim, uint64_t step) const override {
    float* m = w + dim;
    float* v = w + 2 * dim;
    float* v_max = w + 3 * dim;
    const float beta1_t = std::pow(beta1_, static_cast<float>(step));
    const float beta2_t = std::pow(beta2_, static_cast<float>(step));
    for (int i = 0; i < dim; ++i) {
      const float gi = lambda_ != 0 ? g[i] + lambda_ * w[i] : g[i];
      m[i] = Ema(beta1_, m[i], gi);
      v[i] = EmaOfSquare(beta2_, v[i], gi);
      const float m_hat = static_cast<float>(m[i] / (1.0 - beta1_t));
      const float v_hat = static_cast<float>(v[i] / (1.0 - beta2_t));
      float denom_v = v_hat;
      if (amsgrad_) {
        if (v_max[i] < v_hat) v_max[i] = v_hat;
        denom_v = v_max[i];
      }
      w[i] -= gamma_ * m_hat / (SafeSqrt(denom_v) + epsilon_);
    }
  }

 private:
  const float gamma_, beta1_, beta2_, lambda_, epsilon_;
  const bool amsgrad_;
};

// Decoupled weight decay: the weight shrinks by lambda * lr before the Adam step on the raw
// gradient.
class AdamW final : public Optimizer {
 public:
  explicit AdamW(const std::vector<float>& p)
      : gamma_(p[0]), beta1_(p[1]), beta2_(p[2]), lambda_(p[3]), epsilon_(p[4]) {}
  int SlotsPerWeight() const override { return 2; }
  void Step(float* w, const float* g, int dim, uint64_t step) const override {
    float* m = w + dim;
    float* v = w + 2 * dim;
    const float beta1_t = std::pow(beta1_, static_cast<float>(step));
    const float beta2_t = std::pow(beta2_, static_cast<float>(step));
    for (int i = 0; i < dim; ++i) {
      w[i] -= lambda_ * gamma_ * w[i];
      m[i] = Ema(beta1_, m[i], g[i]);
      v[i] = EmaOfSquare(beta2_, v[i], g[i]);
      const float m_hat = static_cast<float>(m[i] / (1.0 - beta1_t));
      const float v_hat = static_cast<float>(v[i] / (1.0 - beta2_t));
      w[i] -= gamma_ * m_hat / (SafeSqrt(v_hat) + epsilon_);
    }
  }

 private:
  const float gamma_, beta1_, beta2_, lambda_, epsilon_;
};

// McMahan et al.'s per-coordinate FTRL-Proximal; slots z and n.
class Ftrl final : public Optimizer {
 public:
  explicit Ftrl(const std::vector<float>& p)
      : alpha_(p[0]), beta_(p[1]), lambda1_(p[2]), lambda2_(p[3]) {}
  int SlotsPerWeight() const override { return 2; }
  void Step(float* w, const float* g, int dim, uint64_t) const override {
    float* z = w + dim;
    float* n = w + 2 * dim;
    for (int i = 0; i < dim; ++i) {
      const float n_new = n[i] + g[i] * g[i];
      const float sigma = (SafeSqrt(n_new) - SafeSqrt(n[i])) / alpha_;
      z[i] += g[i] - sigma * w[i];
      if (std::fabs(z[i]) <= lambda1_) {
        w[i] = 0;
      } else {
        n[i] = n_new;
        const float eta = static_cast<float>(-1.0 / ((beta_ + SafeSqrt(n[i])) / alpha_ + lambda2_));
        w[i] = eta * (z[i] - Sign(z[i]) * lambda1_);
      }
    }
  }

 private:
  const float alpha_, beta_, lambda1_, lambda2_;
};

// Chen et al.'s Lion: the sign of an interpolation (beta1) steps the weight, with decoupled decay;
// the momentum slot then moves with beta2.
class Lion final : public Optimizer {
 public:
  explicit Lion(const std::vector<float>& p)
      : eta_(p[0]), beta1_(p[1]), beta2_(p[2]), lambda_(p[3]) {}
  int SlotsPerWeight() const override { return 1; }
  void Step(float* w, const float* g, int dim, uint64_t) const override {
    float* m = w + dim;
    for (int i = 0; i < dim; ++i) {
      const float update = Sign(Ema(beta1_, m[i], g[i])) + w[i] * lambda_;
      w[i] -= eta_ * update;
      m[i] = Ema(beta2_, m[i], g[i]);
    }
  }

 private:
  const float eta_, beta1_, beta2_, lambda_;
};

Status CheckBeta(const std::string& what, const char* name, float beta) {
  if (beta >= 0.0f && beta < 1.0f) return Status::Ok();
  return InvalidArgument(what + ": " + name + " must be in [0, 1)");
}

}  // namespace

Result<std::unique_ptr<Optimizer>> MakeOptimizer(const std::string& name, const Params& params) {
  const std::string what = "optimizer " + name;
  if (name == "sgd") {
    ASSIGN_OR_RETURN(auto p, ResolveParams(what, {{"gamma", 0.001}, {"lambda", 0.0}}, params));
    return std::unique_ptr<Optimizer>(new Sgd(p));
  }
  if (name == "adagrad") {
    ASSIGN_OR_RETURN(
        auto p,
        ResolveParams(what, {{"gamma", 0.01}, {"lambda", 0.0}, {"eta", 0.0}, {"epsilon", 1e-10}},
                      params));
    return std::unique_ptr<Optimizer>(new Adagrad(p));
  }
  if (name == "adam" || name == "amsgrad" || name == "adamw") {
    ASSIGN_OR_RETURN(auto p, ResolveParams(what,
                                           {{"gamma", 0.001},
                                            {"beta1", 0.9},
                                            {"beta2", 0.999},
                                            {"lambda", name == "adamw" ? 0.01 : 0.0},
                                            {"epsilon", 1e-8}},
                                           params));
    RETURN_IF_ERROR(CheckBeta(what, "beta1", p[1]));
    RETURN_IF_ERROR(CheckBeta(what, "beta2", p[2]));
    if (name == "adamw") return std::unique_ptr<Optimizer>(new AdamW(p));
    return std::unique_ptr<Optimizer>(new Adam(p, name == "amsgrad"));
  }
  if (name == "ftrl") {
    ASSIGN_OR_RETURN(
        auto p,
        ResolveParams(what, {{"alpha", 0.005}, {"beta", 0.0}, {"lambda1", 0.0}, {"lambda2", 0.0}},
                      params));
    if (!(p[0] > 0.0f)) return InvalidArgument(what + ": alpha must be > 0");
    return std::unique_ptr<Optimizer>(new Ftrl(p));
  }
  if (name == "lion") {
    ASSIGN_OR_RETURN(
        auto p,
        ResolveParams(what, {{"eta", 0.0003}, {"beta1", 0.9}, {"beta2", 0.99}, {"lambda", 0.01}},
                      params));
    return std::unique_ptr<Optimizer>(new Lion(p));
  }
  return InvalidArgument("unknown optimizer '" + name +
                         "' (sgd, adagrad, adam, adamw, amsgrad, ftrl, lion)");
}

}  // namespace modelfs::embeddings
