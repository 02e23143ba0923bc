//! The `mount` front end: argument and `-o` parsing, pre-mount checks, daemonizing, signals, logging.

use crate::cli::log::{self, Sink};
use crate::cli::sys::{
    block_signals, detach_stdio, is_mount_point, is_root, lazy_unmount, pipe, wait_signal, which,
};
use crate::cli::writable::{self, Layers};
use crate::cli::{choices, EngineArgs, EXIT_ERROR};
use crate::engine::layout::{discover_target_with, Target, TargetError};
use crate::engine::policy::Policy;
use crate::engine::replica::{Prefer, Replicas};
use crate::engine::scan::ScanOptions;
use crate::engine::source::{Mounts, Source};
use crate::view::fuse::session::{raise_readahead, start_session, SessionOptions};
use crate::view::fuse::Owner;
use crate::view::verify::Verify;
use crate::view::{View, ViewConfig};
use clap::builder::PossibleValue;
use clap::{ArgAction, Args};
use fuser::MountOption;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;

/// Set in the environment of the background daemon the parent starts.
const CHILD_ENV: &str = "RECOVERFS_DAEMON_CHILD";
/// The line the daemon prints once the mount is live.
const READY_LINE: &str = "recoverfs: mount ready";
/// Default bytes of segment verdicts kept in memory.
pub const DEFAULT_CACHE_MB: u64 = 64;

#[derive(Args, Debug, Clone)]
pub struct MountArgs {
    /// The Takhin data directory to show repaired.
    pub data_dir: PathBuf,
    /// An empty directory to mount the view on.
    pub mountpoint: PathBuf,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Stay in the foreground (logs to stderr); otherwise return once the mount is live.
    #[arg(long, short = 'f')]
    pub foreground: bool,
    /// Let other users read the view (needs user_allow_other in /etc/fuse.conf unless root).
    #[arg(long)]
    pub allow_other: bool,
    /// Let root read the view besides the user who mounted it (also -o allow_root);
    /// nobody else. Needs user_allow_other in /etc/fuse.conf unless root.
    #[arg(long, conflicts_with = "allow_other")]
    pub allow_root: bool,
    /// Mount even when DATA_DIR holds no Takhin log yet (a broker's directory
    /// before its first partition; also -o allow_empty). Without it such a
    /// directory is refused like `check` and `repair` refuse it: most likely a mistyped path.
    #[arg(long)]
    pub allow_empty: bool,
    /// FUSE worker threads (0: one per core; at least 2).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub threads: usize,
    /// Memory for cached segment verdicts, in MiB (least recently used ones are dropped and revalidated when needed).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CACHE_MB)]
    pub cache_mb: u64,
    /// Mount options, comma-separated: policy=P, cache_mb=N, threads=N, allow_other,
    /// allow_root, allow_empty, uid=N, gid=N, umask=OOO, max_record_bytes=N, log_file=F, fsname=S,
    /// subtype=S, nometa, passthrough=auto|off, verify=lazy|background, noexec, noatime; ro, nodev, nosuid and
    /// default_permissions are always in effect; rw (which mount(8) passes unless ro is
    /// given) is accepted and the view is still read-only; defaults, auto, noauto, user,
    /// nouser, users, owner, group, nofail, _netdev and x-* are mount(8)'s and fstab's. Anything else (dev, suid, sync,
    /// context=, comment=, ...) is refused.
    #[arg(short = 'o', value_name = "OPTS", action = ArgAction::Append)]
    pub options: Vec<String>,
    /// Append logs here (default: stderr in the foreground, syslog/the journal in the background).
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Hide `.recoverfs/` and the `user.recoverfs.*` xattrs (also `-o nometa`): `cp -a`,
    /// `tar` or `rsync` of the view's root then copy exactly the repaired log.
    #[arg(long)]
    pub no_meta: bool,
    /// FUSE passthrough of whole original files (clean sealed segments, other files,
    /// .recoverfs/raw/): auto uses it where the kernel permits, off never does. With it
    /// the kernel also keeps a sealed segment's name for up to a second (dropped when the
    /// source watcher sees the file change); off makes every path walk ask the daemon.
    #[arg(long, value_name = "WHEN", default_value = "auto", value_parser = passthrough_values(), action = ArgAction::Set)]
    pub passthrough: bool,
    /// Writable for a broker (root): the view is mounted privately at UPPER_DIR/view and
    /// overlayfs at MOUNTPOINT, every write kept in UPPER_DIR/upper, the source untouched.
    /// Implies --no-meta, --passthrough off and --allow-other. `umount MOUNTPOINT` unmounts both layers.
    #[arg(long, value_name = "UPPER_DIR")]
    pub writable: Option<PathBuf>,
    /// When segments are validated: lazy (on first use) or background (also all
    /// of them, in one idle-priority thread, once the mount is live; also -o verify=).
    #[arg(long, value_name = "WHEN", default_value = "lazy", value_parser = verify_values())]
    pub verify: Verify,
}

