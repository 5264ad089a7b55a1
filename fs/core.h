// Core: the filesystem without the kernel. Inodes, handles, staging of writes and their atomic commit,
// temporary files, attributes, xattrs, over a set of Folders. fs/fuse_mount.cc forwards each FUSE
// request to one Core method and sends exactly one reply; tests call the methods directly.
//
// The rules (SPEC §2; README "Semantics"):
//
// Inodes. Each (path, content version) of a stored file has its own inode, never reused, whose bytes
// and size never change: the kernel may cache its pages and attributes for long, and a reader keeps
// exactly the snapshot it opened, bytes and fstat. A commit makes the name lead to a new inode and
// drops the kernel's entry. An open of an inode whose name has moved on fails with ESTALE, which makes
// the kernel look the path up again and retry once (so `cat` after another process's close reads the
// new bytes with the right size).
//
// Writers. Every open for writing gets its own staged bytes (see staging.h) on an inode of its own: an
// open for writing of a stored file's inode is answered ESTALE; the kernel's retry looks the name up
// again from the same thread, and that lookup returns a fresh private inode (kWriter) that only this
// opener ever uses. The writer's writes and truncates then move only its own inode's size, so readers'
// inodes never change, and the writer sees its own file (fstat, lseek(SEEK_END), O_APPEND). If a
// retry cannot look up again (an open through /proc/self/fd), the second attempt is served on the
// shared inode as before, with its own staged bytes.
//
// Commit. A write handle commits at a close (FLUSH) sent by the process that opened it, once it has
// written (or set a time): never at a close by a process that only inherited or was passed the
// descriptor (`{ a; b; } > f`, a forked child, exec closing O_CLOEXEC descriptors), and not at the
// close a shell makes after dup2 before any byte is written. What no such close committed commits at
// release (the last close of the file description). A rejection is sticky: that errno is returned by
// every later write, flush, fsync and close of the open file. A name removed or replaced while a file
// is open for writing under it is not brought back by that file's later close.
//
// Per-process views (process_views.h): a process that made a model does not see the entries the store
// adds to it until it creates them itself, and a process that removed an automatic entry does not see
// it until it creates it again; this is what lets cp -a and tar -x restore into a store.
//
// Kernel caches are dropped through an InvalidationQueue (invalidation.h): never from a request
// thread, and waited for (bounded) only by requests that hold no lock the notification needs.
//
// Thread-safety: all methods may be called concurrently. Lock order: a Staging's mu before mu_
// (the table lock), never the reverse; mu_ is never held across a folder call or a wait.
#pragma once

#include <sys/stat.h>
#include <sys/statvfs.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "fs/dir_times.h"
#include "fs/folder.h"
#include "fs/inode_table.h"
#include "fs/invalidation.h"
#include "fs/process_table.h"
#include "fs/process_views.h"

namespace modelfs::fs {

struct Staging;

// Who sent a request: the calling thread's id as the kernel reports it (0: unknown).
struct Caller {
  pid_t tid = 0;
};

struct CoreOptions {
  uid_t uid = 0;
  gid_t gid = 0;
  bool read_only = false;
  double entry_timeout = 60;  // stored entries: the core drops them when it changes them
  double attr_timeout = 60;   // stored files: attributes are immutable per inode
  double dir_attr_timeout = 1;
  // How long a request waits for the kernel to drop what it changed before replying anyway.
  std::chrono::milliseconds invalidation_wait{2000};
  // Where folder times set with utimens are kept ("": in memory only). See dir_times.h.
  std::string dir_times_file;
  // The root folder's time (its listing never changes); default: when the core started.
  std::optional<timespec> root_mtime;
  // Thread id -> process, and whether a process still runs (defaults: /proc).
  ProcessTable::Resolver process_of;
  ProcessTable::Liveness process_alive;
  // Whether a calling thread is creating a name (default: /proc/<tid>/syscall).
  ProcessTable::Intent creating;
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

  // Where notifications go (optional; set before serving requests, reset to null after).
  void SetKernelCache(KernelCache* kernel);

