#include "fs/process_views.h"

namespace modelfs::fs {
namespace {

// Whether `path` is strictly below `root` ("a/b" is below "a", "ab" is not).
bool Below(const std::string& path, const std::string& root) {
  return path.size() > root.size() + 1 && path.compare(0, root.size(), root) == 0 &&
         path[root.size()] == '/';
}

}  // namespace

bool ProcessViews::Hidden(const ProcessId& p, const std::string& path) const {
  auto it = views_.find(p);
  if (it == views_.end()) return false;
  const View& v = it->second;
  if (v.whiteouts.count(path)) return true;
  if (v.created.count(path)) return false;
  for (const std::string& root : v.roots) {
    if (Below(path, root)) return true;
  }
  return false;
}

void ProcessViews::HideBelow(const ProcessId& p, const std::string& root) {
  if (p.known()) views_[p].roots.insert(root);
}

void ProcessViews::Whiteout(const ProcessId& p, const std::string& path) {
  if (!p.known()) return;
  View& v = views_[p];
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