/// `--passthrough`'s values, offered to --help and every shell's completion.
fn passthrough_values() -> impl clap::builder::TypedValueParser<Value = bool> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new([
        PossibleValue::new("auto").help("wherever the kernel permits it"),
        PossibleValue::new("off").help("never: every read and path walk asks the daemon"),
    ])
    .map(|v| v == "auto")
}

/// `--verify`'s values, offered to --help and every shell's completion.
fn verify_values() -> impl clap::builder::TypedValueParser<Value = Verify> {
    choices([
        PossibleValue::new("lazy").help("each segment when one of its files is first looked up"),
        PossibleValue::new("background")
            .help("also all of them, in one idle-priority thread, once the mount is live"),
    ])
}

/// `auto` (true) or `off` (false).
fn parse_passthrough(v: &str) -> Result<bool, String> {
    match v {
        "auto" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("passthrough={v}: expected auto or off")),
    }
}

/// Everything `mount` needs once the options are merged.
#[derive(Debug, Clone)]
struct Settings {
    source: PathBuf,
    mountpoint: PathBuf,
    policy: Policy,
    scan: ScanOptions,
    /// `--cross-mounts`: whether the view walks into filesystems mounted inside the source.
    mounts: Mounts,
    cache_mb: u64,
    threads: usize,
    allow_other: bool,
    /// Root (and the mount's owner) only: `allow_root`.
    allow_root: bool,
    /// Mount a tree that holds no Takhin log (`--allow-empty`).
    allow_empty: bool,
    /// `uid=`, `gid=`, `umask=`: the owner, group and mode bits the view shows.
    owner: Owner,
    log_file: Option<PathBuf>,
    fsname: Option<String>,
    subtype: String,
    no_meta: bool,
    extra: Vec<MountOption>,
    passthrough: bool,
    /// `--writable`: the overlay's layers (the view then mounts at `layers.view`).
    writable: Option<Layers>,
    verify: Verify,
    /// `--replica`: the directories ranges are healed from.
    replicas: Vec<PathBuf>,
    /// `--prefer`: whose record is served where copies disagree.
    prefer: Prefer,
}