  Result<EntryOut> Lookup(const Caller& caller, Ino parent, const std::string& name);
  void Forget(Ino ino, uint64_t nlookup);
  Result<AttrOut> GetAttr(Ino ino);
  Result<AttrOut> SetAttr(const Caller& caller, Ino ino, const SetAttrIn& in);
  Result<std::string> ReadLink(Ino ino);
  Result<EntryOut> Symlink(const Caller& caller, Ino parent, const std::string& name,
                           const std::string& target);
  Result<EntryOut> MakeDir(const Caller& caller, Ino parent, const std::string& name);
  // mknod (fifos, devices, sockets) and link (hard links): refused with the reason, named.
  Status MakeSpecial(Ino parent, const std::string& name, mode_t mode);
  Status HardLink(Ino ino, Ino new_parent, const std::string& new_name);
  Status Unlink(const Caller& caller, Ino parent, const std::string& name);
  Status RemoveDir(const Caller& caller, Ino parent, const std::string& name);
  // flags: RENAME_NOREPLACE is honoured; RENAME_EXCHANGE is not supported.
  Status Rename(const Caller& caller, Ino parent, const std::string& name, Ino new_parent,
                const std::string& new_name, unsigned flags);

  // Lists a directory (one snapshot per opendir, made at its first read).
  Result<uint64_t> OpenDir(Ino ino);
  // Entries from index `offset` on. With plus, every entry returned carries one kernel reference
  // (readdirplus); the caller gives back those of entries it did not send with Forget(ino, 1).
  Result<std::vector<std::pair<std::string, EntryOut>>> ReadDir(uint64_t dh, uint64_t offset, bool plus);
  void ReleaseDir(uint64_t dh);

  Result<OpenOut> Open(const Caller& caller, Ino ino, int flags);
  Result<std::pair<EntryOut, OpenOut>> Create(const Caller& caller, Ino parent, const std::string& name,
                                              mode_t mode, int flags);
  Result<ReadOut> Read(uint64_t fh, off_t offset, size_t size);
  // Writes into the handle's staged file: `put` receives the staged fd and writes at `offset` (the
  // FUSE layer splices straight from the kernel's pipe).
  using PutFn = std::function<Result<size_t>(int fd, off_t offset)>;
  Result<size_t> WriteWith(uint64_t fh, off_t offset, const PutFn& put);
  Result<size_t> Write(uint64_t fh, off_t offset, const char* data, size_t size);
  Status Flush(const Caller& caller, uint64_t fh);
  void Release(uint64_t fh);
  Status Fsync(uint64_t fh, bool datasync);

  Result<std::string> GetXattr(Ino ino, const std::string& name);
  Result<std::vector<std::string>> ListXattr(Ino ino);
  // The store's attributes are derived (user.modelfs.*): setting one is passed to the folder (which
  // keeps the few it can: weights' Coral names) or accepted and not kept, so that rsync -X restores
  // work; other namespaces are not supported.
  Status SetXattr(Ino ino, const std::string& name, std::string_view value);
  Status RemoveXattr(Ino ino, const std::string& name);
  Status StatFs(struct statvfs* out);

  // Makes all committed data durable (used at unmount).
  Status SyncAll();
  // Waits until every queued kernel notification was sent (tests).
  void DrainInvalidations();
  size_t node_count();  // for tests: inodes currently known

 private:
  struct Handle;
  struct Pending;
  struct DirHandle;
  class Notes;
  // An open refused with ESTALE, waiting for the kernel's retry from the same thread (see Open).
  struct Reservation {
    Ino parent = 0;
    std::string name;
    Ino refused = 0;         // the inode the first attempt named
    Ino writer = 0;          // the private inode the retry's lookup gets (0: a read, none)
    bool looked_up = false;  // the retry looked the name up again
    std::chrono::steady_clock::time_point at;
    // A read's retry: the bytes of the version its lookup returned, taken at the lookup, so that a
    // commit between the lookup and the open cannot leave the open without its version.
    std::shared_ptr<FileContent> snapshot;
    Ino snapshot_ino = 0;
  };

