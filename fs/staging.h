// Staging: the bytes of one file being written, before they reach the store.
//
// Every open for writing stages its own bytes (SPEC §2: a close publishes exactly that writer's bytes,
// never a mix). The staged file lives in the folder's staging directory (same filesystem as the store,
// so a commit is a rename). It starts empty, or, for a writer that does not truncate, as a copy of the
// stored bytes taken when the file was opened (`base`: later commits by others do not change it), made
// at the first write so that a writer that only reads or re-sets a time copies nothing.
//
// A Staging is shared by the handle that writes it and, for a file that exists only in the core (a
// file being created, a temporary file), by that pending entry, which outlives the handle.
//
// Thread-safety: the fields marked (mu) are protected by mu. Lock order: Staging::mu before the
// core's table lock (Core::mu_), never the reverse.
#pragma once

#include <time.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "fs/folder.h"
#include "stores/common/staged_file.h"
#include "stores/common/status.h"

namespace modelfs::fs {

struct Staging {
  explicit Staging(std::string staging_dir);

  // Makes `staged` hold the file's current bytes (a copy of base unless truncate) if it does not yet.
  Status Ensure(bool truncate);  // (mu)
  // The file's size as written so far (staged, else base, else 0).
  Result<uint64_t> Size();  // (mu)
  // An fd with the file's current bytes, or -1 for an empty file.
  int ReadFd() const;  // (mu)
  // Forgets what was staged (after a commit consumed it, or a rejection): the file reads as its base.
  void DropStaged();   // (mu)
  // Records a change now: ctime, and mtime unless one was set explicitly.
  void Touch();        // (mu)
  // The file's mtime: the one set with utimens, else that of its last change.
  timespec Mtime() const;  // (mu)

  std::mutex mu;
  const std::string dir;  // where staged files are created

  std::shared_ptr<FileContent> base;   // (mu) stored bytes a copy-on-write starts from; null: empty
  std::unique_ptr<StagedFile> staged;  // (mu) null until the first change; consumed by a commit
  bool dirty = false;                  // (mu) differs from what the store has
  bool durable = false;                // (mu) fsync was called: the commit must survive a power cut
  bool cached_io = false;              // (mu) read or written through the page cache (an O_RDWR handle)
  uint64_t unsaved_changes = 0;        // (mu) writes and truncates since the last commit
  bool time_set = false;               // (mu) utimens since the last commit
  std::optional<timespec> mtime;       // (mu) set by utimens: the version's time at commit
  timespec changed{};                  // (mu) last change (ctime; mtime when none was set)
  std::map<std::string, std::string> xattrs;  // (mu) user.modelfs.* set before the commit (rsync -X)
  // (mu) Why this file was rejected. Sticky: every later write, flush, fsync and close of the open
  // file returns it (a program that closes a dup first and ignores that error still sees it).
  Status error;
};

}  // namespace modelfs::fs
