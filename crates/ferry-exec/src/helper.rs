//! The sandbox helper: a small process per sandboxed job (the `ferry` binary started
//! with [`ARG`]) that restricts itself with the job's Landlock rules, becomes the step
//! user, and then starts the job's processes with `posix_spawn` on the server's behalf.
//!
//! Why a process: what a job starts lives in the helper's Landlock domain and has its
//! user; were the starter a thread of the server (as it is without a helper), a step
//! could signal that thread — and so the whole server — or change its limits. Steps
//! may signal the helper; that ends their own job, nothing else.
//!
//! The server and the helper talk over a `SOCK_SEQPACKET` socket pair (the helper's
//! standard input): first the job's [`Setup`] (helpers are started ahead of need, see
//! [`Pool`]), then one JSON message each way per request, with the output pipes of a
//! process passed as `SCM_RIGHTS`. Replies: `ready` once, `spawned` per request in
//! order, `exited` whenever a child ends (possibly before its `spawned` arrives), and
//! `swept`. The helper ends when the server's end closes, sweeping its domain first.

use std::collections::VecDeque;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};

use crate::sandbox::{Enforced, Sandbox, StepUser};

/// The argument that makes the `ferry` binary the helper.
pub const ARG: &str = "__ferry-sandbox-helper";

/// The argument that makes the `ferry` binary kill every process of one uid (the next
/// argument), as that uid: what a job with a uid of its own left, however it detached.
pub const SWEEP_ARG: &str = "__ferry-sweep-uid";

