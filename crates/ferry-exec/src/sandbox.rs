//! The host-job sandbox: a job's steps may read (and run) the system's directories and
//! read and write their own workspace and temporary directory, and nothing else on the
//! filesystem: not the server's data directory (its key, its database), not other
//! jobs' workspaces, not the home directory. Enforced with Linux Landlock.
//!
//! Landlock restricts the thread that asks and everything that thread starts
//! afterwards, so each sandboxed job gets a [`Spawner`]: a thread of its own that
//! restricts itself once, with the job's paths, and then starts every step of the job.
//! The restriction costs a few system calls per job and nothing per step; the server's
//! own threads are never restricted.
//!
//! Landlock governs files, and (ABI 6) signals and abstract UNIX sockets: a step cannot
//! signal a process outside its job. It does not govern `connect()` to a named socket
//! (the Docker socket) or what the server's user may do otherwise; so where the server
//! runs as root, steps also run as another user ([`StepUser`], `nobody` by default),
//! without the server's groups, owning only their workspace and temporary directory.

use std::path::{Path, PathBuf};

use std::os::unix::fs::PermissionsExt;

use landlock::{
    ABI, Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, Scope, path_beneath_rules,
};

/// The newest Landlock ABI Ferry knows (files: ABI 5; signal and abstract-socket
/// scopes: ABI 6); older kernels enforce what they can, and [`Sandbox::check`] says what.
const NEWEST: ABI = ABI::V6;

/// The user host steps run as, when the server may switch (it runs as root).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepUser {
    pub uid: u32,
    pub gid: u32,
}