fn settings(a: &MountArgs) -> Result<Settings, String> {
    let mut s = Settings {
        source: a.data_dir.clone(),
        mountpoint: a.mountpoint.clone(),
        policy: a.engine.policy,
        scan: a
            .engine
            .scan_options()
            .map_err(|e| format!("--baseline {e}"))?,
        mounts: a.engine.mounts(),
        cache_mb: a.cache_mb,
        threads: a.threads,
        allow_other: a.allow_other,
        allow_root: a.allow_root,
        allow_empty: a.allow_empty,
        owner: Owner::default(),
        log_file: a.log_file.clone(),
        fsname: None,
        subtype: "recoverfs".into(),
        no_meta: a.no_meta,
        extra: Vec::new(),
        passthrough: a.passthrough,
        writable: None,
        verify: a.verify,
        replicas: a.engine.replicas.clone(),
        prefer: a.engine.prefer,
    };
    for o in a.options.iter().flat_map(|x| x.split(',')) {
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("-o {o}: not a number"))
        };
        match o.split_once('=') {
            Some(("policy", v)) => s.policy = v.parse()?,
            Some(("cache_mb", v)) => s.cache_mb = num(v)?,
            Some(("threads", v)) => s.threads = num(v)? as usize,
            Some(("max_record_bytes", v)) => s.scan.max_record_bytes = num(v)?,
            Some(("log_file", v)) => s.log_file = Some(v.into()),
            Some(("fsname", v)) => s.fsname = Some(v.into()),
            Some(("passthrough", v)) => s.passthrough = parse_passthrough(v)?,
            Some(("verify", v)) => s.verify = v.parse()?,
            Some(("uid", v)) => s.owner.uid = Some(id(o, v)?),
            Some(("gid", v)) => s.owner.gid = Some(id(o, v)?),
            Some(("umask", v)) => {
                s.owner.umask = u16::from_str_radix(v, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| format!("-o {o}: not an octal mode (e.g. umask=027)"))?
            }
            Some(("subtype", v)) if !v.is_empty() && !v.contains([',', '.', '/']) => {
                s.subtype = v.into()
            }
            Some(("subtype", _)) => return Err(format!("-o {o}: not a valid subtype")),
            Some((k @ ("context" | "fscontext" | "defcontext" | "rootcontext"), _)) => {
                return Err(format!(
                    "-o {o}: SELinux {k} is not supported by this filesystem; leave it out"
                ))
            }
            Some(("comment", _)) => {
                return Err(format!(
                    "-o {o}: not supported; fstab annotations go in x-* options"
                ))
            }
            Some((k, _)) if k.starts_with("x-") => {}
            // A non-root user's mount of a `user` fstab line: mount(8) names them.
            Some(("user", _)) => {}
            Some(_) => return Err(format!("-o {o}: unknown mount option")),
            None => match o {
                "" => {}
                "allow_other" => s.allow_other = true,
                "allow_root" => s.allow_root = true,
                "allow_empty" => s.allow_empty = true,
                "nometa" => s.no_meta = true,
                "noexec" => s.extra.push(MountOption::NoExec),
                "noatime" => s.extra.push(MountOption::NoAtime),
                "dev" | "suid" | "sync" | "dirsync" | "mand" => {
                    return Err(format!(
                        "-o {o}: not supported; the view is always ro, nodev, nosuid, async"
                    ))
                }
                // Always in effect: ro, nodev, nosuid, default_permissions, async.
                "ro" | "nodev" | "nosuid" | "default_permissions" | "async" => {}
                // mount(8) passes rw whenever ro is not given (fstab's `defaults`
                // included): refusing it would make `mount -t recoverfs` fail. A
                // FUSE view is read-only whatever it is asked, as /proc/mounts shows.
                "rw" => tracing::debug!("-o rw: the view is read-only all the same"),
                // mount(8)'s and fstab's own business, done before we are called.
                "defaults" | "auto" | "noauto" | "user" | "nouser" | "users" | "owner"
                | "group" | "nofail" | "_netdev" | "silent" | "loud" => {}
                // The kernel defaults, kept as asked.
                "exec" | "atime" | "relatime" => {}
                "norelatime" | "strictatime" | "lazytime" => {
                    return Err(format!(
                        "-o {o}: not supported (the view's atimes are the originals')"
                    ))
                }
                x if x.starts_with("x-") => {}
                _ => return Err(format!("-o {o}: unknown mount option")),
            },
        }
    }
    if s.allow_other && s.allow_root {
        return Err("-o allow_other and allow_root: choose one".into());
    }
    Ok(s)
}

/// A user or group id given to `-o uid=`/`gid=`: a number, or a name known to the system.
fn id(o: &str, v: &str) -> Result<u32, String> {
    if let Ok(n) = v.parse::<u32>() {
        return Ok(n);
    }
    let found = if o.starts_with("uid") {
        nix::unistd::User::from_name(v).map(|u| u.map(|u| u.uid.as_raw()))
    } else {
        nix::unistd::Group::from_name(v).map(|g| g.map(|g| g.gid.as_raw()))
    };
    match found {
        Ok(Some(n)) => Ok(n),
        _ => Err(format!("-o {o}: no such user or group")),
    }
}

