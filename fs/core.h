// Core: the filesystem without the kernel. Inodes, handles, staging of writes and their atomic commit,
// temporary files, attributes, xattrs, over a set of Folders. fs/fuse_mount.cc forwards each FUSE
// request to one Core method and sends exactly one reply; tests call the methods directly.
//
// Inodes. Each (path, content version) gets its own inode number, never reused. A committed file's
// bytes never change under an inode, so the kernel may keep its pages (keep_cache) and attributes for a
// long time; a commit makes the name point at a new inode and invalidates the kernel's entry. Nodes are
// dropped when the kernel forgets them (nlookup reaches 0), so `find` does not grow the table without
// bound.
//
// Writes. Opening a file for writing stages it: a private file in the folder's staging directory (a
// copy of the current bytes unless truncated). Writes go to the staged file (direct I/O, so the page
// cache of readers is never touched). At flush (close) the folder validates and commits it; names
// starting with '.' are temporary and commit only when renamed onto a real name (rsync's pattern).
// Readers keep the snapshot they opened.
//
// Thread-safety: all methods may be called concurrently. Lock order: mu_ before WriteState::mu. No
// folder call is made while holding mu_.
#pragma once

#include <sys/stat.h>
#include <sys/statvfs.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "fs/folder.h"

namespace modelfs::fs {

using Ino = uint64_t;
constexpr Ino kRootIno = 1;

// How the core asks the kernel to drop a cached directory entry. Implemented by the FUSE layer.
class EntryInvalidator {
 public:
  virtual ~EntryInvalidator() = default;
  // wait=false queues the request; wait=true returns once the kernel has dropped the entry (only from
  // requests that do not hold the parent's lock: flush, release).
  virtual void InvalidateEntry(Ino parent, const std::string& name, bool wait) = 0;
  // Drops an inode's cached attributes and pages (for a directory: its cached listing).
  virtual void InvalidateInode(Ino ino, bool wait) = 0;
};

struct CoreOptions {
  uid_t uid = 0;
  gid_t gid = 0;
  bool read_only = false;
  double entry_timeout = 60;  // committed entries: the core invalidates them when it changes them
  double attr_timeout = 60;   // committed files: attributes are immutable per inode
  double dir_attr_timeout = 1;
};

struct EntryOut {
  struct stat attr {};
  double entry_timeout = 0;
  double attr_timeout = 0;
};

struct AttrOut {
  struct stat attr {};
  double attr_timeout = 0;
};

struct OpenOut {
  uint64_t fh = 0;
  bool direct_io = false;
  bool keep_cache = false;
};

// Where the bytes of a read are: a range of an fd (to splice), or nothing (end of file).
struct ReadOut {
  int fd = -1;
  off_t offset = 0;
  size_t length = 0;
  std::shared_ptr<void> keep_alive;  // holds the fd open until the reply is sent
  std::shared_ptr<std::string> data;  // set instead of fd for bytes copied out of a staged file
};

struct DirListing {
  std::vector<std::pair<std::string, EntryOut>> entries;  // without "." and ".."
};

// Fields of SETATTR the caller wants changed.
struct SetAttrIn {
  std::optional<uint64_t> size;
  std::optional<mode_t> mode;
  std::optional<uid_t> uid;
  std::optional<gid_t> gid;
  std::optional<timespec> mtime;  // already resolved (UTIME_NOW -> now)
  std::optional<uint64_t> fh;
};

class Core {
 public:
  Core(std::vector<std::unique_ptr<Folder>> folders, CoreOptions options);
  ~Core();
  Core(const Core&) = delete;
  Core& operator=(const Core&) = delete;

  void SetInvalidator(EntryInvalidator* inv);  // optional; set before serving requests

  Result<EntryOut> Lookup(Ino parent, const std::string& name);
  void Forget(Ino ino, uint64_t nlookup);
  Result<AttrOut> GetAttr(Ino ino);
  Result<AttrOut> SetAttr(Ino ino, const SetAttrIn& in);
  Result<std::string> ReadLink(Ino ino);
  Result<EntryOut> Symlink(Ino parent, const std::string& name, const std::string& target);

  Result<EntryOut> MakeDir(Ino parent, const std::string& name);
  Status Unlink(Ino parent, const std::string& name);
  Status RemoveDir(Ino parent, const std::string& name);
  // flags: RENAME_NOREPLACE is honoured; RENAME_EXCHANGE is not supported.
  Status Rename(Ino parent, const std::string& name, Ino new_parent, const std::string& new_name,
                unsigned flags);

  // Lists a directory (one snapshot per opendir, made at its first read). Every returned entry counts
  // as one lookup (readdirplus semantics) only once the caller confirms it with `Remember`.
  Result<uint64_t> OpenDir(Ino ino);
  // Entries from index `offset` on; the caller passes each entry it sent to Remember.
  Result<std::vector<std::pair<std::string, EntryOut>>> ReadDir(uint64_t dh, uint64_t offset);
  void Remember(Ino ino);  // one more kernel lookup reference
  void ReleaseDir(uint64_t dh);

