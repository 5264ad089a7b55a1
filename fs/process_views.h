// ProcessViews: what restore tools must not see.
//
// Restore tools create every entry of a tree themselves and treat an entry that is already there as an
// error: `cp -a` does not even look before it creates below a folder it just made (mkdir of history/
// fails with EEXIST), and `tar -x` answers EEXIST by unlinking and creating again, forever, when the
// entry cannot go away (models/<id>/meta, embeddings/checkpoint). The kernel refuses mkdir and
// open(O_CREAT|O_EXCL) of a name that looks up as existing before the daemon is asked, so the only
// way to let them succeed is that the name does not exist *for that process*. Two views do that:
//
//   - a process that creates a model (mkdir models/<id>) does not see, when it creates an entry there
//     (mkdir, an exclusive create), what the store shows in it until it has created it itself:
//     layers/, history/ and meta, and the files that its own writes add as a side effect
//     (history/<n>/<time> of a layer it wrote, layers/<n> of history it wrote);
//   - a process that removes an entry the store cannot remove (an automatic file such as meta, a
//     neuron's .vec, a view, a link in a listing) no longer sees it until it creates it again.
//
// Other processes are not affected; listings are not affected (the kernel shares them). A view ends
// with its process.
//
// Thread-safety: not thread-safe; the core calls it under its table lock.
#pragma once

#include <map>
#include <set>
#include <string>

#include "fs/process_table.h"
#include "stores/common/scoped_fd.h"

namespace modelfs::fs {

class ProcessViews {
 public:
  bool empty() const { return views_.empty(); }
  enum class Hiding : uint8_t { kNone, kWhiteout, kBelowRoot };
  // Whether `path` (joined, "models/7/meta") is hidden from process p, and why: a whiteout hides it
  // from every request of p; what is below a folder p made is hidden from p's creating requests only
  // (Core asks: mkdir, an exclusive create), so that a program that makes a model and then writes
  // models/<id>/layers/<n> walks into the store's layers/ as usual.
  Hiding Hidden(const ProcessId& p, const std::string& path) const;
  // Everything strictly below `root` is hidden from p until p creates it. pin: ProcessTable::Pin's
  // pidfd for p, owned from now on (kept with the view, or closed when p has one already).
  void HideBelow(const ProcessId& p, const std::string& root, int pin);
  // `path` is hidden from p until p creates it.
  void Whiteout(const ProcessId& p, const std::string& path, int pin);
  bool Has(const ProcessId& p) const { return views_.count(p) > 0; }
  // p created `path` (mkdir, create, symlink, rename onto it): p sees it again.
  void Created(const ProcessId& p, const std::string& path);
  // Drops the views of processes for which alive(process, pin) is false.
  template <typename AliveFn>
  void Prune(AliveFn alive) {
    for (auto it = views_.begin(); it != views_.end();) {
      it = alive(it->first, it->second.pin.get()) ? std::next(it) : views_.erase(it);
    }
  }
  size_t size() const { return views_.size(); }

 private:
  struct View {
    ScopedFd pin;                     // the process's pidfd: its pid is not reused while the view lives
    std::set<std::string> roots;      // everything below is hidden ...
    std::set<std::string> created;    // ... except these (and what is below created folders' names)
    std::set<std::string> whiteouts;  // hidden wherever they are
  };
  View& ViewOf(const ProcessId& p, int pin);
  std::map<ProcessId, View> views_;
};

}  // namespace modelfs::fs