impl StepUser {
    /// `NAME` (its primary group), `UID` or `UID:GID`.
    pub fn parse(text: &str) -> Result<StepUser, String> {
        let number = |t: &str| t.parse::<u32>().ok();
        if let Some((u, g)) = text.split_once(':') {
            return match (number(u), number(g)) {
                (Some(uid), Some(gid)) => Ok(StepUser { uid, gid }),
                _ => Err(format!("`{text}`: write NAME, UID or UID:GID")),
            };
        }
        let user = match number(text) {
            Some(uid) => nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)),
            None => nix::unistd::User::from_name(text),
        }
        .map_err(|e| format!("cannot look up the user `{text}`: {e}"))?;
        match (user, number(text)) {
            (Some(u), _) => Ok(StepUser {
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
            }),
            // A uid without a name: its group is the same number.
            (None, Some(uid)) => Ok(StepUser { uid, gid: uid }),
            (None, None) => Err(format!("there is no user `{text}`")),
        }
    }

    /// Why this user cannot reach `dir` (a directory it must enter), if it cannot:
    /// every directory above must let it search (`x`) by owner, group or others.
    pub fn cannot_reach(&self, dir: &Path) -> Option<String> {
        use std::os::unix::fs::MetadataExt;
        let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        for above in dir.ancestors().skip(1) {
            let Ok(meta) = std::fs::metadata(above) else {
                continue;
            };
            let mode = meta.mode();
            let search = if meta.uid() == self.uid {
                mode & 0o100 != 0
            } else if meta.gid() == self.gid {
                mode & 0o010 != 0
            } else {
                mode & 0o001 != 0
            };
            if !search {
                return Some(format!(
                    "{} (mode {:o}, owner {}) does not let uid {} reach {}",
                    above.display(),
                    mode & 0o7777,
                    meta.uid(),
                    self.uid,
                    dir.display()
                ));
            }
        }
        None
    }

    /// Gives this user `dir` and everything in it (links themselves, never what they
    /// point at); `dir` itself becomes private to it (`0700`). The walk goes by
    /// directory handle, one name at a time, never following a link: a process of the
    /// user's that swaps a directory for a link while it runs (to `/etc`) gets the link
    /// itself given to it, nothing beyond. `dir` itself must not be a link.
    pub fn take(&self, dir: &Path) -> std::io::Result<()> {
        use rustix::fs::{Mode, OFlags, fchmod, fchown, open};
        let root = open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        self.take_beneath(&root, 0)?;
        fchown(&root, Some(self.uid()), Some(self.gid()))?;
        fchmod(&root, Mode::from_raw_mode(0o700))?;
        Ok(())
    }

    fn uid(&self) -> rustix::fs::Uid {
        rustix::fs::Uid::from_raw(self.uid)
    }

    fn gid(&self) -> rustix::fs::Gid {
        rustix::fs::Gid::from_raw(self.gid)
    }

    /// Gives this user what the directory `dir` holds, depth first.
    fn take_beneath(&self, dir: &rustix::fd::OwnedFd, depth: usize) -> std::io::Result<()> {
        use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, chownat, openat};
        if depth > 512 {
            return Err(std::io::Error::other("more than 512 directories deep"));
        }
        let mut entries = Dir::read_from(dir)?;
        while let Some(entry) = entries.read() {
            let entry = entry?;
            let name = entry.file_name();
            if name.to_bytes() == b"." || name.to_bytes() == b".." {
                continue;
            }
            chownat(
                dir,
                name,
                Some(self.uid()),
                Some(self.gid()),
                AtFlags::SYMLINK_NOFOLLOW,
            )?;
            if matches!(entry.file_type(), FileType::Directory | FileType::Unknown) {
                let sub = openat(
                    dir,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                );
                match sub {
                    Ok(sub) => self.take_beneath(&sub, depth + 1)?,
                    // Not a directory (any more): a file, or a link put in its place.
                    Err(e) if e == rustix::io::Errno::NOTDIR || e == rustix::io::Errno::LOOP => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }
}

/// Who host steps run as, where the server may switch users (it runs as root).
#[derive(Debug, Clone)]
pub enum StepUsers {
    /// One user for every job and deployment (`--sandbox-user`): Landlock, not the uid,
    /// keeps them apart.
    One(StepUser),
    /// A uid of its own (with a group of the same number) for each job and each
    /// deployment, from a range no one else uses (`--sandbox-uids`): what one job's
    /// processes may do to files and processes as their owner (`chmod`, `chown`,
    /// `prlimit`, `setpriority`, which Landlock does not govern) reaches nothing of
    /// another job's.
    Range(std::sync::Arc<UidRange>),
}

impl StepUsers {
    /// A user as the sandbox's users are: for checks that directories are reachable.
    pub fn probe(&self) -> StepUser {
        match self {
            StepUsers::One(u) => *u,
            StepUsers::Range(r) => StepUser {
                uid: r.first,
                gid: r.first,
            },
        }
    }

    /// The user of one job or deployment, for as long as the lease lives.
    pub(crate) fn lease(&self) -> Result<Lease, String> {
        match self {
            StepUsers::One(user) => Ok(Lease {
                user: *user,
                range: None,
                own: Vec::new(),
                shared: Vec::new(),
                lock: None,
                helper_ended: None,
            }),
            StepUsers::Range(range) => {
                let (user, lock) = range.take()?;
                Ok(Lease {
                    user,
                    range: Some(range.clone()),
                    own: Vec::new(),
                    shared: Vec::new(),
                    lock,
                    helper_ended: None,
                })
            }
        }
    }
}

/// A range of uids (and gids of the same numbers) that no user, group or subordinate
/// id range of this host uses, handed out one per job or deployment.
#[derive(Debug)]
pub struct UidRange {
    first: u32,
    last: u32,
    slots: std::sync::Mutex<Slots>,
    /// The `ferry` binary, to kill what a uid's holder left before the uid serves
    /// again (see [`crate::helper::SWEEP_ARG`]); `None`: not swept.
    sweeper: Option<PathBuf>,
    /// Where each uid's lock file is, shared with other servers (see
    /// [`UidRange::with_locks`]); `None`: this server alone uses the range.
    locks: Option<PathBuf>,
}

#[derive(Debug, Default)]
struct Slots {
    /// The next uid to try, as an offset from `first`: round the range, so that a uid
    /// comes back only after every other one has served.
    next: u32,
    leased: std::collections::HashSet<u32>,
}

impl UidRange {
    /// A range of 65,536 ids in what systemd leaves unused (above its container ranges,
    /// below the "foreign" range and 2^31).
    pub const DEFAULT: &'static str = "2000000000-2000065535";

    /// `FIRST-LAST`, both included: not 0, not `nobody` (65534), below 2^31.
    pub fn parse(text: &str) -> Result<UidRange, String> {
        let bad = || {
            format!(
                "`{text}`: write FIRST-LAST (numbers, e.g. {})",
                Self::DEFAULT
            )
        };
        let (a, b) = text.trim().split_once('-').ok_or_else(bad)?;
        let (first, last) = match (a.trim().parse::<u32>(), b.trim().parse::<u32>()) {
            (Ok(a), Ok(b)) => (a, b),
            _ => return Err(bad()),
        };
        if first == 0 || last < first || last >= 1 << 31 {
            return Err(format!(
                "`{text}`: the range must not include 0, must not end below its start, and \
                 must end below 2147483648"
            ));
        }
        if (first..=last).contains(&65534) {
            return Err(format!("`{text}` includes 65534 (`nobody`)"));
        }
        // Round the range from anywhere: a restarted server does not hand out the uids
        // of its last life in the same order.
        let next = rand::random::<u32>() % (last - first + 1).max(1);
        Ok(UidRange {
            first,
            last,
            slots: std::sync::Mutex::new(Slots {
                next,
                ..Slots::default()
            }),
            sweeper: None,
            locks: None,
        })
    }

    /// Shares the range with other servers on this host through lock files in
    /// `dir` (`/run/ferry` for a server), one per uid while it serves (a uid another
    /// server holds is skipped); then kills every process still running as a uid of the
    /// range that no server holds (what the jobs of a server that was killed left).
    pub fn with_locks(mut self, dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        self.locks = Some(dir.to_path_buf());
        for uid in self.running() {
            if let Ok(Some(_held)) = self.lock(uid) {
                self.sweep(uid);
            }
        }
        Ok(self)
    }

    /// The lock of `uid` for this server, if no other server holds it (`Ok(None)`
    /// without lock files).
    fn lock(&self, uid: u32) -> Result<Option<nix::fcntl::Flock<std::fs::File>>, String> {
        use nix::fcntl::{Flock, FlockArg};
        let Some(dir) = &self.locks else {
            return Ok(None);
        };
        let path = dir.join(format!("uid-{uid}.lock"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .map(Some)
            .map_err(|(_, e)| format!("{}: {e}", path.display()))
    }

    /// The uids of the range that some process runs as (from `/proc`).
    fn running(&self) -> std::collections::BTreeSet<u32> {
        let mut found = std::collections::BTreeSet::new();
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return found;
        };
        for entry in procs.flatten() {
            let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
                continue;
            };
            let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"));
            for uid in uids.into_iter().flat_map(str::split_whitespace) {
                if let Ok(uid) = uid.parse::<u32>()
                    && (self.first..=self.last).contains(&uid)
                {
                    found.insert(uid);
                }
            }
        }
        found
    }

    /// What kills every process a uid's holder left before the uid serves again: the
    /// `ferry` binary (see [`crate::helper::SWEEP_ARG`]).
    pub fn with_sweeper(mut self, program: Option<PathBuf>) -> Self {
        self.sweeper = program;
        self
    }

    /// Kills every process of `uid` (see [`crate::helper::SWEEP_ARG`]); blocking.
    fn sweep(&self, uid: u32) {
        if let Some(program) = &self.sweeper {
            let _ = std::process::Command::new(program)
                .arg(crate::helper::SWEEP_ARG)
                .arg(uid.to_string())
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }

    /// The same range, handing out `first + next` first (tests).
    #[cfg(test)]
    fn starting_at(self, next: u32) -> Self {
        if let Ok(mut slots) = self.slots.lock() {
            slots.next = next;
        }
        self
    }

    /// How many ids the range holds.
    pub fn len(&self) -> u64 {
        u64::from(self.last - self.first) + 1
    }

    /// Never empty (`parse` refuses an empty range).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Which user, group or subordinate id range of this host (`/etc/passwd`,
    /// `/etc/group`, `/etc/subuid`, `/etc/subgid`) falls in the range, if any.
    pub fn clashes(&self) -> Option<String> {
        self.clashes_in(Path::new("/etc"))
    }

    fn clashes_in(&self, etc: &Path) -> Option<String> {
        let inside = |from: u64, count: u64| {
            from <= u64::from(self.last) && from + count > u64::from(self.first)
        };
        for file in ["passwd", "group"] {
            let text = std::fs::read_to_string(etc.join(file)).unwrap_or_default();
            for line in text.lines() {
                let mut fields = line.split(':');
                let (Some(name), Some(id)) = (fields.next(), fields.nth(1)) else {
                    continue;
                };
                if let Ok(id) = id.parse::<u64>()
                    && inside(id, 1)
                {
                    return Some(format!("{}/{file}: `{name}` has id {id}", etc.display()));
                }
            }
        }
        for file in ["subuid", "subgid"] {
            let text = std::fs::read_to_string(etc.join(file)).unwrap_or_default();
            for line in text.lines() {
                let mut fields = line.split(':');
                let (Some(name), Some(from), Some(count)) =
                    (fields.next(), fields.next(), fields.next())
                else {
                    continue;
                };
                if let (Ok(from), Ok(count)) = (from.parse::<u64>(), count.parse::<u64>())
                    && inside(from, count)
                {
                    return Some(format!(
                        "{}/{file}: `{name}` has ids {from} to {}",
                        etc.display(),
                        from + count - 1
                    ));
                }
            }
        }
        None
    }

    /// The next free uid, round the range, and its lock (held by no other server).
    fn take(&self) -> Result<(StepUser, Option<nix::fcntl::Flock<std::fs::File>>), String> {
        let mut slots = self.slots.lock().map_err(|_| "the uid range is poisoned")?;
        let count = self.len();
        for _ in 0..count {
            let uid = self.first + slots.next;
            slots.next = if uid == self.last { 0 } else { slots.next + 1 };
            if slots.leased.contains(&uid) {
                continue;
            }
            let Ok(lock) = self.lock(uid) else {
                continue; // another server's now
            };
            slots.leased.insert(uid);
            return Ok((StepUser { uid, gid: uid }, lock));
        }
        Err(format!(
            "every uid of {}-{} serves a job or deployment ({count}); widen --sandbox-uids",
            self.first, self.last
        ))
    }

    fn give_back(&self, uid: u32) {
        if let Ok(mut slots) = self.slots.lock() {
            slots.leased.remove(&uid);
        }
    }
}

/// One job's or deployment's step user. When its own uid goes back to the range, the
/// directories it was given become the server's and private again (`0700`), those it
/// was let read are the server's group's again, and every process of the uid is
/// killed, so that whoever the uid serves next finds nothing the last one left.
#[derive(Debug)]
pub(crate) struct Lease {
    pub(crate) user: StepUser,
    range: Option<std::sync::Arc<UidRange>>,
    own: Vec<PathBuf>,
    shared: Vec<PathBuf>,
    /// The uid's lock file, shared with other servers on the host.
    lock: Option<nix::fcntl::Flock<std::fs::File>>,
    /// The job's helper's last word, once it swept.
    helper_ended: Option<std::sync::Mutex<std::sync::mpsc::Receiver<bool>>>,
}

impl Lease {
    /// Its own uid, not shared with any other job or deployment.
    pub(crate) fn unique(&self) -> bool {
        self.range.is_some()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(range) = self.range.take() else {
            return;
        };
        // At once (cheap): a later holder of these directories' (a redeployment of the
        // same release) takes them first, so only what is still this uid's is closed.
        for dir in &self.own {
            let _ = close_top(dir, self.user.uid);
        }
        for dir in &self.shared {
            let _ = unshare(dir, self.user.gid);
        }
        // Then, off the caller's thread, what the uid still runs (a process that
        // stopped or killed its helper first, so the job's own sweep missed it) is
        // killed, and only then may the uid serve again.
        let uid = self.user.uid;
        let lock = self.lock.take();
        let helper_ended = self.helper_ended.take();
        let sweep = move || {
            // After the helper's own sweep (or without it: a step killed or stopped
            // it), what still runs as the uid is killed by a process of that uid.
            if let Some(word) = helper_ended.and_then(|w| w.into_inner().ok()) {
                let _ = word.recv_timeout(HELPER_LAST_WORD);
            }
            if runs_as(uid, None) {
                range.sweep(uid);
            }
            drop(lock);
            range.give_back(uid);
        };
        if std::thread::Builder::new()
            .name("ferry-uid-sweep".into())
            .spawn(sweep)
            .is_err()
        {
            // No thread: the uid stays out of the range rather than serve unswept.
        }
    }
}

/// Whether a live process (not a zombie) runs as `uid`, but `except`: one `stat` of
/// each `/proc/N` (its owner is the process's uid), the state read only of those of
/// `uid`.
pub(crate) fn runs_as(uid: u32, except: Option<u32>) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    procs.flatten().any(|entry| {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            return false;
        };
        if Some(pid) == except || !entry.metadata().is_ok_and(|m| m.uid() == uid) {
            return false;
        }
        // `pid (comm) S …`: the state after the last `)`.
        std::fs::read_to_string(entry.path().join("stat")).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|rest| !rest.trim_start().starts_with(['Z', 'X']))
        })
    })
}

