//! Starting a CLI process so that it cannot outlive the server, even a SIGKILLed one.
//!
//! Each CLI asks the kernel for SIGKILL when its parent dies (`PR_SET_PDEATHSIG`). Linux
//! sends that signal when the *thread* that forked the child ends, not the process, and the
//! threads of async runtimes come and go (tokio's blocking pool retires idle threads, an
//! HTTP server's worker threads stop before the process does). So every CLI is forked by one
//! thread that lives as long as the process: the spawner below.
//!
//! The signal reaches the CLI only; tools it started in its process group may outlive it
//! until the next abort of that group, which is why aborts and shutdowns kill the group.

use std::io;
use std::sync::OnceLock;
use std::sync::mpsc as std_mpsc;

use tokio::process::{Child, Command};
use tokio::sync::oneshot;

struct Job {
    command: Command,
    runtime: tokio::runtime::Handle,
    reply: oneshot::Sender<io::Result<Child>>,
}

/// The spawner thread's queue; `None` when the thread could not be started.
static SPAWNER: OnceLock<Option<std_mpsc::Sender<Job>>> = OnceLock::new();

fn spawner() -> Option<&'static std_mpsc::Sender<Job>> {
    SPAWNER
        .get_or_init(|| {
            let (sender, jobs) = std_mpsc::channel::<Job>();
            let started = std::thread::Builder::new().name("orbit-cli-spawner".into()).spawn(
                move || {
                    for job in jobs {
                        // The child is registered with the caller's runtime, which reaps it.
                        let _entered = job.runtime.enter();
                        let mut command = job.command;
                        let _ = job.reply.send(command.spawn());
                    }
                },
            );
            match started {
                Ok(_) => Some(sender),
                Err(err) => {
                    tracing::warn!(error = %err, "no CLI spawner thread; CLIs may outlive a killed server");
                    None
                }
            }
        })
        .as_ref()
}

/// Starts `command` as a child that the kernel kills when this process dies.
pub(crate) async fn spawn_tied_to_server(mut command: Command) -> io::Result<Child> {
    die_with_parent(&mut command);
    let Some(spawner) = spawner() else { return command.spawn() };
    let (reply, answer) = oneshot::channel();
    let job = Job { command, runtime: tokio::runtime::Handle::current(), reply };
    if let Err(std_mpsc::SendError(job)) = spawner.send(job) {
        let mut command = job.command;
        return command.spawn();
    }
    answer.await.unwrap_or_else(|_| Err(io::Error::other("the CLI spawner thread stopped")))
}

/// Asks for SIGKILL when the forking thread's process dies, and gives up at once if it died
/// already between the fork and the request.
#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the child between fork and exec. It calls only prctl(2) and
    // getppid(2), which are async-signal-safe, and allocates nothing (the error is built from a
    // raw OS error code).
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(|errno| io::Error::from_raw_os_error(errno as i32))?;
            if nix::unistd::getppid() != parent {
                return Err(io::Error::from_raw_os_error(nix::libc::ESRCH));
            }
            Ok(())
        });
    }
}