/// [`SWEEP_ARG`]'s life: becomes the uid (a root server starts it) and kills every
/// process of it but itself, until `/proc` shows none alive (a process forking
/// meanwhile is killed in a further round). The kernel checks each signal's permission
/// when it sends it, so no other user's process is ever reached. Never returns.
pub fn sweep_uid_main() -> ! {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::{Gid, Pid, Uid, setgroups, setresgid, setresuid};
    let Some(uid) = std::env::args().nth(2).and_then(|u| u.parse::<u32>().ok()) else {
        std::process::exit(2);
    };
    if uid == 0 {
        std::process::exit(2); // never as root: kill(-1) would reach everything
    }
    let (u, g) = (Uid::from_raw(uid), Gid::from_raw(uid));
    if setgroups(&[]).is_err() || setresgid(g, g, g).is_err() || setresuid(u, u, u).is_err() {
        std::process::exit(1);
    }
    // (`kill(-1)` says success while any other process exists, permitted or not: it
    // cannot tell when none of the uid is left; `/proc` can.)
    for _ in 0..1000 {
        let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
        if !crate::sandbox::runs_as(uid, Some(std::process::id())) {
            std::process::exit(0);
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    std::process::exit(1)
}

/// The largest message (a process's environment included).
const MAX_MESSAGE: usize = 1 << 20;

/// What the helper is given first: the job's sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Setup {
    pub read: Vec<PathBuf>,
    pub write: Vec<PathBuf>,
    pub own: Vec<PathBuf>,
    pub user: Option<(u32, u32)>,
    /// The user is the job's alone (see [`crate::sandbox::StepUsers::Range`]): every
    /// process of that uid is the job's, so the end of the job may kill them all even
    /// where Landlock does not scope signals.
    #[serde(default)]
    pub unique: bool,
}

/// A process to start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Start {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    /// In a process group of its own.
    pub group: bool,
    /// How many descriptors come with the request: stdout, then stderr (0: both null;
    /// 1: both the one).
    pub fds: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    Start(Start),
    Sweep,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Reply {
    /// The sandbox is in place (`true`: fully enforced, signals scoped), or why not.
    Ready(Result<bool, String>),
    Spawned(Result<u32, String>),
    /// A child ended: its exit code (128 + the signal for one killed by a signal).
    Exited {
        pid: u32,
        code: i32,
    },
    Swept(bool),
    /// The helper's last word, once the server's end closed: it swept (see
    /// [`crate::sandbox::sweep`]).
    Ended(bool),
}

/// Sends `msg` with `fds` over `socket`.
pub fn send<T: Serialize>(socket: impl AsFd, msg: &T, fds: &[OwnedFd]) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !borrowed.is_empty() && !control.push(SendAncillaryMessage::ScmRights(&borrowed)) {
        return Err(std::io::Error::other("too many descriptors"));
    }
    rustix::net::sendmsg(
        socket,
        &[IoSlice::new(&bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    Ok(())
}

/// Receives one message and its descriptors; `None` when the other end closed.
pub fn recv<T: for<'de> Deserialize<'de>>(
    socket: impl AsFd,
    buf: &mut [u8],
) -> std::io::Result<Option<(T, Vec<OwnedFd>)>> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        socket,
        &mut [IoSliceMut::new(buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(passed) = message {
            fds.extend(passed);
        }
    }
    if got.bytes == 0 {
        return Ok(None);
    }
    let msg = serde_json::from_slice(&buf[..got.bytes]).map_err(std::io::Error::other)?;
    Ok(Some((msg, fds)))
}

/// The helper's life (called by `ferry` when its first argument is [`ARG`], before
/// anything else: one thread). Never returns.
pub fn run() -> ! {
    let socket = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(s) => s,
        Err(_) => std::process::exit(2),
    };
    // Started ahead of need (see [`Pool`]): the job's setup comes when there is a job.
    let mut buf = vec![0u8; MAX_MESSAGE];
    let (ready, unique) = match recv::<Setup>(&socket, &mut buf) {
        Ok(Some((setup, _))) => {
            let unique = setup.unique && setup.user.is_some();
            (prepare(setup), unique)
        }
        _ => std::process::exit(0),
    };
    // What `kill(-1)` reaches from here is the job's: its Landlock domain where signals
    // are scoped, every process of the job's own uid otherwise.
    let scoped = matches!(ready, Ok(true)) || unique;
    let ok = ready.is_ok();
    if send(&socket, &Reply::Ready(ready), &[]).is_err() || !ok {
        std::process::exit(1);
    }
    // The reaper: told of each child started, it waits for them and reports each end.
    let (started, children) = std::sync::mpsc::channel::<()>();
    let reaper = match socket.try_clone() {
        Ok(s) => s,
        Err(_) => std::process::exit(1),
    };
    std::thread::spawn(move || reap(&reaper, &children));
    let mut queue: VecDeque<OwnedFd> = VecDeque::new();
    loop {
        let (request, fds) = match recv::<Request>(&socket, &mut buf) {
            Ok(Some(m)) => m,
            Ok(None) | Err(_) => break,
        };
        queue.extend(fds);
        let reply = match request {
            Request::Start(start) => {
                let fds: Vec<OwnedFd> = queue.drain(..).collect();
                let spawned = spawn(&start, fds);
                if spawned.is_ok() {
                    let _ = started.send(());
                }
                Reply::Spawned(spawned)
            }
            Request::Sweep => Reply::Swept(crate::sandbox::sweep(scoped)),
        };
        if send(&socket, &reply, &[]).is_err() {
            break;
        }
    }
    let swept = crate::sandbox::sweep(scoped);
    let _ = send(&socket, &Reply::Ended(swept), &[]);
    std::process::exit(0)
}

/// Restricts this process to the job's sandbox and becomes its user.
fn prepare(setup: Setup) -> Result<bool, String> {
    let sandbox = Sandbox {
        read: setup.read,
        write: setup.write,
        user: setup
            .user
            .map(|(uid, gid)| crate::sandbox::StepUsers::One(StepUser { uid, gid })),
        helper: None,
    };
    let enforced = sandbox.restrict(&setup.own)?;
    if let Some(user) = sandbox.user.as_ref().map(crate::sandbox::StepUsers::probe) {
        use nix::unistd::{Gid, Uid, setgroups, setresgid, setresuid};
        let fail = |e: nix::Error| format!("cannot become uid {}: {e}", user.uid);
        let (uid, gid) = (Uid::from_raw(user.uid), Gid::from_raw(user.gid));
        setgroups(&[]).map_err(fail)?;
        setresgid(gid, gid, gid).map_err(fail)?;
        setresuid(uid, uid, uid).map_err(fail)?;
    }
    Ok(enforced == Enforced::Fully)
}

impl Start {
    /// The command: only its own environment, standard input null, its output to
    /// `fds` (stdout, then stderr; one: both; none: null).
    pub fn command(&self, fds: Vec<OwnedFd>) -> std::io::Result<std::process::Command> {
        use std::os::unix::process::CommandExt as _;
        use std::process::Stdio;
        let mut cmd = std::process::Command::new(&self.program);
        cmd.args(&self.args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.cwd)
            .stdin(Stdio::null());
        if self.group {
            cmd.process_group(0);
        }
        let mut fds = fds.into_iter();
        match (fds.next(), fds.next()) {
            (Some(out), Some(err)) => cmd.stdout(Stdio::from(out)).stderr(Stdio::from(err)),
            (Some(out), None) => {
                let err = out.try_clone()?;
                cmd.stdout(Stdio::from(out)).stderr(Stdio::from(err))
            }
            _ => cmd.stdout(Stdio::null()).stderr(Stdio::null()),
        };
        Ok(cmd)
    }
}

fn spawn(start: &Start, fds: Vec<OwnedFd>) -> Result<u32, String> {
    let mut cmd = start.command(fds).map_err(|e| e.to_string())?;
    let child = cmd.spawn().map_err(|e| {
        format!(
            "cannot start `{}` in {}: {e}",
            start.program.display(),
            start.cwd.display()
        )
    })?;
    // Reaped by the reaper thread, never by this handle.
    Ok(child.id())
}

/// Waits for the children, one `started` message each, and reports each end.
fn reap(socket: &OwnedFd, started: &std::sync::mpsc::Receiver<()>) {
    use nix::sys::wait::{WaitStatus, waitpid};
    let mut alive = 0usize;
    loop {
        if alive == 0 {
            if started.recv().is_err() {
                return;
            }
            alive += 1;
        }
        while started.try_recv().is_ok() {
            alive += 1;
        }
        let (pid, code) = match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, code)) => (pid, code),
            Ok(WaitStatus::Signaled(pid, signal, _)) => (pid, 128 + signal as i32),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => {
                alive = 0;
                continue;
            }
        };
        alive = alive.saturating_sub(1);
        let reply = Reply::Exited {
            pid: pid.as_raw() as u32,
            code,
        };
        if send(socket, &reply, &[]).is_err() {
            return;
        }
    }
}