/// How long a lease waits for its helper's last word before it sweeps the uid itself.
const HELPER_LAST_WORD: std::time::Duration = std::time::Duration::from_secs(2);

/// `dir` and its entries, where their group is still `gid`: the server's group again.
fn unshare(dir: &Path, gid: u32) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let server = nix::unistd::getegid().as_raw();
    let mut paths = vec![dir.to_path_buf()];
    for entry in std::fs::read_dir(dir)? {
        paths.push(entry?.path());
    }
    for p in paths {
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.gid() == gid) {
            std::os::unix::fs::lchown(&p, None, Some(server))?;
        }
    }
    Ok(())
}

/// Makes `dir` and every directory in it writable by its owner (`u+rwx`), so that it
/// can be removed (tools such as Go's module cache leave read-only directories). The
/// walk goes by directory handle, one name at a time, never following a link: a link
/// swapped in for a directory meanwhile is skipped, never what it points at changed.
pub fn open_up(dir: &Path) -> std::io::Result<()> {
    use rustix::fs::{Mode, OFlags, open};
    let root = open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    open_up_beneath(root, 0)
}

fn open_up_beneath(dir: rustix::fd::OwnedFd, depth: usize) -> std::io::Result<()> {
    use rustix::fs::{Dir, FileType, Mode, OFlags, fchmod, fstat, openat};
    if depth > 512 {
        return Err(std::io::Error::other("more than 512 directories deep"));
    }
    let mode = fstat(&dir)?.st_mode;
    fchmod(&dir, Mode::from_raw_mode((mode | 0o700) & 0o7777))?;
    let mut subdirs = Vec::new();
    let mut entries = Dir::read_from(&dir)?;
    while let Some(entry) = entries.read() {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        if matches!(entry.file_type(), FileType::Directory | FileType::Unknown) {
            subdirs.push(name.to_owned());
        }
    }
    for name in subdirs {
        let sub = openat(
            &dir,
            &name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        );
        match sub {
            Ok(sub) => open_up_beneath(sub, depth + 1)?,
            Err(e) if e == rustix::io::Errno::NOTDIR || e == rustix::io::Errno::LOOP => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// `dir` (not a link), if `uid` owns it: the server's again, `0700`.
fn close_top(dir: &Path, uid: u32) -> std::io::Result<()> {
    use rustix::fs::{Mode, OFlags, fchmod, fchown, fstat, open};
    let fd = open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    if fstat(&fd)?.st_uid == uid {
        let (uid, gid) = (nix::unistd::geteuid(), nix::unistd::getegid());
        fchown(
            &fd,
            Some(rustix::fs::Uid::from_raw(uid.as_raw())),
            Some(rustix::fs::Gid::from_raw(gid.as_raw())),
        )?;
        fchmod(&fd, Mode::from_raw_mode(0o700))?;
    }
    Ok(())
}

/// `dir` (the server's own, just written) and its files: group `gid`, readable by it
/// (`0750`/`0640`), owned by the server still: no process of that group can open them
/// to others with a `chmod`.
pub fn share_read_only(dir: &Path, gid: u32) -> Result<(), String> {
    let fail = |p: &Path, e: std::io::Error| format!("cannot share {}: {e}", p.display());
    let set = |p: &Path, mode: u32| {
        std::os::unix::fs::lchown(p, None, Some(gid)).map_err(|e| fail(p, e))?;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).map_err(|e| fail(p, e))
    };
    set(dir, 0o750)?;
    for entry in std::fs::read_dir(dir).map_err(|e| fail(dir, e))? {
        let entry = entry.map_err(|e| fail(dir, e))?;
        set(&entry.path(), 0o640)?;
    }
    Ok(())
}

/// The entries of a data directory a step user may pass through: only `work/`, where the
/// workspaces are. Everything else at its top is for the server alone.
pub fn share_work_only(data: &Path) -> Result<(), String> {
    let fail = |p: &Path, e: std::io::Error| format!("cannot set the mode of {}: {e}", p.display());
    let set = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).map_err(|e| fail(p, e))
    };
    let work = data.join("work");
    std::fs::create_dir_all(&work).map_err(|e| fail(&work, e))?;
    // Made now, private, so that no later `create_dir_all` makes them readable.
    for dir in SERVER_DIRS {
        let dir = data.join(dir);
        std::fs::create_dir_all(&dir).map_err(|e| fail(&dir, e))?;
    }
    set(data, 0o711)?;
    set(&work, 0o711)?;
    for entry in std::fs::read_dir(data).map_err(|e| fail(data, e))? {
        let entry = entry.map_err(|e| fail(data, e))?;
        let meta = entry.metadata().map_err(|e| fail(&entry.path(), e))?;
        if entry.file_name() == "work" || meta.file_type().is_symlink() {
            continue;
        }
        set(&entry.path(), meta.permissions().mode() & 0o7700)?;
    }
    Ok(())
}