/// Checks that mounting can work, so a failure is one line before anything is mounted.
fn precheck(s: &mut Settings) -> Result<(), String> {
    let src = &s.source;
    let m = fs::metadata(src).map_err(|e| format!("source {}: {e}", src.display()))?;
    if !m.is_dir() {
        return Err(format!("source {}: not a directory", src.display()));
    }
    s.source = fs::canonicalize(src).map_err(|e| format!("source {}: {e}", src.display()))?;
    let mp = s.mountpoint.clone();
    // A dead FUSE mount (its daemon killed) answers ENOTCONN, but a stat may be
    // served from the kernel's cached attributes for a while: statfs always asks.
    let dead = |e: &dyn std::fmt::Display| {
        format!(
            "mountpoint {}: a dead FUSE mount is still there ({e}); clean it with `umount -l {}`",
            mp.display(),
            mp.display()
        )
    };
    let enotconn = |e: &io::Error| e.raw_os_error() == Some(libc::ENOTCONN);
    let m = match fs::metadata(&mp) {
        Ok(m) => m,
        Err(e) if enotconn(&e) => return Err(dead(&e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(format!("mountpoint {}: does not exist", mp.display()))
        }
        Err(e) => return Err(format!("mountpoint {}: {e}", mp.display())),
    };
    if !m.is_dir() {
        return Err(format!("mountpoint {}: not a directory", mp.display()));
    }
    s.mountpoint = fs::canonicalize(&mp).map_err(|e| match enotconn(&e) {
        true => dead(&e),
        false => format!("mountpoint {}: {e}", mp.display()),
    })?;
    if is_mount_point(&s.mountpoint) {
        if let Err(e) = nix::sys::statfs::statfs(&s.mountpoint) {
            if e == nix::errno::Errno::ENOTCONN {
                return Err(dead(&e));
            }
        }
        return Err(format!(
            "mountpoint {}: already a mount point",
            mp.display()
        ));
    }
    let mut entries =
        fs::read_dir(&s.mountpoint).map_err(|e| format!("mountpoint {}: {e}", mp.display()))?;
    if entries.next().is_some() {
        return Err(format!("mountpoint {}: not empty", mp.display()));
    }
    if s.mountpoint.starts_with(&s.source) {
        return Err(format!(
            "mountpoint {}: inside the source {}; the view would contain itself",
            mp.display(),
            s.source.display()
        ));
    }
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(|e| {
            format!("/dev/fuse: {e} (is the fuse module loaded and the device present?)")
        })?;
    if !is_root() && which("fusermount3").is_none() {
        return Err(
            "not permitted: mounting needs root, or fusermount3 (Debian: apt install fuse3)".into(),
        );
    }
    Ok(())
}

/// Refuses a source holding no Takhin log, as `check` and `repair` do: an
/// empty view over a mistyped path would look like a recovered log that lost everything.
fn refuse_empty(
    source: &std::path::Path,
    mounts: crate::engine::source::Mounts,
) -> Result<(), String> {
    let target = Target {
        root: source.to_path_buf(),
        only_segment: None,
    };
    match discover_target_with(&target, mounts) {
        Err(e @ TargetError::NoLog { .. }) => Err(format!(
            "source {}; --allow-empty (-o allow_empty) mounts it anyway, e.g. a broker's \
             directory before its first partition",
            crate::engine::layout::display_name(&e.to_string())
        )),
        // Anything else is for the mount itself to meet and report.
        _ => Ok(()),
    }
}

/// Where the mount logs: `--log-file`, else stderr in the foreground, else syslog.
fn init_logging(s: &Settings, daemon_child: bool) -> Result<(), String> {
    let v = log::verbosity();
    match &s.log_file {
        Some(p) => log::init(v, Sink::File(p.clone())),
        None if daemon_child => log::init(v, Sink::Syslog).or_else(|e| {
            // Told to the parent, which prints it: the daemon's stderr is about to go.
            // A warning: -q (errors only) and -qq (nothing) silence it.
            if v >= 0 {
                println!("recoverfs mount: warning: {e}; logging nowhere (use --log-file)");
            }
            Ok(())
        }),
        None => log::init(v, Sink::Stderr),
    }
}

pub fn run(a: &MountArgs) -> ExitCode {
    let fail = |msg: String| {
        eprintln!("recoverfs mount: {msg}");
        ExitCode::from(EXIT_ERROR)
    };
    // Refused replicas are refused here, before any daemon exists (exit 2).
    if !a.engine.replicas.is_empty() {
        if let Err(e) = Replicas::open(&a.data_dir, &a.engine.replicas, a.engine.scan.options()) {
            return fail(e.to_string());
        }
        if let Err(e) = Replicas::check_prefer(a.engine.prefer, a.engine.policy) {
            return fail(e);
        }
    }
    let mut s = match settings(a) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    if let Some(dir) = &a.writable {
        if !is_root() {
            return fail("--writable: mounting overlayfs needs root".into());
        }
        match writable::prepare(dir, &s.mountpoint, &s.source) {
            // overlayfs refuses a lower layer with FUSE passthrough (stacking depth), and a
            // broker's data directory holds only the log. overlayfs revalidates the view's
            // entries as the caller, whom FUSE refuses without allow_other (ESTALE through
            // the overlay); the view's modes still apply (default_permissions).
            Ok(l) => {
                s.mountpoint = l.view.clone();
                s.no_meta = true;
                s.passthrough = false;
                s.allow_other = true;
                s.allow_root = false;
                s.writable = Some(l);
            }
            Err(e) => return fail(e),
        }
    }
    if let Err(e) = precheck(&mut s) {
        return fail(e);
    }
    let child = std::env::var_os(CHILD_ENV).is_some();
    // The parent has looked already: the daemon it starts need not walk the tree again.
    if !child && !s.allow_empty {
        if let Err(e) = refuse_empty(&s.source, s.mounts) {
            return fail(e);
        }
    }
    if !a.foreground && !child {
        return match spawn_daemon() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        };
    }
    match serve(&s, child) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// Starts the daemon in the background and returns once its mount is live,
/// or with its error message.
fn spawn_daemon() -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding my own binary: {e}"))?;
    let (mut r, w) = pipe().map_err(|e| format!("pipe: {e}"))?;
    let w2 = w.try_clone().map_err(|e| format!("pipe: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.args(std::env::args_os().skip(1))
        .env(CHILD_ENV, "1")
        .stdin(Stdio::null())
        .stdout(w)
        .stderr(w2);
    // SAFETY: setsid is async-signal-safe; the daemon leaves our session so
    // that the terminal's Ctrl-C does not reach it.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("starting the daemon: {e}"))?;
    drop(cmd); // closes our copies of the pipe's write end
    let mut out = Vec::new();
    let _ = r.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out);
    if out.lines().any(|l| l == READY_LINE) {
        for l in out.lines().filter(|l| *l != READY_LINE && !l.is_empty()) {
            eprintln!("{l}");
        }
        return Ok(());
    }
    drop(child);
    let msg: Vec<&str> = out
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.strip_prefix("recoverfs mount: ").unwrap_or(l))
        .collect();
    Err(if msg.is_empty() {
        "the daemon exited before the mount was ready".into()
    } else {
        msg.join("; ")
    })
}
/// Raises the soft limit on open files to the hard limit: every open of the
/// view holds a source fd, and a reader keeping a thousand files open must not
/// make every other access (and the report) fail with EMFILE.
fn raise_nofile_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!("open file limit raised from {soft} to {hard}"),
            Err(e) => tracing::warn!("open file limit left at {soft}: {e}"),
        },
        Ok(_) => {}
        Err(e) => tracing::warn!("reading the open file limit: {e}"),
    }
}

