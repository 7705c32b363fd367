//! Shared pieces of the integration tests: a sandbox directory with its own
//! configuration, the real `sealpost` binary, and real peers found on the machine.

// System calls the standard library does not offer (signals, pipes,
// namespaces, resource limits), each block with its SAFETY comment.
#![allow(unsafe_code)]
#![allow(dead_code)]

pub mod ca;
pub mod dovecot;
pub mod gateway;
pub mod haproxy;
pub mod https;
pub mod netns;
pub mod pebble;
pub mod postfix;
pub mod recorder;
pub mod scripted;
pub mod upstreams;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn sealpost_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sealpost"))
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every fixture message: an M365 journal report, UTF-8 headers, over-long
/// lines, a 3 MB attachment.
pub const FIXTURES: [&str; 4] = [
    "m365-journal-report.eml",
    "utf8-headers.eml",
    "long-lines.eml",
    "attachment-3mb.eml",
];

/// A fixture message from tests/fixtures.
pub fn fixture(name: &str) -> Vec<u8> {
    fs::read(repo().join("tests/fixtures").join(name)).expect("fixture")
}

/// Whether we run under CI, where a missing peer is a failure, not a skip.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Returns the path of a required external program, or `None` after saying
/// the test is skipped. Under CI a missing peer fails the test.
pub fn peer(program: &str, candidates: &[&str]) -> Option<PathBuf> {
    for candidate in candidates {
        let path = PathBuf::from(candidate);
        if path.is_absolute() && path.is_file() {
            return Some(path);
        }
        if let Ok(out) = Command::new("sh")
            .arg("-c")
            .arg(format!("timeout 10 sh -c 'command -v {candidate}'"))
            .output()
        {
            let found = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && !found.is_empty() {
                return Some(PathBuf::from(found));
            }
        }
    }
    missing_peer(&format!(
        "{program} is not installed (run scripts/test, which installs it)"
    ))
}

/// A test cannot run here: says SKIPPED and gives `None`, except under CI,
/// where a missing peer (or privilege) fails the test.
pub fn missing_peer<T>(msg: &str) -> Option<T> {
    assert!(
        !under_ci(),
        "CI=true and a required test peer is missing: {msg}"
    );
    eprintln!("SKIPPED: {msg}");
    None
}

/// A peer could not bind a port it was given: another process took it
/// between [`on_free_ports`] choosing it and the peer binding it.
#[derive(Debug)]
pub struct PortTaken;

/// How often a peer is started again on new ports after [`PortTaken`].
const PORT_TRIES: usize = 5;

/// Starts a peer that takes port numbers, not sockets (Postfix, Dovecot,
/// HAProxy, smtp-sink): `start` gets `n` loopback ports free a moment ago
/// and the attempt number, and answers `Err(PortTaken)` when the peer
/// failed with EADDRINUSE; then it runs again on new ports. Our own
/// gateway never needs this: it binds port 0, or is handed its sockets.
pub fn on_free_ports<T>(
    n: usize,
    mut start: impl FnMut(&[u16], usize) -> Result<T, PortTaken>,
) -> T {
    for attempt in 0..PORT_TRIES {
        let ports: Vec<u16> = (0..n).map(|_| postfix::free_port()).collect();
        match start(&ports, attempt) {
            Ok(started) => return started,
            Err(PortTaken) => eprintln!("ports {ports:?} were taken meanwhile; trying others"),
        }
    }
    panic!("{PORT_TRIES} sets of free ports were all taken before the peer could bind them");
}

/// Whether a peer's log says a bind failed because the port is in use.
pub fn says_port_taken(log: &str) -> bool {
    log.contains("Address already in use") || log.contains("EADDRINUSE")
}

