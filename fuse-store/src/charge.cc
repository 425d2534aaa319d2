// The charge helper: an allocating fallocate on the memory tier runs in a short-lived helper that
// joins the container's cgroup first, so the new pages are charged to the container.
#include "fs_internal.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>

namespace ephemera {

// Runs `helper --fallocate CGROUP MODE OFFSET LENGTH` with `fd` as its fd 3 and waits for it.
// 0 on success, the errno fallocate failed with (> 0), or -1 when the helper could not run or could
// not join the cgroup. posix_spawn (vfork + exec) is safe from this multithreaded process; it costs
// about a millisecond, paid only by allocating fallocates on the memory tier.
int ChargedFallocate(const Filesystem::ChargeAgent& agent, int fd, uint32_t mode, uint64_t offset, uint64_t length,
                     std::atomic<uint64_t>* timeouts) {
  posix_spawn_file_actions_t actions;
  if (posix_spawn_file_actions_init(&actions) != 0) return -1;
  posix_spawn_file_actions_adddup2(&actions, fd, 3);  // dup2 clears O_CLOEXEC on the copy
  std::string m = std::to_string(mode), o = std::to_string(offset), l = std::to_string(length);
  std::string arg0 = agent.helper, flag = "--fallocate", cg = agent.cgroup_dir;
  char* argv[] = {arg0.data(), flag.data(), cg.data(), m.data(), o.data(), l.data(), nullptr};
  char* envp[] = {nullptr};
  pid_t pid = -1;
  int e = posix_spawn(&pid, agent.helper.c_str(), &actions, nullptr, argv, envp);
  posix_spawn_file_actions_destroy(&actions);
  if (e != 0) return -1;
  // Bounded: a helper stuck in a cgroup that is OOM-paused or frozen must not hold a serving
  // thread for ever. After the deadline it is killed and the call answered ENOSPC (allocating here
  // instead would charge the container's pages to the daemon, past the container's limit).
  constexpr int64_t kDeadlineMs = 5000;
  const int64_t deadline = NowMs() + kDeadlineMs;
  int status = 0;
  for (int delay_us = 200;;) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) return -1;
    if (NowMs() > deadline) {
      kill(pid, SIGKILL);
      while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      timeouts->fetch_add(1);
      return ENOSPC;
    }
    usleep(delay_us);
    delay_us = std::min(delay_us * 2, 20000);
  }
  if (!WIFEXITED(status)) return -1;
  int code = WEXITSTATUS(status);
  if (code == 0) return 0;
  return code < 200 ? code : -1;  // 200: cgroup not joined, 201: usage
}

void Filesystem::SetChargeAgent(ChargeAgent a) {
  std::lock_guard lock(mu_);
  charge_agent_ = std::move(a);
}

}  // namespace ephemera