/// Where the workspaces of a server whose step user cannot pass through its data
/// directory's parents go instead (a root server's data directory under `/root`, or
/// in a private temporary directory): `TMP/ferry-work-ID`, made here as a directory of
/// the server's own, `0711`; anything else already there (a link, another owner's
/// directory) is refused.
pub fn private_work_root(id: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let dir = std::env::temp_dir().join(format!("ferry-work-{id}"));
    let made = std::fs::DirBuilder::new().mode(0o711).create(&dir);
    if let Err(e) = made
        && e.kind() != std::io::ErrorKind::AlreadyExists
    {
        return Err(format!("cannot create {}: {e}", dir.display()));
    }
    let meta = std::fs::symlink_metadata(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !meta.is_dir() || meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(format!(
            "{} is not a directory of this server's own: not used for workspaces",
            dir.display()
        ));
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

/// The server's own directories at the top of its data directory.
pub const SERVER_DIRS: [&str; 8] = [
    "artifacts",
    "caches",
    "cas",
    "deploy",
    "deploy-processes",
    "logs",
    "mirrors",
    "processes",
];

/// Directories a sandboxed step may read and run from by default: the system, not
/// `/home`, `/root`, `/tmp`, `/var` or `/proc` (where the server's own environment
/// is readable by its user).
pub const SYSTEM_READ: [&str; 9] = [
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt",
];

/// Files a sandboxed step may read and write besides its own directories: the devices
/// every program expects. Not `/dev` as a whole: `/dev/shm` holds deployments' secret
/// files (owned by the server's user).
pub const SYSTEM_WRITE: [&str; 6] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
];

/// What sandboxed host steps may reach besides their own workspace and temporary
/// directory.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub read: Vec<PathBuf>,
    pub write: Vec<PathBuf>,
    /// Who steps run as; `None`: the server's user.
    pub user: Option<StepUsers>,
    /// Helper processes (the `ferry` binary), to start each job's processes from one
    /// of its own (see [`crate::helper`]); `None`: from a thread of this process.
    pub helper: Option<std::sync::Arc<crate::helper::Pool>>,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self {
            read: SYSTEM_READ.iter().map(PathBuf::from).collect(),
            write: SYSTEM_WRITE.iter().map(PathBuf::from).collect(),
            user: None,
            helper: None,
        }
    }
}

/// What the kernel enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enforced {
    /// Every filesystem access right Ferry asks for.
    Fully,
    /// Some rights only (an older Landlock ABI): the description says which ABI.
    Partially(String),
}

impl Sandbox {
    /// With `extra` also readable (e.g. a toolchain under `/home`).
    pub fn with_read(mut self, extra: impl IntoIterator<Item = PathBuf>) -> Self {
        self.read.extend(extra);
        self
    }

    /// Each job's processes start from a helper process (`ferry` at `program`).
    pub fn with_helper(mut self, program: Option<PathBuf>) -> Self {
        self.helper = program.map(|p| std::sync::Arc::new(crate::helper::Pool::new(p)));
        self
    }

    /// Steps run as `user` (see [`StepUser`]), every job's and deployment's alike.
    pub fn with_user(self, user: Option<StepUser>) -> Self {
        self.with_users(user.map(StepUsers::One))
    }

    /// Steps run as `users` (see [`StepUsers`]).
    pub fn with_users(mut self, users: Option<StepUsers>) -> Self {
        self.user = users;
        self
    }

    /// With `extra` also writable (a directory every job shares, e.g. a build cache).
    pub fn with_write(mut self, extra: impl IntoIterator<Item = PathBuf>) -> Self {
        self.write.extend(extra);
        self
    }

