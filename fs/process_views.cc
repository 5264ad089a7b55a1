#include "fs/process_views.h"

namespace modelfs::fs {
namespace {

// Whether `path` is strictly below `root` ("a/b" is below "a", "ab" is not).
bool Below(const std::string& path, const std::string& root) {
  return path.size() > root.size() + 1 && path.compare(0, root.size(), root) == 0 &&
         path[root.size()] == '/';
}

}  // namespace

ProcessViews::Hiding ProcessViews::Hidden(const ProcessId& p, const std::string& path) const {
  auto it = views_.find(p);
  if (it == views_.end()) return Hiding::kNone;
  const View& v = it->second;
  if (v.whiteouts.count(path)) return Hiding::kWhiteout;
  if (v.created.count(path)) return Hiding::kNone;
  for (const std::string& root : v.roots) {
    if (Below(path, root)) return Hiding::kBelowRoot;
  }
  return Hiding::kNone;
}

ProcessViews::View& ProcessViews::ViewOf(const ProcessId& p, int pin) {
  ScopedFd owned(pin);
  View& v = views_[p];
  if (!v.pin.valid()) v.pin = std::move(owned);
  return v;
}

void ProcessViews::HideBelow(const ProcessId& p, const std::string& root, int pin) {
  ScopedFd owned(pin);
  if (!p.known()) return;  // (closes it)
  ViewOf(p, owned.release()).roots.insert(root);
}

void ProcessViews::Whiteout(const ProcessId& p, const std::string& path, int pin) {
  ScopedFd owned(pin);
  if (!p.known()) return;  // (closes it)
  View& v = ViewOf(p, owned.release());
  v.whiteouts.insert(path);
  v.created.erase(path);
}

void ProcessViews::Created(const ProcessId& p, const std::string& path) {
  auto it = views_.find(p);
  if (it == views_.end()) return;
  View& v = it->second;
  v.whiteouts.erase(path);
  for (const std::string& root : v.roots) {
    if (Below(path, root)) {
      v.created.insert(path);
      break;
    }
  }
}

}  // namespace modelfs::fs