/// Mounts and serves until unmounted (by `umount`, or by a signal).
fn serve(s: &Settings, daemon_child: bool) -> Result<(), String> {
    let sigs = block_signals();
    init_logging(s, daemon_child)?;
    raise_nofile_limit();
    let threads = if s.threads == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        s.threads
    }
    .max(2);
    // Opened before the mount exists: the clone never holds our own view.
    let source = Source::open_with(&s.source, s.mounts)
        .map_err(|e| format!("source {}: {e}", s.source.display()))?;
    let view = View::new(ViewConfig {
        source: Arc::new(source),
        source_label: s.source.display().to_string(),
        policy: s.policy,
        scan: s.scan.clone(),
        cache_bytes: s.cache_mb.saturating_mul(1 << 20),
    });
    let view = if s.replicas.is_empty() {
        view
    } else {
        Replicas::check_prefer(s.prefer, s.policy)?;
        let r = Replicas::open(&s.source, &s.replicas, s.scan.for_replicas())
            .map_err(|e| e.to_string())?
            .with_prefer(s.prefer);
        view.with_replicas(Arc::new(r))
    };
    let view = Arc::new(if s.no_meta { view.without_meta() } else { view });
    let opts = SessionOptions {
        fsname: s
            .fsname
            .clone()
            .unwrap_or_else(|| s.source.display().to_string()),
        subtype: s.subtype.clone(),
        allow_other: s.allow_other,
        allow_root: s.allow_root,
        owner: s.owner,
        threads,
        extra: s.extra.clone(),
        passthrough: s.passthrough,
    };
    let mut session = start_session(view.clone(), &s.mountpoint, &opts)
        .map_err(|e| format!("mounting on {}: {e}", s.mountpoint.display()))?;
    // The mount is live: the verifier's reads only compete with readers' at idle priority.
    let verification = match s.verify {
        Verify::Lazy => None,
        Verify::Background => Some(
            view.start_verify()
                .map_err(|e| format!("starting background verification: {e}"))?,
        ),
    };
    let mut unmounter = session.unmount_callable();
    let mut view_unmounter = session.unmount_callable();
    let mp = s.mountpoint.clone();
    let layers = s.writable.clone();
    std::thread::Builder::new()
        .name("recoverfs-signals".into())
        .spawn(move || {
            let sig = wait_signal(&sigs);
            if let Some(l) = &layers {
                tracing::info!("signal {sig}: unmounting {}", l.merged.display());
                writable::unmount_overlay(l);
            }
            tracing::info!("signal {sig}: unmounting {}", mp.display());
            if let Err(e) = unmounter.unmount() {
                tracing::warn!("unmounting {}: {e}; detaching it lazily", mp.display());
                if let Err(e) = lazy_unmount(&mp) {
                    tracing::error!("detaching {}: {e}", mp.display());
                }
            }
        })
        .map_err(|e| format!("starting the signal thread: {e}"))?;
    let mp = s.mountpoint.clone();
    let (policy, source) = (s.policy, s.source.clone());
    let layers = s.writable.clone();
    let overlay_error = Arc::new(parking_lot::Mutex::new(None::<String>));
    let overlay_failed = overlay_error.clone();
    std::thread::Builder::new()
        .name("recoverfs-ready".into())
        .spawn(move || {
            // Needs the session loop running: it stats the mount.
            if is_root() {
                raise_readahead(&mp);
            }
            if let Some(l) = &layers {
                if let Err(e) = writable::mount_overlay(l) {
                    *overlay_failed.lock() = Some(e);
                    let _ = view_unmounter.unmount();
                    return;
                }
                tracing::info!(
                    "overlay on {}, writes kept in {}",
                    l.merged.display(),
                    l.upper.display()
                );
            }
            tracing::info!(
                "mounted {} on {} (policy {policy}, read-only)",
                source.display(),
                mp.display()
            );
            if daemon_child {
                println!("{READY_LINE}");
                let _ = io::stdout().flush();
                detach_stdio();
            }
            // `umount MOUNTPOINT` took the overlay away: the private view goes too.
            if let Some(l) = &layers {
                writable::wait_unmounted(l);
                tracing::info!(
                    "{} unmounted: unmounting the view below it",
                    l.merged.display()
                );
                if let Err(e) = view_unmounter.unmount() {
                    tracing::warn!("unmounting {}: {e}; detaching it lazily", mp.display());
                    let _ = lazy_unmount(&mp);
                }
            }
        })
        .map_err(|e| format!("starting the ready thread: {e}"))?;
    let served = session.run();
    if let Some(v) = verification {
        v.stop(std::time::Duration::from_secs(2));
    }
    let served = served.map_err(|e| format!("serving {}: {e}", s.mountpoint.display()));
    if let Some(l) = &s.writable {
        writable::unmount_overlay(l);
    }
    if let Some(e) = overlay_error.lock().take() {
        return Err(e);
    }
    served?;
    tracing::info!("unmounted {}", s.mountpoint.display());
    Ok(())
}