    /// Checks, in a throwaway thread, that the kernel enforces Landlock, and how fully;
    /// `Err` says why it cannot (the kernel has no Landlock, or it is disabled).
    /// `data_dir` must not be readable through the allowed directories, and the step
    /// user (if any) must reach `work_root`, where the workspaces are.
    pub fn check(&self, data_dir: &Path, work_root: &Path) -> Result<Enforced, String> {
        let data = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
        for allowed in self.read.iter().chain(&self.write) {
            let allowed = std::fs::canonicalize(allowed).unwrap_or_else(|_| allowed.clone());
            if data.starts_with(&allowed) || allowed.starts_with(&data) {
                return Err(format!(
                    "the data directory {} and {}, which sandboxed jobs may reach, overlap",
                    data.display(),
                    allowed.display()
                ));
            }
        }
        if let Some(user) = self.user.as_ref().map(StepUsers::probe)
            && let Some(why) = user.cannot_reach(work_root)
        {
            return Err(format!(
                "steps run as uid {} and cannot reach their workspaces: {why}; choose a \
                 --data-dir it can reach (e.g. /var/lib/ferry) or another --sandbox-user",
                user.uid
            ));
        }
        let me = self.clone();
        std::thread::spawn(move || me.restrict(&[]))
            .join()
            .map_err(|_| "the sandbox check panicked".to_string())?
    }

    /// Restricts the calling thread (and what it starts from now on) to this sandbox
    /// plus `own` (read and write).
    pub(crate) fn restrict(&self, own: &[PathBuf]) -> Result<Enforced, String> {
        let fail = |e: &dyn std::fmt::Display| format!("cannot set up the sandbox: {e}");
        let existing = |paths: &[PathBuf]| -> Vec<PathBuf> {
            paths.iter().filter(|p| p.exists()).cloned().collect()
        };
        let status = Ruleset::default()
            .set_compatibility(CompatLevel::BestEffort)
            .handle_access(AccessFs::from_all(NEWEST))
            .map_err(|e| fail(&e))?
            .scope(Scope::from_all(NEWEST))
            .map_err(|e| fail(&e))?
            .create()
            .map_err(|e| fail(&e))?
            .add_rules(path_beneath_rules(
                existing(&self.read),
                AccessFs::from_read(NEWEST),
            ))
            .map_err(|e| fail(&e))?
            .add_rules(path_beneath_rules(
                existing(&self.write).into_iter().chain(own.iter().cloned()),
                AccessFs::from_all(NEWEST),
            ))
            .map_err(|e| fail(&e))?
            .restrict_self()
            .map_err(|e| fail(&e))?;
        match status.ruleset {
            RulesetStatus::FullyEnforced => Ok(Enforced::Fully),
            RulesetStatus::PartiallyEnforced => Ok(Enforced::Partially(
                "the kernel's Landlock is older than ABI 6: some rights are not enforced (ABI 5 \
                 for every file right, 6 for signals and abstract sockets)"
                    .into(),
            )),
            RulesetStatus::NotEnforced => {
                Err("the kernel does not enforce Landlock (not built in, or disabled)".into())
            }
        }
    }
}

enum Request {
    Spawn(
        Box<tokio::process::Command>,
        tokio::sync::oneshot::Sender<std::io::Result<tokio::process::Child>>,
    ),
    Sweep(tokio::sync::oneshot::Sender<bool>),
}

/// What starts a job's processes in its sandbox: a helper process (see
/// [`crate::helper`]), or a thread of this process restricted to the sandbox; either
/// ends when the spawner is dropped.
#[derive(Debug)]
pub struct Spawner {
    inner: Inner,
    /// The job's or deployment's user: given back (after the helper is told to end)
    /// when the spawner goes.
    _lease: Option<Lease>,
}

#[derive(Debug)]
enum Inner {
    Thread(std::sync::mpsc::Sender<Request>),
    Helper(crate::helper::Client),
}

impl Drop for Spawner {
    fn drop(&mut self) {
        if let Inner::Helper(client) = &self.inner {
            client.close();
            // The lease waits for the helper's word that nothing of the job is left
            // before it sweeps the uid itself (rarely needed: a step that killed or
            // stopped its helper).
            if let Some(lease) = &mut self._lease {
                lease.helper_ended = client.last_word().map(std::sync::Mutex::new);
            }
        }
    }
}

/// From a sandbox thread or helper: kills every process of its Landlock domain (what
/// it started and whatever they started, `setsid` or not) but its own process, and
/// nothing else, if the kernel scopes its signals (ABI 6) — checked first, on init,
/// which must then be out of reach. Says whether it swept.
pub(crate) fn sweep(scoped: bool) -> bool {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    // Unscoped, `kill(-1)` would reach every process the server's user may signal.
    if !scoped || kill(Pid::from_raw(1), None).is_ok() {
        return false;
    }
    // Everything this thread may signal but its own process: the domain's processes.
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    true
}

impl Spawner {
    /// Starts the thread and restricts it to `sandbox` plus `own` (read and write, and
    /// given to the sandbox's user if it has one); must be called within a Tokio
    /// runtime (the children are reaped by it).
    pub fn start(sandbox: &Sandbox, own: Vec<PathBuf>) -> Result<Spawner, String> {
        Self::start_sharing(sandbox, own, Vec::new())
    }