  // ---- names and nodes ----
  Result<Path> ChildPath(Ino parent, const std::string& name);
  Result<Folder*> FolderOf(const Path& path);
  // What is at path: a pending entry (seen by `viewer` if given: see Pending::creator) or the
  // folder's. from_pending tells which.
  Result<NodeAttr> StatPath(const Path& path, const Caller* viewer = nullptr, bool* from_pending = nullptr);
  // The same, without a folder time set with utimens (the folder's own time).
  Result<NodeAttr> OwnStat(const Path& path, const Caller* viewer, bool* from_pending);
  void ShowDirTime(const Path& path, NodeAttr& attr);
  Result<uint64_t> NamesIn(const Path& path);  // DirTimes::NamesHash of a folder's listing
  bool SeesPending(const Caller* viewer, const ProcessId& creator);
  Pending* FindPending(const std::string& key);  // (mu_)
  EntryOut MakeEntry(const Node& n);             // (mu_)
  struct stat MakeStat(const Node& n, const NodeAttr& attr);  // (mu_)
  // The attached node for parent/name with these attributes (a new one when the content changed);
  // one more kernel reference. (mu_)
  Node* Remember(Ino parent, const std::string& name, const Path& path, const NodeAttr& attr,
                 bool pending);
  Result<std::vector<std::pair<std::string, NodeAttr>>> ListEntries(const Path& path);

  // ---- processes ----
  ProcessId Who(const Caller& caller);
  // Whether path is hidden from the caller's process (process_views.h). creating: the request
  // creates that very name (mknod, mkdir, create, symlink); for a lookup the caller's syscall tells.
  bool HiddenFrom(const Caller& caller, const Path& path, std::optional<bool> creating = std::nullopt);
  void ViewCreated(const Caller& caller, const Path& path);
  // A retrying open of (parent, name) by this thread gets `writer` (0: the current inode). (mu_)
  void Reserve(pid_t tid, Ino parent, const std::string& name, Ino refused, Ino writer);
  // Whether this open by `tid` of `ino` is the retry that could not look up again. (mu_)
  bool IsFailedRetry(pid_t tid, Ino ino);
  void ExpireReservations();  // (mu_)
  void PruneViews();          // (mu_) drops the views of processes that ended, once a second at most

  // ---- writing ----
  Result<OpenOut> OpenForWrite(const Caller& caller, Ino ino, int flags);
  Result<OpenOut> OpenForRead(const Caller& caller, Ino ino);
  uint64_t AddHandle(std::shared_ptr<Handle> h);  // (mu_)
  // Commits the handle's or pending entry's staged bytes at `path` (staging.mu held).
  // adopt: a pending file's inode may become the stored file's (no handle can write through it).
  Status CommitStaging(const Path& path, Ino parent, const std::string& name, Staging& staging,
                       bool pending, bool adopt, const ProcessId& by, Notes& notes);
  // Handles writing to `path` lose it (it was removed or replaced): their close commits nothing. (mu_)
  void DetachWriters(const std::string& key);
  Status FinishHandle(uint64_t fh, bool at_release, const ProcessId& by);

  // ---- kernel caches ----
  // Collects what changed at `folder_top` (the first component of the changed path) into notes.
  void NoteVanished(const std::string& folder_top, const Vanished& vanished, Notes& notes);
  void NoteListings(const Path& path, Notes& notes);
  // Queues notes; waits (bounded) for those that do not need a lock held by the request, which
  // holds the folders `held` locked.
  void Send(Notes& notes, std::initializer_list<Ino> held);

  static bool IsTemporaryName(const std::string& name) { return !name.empty() && name[0] == '.'; }

  // Constant after construction.
  const CoreOptions options_;
  std::vector<std::unique_ptr<Folder>> folders_;
  timespec start_time_{};
  ProcessTable processes_;
  std::unique_ptr<DirTimes> dir_times_;
  std::unique_ptr<InvalidationQueue> invalidations_;  // set before serving

  std::mutex mu_;
  InodeTable table_;                                                      // (mu_)
  std::map<std::string, std::unique_ptr<Pending>> pending_;               // (mu_) key: joined path
  std::unordered_map<uint64_t, std::shared_ptr<Handle>> handles_;         // (mu_)
  std::multimap<std::string, uint64_t> writers_;                          // (mu_) path -> write fh
  std::unordered_map<uint64_t, std::shared_ptr<DirHandle>> dir_handles_;  // (mu_)
  std::unordered_map<pid_t, Reservation> reservations_;                   // (mu_) by thread
  ProcessViews views_;                                                    // (mu_)
  std::chrono::steady_clock::time_point views_pruned_{};                  // (mu_)
  uint64_t next_fh_ = 1;                                                  // (mu_)
};

}  // namespace modelfs::fs
