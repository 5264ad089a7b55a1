#include "fs/invalidation.h"

#include "fs/log.h"

namespace modelfs::fs {

InvalidationQueue::InvalidationQueue(KernelCache* kernel) : state_(std::make_shared<State>()) {
  state_->kernel = kernel;
  worker_ = std::thread(&InvalidationQueue::Run, state_);
}

InvalidationQueue::~InvalidationQueue() {
  std::unique_lock lock(state_->mu);
  state_->stop = true;
  state_->queue.clear();  // nothing is left to invalidate once the core or the mount goes away
  state_->queued_cv.notify_all();
  // A notification in flight may be blocked in the kernel for good (the mount is being torn down
  // under a request that will not be answered): the thread is left behind rather than waited for.
  if (state_->sent_cv.wait_for(lock, std::chrono::seconds(5), [&] { return state_->exited; })) {
    lock.unlock();
    worker_.join();
  } else {
    lock.unlock();
    LogError("kernel cache invalidation thread blocked in the kernel at shutdown: left behind");
    worker_.detach();
  }
}

uint64_t InvalidationQueue::Push(Item item) {
  uint64_t ticket;
  {
    std::lock_guard lock(state_->mu);
    state_->queue.push_back(std::move(item));
    ticket = ++state_->queued;
  }
  state_->queued_cv.notify_one();
  return ticket;
}

uint64_t InvalidationQueue::Entry(Ino parent, std::string name) {
  return Push(Item{parent, std::move(name), false});
}

uint64_t InvalidationQueue::Attributes(Ino ino, bool listing) { return Push(Item{ino, "", listing}); }

bool InvalidationQueue::Wait(uint64_t ticket, std::chrono::milliseconds timeout) {
  std::unique_lock lock(state_->mu);
  if (state_->sent_cv.wait_for(lock, timeout, [&] { return state_->sent >= ticket; })) return true;
  LogError("kernel cache invalidation still blocked after " + std::to_string(timeout.count()) +
           " ms (" + std::to_string(state_->queued - state_->sent) + " queued): going on without it");
  return false;
}

void InvalidationQueue::Drain() {
  std::unique_lock lock(state_->mu);
  const uint64_t ticket = state_->queued;
  state_->sent_cv.wait(lock, [&] { return state_->sent >= ticket || state_->stop; });
}

void InvalidationQueue::Run(std::shared_ptr<State> st) {
  std::unique_lock lock(st->mu);
  while (true) {
    st->queued_cv.wait(lock, [&] { return st->stop || !st->queue.empty(); });
    if (st->stop) {
      st->exited = true;
      st->sent_cv.notify_all();
      return;
    }
    Item item = std::move(st->queue.front());
    st->queue.pop_front();
    lock.unlock();
    if (st->kernel != nullptr) {
      if (item.name.empty()) {
        st->kernel->ForgetAttributes(item.ino, item.listing);
      } else {
        st->kernel->ForgetEntry(item.ino, item.name);
      }
    }
    lock.lock();
    ++st->sent;
    st->sent_cv.notify_all();
  }
}

}  // namespace modelfs::fs