    /// [`start`](Self::start), with the directories `shared` (the server's, e.g. an
    /// environment's secret files) readable too: given to the user's group read-only
    /// where there is a step user (see [`share_read_only`]).
    pub fn start_sharing(
        sandbox: &Sandbox,
        own: Vec<PathBuf>,
        shared: Vec<PathBuf>,
    ) -> Result<Spawner, String> {
        let mut lease = sandbox.user.as_ref().map(StepUsers::lease).transpose()?;
        if let Some(lease) = &mut lease {
            let user = lease.user;
            for dir in &own {
                user.take(dir).map_err(|e| {
                    format!("cannot give {} to uid {}: {e}", dir.display(), user.uid)
                })?;
                lease.own.push(dir.clone());
            }
            for dir in &shared {
                share_read_only(dir, user.gid)?;
                lease.shared.push(dir.clone());
            }
        }
        let sandbox = sandbox.clone().with_read(shared);
        let user = lease.as_ref().map(|l| l.user);
        if let Some(pool) = &sandbox.helper {
            let setup = crate::helper::Setup {
                read: sandbox.read.clone(),
                write: sandbox.write.clone(),
                own,
                user: user.map(|u| (u.uid, u.gid)),
                unique: lease.as_ref().is_some_and(Lease::unique),
            };
            let client = crate::helper::Client::start(pool.take()?, &setup)?;
            return Ok(Spawner {
                inner: Inner::Helper(client),
                _lease: lease,
            });
        }
        let runtime = tokio::runtime::Handle::current();
        let (tx, rx) = std::sync::mpsc::channel::<Request>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("ferry-sandbox".into())
            .spawn(move || {
                let restricted = sandbox.restrict(&own);
                let scoped = matches!(restricted, Ok(Enforced::Fully));
                let ok = restricted.is_ok();
                let _ = ready_tx.send(restricted);
                if !ok {
                    return;
                }
                let _entered = runtime.enter();
                while let Ok(request) = rx.recv() {
                    match request {
                        Request::Spawn(mut cmd, reply) => {
                            if let Some(user) = user {
                                // Without the server's supplementary groups too (std
                                // drops them when it switches the uid). The thread itself
                                // stays the server's user: a step, in the thread's
                                // Landlock domain, could otherwise signal it (and so the
                                // whole server) or change its limits as its own.
                                cmd.uid(user.uid).gid(user.gid);
                            }
                            let child = cmd.spawn();
                            // Our copies of the child's pipe ends go before the answer.
                            drop(cmd);
                            let _ = reply.send(child);
                        }
                        Request::Sweep(reply) => {
                            let _ = reply.send(sweep(scoped));
                        }
                    }
                }
            })
            .map_err(|e| format!("cannot start the sandbox thread: {e}"))?;
        match ready_rx.recv() {
            Ok(Ok(_)) => Ok(Spawner {
                inner: Inner::Thread(tx),
                _lease: lease,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("the sandbox thread ended".into()),
        }
    }

    /// Starts `start` in the sandbox (as its user), its output to `fds` (stdout, then
    /// stderr; none: null).
    pub async fn start_process(
        &self,
        start: crate::helper::Start,
        fds: Vec<std::os::fd::OwnedFd>,
    ) -> std::io::Result<crate::process::Proc> {
        if let Inner::Helper(client) = &self.inner {
            return client.start_process(start, fds).await;
        }
        let mut cmd = tokio::process::Command::from(start.command(fds)?);
        cmd.kill_on_drop(true);
        self.spawn(cmd).await.map(crate::process::Proc::Local)
    }

    /// Starts `cmd` from the restricted thread (as the sandbox's user); not for a
    /// spawner with a helper (use [`start_process`](Self::start_process)).
    pub async fn spawn(
        &self,
        cmd: tokio::process::Command,
    ) -> std::io::Result<tokio::process::Child> {
        let Inner::Thread(tx) = &self.inner else {
            return Err(std::io::Error::other(
                "this sandbox starts processes from a helper",
            ));
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        tx.send(Request::Spawn(Box::new(cmd), reply))
            .map_err(|_| std::io::Error::other("the sandbox thread ended"))?;
        answer
            .await
            .map_err(|_| std::io::Error::other("the sandbox thread ended"))?
    }

    /// Kills every process the job's processes left, however they detached (`setsid`,
    /// double forks): all of the sandbox's Landlock domain, which holds nothing else.
    /// `false` where the kernel does not scope signals (Landlock ABI before 6): then
    /// only process groups are killed, by their callers.
    pub async fn sweep(&self) -> bool {
        let tx = match &self.inner {
            Inner::Helper(client) => return client.sweep().await,
            Inner::Thread(tx) => tx,
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        if tx.send(Request::Sweep(reply)).is_err() {
            return false;
        }
        answer.await.unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process started by a job's spawner reads the system and reads and writes its
    /// own directories; it cannot read or write another directory, while the rest of
    /// the process (this test) still can.
    #[tokio::test]
    async fn a_spawned_process_reaches_only_the_system_and_its_own() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (own, other) = (tmp.path().join("own"), tmp.path().join("other"));
        std::fs::create_dir_all(&own).expect("mkdir");
        std::fs::create_dir_all(&other).expect("mkdir");
        std::fs::write(other.join("secret"), "hush").expect("write");
        let spawner = Spawner::start(&Sandbox::default(), vec![own.clone()]).expect("sandbox");
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(format!(
                "cat {o}/secret 2>/dev/null || echo no-read; (echo x > {o}/new) 2>/dev/null || echo no-write; \
                 echo mine > {m}/f && cat {m}/f; test -r /etc/passwd && echo system; \
                 echo quiet > /dev/null && echo devnull; ls /dev/shm >/dev/null 2>&1 || echo no-shm; \
                 kill -0 {me} 2>/dev/null && echo LEAK-signal || echo no-signal",
                o = other.display(),
                m = own.display(),
                me = std::process::id()
            ))
            .stdout(std::process::Stdio::piped());
        let out = spawner
            .spawn(cmd)
            .await
            .expect("spawn")
            .wait_with_output()
            .await
            .expect("wait");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "no-read\nno-write\nmine\nsystem\ndevnull\nno-shm\nno-signal\n",
            "(no signal to a process outside the job: Landlock ABI 6)"
        );
        assert_eq!(
            std::fs::read_to_string(other.join("secret")).expect("us"),
            "hush"
        );
        assert!(!other.join("new").exists());
    }

    /// A step user's spawner starts processes as that user, without the server's groups,
    /// while the rest of the server stays who it was: a file only root may read in the
    /// job's own directory (which Landlock allows) is out of the process's reach.
    #[tokio::test]
    async fn a_step_users_processes_run_as_it_and_the_server_stays_root() {
        if !nix::unistd::geteuid().is_root() {
            return; // only root switches users
        }
        let tmp = tempfile::tempdir().expect("tmp");
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711))
            .expect("chmod");
        let own = tmp.path().join("own");
        std::fs::create_dir_all(&own).expect("mkdir");
        let user = StepUser {
            uid: 65534,
            gid: 65534,
        };
        let spawner = Spawner::start(&Sandbox::default().with_user(Some(user)), vec![own.clone()])
            .expect("sandbox");
        std::fs::write(own.join("root-only"), "hush").expect("write");
        std::fs::set_permissions(
            own.join("root-only"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("chmod");
        // Every thread of this process, the sandbox's own among them.
        let tasks: Vec<String> = std::fs::read_dir("/proc/self/task")
            .expect("tasks")
            .flatten()
            .map(|t| t.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(tasks.len() >= 2, "{tasks:?}");
        let tasks = tasks.join(" ");
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(format!(
                "id -u; id -G; cat root-only 2>/dev/null || echo no-read; echo mine > f && cat f; \
                 for t in {tasks}; do kill -0 $t 2>/dev/null && echo LEAK-signal-$t; done; \
                 echo signals-checked"
            ))
            .current_dir(&own)
            .stdout(std::process::Stdio::piped());
        let out = spawner
            .spawn(cmd)
            .await
            .expect("spawn")
            .wait_with_output()
            .await
            .expect("wait");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "65534\n65534\nno-read\nmine\nsignals-checked\n",
            "no thread of the server, the sandbox's own included, may be signalled"
        );
        assert!(
            nix::unistd::geteuid().is_root(),
            "this thread is still root"
        );
        let elsewhere = std::thread::spawn(|| nix::unistd::geteuid().as_raw())
            .join()
            .expect("thread");
        assert_eq!(elsewhere, 0, "and so are new threads");
    }

    /// With a uid range, each job's processes run as a uid of their own: what an owner
    /// may do that Landlock does not govern (`chmod`, `prlimit`) reaches nothing of
    /// another job's; with one user for all it does (the hole the range closes). When
    /// a job ends, its directory is the server's again before its uid serves another.
    #[tokio::test]
    async fn jobs_with_uids_of_their_own_cannot_touch_each_others_files_or_processes() {
        use std::os::unix::fs::MetadataExt;
        if !nix::unistd::geteuid().is_root() {
            return; // only root switches users
        }
        async fn attempt(users: StepUsers) -> (String, u32, u32) {
            let tmp = tempfile::tempdir().expect("tmp");
            std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711))
                .expect("chmod");
            let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
            for d in [&a, &b] {
                std::fs::create_dir_all(d).expect("mkdir");
            }
            std::fs::write(b.join("f"), "b's").expect("write");
            let sandbox = Sandbox::default().with_users(Some(users));
            let job_a = Spawner::start(&sandbox, vec![a.clone()]).expect("a");
            let job_b = Spawner::start(&sandbox, vec![b.clone()]).expect("b");
            let owner = |d: &Path| std::fs::metadata(d).expect("meta").uid();
            let (uid_a, uid_b) = (owner(&a), owner(&b));
            let mut sleeper = tokio::process::Command::new("sleep");
            sleeper.arg("30");
            let mut sleeper = job_b.spawn(sleeper).await.expect("sleep");
            let pid = sleeper.id().expect("pid");
            let mut cmd = tokio::process::Command::new("/bin/sh");
            cmd.arg("-c")
                .arg(format!(
                    "chmod 777 {b} 2>/dev/null && echo LEAK-chmod-dir || echo no-chmod-dir; \
                     chmod 666 {b}/f 2>/dev/null && echo LEAK-chmod-file || echo no-chmod-file; \
                     prlimit --pid {pid} --nofile=7:7 2>/dev/null && echo LEAK-prlimit || echo no-prlimit",
                    b = b.display()
                ))
                .stdout(std::process::Stdio::piped());
            let out = job_a
                .spawn(cmd)
                .await
                .expect("spawn")
                .wait_with_output()
                .await
                .expect("wait");
            let _ = sleeper.kill().await;
            drop(job_a);
            drop(job_b);
            let after = owner(&b);
            assert!(
                after == 0 || after == uid_b,
                "a job's directory is the server's once a range's uid goes back"
            );
            (
                String::from_utf8_lossy(&out.stdout).into_owned(),
                uid_a,
                uid_b,
            )
        }
        let range = UidRange::parse("2100000200-2100000299").expect("range");
        let (out, a, b) = attempt(StepUsers::Range(std::sync::Arc::new(range))).await;
        assert_ne!(a, b, "a uid of each job's own");
        assert!((2_100_000_200..2_100_000_300).contains(&a), "{a}");
        assert_eq!(out, "no-chmod-dir\nno-chmod-file\nno-prlimit\n");
        let nobody = StepUser::parse("nobody").expect("nobody");
        let (out, a, b) = attempt(StepUsers::One(nobody)).await;
        assert_eq!((a, b), (65534, 65534));
        assert_eq!(
            out, "LEAK-chmod-dir\nLEAK-chmod-file\nLEAK-prlimit\n",
            "one user for all: Landlock does not govern an owner's chmod or prlimit"
        );
    }

    /// A range hands out each uid once at a time, round the range (a uid given back
    /// comes again only after the others), says when all serve, and gives a job's
    /// directory back to the server (`0700`) with its uid.
    #[test]
    fn a_uid_range_hands_out_each_uid_once_round_the_range() {
        use std::os::unix::fs::MetadataExt;
        let range = UidRange::parse("3000000-3000002").expect("range");
        let users = StepUsers::Range(std::sync::Arc::new(range.starting_at(0)));
        // A uid given back returns to the range once what it ran is swept (a thread).
        let lease_soon = |users: &StepUsers| {
            for _ in 0..200 {
                if let Ok(lease) = users.lease() {
                    return lease;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            panic!("no uid came back");
        };
        let a = users.lease().expect("a");
        let b = users.lease().expect("b");
        let c = users.lease().expect("c");
        assert_eq!(
            [a.user.uid, b.user.uid, c.user.uid],
            [3_000_000, 3_000_001, 3_000_002]
        );
        assert_eq!((a.user.gid, a.unique()), (3_000_000, true));
        let err = users.lease().expect_err("all serve");
        assert!(err.contains("widen --sandbox-uids"), "{err}");
        drop(b);
        assert_eq!(lease_soon(&users).user.uid, 3_000_001);
        drop(a);
        drop(c);
        std::thread::sleep(std::time::Duration::from_millis(100));
        let d = lease_soon(&users);
        assert_eq!(
            d.user.uid, 3_000_002,
            "round the range, not the lowest free"
        );
        drop(d);
        let one = StepUsers::One(StepUser { uid: 7, gid: 8 })
            .lease()
            .expect("one");
        assert!(!one.unique());
        if nix::unistd::geteuid().is_root() {
            let tmp = tempfile::tempdir().expect("tmp");
            let mut lease = lease_soon(&users);
            lease.user.take(tmp.path()).expect("take");
            lease.own.push(tmp.path().to_path_buf());
            let meta = std::fs::metadata(tmp.path()).expect("meta");
            assert_eq!((meta.uid(), meta.mode() & 0o777), (lease.user.uid, 0o700));
            drop(lease);
            let meta = std::fs::metadata(tmp.path()).expect("meta");
            assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o777), (0, 0, 0o700));
        }
    }

    /// What a job left read-only is opened up for removal, by handle: a link in it is
    /// not followed (what it points at keeps its mode).
    #[test]
    fn opening_up_a_tree_for_removal_never_follows_a_link() {
        let tmp = tempfile::tempdir().expect("tmp");
        let ws = tmp.path().join("ws");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(ws.join("mod/deep")).expect("mkdir");
        std::fs::create_dir_all(&outside).expect("mkdir");
        std::fs::write(ws.join("mod/deep/f"), "x").expect("write");
        std::os::unix::fs::symlink(&outside, ws.join("mod/link")).expect("link");
        let mode = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod")
        };
        mode(&outside, 0o500);
        mode(&ws.join("mod/deep"), 0o500);
        mode(&ws.join("mod"), 0o500);
        open_up(&ws).expect("open up");
        let got = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(got(&ws.join("mod")), 0o700);
        assert_eq!(got(&ws.join("mod/deep")), 0o700);
        assert_eq!(got(&outside), 0o500, "a link's target is never changed");
        std::fs::remove_dir_all(&ws).expect("removable now");
        assert!(open_up(&outside.join("nothing")).is_err());
    }