/// The slow-flush model of an SD card (`tests/shim/slowflush.c`), built
/// once into `target/`; `None` after saying why when no C compiler is here.
pub fn slowflush_shim() -> Option<PathBuf> {
    static BUILT: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cc = peer("cc (a C compiler, for the slow-flush shim)", &["cc"])?;
            let out = repo().join("target/slowflush.so");
            let tmp = out.with_extension(format!("{}.so", std::process::id()));
            let built = run(Command::new(cc)
                .args(["-shared", "-fPIC", "-O2", "-Wall", "-o"])
                .arg(&tmp)
                .arg(repo().join("tests/shim/slowflush.c"))
                .arg("-ldl"));
            assert!(built.status.success(), "cc: {}", stderr(&built));
            fs::rename(&tmp, &out).unwrap();
            Some(out)
        })
        .clone()
}

/// Python with PyNaCl: the virtualenv scripts/test creates.
pub fn python_with_nacl() -> Option<PathBuf> {
    let venv = repo().join("target/pyenv/bin/python3");
    let candidates: Vec<String> = std::env::var("SEALPOST_PYTHON")
        .into_iter()
        .chain([venv.display().to_string()])
        .collect();
    for c in &candidates {
        let ok = Command::new("timeout")
            .args(["30", c, "-c", "import nacl.bindings"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(PathBuf::from(c));
        }
    }
    missing_peer(
        "Python with PyNaCl is not available (run scripts/test, which creates target/pyenv)",
    )
}

/// A throwaway directory with a `gateway.json` using cheap key derivation.
pub struct Sandbox {
    pub dir: PathBuf,
}

impl Sandbox {
    /// A sandbox for a running gateway: every implemented service listens on
    /// 127.0.0.1 port 0 (a free port, logged at start-up).
    pub fn for_gateway(label: &str, extra: serde_json::Value) -> Sandbox {
        let any = serde_json::json!(["127.0.0.1:0"]);
        let none = serde_json::json!([]);
        let mut config = serde_json::json!({
            "limits": { "failed_login_delay_ms": 0 },
            "smtp": { "listen": any, "listen_tls": any },
            "pop3": { "listen": any, "listen_tls": any },
            "smtp_proxy": { "listen": any, "listen_tls": any },
            "pop3_proxy": { "listen": none, "listen_tls": none },
        });
        merge(&mut config, extra);
        Sandbox::new(label, config)
    }

    /// A sandbox whose configuration is `{"kdf": cheap}` deep-merged with `extra`.
    pub fn new(label: &str, extra: serde_json::Value) -> Sandbox {
        let mut bytes = [0u8; 8];
        getrandom(&mut bytes);
        let dir = std::env::temp_dir().join(format!(
            "sealpost-it-{label}-{:016x}",
            u64::from_le_bytes(bytes)
        ));
        fs::create_dir_all(&dir).unwrap();
        // The console is off unless a test turns it on: its default port
        // is fixed, and tests run side by side.
        let mut config = serde_json::json!({
            "kdf": { "opslimit": 1, "memlimit_bytes": 8 * 1024 * 1024 },
            "console": { "listen": [] },
        });
        merge(&mut config, extra);
        fs::write(
            dir.join("gateway.json"),
            serde_json::to_vec_pretty(&config).unwrap(),
        )
        .unwrap();
        Sandbox { dir }
    }

    /// Points the proxies at a test upstream: `localhost` allowed (private
    /// addresses too), the test CA trusted, `implicit_port` spoken with
    /// implicit TLS; `overrides` is merged into the `proxy` section last.
    pub fn configure_proxy(
        &self,
        ca_file: &Path,
        implicit_port: u16,
        overrides: serde_json::Value,
    ) {
        let mut proxy = serde_json::json!({
            "allowed_targets": ["localhost"],
            "allow_private_targets": true,
            "extra_ca_file": ca_file.to_str().unwrap(),
            "connect_timeout_secs": 10,
            "implicit_tls_ports": [465, 995, implicit_port],
        });
        merge(&mut proxy, overrides);
        let mut config: serde_json::Value =
            serde_json::from_slice(&fs::read(self.config()).unwrap()).unwrap();
        config["proxy"] = proxy;
        fs::write(self.config(), serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    }

    /// The configuration file.
    pub fn config(&self) -> PathBuf {
        self.dir.join("gateway.json")
    }

    /// `data/` of the sandbox.
    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Runs `sealpost -c gateway.json <args>` with `stdin` as input.
    pub fn run_with_input(&self, args: &[&str], stdin: &[u8]) -> Output {
        run_with_timeout(
            Command::new(sealpost_bin())
                .arg("-c")
                .arg(self.config())
                .args(args)
                .current_dir(&self.dir),
            stdin,
            PROGRAM_TIMEOUT,
        )
    }

    /// Runs `sealpost -c gateway.json <args>` with empty input.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with_input(args, b"")
    }

    /// Creates a mailbox; returns its id and generated password.
    pub fn create_mailbox(&self, name: &str) -> (String, String) {
        let out = self.run(&["mailbox", "create", "--name", name, "--json"]);
        assert!(out.status.success(), "create failed: {}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (
            v["id"].as_str().unwrap().to_string(),
            v["password"].as_str().unwrap().to_string(),
        )
    }

    /// Writes `password` to a file and returns its path.
    pub fn password_file(&self, password: &str) -> PathBuf {
        let mut bytes = [0u8; 8];
        getrandom(&mut bytes);
        let path = self
            .dir
            .join(format!("pw-{:016x}", u64::from_le_bytes(bytes)));
        fs::write(&path, format!("{password}\n")).unwrap();
        path
    }

    /// The directory of a mailbox.
    pub fn mailbox_dir(&self, id: &str) -> PathBuf {
        self.data().join("mailboxes").join(id)
    }

    /// Message files of a mailbox, sorted.
    pub fn message_files(&self, id: &str) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(self.mailbox_dir(id).join("messages"))
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        files.sort();
        files
    }

    /// Makes the oldest message of a mailbox `secs` older: a message's name
    /// carries its arrival time, so an older name is older mail.
    pub fn age_oldest_message(&self, id: &str, secs: u64) {
        let file = self.message_files(id).remove(0);
        let name = file.file_name().unwrap().to_str().unwrap().to_owned();
        let (micros, rest) = name.split_once('-').unwrap();
        let older = micros.parse::<u64>().unwrap() - secs * 1_000_000;
        fs::rename(&file, file.with_file_name(format!("{older}-{rest}"))).unwrap();
    }

    /// Runs `mailbox export <id> --password-file <password_file> --out <out>`.
    pub fn run_export(&self, id: &str, password_file: &Path, out: impl AsRef<Path>) -> Output {
        let out = out.as_ref().to_str().unwrap();
        let pw = password_file.to_str().unwrap();
        self.run(&["mailbox", "export", id, "--password-file", pw, "--out", out])
    }

    /// Whether the mailbox's `tmp/` holds nothing (no half-written message).
    pub fn tmp_is_empty(&self, id: &str) -> bool {
        fs::read_dir(self.mailbox_dir(id).join("tmp"))
            .unwrap()
            .next()
            .is_none()
    }

    /// Exports a mailbox and returns (uidl, message bytes, metadata) per message.
    pub fn export(&self, id: &str, password: &str) -> Vec<(String, Vec<u8>, serde_json::Value)> {
        let out_dir = self
            .dir
            .join(format!("export-{id}-{}", self.message_files(id).len()));
        let _ = fs::remove_dir_all(&out_dir);
        let out = self.run_export(id, &self.password_file(password), &out_dir);
        assert!(out.status.success(), "export failed: {}", stderr(&out));
        let mut result = Vec::new();
        let mut names: Vec<String> = fs::read_dir(&out_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter_map(|n| n.strip_suffix(".eml").map(str::to_string))
            .collect();
        names.sort();
        for name in names {
            let body = fs::read(out_dir.join(format!("{name}.eml"))).unwrap();
            let meta =
                serde_json::from_slice(&fs::read(out_dir.join(format!("{name}.json"))).unwrap())
                    .unwrap();
            result.push((name, body, meta));
        }
        result
    }
}

impl Sandbox {
    /// `sealpost custody verify --json`: (exit code, report).
    pub fn custody_verify(&self) -> (i32, serde_json::Value) {
        let out = self.run(&["custody", "verify", "--json"]);
        let report = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("custody verify: {e}: {}", stderr(&out)));
        (out.status.code().unwrap_or(-1), report)
    }

    /// The `source` of every "stored" entry of every chain, in order.
    pub fn stored_sources(&self) -> Vec<String> {
        let mut out = Vec::new();
        for path in walk(&self.data().join("custody")) {
            if path.extension().is_some_and(|e| e == "log") {
                for line in fs::read_to_string(&path).unwrap().lines() {
                    let v: serde_json::Value = serde_json::from_str(line).unwrap();
                    if v["event"] == "stored" {
                        out.push(v["source"].as_str().unwrap_or("").to_owned());
                    }
                }
            }
        }
        out
    }
}