  Result<OpenOut> Open(Ino ino, int flags);
  Result<std::pair<EntryOut, OpenOut>> Create(Ino parent, const std::string& name, mode_t mode,
                                              int flags);
  Result<ReadOut> Read(uint64_t fh, off_t offset, size_t size);
  // Writes into the handle's staged file: `put` receives the staged fd and writes `size` bytes at
  // `offset` (the FUSE layer splices straight from the kernel's pipe).
  using PutFn = std::function<Result<size_t>(int fd, off_t offset)>;
  Result<size_t> WriteWith(uint64_t fh, off_t offset, const PutFn& put);
  Result<size_t> Write(uint64_t fh, off_t offset, const char* data, size_t size);
  Status Flush(uint64_t fh);
  void Release(uint64_t fh);
  Status Fsync(uint64_t fh, bool datasync);

  Result<std::string> GetXattr(Ino ino, const std::string& name);
  Result<std::vector<std::string>> ListXattr(Ino ino);
  // The store's attributes are derived (user.modelfs.*): setting one is accepted and not kept, so that
  // rsync -X restores work; other names are not supported.
  Status SetXattr(Ino ino, const std::string& name, std::string_view value);
  Status RemoveXattr(Ino ino, const std::string& name);
  Status StatFs(struct statvfs* out);

  // Makes all committed data durable (used at unmount).
  Status SyncAll();
  size_t node_count();  // for tests: inodes currently known

 private:
  struct Node;
  struct WriteState;
  struct Handle;
  struct Pending;
  struct DirHandle;

  // All members below marked (mu_) are protected by mu_.
  Node* FindNode(Ino ino);                                     // (mu_)
  Ino CurrentIno(Ino parent, const std::string& name);         // (mu_) 0 when none
  Ino AddNode(Ino parent, const std::string& name, Path path, const NodeAttr& attr);  // (mu_)
  void DetachName(Ino ino);                                    // (mu_)
  // Points (new_parent, new_name) at ino, as the kernel does after a rename. (mu_)
  Node* MoveName(Ino ino, Ino new_parent, const std::string& new_name, const Path& path);
  Result<Path> ChildPath(Ino parent, const std::string& name); // locks mu_
  Result<NodeAttr> StatPath(const Path& path);                 // pending or folder
  // The entries of the folder at path (the store's and pending ones), for a directory handle.
  Result<std::vector<std::pair<std::string, NodeAttr>>> ListEntries(const Path& path);
  Pending* FindPending(const std::string& key);                // (mu_)
  EntryOut MakeEntry(Ino ino, const NodeAttr& attr);           // (mu_)
  struct stat MakeStat(Ino ino, const NodeAttr& attr);
  Result<Folder*> FolderOf(const Path& path);
  Status FlushHandle(uint64_t fh, bool at_release);
  Status CommitState(const Path& path, WriteState& ws, Vanished* vanished);  // ws.mu held
  Status EnsureStaged(const Path& path, WriteState& ws, bool truncate);      // ws.mu held
  void InvalidateVanished(const Path& changed_dir_path, const Vanished& vanished);
  // Folder listings below path[0]/path[1] (e.g. one model) may have changed as a side effect of a
  // change at path: drops the kernel's cached listings and attributes of the known folders there.
  void InvalidateListings(const Path& path, bool wait);
  void EraseNode(Ino ino);  // (mu_)
  Result<Ino> LookupPathIno(const Path& path);  // (mu_) ino of a path if known
  static bool IsTemporaryName(const std::string& name) { return !name.empty() && name[0] == '.'; }

  // Constant after construction.
  const CoreOptions options_;
  std::vector<std::unique_ptr<Folder>> folders_;
  EntryInvalidator* invalidator_ = nullptr;

  std::mutex mu_;
  std::unordered_map<Ino, std::unique_ptr<Node>> nodes_;                 // (mu_)
  std::set<Ino> dir_nodes_;                                              // (mu_) folders among nodes_
  std::map<std::pair<Ino, std::string>, Ino> names_;                     // (mu_)
  std::map<std::string, std::unique_ptr<Pending>> pending_;              // (mu_) key: joined path
  std::unordered_map<uint64_t, std::shared_ptr<Handle>> handles_;        // (mu_)
  std::unordered_map<uint64_t, std::shared_ptr<DirHandle>> dir_handles_; // (mu_)
  Ino next_ino_ = 2;                                                     // (mu_)
  uint64_t next_fh_ = 1;                                                 // (mu_)
  timespec start_time_{};
};

}  // namespace modelfs::fs
