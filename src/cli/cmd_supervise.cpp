// switchyard supervise: runs a command (typically `mpirun ... switchyard train --auto-resume`)
// and starts it again when it dies -- a rank killed, a node lost -- up to --max-restarts times,
// so a training job recovers from its latest checkpoint without a person watching it. Open MPI
// tears the whole job down when one rank dies; this loop is what brings it back.
#include <fmt/core.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <thread>

#include "cli/commands.h"
#include "parallel/communicator.h"
#include "util/error.h"

namespace sy::cli {
namespace {

struct SuperviseArgs {
  int max_restarts = 3;
  double delay_s = 1.0;
  std::vector<std::string> command;
};

volatile sig_atomic_t g_child = 0, g_stop = 0;

void forward_signal(int sig) {
  g_stop = 1;
  if (g_child > 0) ::kill(pid_t(g_child), sig);
}

std::string describe(int status) {
  if (WIFEXITED(status)) return fmt::format("exit status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return fmt::format("signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
  return "an unknown status";
}

// Runs the command once; its wait status.
int run_once(const std::vector<std::string>& command) {
  std::vector<char*> argv;
  for (const std::string& a : command) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) fail("supervise: cannot start a process: {}", std::strerror(errno));
  if (pid == 0) {
    ::execvp(argv[0], argv.data());
    std::fprintf(stderr, "switchyard supervise: cannot run '%s': %s\n", argv[0],
                 std::strerror(errno));
    _exit(127);
  }
  g_child = pid;
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  g_child = 0;
  return status;
}

void run_supervise(const SuperviseArgs& a) {
  if (parallel::launched_by_mpi())
    fail(
        "supervise runs outside mpirun: put mpirun in its command (switchyard supervise -- mpirun "
        "...)");
  if (a.command.empty()) fail("supervise: no command given (switchyard supervise -- COMMAND ...)");
  if (a.max_restarts < 0) fail("--max-restarts must be at least 0, got {}", a.max_restarts);
  if (!(a.delay_s >= 0 && a.delay_s <= 3600))
    fail("--delay must be 0 to 3600 seconds, got {}", a.delay_s);
  struct sigaction sa {};
  sa.sa_handler = forward_signal;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  for (int attempt = 0;; ++attempt) {
    const auto t0 = std::chrono::steady_clock::now();
    const int status = run_once(a.command);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
      fmt::print("supervise: the command succeeded after {} restart{} ({:.0f} s in the last run)\n",
                 attempt, attempt == 1 ? "" : "s", s);
      return;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
      fail("supervise: the command could not be started");
    if (g_stop) fail("supervise: interrupted; the command ended with {}", describe(status));
    if (attempt >= a.max_restarts)
      fail("supervise: the command ended with {} and --max-restarts {} is used up",
           describe(status), a.max_restarts);
    fmt::print(stderr, "supervise: the command ended with {} after {:.0f} s; restart {} of {}\n",
               describe(status), s, attempt + 1, a.max_restarts);
    std::fflush(stderr);
    std::this_thread::sleep_for(std::chrono::duration<double>(a.delay_s));
  }
}

}  // namespace

void register_supervise(CLI::App& app) {
  auto a = std::make_shared<SuperviseArgs>();
  CLI::App* cmd = app.add_subcommand(
      "supervise",
      "Run a command and restart it when it fails (e.g. -- mpirun -np 4 switchyard train "
      "--auto-resume ...), so training recovers from its latest checkpoint");
  cmd->add_option("--max-restarts", a->max_restarts, "Restarts before giving up")
      ->capture_default_str();
  cmd->add_option("--delay", a->delay_s, "Seconds to wait before a restart")->capture_default_str();
  cmd->add_option("command", a->command, "The command and its arguments, after --")->required();
  cmd->callback([a] { run_supervise(*a); });
}

}  // namespace sy::cli