/// Python's poplib (`tests/python/pop3_fetch.py`) retrieves and deletes
/// every message of `id` over implicit TLS into `out`, as an archiver does.
pub fn poplib_fetch_all(
    sb: &Sandbox,
    gw: &gateway::Gateway,
    id: &str,
    password: &str,
    out: &Path,
) -> Output {
    let python = peer("python3", &["python3"]).expect("python3");
    run(Command::new(python)
        .arg(repo().join("tests/python/pop3_fetch.py"))
        .args(["ssl", "localhost"])
        .arg(gw.addr("pop3.listen_tls[0]").port().to_string())
        .arg(&gw.cert)
        .arg(id)
        .arg(sb.password_file(password))
        .arg(out)
        .arg("delete"))
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if std::env::var_os("SEALPOST_KEEP_SANDBOX").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Merges `extra` into `base`: objects key by key, anything else replaced.
pub fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
    match (base, extra) {
        (serde_json::Value::Object(b), serde_json::Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}

/// How long an external program (a client, a peer's tool) may run in a test.
pub const PROGRAM_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `cmd` to its end with `stdin` as input and its output captured, and
/// kills it (failing the test with what it printed) if it takes longer than
/// `timeout`: no test may hang on a program that waits for ever. The output
/// goes through files, not pipes, so that a daemon the program leaves behind
/// (Dovecot, Postfix) cannot keep the test waiting for the pipe to close.
pub fn run_with_timeout(cmd: &mut Command, stdin: &[u8], timeout: Duration) -> Output {
    let program = format!("{:?}", cmd.get_program());
    let mut tag = [0u8; 8];
    getrandom(&mut tag);
    let capture = |what: &str| {
        std::env::temp_dir().join(format!(
            "sealpost-run-{:016x}.{what}",
            u64::from_le_bytes(tag)
        ))
    };
    let (out_path, err_path) = (capture("out"), capture("err"));
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(fs::File::create(&out_path).unwrap())
        .stderr(fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    // The program may exit without reading its input: never wait for that.
    std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{program} did not finish within {timeout:?}; it printed:\n{}\n{}",
                fs::read_to_string(&out_path).unwrap_or_default(),
                fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = Output {
        status,
        stdout: fs::read(&out_path).unwrap_or_default(),
        stderr: fs::read(&err_path).unwrap_or_default(),
    };
    let _ = fs::remove_file(&out_path);
    let _ = fs::remove_file(&err_path);
    output
}

/// [`run_with_timeout`] with no input and [`PROGRAM_TIMEOUT`].
pub fn run(cmd: &mut Command) -> Output {
    run_with_timeout(cmd, b"", PROGRAM_TIMEOUT)
}

/// For fetchmail: `home/out/` and an MDA script that writes each message
/// it is given into the directory named by its argument. (Run fetchmail
/// with `--pidfile` under `home`: as root its lock is otherwise the one
/// global /var/run/fetchmail.pid, and two runs at once refuse each other.) Returns the MDA
/// command (`"<script> <home>/out"`) and the output directory.
pub fn fetchmail_mda(home: &Path) -> (String, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let out_dir = home.join("out");
    fs::create_dir_all(&out_dir).unwrap();
    let mda = home.join("deliver.sh");
    fs::write(&mda, "#!/bin/sh\ncat > \"$1/$(date +%s%N).eml\"\n").unwrap();
    fs::set_permissions(&mda, fs::Permissions::from_mode(0o755)).unwrap();
    (format!("{} {}", mda.display(), out_dir.display()), out_dir)
}

/// Whether the tests run as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Standard error as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Standard output as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Random bytes from the kernel (tests must not depend on the library's own RNG).
pub fn getrandom(buf: &mut [u8]) {
    let mut f = fs::File::open("/dev/urandom").unwrap();
    std::io::Read::read_exact(&mut f, buf).unwrap();
}

/// Polls `done` until it holds, failing the test after 30 s with `what`.
#[track_caller]
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `haystack` contains `needle`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every file below `dir`.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// The message with its first `n` header fields (each with its folded
/// continuation lines) removed: the `Received:` headers added on the way.
pub fn without_first_headers(message: &[u8], n: usize) -> &[u8] {
    let mut rest = message;
    for _ in 0..n {
        assert!(
            rest.starts_with(b"Received: "),
            "expected a Received header, found {:?}",
            String::from_utf8_lossy(&rest[..rest.len().min(60)])
        );
        let mut i = 0;
        loop {
            let end = rest[i..]
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("unterminated header")
                + i
                + 2;
            if !matches!(rest.get(end), Some(b' ' | b'\t')) {
                rest = &rest[end..];
                break;
            }
            i = end;
        }
    }
    rest
}

/// A small tmpfs mounted on a directory, unmounted when dropped.
pub struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("timeout")
            .args(["30", "umount", "-l"])
            .arg(&self.0)
            .status();
    }
}

/// Mounts a tmpfs of `size` (such as `2m`) on `dir`: a disk that fills up.
/// `None` after saying why when that is not possible (not root).
pub fn small_tmpfs(dir: &Path, size: &str) -> Option<Tmpfs> {
    fs::create_dir_all(dir).unwrap();
    if !is_root() {
        return missing_peer("mounting a tmpfs for the full-disk tests needs root");
    }
    let status = run(Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir))
    .status;
    if !status.success() {
        return missing_peer("running as root, and mount -t tmpfs failed");
    }
    Some(Tmpfs(dir.to_path_buf()))
}