/// The server's end of a helper: its socket, and who waits for which answer. Replies
/// are read by a thread of their own (blocking reads: the socket is not the runtime's).
#[derive(Debug)]
pub struct Client {
    socket: OwnedFd,
    /// Held while a request is sent and its place in the queue of answers taken, so
    /// that answers (given in order) go to the right waiter.
    sending: std::sync::Mutex<()>,
    state: std::sync::Arc<std::sync::Mutex<Waiting>>,
    /// The helper's last word ([`Reply::Ended`]), once it comes.
    ended: std::sync::Mutex<Option<std::sync::mpsc::Receiver<bool>>>,
}

#[derive(Debug, Default)]
struct Waiting {
    spawns: VecDeque<tokio::sync::oneshot::Sender<Result<u32, String>>>,
    sweeps: VecDeque<tokio::sync::oneshot::Sender<bool>>,
    exits: std::collections::HashMap<u32, Exit>,
    closed: bool,
}

#[derive(Debug)]
enum Exit {
    Waiting(tokio::sync::oneshot::Sender<i32>),
    Done(i32),
}

impl Client {
    /// Gives the `pending` helper its job's `setup` and waits until its sandbox is in
    /// place.
    pub fn start(pending: Pending, setup: &Setup) -> Result<Client, String> {
        let fail = |e: &dyn std::fmt::Display| format!("cannot start the sandbox helper: {e}");
        let ours = pending.socket;
        send(&ours, setup, &[]).map_err(|e| fail(&e))?;
        let mut buf = vec![0u8; 4096];
        match recv::<Reply>(&ours, &mut buf).map_err(|e| fail(&e))? {
            Some((Reply::Ready(Ok(_)), _)) => {}
            Some((Reply::Ready(Err(e)), _)) => return Err(e),
            _ => return Err(fail(&"it ended before it was ready")),
        }
        let reader = ours.try_clone().map_err(|e| fail(&e))?;
        let state = std::sync::Arc::new(std::sync::Mutex::new(Waiting::default()));
        let theirs = state.clone();
        let (ended_tx, ended) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("ferry-helper-replies".into())
            .spawn(move || read_replies(&reader, &theirs, &ended_tx))
            .map_err(|e| fail(&e))?;
        Ok(Client {
            socket: ours,
            sending: std::sync::Mutex::new(()),
            state,
            ended: std::sync::Mutex::new(Some(ended)),
        })
    }

    /// The helper ends (sweeping what its processes left) once it sees this.
    pub fn close(&self) {
        // Our end only: its last word ([`Reply::Ended`]) still comes back.
        let _ = rustix::net::shutdown(&self.socket, rustix::net::Shutdown::Write);
    }

    /// Where the helper's last word comes, once [`close`](Self::close)d: `true` when it
    /// is sure no process of its job is left.
    pub(crate) fn last_word(&self) -> Option<std::sync::mpsc::Receiver<bool>> {
        self.ended.lock().ok()?.take()
    }

