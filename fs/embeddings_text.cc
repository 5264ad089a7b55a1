#include "fs/embeddings_text.h"

#include <charconv>
#include <cstdio>
#include <sstream>
#include <vector>

namespace modelfs::fs {
namespace {

using embeddings::Conditions;
using embeddings::GroupConfig;
using embeddings::Params;

std::string FormatNumber(double v) {
  char buf[32];
  snprintf(buf, sizeof buf, "%.17g", v);
  // Shortest form that reads back to the same double.
  for (int precision = 1; precision <= 17; ++precision) {
    char shorter[32];
    snprintf(shorter, sizeof shorter, "%.*g", precision, v);
    if (strtod(shorter, nullptr) == v) return shorter;
  }
  return buf;
}

std::string FormatCall(const std::string& name, const Params& params) {
  if (params.empty()) return name;
  std::string out = name + "(";
  bool first = true;
  for (const auto& [k, v] : params) {
    if (!first) out += ",";
    first = false;
    out += k + "=" + FormatNumber(v);
  }
  return out + ")";
}

Result<double> ParseDouble(std::string_view s) {
  std::string copy(s);
  char* end = nullptr;
  double v = strtod(copy.c_str(), &end);
  if (copy.empty() || end != copy.c_str() + copy.size()) {
    return InvalidArgument("'" + copy + "' is not a number");
  }
  return v;
}

Result<int64_t> ParseInt(std::string_view s) {
  int64_t v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || ptr != s.data() + s.size()) {
    return InvalidArgument("'" + std::string(s) + "' is not an integer");
  }
  return v;
}

// "adam(gamma=0.001,beta1=0.9)" or "adam".
Result<std::pair<std::string, Params>> ParseCall(std::string_view s) {
  size_t open = s.find('(');
  if (open == std::string_view::npos) return std::make_pair(std::string(s), Params{});
  if (s.back() != ')') return InvalidArgument("'" + std::string(s) + "': missing ')'");
  std::string name(s.substr(0, open));
  Params params;
  std::string_view inner = s.substr(open + 1, s.size() - open - 2);
  while (!inner.empty()) {
    size_t comma = inner.find(',');
    std::string_view kv = inner.substr(0, comma);
    size_t eq = kv.find('=');
    if (eq == std::string_view::npos || eq == 0) {
      return InvalidArgument("'" + std::string(kv) + "': expected name=value");
    }
    ASSIGN_OR_RETURN(double v, ParseDouble(kv.substr(eq + 1)));
    if (!params.emplace(std::string(kv.substr(0, eq)), v).second) {
      return InvalidArgument("'" + std::string(kv.substr(0, eq)) + "' given twice");
    }
    if (comma == std::string_view::npos) break;
    inner.remove_prefix(comma + 1);
  }
  return std::make_pair(name, params);
}

}  // namespace

std::string FormatGroups(const std::map<int, GroupConfig>& groups) {
  std::string out =
      "# group dim optimizer(name=value,...) initializer(name=value,...); omitted values are damo's "
      "defaults\n";
  for (const auto& [g, c] : groups) {
    out += std::to_string(g) + " " + std::to_string(c.dim) + " " +
           FormatCall(c.optimizer, c.optimizer_params) + " " +
           FormatCall(c.initializer, c.initializer_params) + "\n";
  }
  return out;
}

Result<std::map<int, GroupConfig>> ParseGroups(std::string_view text) {
  std::map<int, GroupConfig> out;
  std::istringstream in{std::string(text)};
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    size_t hash = line.find('#');
    if (hash != std::string::npos) line.resize(hash);
    std::istringstream fields(line);
    std::vector<std::string> f;
    std::string word;
    while (fields >> word) f.push_back(word);
    if (f.empty()) continue;
    auto fail = [&](const std::string& why) {
      return InvalidArgument("groups line " + std::to_string(lineno) + ": " + why);
    };
    if (f.size() != 4) return fail("expected: group dim optimizer initializer");
    auto g = ParseInt(f[0]);
    if (!g.ok() || *g < 0 || *g >= embeddings::kGroups) return fail("group must be 0..255");
    auto dim = ParseInt(f[1]);
    if (!dim.ok() || *dim <= 0 || *dim > (1 << 20)) return fail("dim must be a positive integer");
    auto opt = ParseCall(f[2]);
    if (!opt.ok()) return fail(opt.status().message());
    auto init = ParseCall(f[3]);
    if (!init.ok()) return fail(init.status().message());
    GroupConfig c;
    c.dim = static_cast<int32_t>(*dim);
    c.optimizer = opt->first;
    c.optimizer_params = opt->second;
    c.initializer = init->first;
    c.initializer_params = init->second;
    if (!out.emplace(static_cast<int>(*g), c).second) return fail("group given twice");
  }
  return out;
}

Result<std::pair<std::string, Conditions>> ParseView(std::string_view name, bool allow_group) {
  size_t at = name.find('@');
  std::pair<std::string, Conditions> out;
  out.first = std::string(name.substr(0, at));
  if (at == std::string_view::npos) return out;
  std::string_view rest = name.substr(at + 1);
  if (rest.empty()) return InvalidArgument("'" + std::string(name) + "': no condition after '@'");
  Conditions& c = out.second;
  while (!rest.empty()) {
    size_t comma = rest.find(',');
    std::string_view kv = rest.substr(0, comma);
    size_t eq = kv.find('=');
    if (eq == std::string_view::npos) {
      return InvalidArgument("'" + std::string(kv) + "': expected name=value");
    }
    std::string_view key = kv.substr(0, eq);
    ASSIGN_OR_RETURN(int64_t v, ParseInt(kv.substr(eq + 1)));
    auto set = [&](std::optional<int64_t>& slot) -> Status {
      if (slot) return InvalidArgument("'" + std::string(key) + "' given twice");
      if (v < 0) return InvalidArgument("'" + std::string(key) + "' must not be negative");
      slot = v;
      return Status::Ok();
    };
    if (key == "min_count") {
      RETURN_IF_ERROR(set(c.min_count));
    } else if (key == "expire_days") {
      RETURN_IF_ERROR(set(c.expire_days));
    } else if (key == "group" && allow_group) {
      if (c.group) return InvalidArgument("'group' given twice");
      if (v < 0 || v >= embeddings::kGroups) return InvalidArgument("group must be 0..255");
      c.group = static_cast<int>(v);
    } else {
      return InvalidArgument("'" + std::string(key) + "': unknown condition (min_count, expire_days" +
                             (allow_group ? ", group)" : ")"));
    }
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  return out;
}

}  // namespace modelfs::fs