impl Sandbox {
    /// A tmpfs of `size` on the data directory, with the disk reserve off:
    /// the full-disk tests fill the disk itself, to test what lies behind
    /// the reserve (`tests/disk_reserve.rs` tests the reserve).
    pub fn full_disk(&self, size: &str) -> Option<Tmpfs> {
        let mounted = small_tmpfs(&self.data(), size)?;
        self.set_config(&["limits", "min_free_bytes"], serde_json::json!(0));
        Some(mounted)
    }

    /// Sets one value in gateway.json (a path of object keys).
    pub fn set_config(&self, path: &[&str], value: serde_json::Value) {
        let mut config: serde_json::Value =
            serde_json::from_slice(&fs::read(self.config()).unwrap()).unwrap();
        let mut at = &mut config;
        for key in &path[..path.len() - 1] {
            if at.get(*key).is_none() {
                at[*key] = serde_json::json!({});
            }
            at = &mut at[*key];
        }
        at[path[path.len() - 1]] = value;
        fs::write(self.config(), serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    }
}

/// Waits (up to 10 s) for a daemon to write its pid file; the pid, if it did.
pub fn daemon_pid(pid_file: &Path) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(pid) = fs::read_to_string(pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return Some(pid);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends SIGTERM to a daemon started by a test (not waited for: every
/// instance has its own directory and ports).
pub fn terminate(pid: Option<i32>) {
    if let Some(pid) = pid {
        // SAFETY: a signal to a pid our own test daemon wrote.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
}
