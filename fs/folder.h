// Folder: the small interface between the fs core and one top-level folder (models, embeddings, ...).
//
// A folder maps paths below its root to its store's API. Paths are component vectors relative to the
// folder root ({} is the root itself, {"7","layers","0"} is models/7/layers/0). The core owns inodes,
// handles, staging and the kernel; a folder only answers "what is at this path" and "store these staged
// bytes at this path". Adding a top-level folder means writing one Folder, nothing else.
//
// Names starting with '.' are never passed to a folder: the core keeps them as temporary files (rsync's
// .name.XXXXXX) until they are renamed onto a real name or removed.
//
// Thread-safety: every method may be called concurrently from the FUSE worker threads.
#pragma once

#include <sys/types.h>
#include <time.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "stores/common/scoped_fd.h"
#include "stores/common/staged_file.h"
#include "stores/common/status.h"

namespace modelfs::fs {

using Path = std::vector<std::string>;
std::string JoinPath(const Path& p);  // "a/b/c"

// Nanoseconds since the epoch <-> timespec (stores keep times as int64 ns).
timespec TimespecFromNanos(int64_t ns);
int64_t NanosFromTimespec(const timespec& ts);

enum class NodeType : uint8_t { kDir, kFile, kSymlink };

struct NodeAttr {
  NodeType type = NodeType::kFile;
  uint64_t size = 0;
  timespec mtime{};
  bool writable = false;  // a file that may be opened for writing (adds content at close)
  // Changes exactly when the bytes a read returns change. The core gives each (path, version) its own
  // inode, so the kernel may cache a file's pages for as long as the inode lives.
  uint64_t version = 0;
  timespec ctime{};  // last status change; zero: the same as mtime
  // A directory that has only a provisional existence (see MkdirOutcome::kProvisional) is a core
  // concept; folders leave this false.
};

struct DirEntry {
  std::string name;
  NodeAttr attr;
};

// What a file reads as, for one open: a consistent snapshot. The fd's bytes [0, size) are the content,
// so reads are pread or splice from it and need no lock.
struct FileContent {
  ScopedFd fd;
  uint64_t size = 0;
};

// Small content made in memory (metadata, one entity's JSON text), served from an anonymous memory
// file, one per open.
Result<FileContent> MemoryFileContent(std::string_view bytes);

// Facts the core knows about a staged file at commit time.
struct CommitContext {
  std::optional<timespec> mtime;  // set with utimens on the staged file (rsync sets it before rename)
  bool durable = false;           // fsync was called on the staged file
  // user.modelfs.* attributes set on the staged file before the commit (rsync -X), name and value.
  std::vector<std::pair<std::string, std::string>> xattrs;
};

enum class MkdirOutcome : uint8_t {
  kCreated,      // the folder created something real (mkdir models/7 creates model 7)
  kProvisional,  // allowed, but nothing exists in the store until a file is committed below it
                 // (mkdir models/7/history/3 before restoring versions of layer 3); the core keeps it
};

// Paths whose cached kernel entries may be stale after a change (things that vanished or changed as a
// side effect), relative to the folder. Two special forms:
//   {"/", "<folder>", ...}  a path in another top-level folder (a cascade from neurons/ to synapses/);
//   {..., "*"}              every file of that folder (an import that replaced everything).
// A directory's entry going stale makes the kernel look it up and list it again.
using Vanished = std::vector<Path>;

class Folder {
 public:
  virtual ~Folder() = default;
  virtual std::string_view name() const = 0;
  // Where the core creates staged files: same filesystem as the store, so commits are renames.
  virtual const std::string& staging_dir() const = 0;

