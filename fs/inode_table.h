// InodeTable: the inodes the kernel knows and the names that lead to them.
//
// Kinds of inode (see Core for the rules they serve):
//   kStored   a store entry at one content version (a file's bytes never change under its inode, so
//             the kernel may cache its pages and attributes for long); folders and links too.
//   kPending  a file or folder that exists only in the core: a file being created (until its first
//             commit), a temporary file (a name starting with '.', until renamed onto a real name), a
//             folder made before anything is stored below it.
//   kWriter   a private inode of one writer of a stored file. Readers never see it: a writer's
//             writes then cannot grow or shrink the size the kernel holds for readers' inode.
// A name leads to at most one inode (attached); an inode that lost its name lives on while the kernel
// holds it (nlookup) or a handle has it open.
//
// Thread-safety: none. Core calls every method under its table lock (Core::mu_).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "fs/folder.h"
#include "fs/invalidation.h"

namespace modelfs::fs {

constexpr Ino kRootIno = 1;

struct Staging;

enum class NodeKind : uint8_t { kRoot, kStored, kPending, kWriter };

struct Node {
  Ino ino = 0;
  Ino parent = 0;
  std::string name;
  Path path;  // from the root: {"models", "7", "layers", "0"}
  NodeKind kind = NodeKind::kStored;
  NodeAttr attr;
  uint64_t nlookup = 0;   // references the kernel holds
  int open = 0;           // open handles
  bool attached = false;  // the table's names lead (parent, name) here
  bool reserved = false;  // a kWriter handed to a retrying open (Core::Open): kept until used or expired
  bool removed = false;   // its name was removed while the kernel held it: nlink 0
  // kPending files and kWriter: the bytes being written (shared with the handle that writes them).
  std::shared_ptr<Staging> staging;
};

class InodeTable {
 public:
  InodeTable();  // holds the root

  Node* Find(Ino ino);
  // The inode (parent, name) leads to; 0 when none.
  Ino Current(Ino parent, const std::string& name) const;
  // A new inode. When `attach`, (parent, name) leads to it from now on (the previous one loses it).
  Node* Add(Ino parent, const std::string& name, Path path, NodeKind kind, const NodeAttr& attr,
            bool attach);
  void Detach(Ino ino);
  // Points (new_parent, new_name) at ino, as the kernel does after a rename.
  Node* Move(Ino ino, Ino new_parent, const std::string& new_name, Path path);
  // Erases ino when nothing refers to it any more (no kernel reference, no open handle, not reserved).
  void EraseIfUnused(Ino ino);
  // Folders known below a path prefix of `depth` components (for dropping cached listings).
  std::vector<Ino> DirsBelow(const Path& prefix, size_t depth) const;
  // Stored files attached below top-level folder `top`.
  std::vector<Ino> StoredFilesIn(const std::string& top) const;
  size_t size() const { return nodes_.size(); }
  // Gives folder `path` its inode number now (before anything looks it up).
  void NumberDir(const Path& path);

 private:
  std::unordered_map<Ino, std::unique_ptr<Node>> nodes_;
  std::set<Ino> dirs_;
  std::map<std::pair<Ino, std::string>, Ino> names_;
  // A folder keeps its inode number for the life of the mount, also when the kernel forgot it in
  // between: tar -x compares a folder's inode before and after it fills it ("renamed before its
  // status could be extracted").
  std::unordered_map<std::string, Ino> dir_numbers_;
  Ino next_ino_ = kRootIno + 1;
};

}  // namespace modelfs::fs