    #[test]
    fn a_uid_range_is_checked_against_the_hosts_users_and_ranges() {
        for bad in [
            "",
            "5",
            "a-b",
            "0-10",
            "10-5",
            "65000-66000",
            "2147483000-2147483648",
        ] {
            assert!(UidRange::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            UidRange::parse(UidRange::DEFAULT).expect("default").len(),
            65_536
        );
        let etc = tempfile::tempdir().expect("etc");
        let write = |f: &str, text: &str| std::fs::write(etc.path().join(f), text).expect("write");
        write(
            "passwd",
            "root:x:0:0::/root:/bin/sh\nbob:x:1000:1000::/home/bob:/bin/sh\n",
        );
        write("group", "root:x:0:\nbob:x:1000:\n");
        write("subuid", "bob:100000:65536\n");
        write("subgid", "bob:100000:65536\n");
        let clash = |r: &str| UidRange::parse(r).expect(r).clashes_in(etc.path());
        assert_eq!(clash("2000-3000"), None);
        assert_eq!(
            clash("165536-200000"),
            None,
            "just past bob's subordinate ids"
        );
        let user = clash("900-1100").expect("a user");
        assert!(user.contains("passwd: `bob` has id 1000"), "{user}");
        let sub = clash("160000-170000").expect("a subordinate range");
        assert!(
            sub.contains("subuid: `bob` has ids 100000 to 165535"),
            "{sub}"
        );
    }

    #[test]
    fn step_users_are_named_or_numbered() {
        let nobody = StepUser::parse("nobody").expect("nobody");
        assert_eq!(StepUser::parse("65534").expect("uid"), nobody);
        assert_eq!(
            StepUser::parse("1234:5678"),
            Ok(StepUser {
                uid: 1234,
                gid: 5678
            })
        );
        assert_eq!(
            StepUser::parse("4242"),
            Ok(StepUser {
                uid: 4242,
                gid: 4242
            }),
            "a uid without a name"
        );
        for bad in ["no-such-user-here", "1:x", ":5", "a:b"] {
            assert!(StepUser::parse(bad).is_err(), "{bad}");
        }
    }

    /// A step user must be able to pass through every directory above its workspaces,
    /// and is given its own directories, links and all, never what links point at.
    #[test]
    fn a_step_user_reaches_and_owns_only_what_it_is_given() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().expect("tmp");
        let user = StepUser {
            uid: 65534,
            gid: 65534,
        };
        let work = tmp.path().join("data/work");
        std::fs::create_dir_all(&work).expect("mkdir");
        let closed = std::fs::Permissions::from_mode(0o700);
        std::fs::set_permissions(tmp.path(), closed).expect("chmod");
        let why = user.cannot_reach(&work).expect("a 0700 directory above");
        assert!(why.contains("mode 700"), "{why}");
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711))
            .expect("chmod");
        assert_eq!(user.cannot_reach(&work), None);
        if !nix::unistd::geteuid().is_root() {
            return; // only root gives files away
        }
        let outside = tmp.path().join("outside");
        std::fs::write(&outside, "server's").expect("write");
        let ws = work.join("job");
        std::fs::create_dir_all(ws.join("src")).expect("mkdir");
        std::fs::write(ws.join("src/a"), "a").expect("write");
        std::os::unix::fs::symlink(&outside, ws.join("link")).expect("link");
        user.take(&ws).expect("take");
        for p in [
            ws.clone(),
            ws.join("src"),
            ws.join("src/a"),
            ws.join("link"),
        ] {
            let meta = std::fs::symlink_metadata(&p).expect("meta");
            assert_eq!((meta.uid(), meta.gid()), (65534, 65534), "{}", p.display());
        }
        assert_eq!(std::fs::metadata(&outside).expect("meta").uid(), 0);
        // A directory to give that is itself a link is refused, not followed.
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir_all(&elsewhere).expect("mkdir");
        std::os::unix::fs::symlink(&elsewhere, work.join("linked")).expect("link");
        assert!(user.take(&work.join("linked")).is_err());
        assert_eq!(std::fs::metadata(&elsewhere).expect("meta").uid(), 0);
    }

    /// Only `work/` of a data directory is left passable to others.
    #[test]
    fn a_data_directory_shares_only_its_work_directory() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().expect("tmp");
        let data = tmp.path().join("data");
        std::fs::create_dir_all(data.join("mirrors")).expect("mkdir");
        std::fs::write(data.join("ferry.db"), "db").expect("write");
        std::fs::set_permissions(
            data.join("ferry.db"),
            std::fs::Permissions::from_mode(0o644),
        )
        .expect("chmod");
        share_work_only(&data).expect("share");
        let mode = |p: &str| std::fs::metadata(data.join(p)).expect("meta").mode() & 0o777;
        assert_eq!(mode(""), 0o711);
        assert_eq!(mode("work"), 0o711);
        assert_eq!(mode("ferry.db"), 0o600);
        assert_eq!(mode("mirrors"), 0o700);
        assert_eq!(mode("caches"), 0o700, "made private before it is used");
    }

    /// A data directory the sandbox would let jobs read is refused at start.
    #[test]
    fn a_data_directory_jobs_could_read_is_refused() {
        let tmp = tempfile::tempdir().expect("tmp");
        let sandbox = Sandbox::default().with_read([tmp.path().to_path_buf()]);
        let err = sandbox
            .check(&tmp.path().join("data"), &tmp.path().join("data/work"))
            .expect_err("beneath");
        assert!(
            err.contains("which sandboxed jobs may reach, overlap"),
            "{err}"
        );
        let inside = Sandbox::default().with_read([tmp.path().join("data/caches")]);
        assert!(
            inside
                .check(&tmp.path().join("data"), &tmp.path().join("data/work"))
                .is_err(),
            "a directory inside it"
        );
        assert_eq!(
            Sandbox::default().check(&tmp.path().join("data"), &tmp.path().join("data/work")),
            Ok(Enforced::Fully)
        );
    }
}