  // NotFound when nothing is at p.
  virtual Result<NodeAttr> Stat(const Path& p) = 0;
  // NotFound / NotADirectory.
  virtual Result<std::vector<DirEntry>> List(const Path& dir) = 0;
  // A snapshot of the file at p. NotFound / IsADirectory.
  virtual Result<FileContent> Open(const Path& p) = 0;
  // Whether a file may be created or written at p (before any byte is staged): OK, or the reason not
  // (InvalidArgument for a bad name, NotFound for a missing parent object, ReadOnly for a read-only file).
  virtual Status CheckWritable(const Path& p) = 0;
  // Validates the staged bytes and stores them at p. On error the store is unchanged and `staged` is
  // left as it was. On success `staged` may have been consumed (it became the stored file).
  virtual Status Commit(const Path& p, StagedFile& staged, const CommitContext& ctx,
                        Vanished* vanished) = 0;
  virtual Status Remove(const Path& p, Vanished* vanished) = 0;
  virtual Result<MkdirOutcome> MakeDir(const Path& p) = 0;
  virtual Status RemoveDir(const Path& p, Vanished* vanished) = 0;
  // Renames a committed entry. Most folders have no meaning for it.
  virtual Status Rename(const Path& from, const Path& to, Vanished* vanished) {
    (void)to, (void)vanished;
    return NotSupported(JoinPath(from) + ": renaming stored entries is not supported here");
  }
  virtual Result<std::string> ReadLink(const Path& p) {
    return InvalidArgument(JoinPath(p) + ": not a symbolic link");
  }
  // Creates a symbolic link at p to target (ln -s). Most folders have none.
  virtual Status MakeSymlink(const Path& p, const std::string& target, Vanished* vanished) {
    (void)target, (void)vanished;
    return NotSupported(JoinPath(p) + ": symbolic links are not supported here");
  }
  // Sets the mtime of a stored entry (touch, rsync -a setting a link's or a file's time after its
  // rename). Default: accepted and not kept (the store decides times). A file whose bytes show its time
  // (a JSON document with "modified_at") changes with it; the core notices that itself.
  virtual Status SetMtime(const Path& p, const timespec& mtime, Vanished* vanished) {
    (void)p, (void)mtime, (void)vanished;
    return Status::Ok();
  }
  // Sets extended attribute `name` (user.modelfs.*) of a stored entry. Default: accepted and not kept
  // (derived attributes; rsync -aX restoring them must not fail).
  virtual Status SetXattr(const Path& p, const std::string& name, std::string_view value) {
    (void)p, (void)name, (void)value;
    return Status::Ok();
  }
  // Extended attributes of p (name, value), e.g. user.modelfs.create_time.
  virtual Result<std::vector<std::pair<std::string, std::string>>> Xattrs(const Path& p) {
    (void)p;
    return std::vector<std::pair<std::string, std::string>>{};
  }
  // Whether getfattr -d and rsync -X see attribute `name` of p (listxattr). Attributes that describe
  // how the store holds an entry rather than what it is (sizes on disk, delta bases, statistics) are
  // not listed: a restored copy has other values, so rsync -X would copy them every time. They are
  // still read by name (getfattr -n).
  virtual bool ListsXattr(const Path& p, std::string_view name) const {
    (void)p, (void)name;
    return true;
  }
  // True when any commit may change every file of the folder (views of one store, such as dumps):
  // the core then drops the kernel's entries for all of the folder's files after each commit.
  virtual bool CommitsChangeEverything() const { return false; }
  // True for an entry the store keeps while its folder exists (models/<id>/meta, a neuron's .vec,
  // views, links in listings). Remove of one changes it (clears it) or nothing and succeeds; the core
  // then hides it from the process that removed it until that process creates it again, which is how
  // tar -x replaces a file (it unlinks after EEXIST and creates again).
  virtual bool IsAutomatic(const Path& p) const {
    (void)p;
    return false;
  }
  // True for a folder that a successful MakeDir fills with entries of the store's own (models/<id>:
  // meta, layers/, history/). The process that made it does not see them until it creates them, so
  // that cp -a and tar -x, which create every entry below a folder they made, succeed.
  virtual bool MakeDirFillsIt(const Path& p) const {
    (void)p;
    return false;
  }
  // Files that any change in this folder alters (a whole-graph export), in the Vanished form
  // {"/", "<folder>", ...}: the core drops their cached attributes after every change.
  virtual Vanished Derived() const { return {}; }
  // True for a file whose stat makes it (a view generated on demand, such as a whole-graph export):
  // the core does not stat it right after a commit to it, it lets the next lookup do so.
  virtual bool MadeOnDemand(const Path& p) const {
    (void)p;
    return CommitsChangeEverything();
  }
  // Makes everything committed so far survive a machine crash.
  virtual Status Sync() = 0;
};

}  // namespace modelfs::fs
