//! Logging for every subcommand: our lines at info and fuser's at warn by default, `-v`/`-q`, `RUST_LOG`; stderr, a file, or syslog.

use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

static VERBOSITY: std::sync::atomic::AtomicI8 = std::sync::atomic::AtomicI8::new(0);

/// Records `-v`/`-q` for the subcommands that install their logger later (`mount`).
pub fn set_verbosity(v: i8) {
    VERBOSITY.store(v, std::sync::atomic::Ordering::Relaxed);
}

/// The `-v` count minus the `-q` count.
pub fn verbosity() -> i8 {
    VERBOSITY.load(std::sync::atomic::Ordering::Relaxed)
}

/// Where syslog (and journald) listen; `RECOVERFS_SYSLOG_SOCKET` points elsewhere (tests).
pub const SYSLOG_SOCKET: &str = "/dev/log";

/// Where log lines go.
pub enum Sink {
    Stderr,
    File(PathBuf),
    /// syslog / the journal, through [`SYSLOG_SOCKET`].
    Syslog,
}

/// The filter for a verbosity (`-v` count minus `-q` count): `RUST_LOG` wins when set.
/// 0 is our own lines at info and everyone else's (fuser's included) at warn.
pub fn filter(verbosity: i8) -> EnvFilter {
    if let Ok(f) = EnvFilter::try_from_default_env() {
        return f;
    }
    EnvFilter::new(match verbosity {
        i8::MIN..=-2 => "off",
        -1 => "error",
        0 => "warn,recoverfs=info",
        1 => "warn,recoverfs=debug",
        2 => "info,recoverfs=trace,fuser=debug",
        _ => "trace",
    })
}

/// Installs the logger (once per process: a second call keeps the first one).
pub fn init(verbosity: i8, sink: Sink) -> Result<(), String> {
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter(verbosity))
        .with_ansi(false);
    // Already initialised (tests, the demo): keep the existing subscriber.
    let _ = match sink {
        Sink::Stderr => b.with_writer(io::stderr).try_init(),
        Sink::File(p) => {
            let f = crate::cli::sys::open_log_file(&p)
                .map_err(|e| format!("log file {}: {e}", p.display()))?;
            b.with_writer(std::sync::Mutex::new(f)).try_init()
        }
        Sink::Syslog => {
            let w = Syslog::connect().map_err(|e| format!("syslog: {e}"))?;
            syslog_subscriber(w, filter(verbosity))
                .try_init()
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        }
    };
    Ok(())
}

/// The subscriber that sends lines to syslog: no time (syslog adds it), no level in the
/// text (it is the line's severity), no target.
fn syslog_subscriber(w: Syslog, filter: EnvFilter) -> impl tracing::Subscriber + Send + Sync {
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .with_level(false)
        .with_writer(w)
        .finish()
}

/// Sends each log line as one datagram to syslog (RFC 3164 framing, facility daemon).
pub struct Syslog {
    sock: UnixDatagram,
    pid: u32,
}

impl Syslog {
    pub fn connect() -> io::Result<Self> {
        let path = std::env::var_os("RECOVERFS_SYSLOG_SOCKET")
            .map(PathBuf::from)
            .unwrap_or_else(|| SYSLOG_SOCKET.into());
        let sock = UnixDatagram::unbound()?;
        sock.connect(Path::new(&path))
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        Ok(Syslog {
            sock,
            pid: std::process::id(),
        })
    }
}

/// One line being written; sent when the event is complete (dropped).
pub struct SyslogLine<'a> {
    to: &'a Syslog,
    severity: u8,
    buf: Vec<u8>,
}

impl Write for SyslogLine<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for SyslogLine<'_> {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buf);
        let text = text.trim_end();
        if text.is_empty() {
            return;
        }
        // Facility 3 (daemon), RFC 3164: "<PRI>TAG[PID]: MSG"; syslog adds the time.
        let msg = format!(
            "<{}>recoverfs[{}]: {text}",
            3 * 8 + self.severity,
            self.to.pid
        );
        // Best effort: a logger that cannot log must not stop the daemon.
        let _ = self.to.sock.send(msg.as_bytes());
    }
}

impl<'a> MakeWriter<'a> for Syslog {
    type Writer = SyslogLine<'a>;
    fn make_writer(&'a self) -> Self::Writer {
        SyslogLine {
            to: self,
            severity: 6,
            buf: Vec::new(),
        }
    }
    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        SyslogLine {
            to: self,
            severity: severity(meta.level()),
            buf: Vec::new(),
        }
    }
}

/// The syslog severity (RFC 5424) of a level: err, warning, info, debug (trace too).
fn severity(level: &tracing::Level) -> u8 {
    match *level {
        tracing::Level::ERROR => 3,
        tracing::Level::WARN => 4,
        tracing::Level::INFO => 6,
        _ => 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each level's line goes through the subscriber `--log syslog` installs, one datagram
    /// per event, framed `<PRI>recoverfs[PID]: MSG` with facility daemon (3) and the
    /// level's own severity: the test sets none itself.
    #[test]
    fn syslog_lines_are_framed_with_their_severity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let server = UnixDatagram::bind(&path).unwrap();
        let sock = UnixDatagram::unbound().unwrap();
        sock.connect(&path).unwrap();
        let s = Syslog { sock, pid: 7 };
        let sub = syslog_subscriber(s, EnvFilter::new("trace"));
        tracing::subscriber::with_default(sub, || {
            tracing::error!("e {}", 1);
            tracing::warn!("mounted x on y");
            tracing::info!("i");
            tracing::debug!("d");
            tracing::trace!("t");
        });
        server.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok(n) = server.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        // daemon (3) * 8 + severity: err 3, warning 4, info 6, debug 7 (trace too).
        assert_eq!(
            got,
            [
                "<27>recoverfs[7]: e 1",
                "<28>recoverfs[7]: mounted x on y",
                "<30>recoverfs[7]: i",
                "<31>recoverfs[7]: d",
                "<31>recoverfs[7]: t",
            ]
        );
    }
}