    pub async fn start_process(
        &self,
        start: Start,
        fds: Vec<OwnedFd>,
    ) -> std::io::Result<crate::process::Proc> {
        let gone = || std::io::Error::other("the sandbox helper ended");
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let _one = self.sending.lock().map_err(|_| gone())?;
            {
                let mut state = self.state.lock().map_err(|_| gone())?;
                if state.closed {
                    return Err(gone());
                }
                state.spawns.push_back(tx);
            }
            let request = Request::Start(Start {
                fds: fds.len(),
                ..start
            });
            send(&self.socket, &request, &fds)?;
        }
        // Our copies of the pipes' write ends go now: the reader sees their end.
        drop(fds);
        let pid = rx
            .await
            .map_err(|_| gone())?
            .map_err(std::io::Error::other)?;
        let (exit_tx, exit_rx) = tokio::sync::oneshot::channel();
        let mut state = self.state.lock().map_err(|_| gone())?;
        match state.exits.remove(&pid) {
            Some(Exit::Done(code)) => {
                let _ = exit_tx.send(code);
            }
            _ if state.closed => return Err(gone()),
            _ => {
                state.exits.insert(pid, Exit::Waiting(exit_tx));
            }
        }
        Ok(crate::process::Proc::Helper { pid, exit: exit_rx })
    }

    pub async fn sweep(&self) -> bool {
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let Ok(_one) = self.sending.lock() else {
                return false;
            };
            match self.state.lock() {
                Ok(mut state) if !state.closed => state.sweeps.push_back(tx),
                _ => return false,
            }
            if send(&self.socket, &Request::Sweep, &[]).is_err() {
                return false;
            }
        }
        rx.await.unwrap_or(false)
    }
}

/// A helper started ahead of need, waiting for its job's setup.
#[derive(Debug)]
pub struct Pending {
    socket: OwnedFd,
}

impl Pending {
    /// Starts `program` (the `ferry` binary) as a helper; within a Tokio runtime,
    /// which reaps it once it ends (it is never waited for).
    pub fn spawn(program: &std::path::Path) -> Result<Pending, String> {
        use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair};
        let fail = |e: &dyn std::fmt::Display| format!("cannot start the sandbox helper: {e}");
        let (ours, theirs) = socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| fail(&e))?;
        tokio::process::Command::new(program)
            .arg(ARG)
            .env_clear()
            .stdin(std::process::Stdio::from(theirs))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .map_err(|e| fail(&e))?;
        Ok(Pending { socket: ours })
    }
}

/// Helpers started ahead of need: a job takes one whose program has loaded already
/// (starting the `ferry` binary takes milliseconds), and another is started for the
/// next job.
#[derive(Debug)]
pub struct Pool {
    program: PathBuf,
    spare: std::sync::Mutex<Option<Pending>>,
}

impl Pool {
    pub fn new(program: PathBuf) -> Pool {
        Pool {
            program,
            spare: std::sync::Mutex::new(None),
        }
    }

    /// A helper for a job (the spare one, or a new one); a spare for the next is
    /// started in the background, off the job's way. Within a Tokio runtime.
    pub fn take(self: &std::sync::Arc<Self>) -> Result<Pending, String> {
        let spare = self.spare.lock().ok().and_then(|mut s| s.take());
        let pending = match spare {
            Some(p) => p,
            None => Pending::spawn(&self.program)?,
        };
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            if let (Ok(next), Ok(mut slot)) = (Pending::spawn(&pool.program), pool.spare.lock())
                && slot.is_none()
            {
                *slot = Some(next);
            }
        });
        Ok(pending)
    }
}

/// Hands each reply to whoever waits for it, until the helper ends.
fn read_replies(
    socket: &OwnedFd,
    state: &std::sync::Mutex<Waiting>,
    ended: &std::sync::mpsc::Sender<bool>,
) {
    let mut buf = vec![0u8; 4096];
    loop {
        let got = recv::<Reply>(socket, &mut buf);
        let Ok(mut state) = state.lock() else {
            return;
        };
        match got {
            Ok(Some((Reply::Spawned(r), _))) => {
                if let Some(tx) = state.spawns.pop_front() {
                    let _ = tx.send(r);
                }
            }
            Ok(Some((Reply::Exited { pid, code }, _))) => match state.exits.remove(&pid) {
                Some(Exit::Waiting(tx)) => {
                    let _ = tx.send(code);
                }
                _ => {
                    state.exits.insert(pid, Exit::Done(code));
                }
            },
            Ok(Some((Reply::Swept(done), _))) => {
                if let Some(tx) = state.sweeps.pop_front() {
                    let _ = tx.send(done);
                }
            }
            Ok(Some((Reply::Ready(_), _))) => {}
            Ok(Some((Reply::Ended(all_gone), _))) => {
                let _ = ended.send(all_gone);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Ok(None) | Err(_) => {
                // Everyone waiting learns the helper ended.
                state.closed = true;
                state.spawns.clear();
                state.sweeps.clear();
                state.exits.clear();
                return;
            }
        }
    }
}
