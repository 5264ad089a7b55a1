// Telling the kernel to drop what it cached, without ever blocking a request on a kernel lock.
//
// The kernel keeps directory entries (name -> inode), inode attributes and folder listings for as
// long as the core allows. When the core changes something the kernel may hold, it queues a
// notification here. Notifications are sent by one thread of their own, in order: dropping an entry
// makes the kernel take the parent folder's lock, and a request handler whose own request holds that
// lock (an unlink, a rename, a create in that folder) would wait for itself.
//
// A request that must not return before the kernel has forgotten (a close, so that the next stat sees
// the new size) waits for its ticket, for a bounded time. Rules that keep that wait from ever forming a
// cycle, followed by Core:
//   1. A request never waits for an entry in a folder whose lock its own request holds.
//   2. A request queues what it will wait for before what it will not wait for.
//   3. Attribute and listing notifications never take a lock that a request holds (file pages are
//      never invalidated: an inode's bytes never change).
// If the daemon is killed while the sending thread is blocked in the kernel, that thread keeps the
// FUSE connection alive: the mount tools recognise this and abort the connection (tools/mount_guard).
//
// Thread-safety: thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace modelfs::fs {

using Ino = uint64_t;

// The kernel's side; implemented by the FUSE layer (fs/fuse_mount.cc), recorded by tests.
class KernelCache {
 public:
  virtual ~KernelCache() = default;
  // Drops the cached entry parent/name; the next path walk looks it up again. May block on the
  // parent folder's lock in the kernel.
  virtual void ForgetEntry(Ino parent, const std::string& name) = 0;
  // Drops an inode's cached attributes; for a folder (listing=true) also its cached listing.
  virtual void ForgetAttributes(Ino ino, bool listing) = 0;
};

class InvalidationQueue {
 public:
  // kernel may be null (a core without a kernel: nothing is sent). Starts the sending thread.
  explicit InvalidationQueue(KernelCache* kernel);
  ~InvalidationQueue();  // drops what is queued, then stops
  InvalidationQueue(const InvalidationQueue&) = delete;
  InvalidationQueue& operator=(const InvalidationQueue&) = delete;

  // Queue one notification; the ticket is passed to Wait.
  uint64_t Entry(Ino parent, std::string name);
  uint64_t Attributes(Ino ino, bool listing);
  // Returns true once every notification queued up to `ticket` was sent, false after `timeout` (it
  // then logs one line: a thread stuck in the kernel).
  bool Wait(uint64_t ticket, std::chrono::milliseconds timeout);
  // Waits until everything queued so far was sent (tests, unmount).
  void Drain();

 private:
  struct Item {
    Ino ino = 0;
    std::string name;  // empty: attributes of ino
    bool listing = false;
  };
  // Shared with the sending thread, which may outlive the queue (left behind blocked in the kernel).
  struct State {
    KernelCache* kernel = nullptr;
    std::mutex mu;
    std::condition_variable queued_cv;
    std::condition_variable sent_cv;
    std::deque<Item> queue;  // (mu)
    uint64_t queued = 0;     // (mu) tickets handed out
    uint64_t sent = 0;       // (mu) every ticket <= sent was sent
    bool stop = false;       // (mu)
    bool exited = false;     // (mu) the sending thread returned
  };
  uint64_t Push(Item item);
  static void Run(std::shared_ptr<State> state);

  std::shared_ptr<State> state_;
  std::thread worker_;
};

}  // namespace modelfs::fs
