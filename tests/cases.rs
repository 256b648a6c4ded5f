//! The bad-input table as data (issue #12): every `tests/cases/*.tk` file is a list of cases,
//! one block each, blank-line separated, `#` lines are comments:
//!
//! ```text
//! id: up-fifo
//! run: $TK uprobe $FX/fifo:main
//! exit: 2
//! stderr: is not a regular file
//! within: 5
//! ```
//!
//! `run:` is one bash command line (`bash -c`), with TK (the tracekit binary), FX (the fixtures
//! below), NOBODY (`setpriv` to uid/gid 65534), DEADPID (a pid that has exited) and LONG (100000
//! times `a`) in its environment. `exit:` is required; `stdout:`/`stderr:` lines are substrings
//! that must all appear, `!stdout:`/`!stderr:` substrings that must not; every case also asserts
//! that stderr has no `panicked`. `within:` bounds the case in seconds (default 20): past it the
//! whole process group is killed and the case fails.
//!
//! Every case of every file runs (a few at a time), and all failures are reported together, so
//! one run shows the whole table's state. `TRACEKIT_CASES=id1,id2-prefix*` runs only those ids.
//!
//! Host-only: the cases are about argument checking and messages, which do not depend on the
//! kernel version, so this suite is not in tests/vm_matrix.rs's SUITES.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::io::Read;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

const DEFAULT_WITHIN: f64 = 20.0;

#[derive(Debug, Clone)]
struct Case {
    /// `file:line` of the case's first line.
    at: String,
    id: String,
    run: String,
    exit: i32,
    stdout: Vec<String>,
    stderr: Vec<String>,
    not_stdout: Vec<String>,
    not_stderr: Vec<String>,
    within: f64,
}

/// Parses one `.tk` file; errors name the file and line.
fn parse(file: &Path, text: &str) -> (Vec<Case>, Vec<String>) {
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut cases = Vec::new();
    let mut errors = Vec::new();
    let mut block: Vec<(usize, &str)> = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate().chain(std::iter::once((lines.len(), &""))) {
        let line = line.trim_end();
        if line.trim().is_empty() {
            if !block.is_empty() {
                match parse_block(&name, &block) {
                    Ok(c) => cases.push(c),
                    Err(e) => errors.push(e),
                }
                block.clear();
            }
        } else if !line.trim_start().starts_with('#') {
            block.push((i + 1, line));
        }
    }
    (cases, errors)
}

fn parse_block(file: &str, block: &[(usize, &str)]) -> Result<Case, String> {
    let at = format!("{file}:{}", block[0].0);
    let mut fields: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for &(n, line) in block {
        let Some((key, value)) = line.split_once(':') else {
            return Err(format!("{file}:{n}: expected `key: value`, got {line:?}"));
        };
        let key = key.trim();
        if !matches!(key, "id" | "run" | "exit" | "stdout" | "stderr" | "!stdout" | "!stderr" | "within") {
            return Err(format!(
                "{file}:{n}: unknown key {key:?} (id, run, exit, stdout, stderr, !stdout, !stderr, within)"
            ));
        }
        let value = value.strip_prefix(' ').unwrap_or(value).to_string();
        if value.is_empty() {
            return Err(format!("{file}:{n}: empty value for {key:?}"));
        }
        fields.entry(key).or_default().push(value);
    }
    let one = |key: &str| -> Result<Option<String>, String> {
        match fields.get(key).map(Vec::as_slice) {
            None => Ok(None),
            Some([v]) => Ok(Some(v.clone())),
            Some(_) => Err(format!("{at}: {key:?} given more than once")),
        }
    };
    let id = one("id")?.ok_or_else(|| format!("{at}: a case without `id:`"))?;
    let run = one("run")?.ok_or_else(|| format!("{at}: case {id} has no `run:`"))?;
    let exit = one("exit")?.ok_or_else(|| format!("{at}: case {id} has no `exit:`"))?;
    let exit = exit.trim().parse().map_err(|_| format!("{at}: case {id}: `exit:` {exit:?} is not a number"))?;
    let within = match one("within")? {
        None => DEFAULT_WITHIN,
        Some(w) => w
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|w| *w > 0.0 && w.is_finite())
            .ok_or_else(|| format!("{at}: case {id}: `within:` {w:?} is not a positive number of seconds"))?,
    };
    let many = |key: &str| fields.get(key).cloned().unwrap_or_default();
    Ok(Case {
        at,
        id,
        run,
        exit,
        stdout: many("stdout"),
        stderr: many("stderr"),
        not_stdout: many("!stdout"),
        not_stderr: many("!stderr"),
        within,
    })
}

/// The fixtures of HELPERS.md's table, in a directory others can read (the NOBODY cases).
fn make_fixtures(dir: &Path) -> std::io::Result<()> {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    nix_mkfifo(&dir.join("fifo"))?;
    std::fs::write(dir.join("empty"), b"")?;
    std::fs::write(dir.join("notelf.txt"), b"this is a text file, not an ELF object\n")?;
    // Deterministic noise (xorshift), so a failure reproduces; starts with neither the ELF nor
    // the BTF magic.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let garbage: Vec<u8> = (0..4096)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if i < 2 { b'Z' } else { x as u8 }
        })
        .collect();
    std::fs::write(dir.join("garbage.btf"), garbage)?;
    // /bin/true claiming to be aarch64: e_machine is the u16 at offset 18 (EM_AARCH64 = 183).
    let mut elf = std::fs::read("/bin/true")?;
    elf[18..20].copy_from_slice(&183u16.to_le_bytes());
    std::fs::write(dir.join("wrongarch"), elf)?;
    std::fs::set_permissions(dir.join("wrongarch"), std::fs::Permissions::from_mode(0o755))?;
    symlink("loop", dir.join("loop"))?;
    std::fs::copy("/bin/bash", dir.join("bashcopy"))?;
    Ok(())
}

fn nix_mkfifo(path: &Path) -> std::io::Result<()> {
    let status = Command::new("mkfifo").arg(path).status()?;
    if status.success() { Ok(()) } else { Err(std::io::Error::other(format!("mkfifo {}: {status}", path.display()))) }
}

/// A pid that existed and has exited (and been reaped).
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().expect("spawn true");
    let pid = child.id();
    child.wait().expect("wait true");
    pid
}

struct Outcome {
    status: Option<i32>,
    signal: Option<i32>,
    timed_out: bool,
    /// A process that left the case's process group (setsid) still held stdout or stderr.
    escaped: bool,
    elapsed: Duration,
    stdout: String,
    stderr: String,
}

/// Reads a pipe to its end in a thread; the output arrives on the channel.
fn reader(mut r: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

/// A pipe's text once its writers are gone; a process that left the case's process group
/// (setsid) and still holds it open is reported instead of waited for.
fn text_of(rx: &mpsc::Receiver<Vec<u8>>) -> Option<String> {
    rx.recv_timeout(Duration::from_secs(2)).ok().map(|buf| String::from_utf8_lossy(&buf).into_owned())
}

fn kill_group(pgid: i32) {
    // SAFETY: kill(2) with a negative pid signals the process group we created for this case
    // (process_group(0) below), never anything else; errors (group already gone) are ignored.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
}

fn run_case(case: &Case, env: &[(&str, String)]) -> Outcome {
    let start = Instant::now();
    let mut cmd = Command::new("bash");
    cmd.arg("-c").arg(&case.run).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    // Its own process group: a timeout kills the command line and everything it started.
    cmd.process_group(0);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Outcome {
                status: None,
                signal: None,
                timed_out: false,
                escaped: false,
                elapsed: start.elapsed(),
                stdout: String::new(),
                stderr: format!("(runner: cannot start bash: {e})"),
            };
        }
    };
    let pgid = child.id() as i32;
    let out = reader(child.stdout.take().expect("piped stdout"));
    let err = reader(child.stderr.take().expect("piped stderr"));
    let limit = Duration::from_secs_f64(case.within);
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if start.elapsed() > limit => {
                timed_out = true;
                kill_group(pgid);
                break child.wait().ok();
            }
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(_) => break None,
        }
    };
    let elapsed = start.elapsed();
    // Whatever the command line left running (it holds the pipes open) goes too.
    kill_group(pgid);
    use std::os::unix::process::ExitStatusExt;
    let (stdout, stderr) = (text_of(&out), text_of(&err));
    Outcome {
        status: status.and_then(|s| s.code()),
        signal: status.and_then(|s| s.signal()),
        timed_out,
        elapsed,
        escaped: stdout.is_none() || stderr.is_none(),
        stdout: stdout.unwrap_or_default(),
        stderr: stderr.unwrap_or_default(),
    }
}

/// What is wrong with one case's outcome (empty: it passed).
fn check(case: &Case, o: &Outcome) -> Vec<String> {
    let mut bad = Vec::new();
    if o.timed_out {
        bad.push(format!("did not finish within {} s (process group killed)", case.within));
    } else if o.status != Some(case.exit) {
        match (o.status, o.signal) {
            (Some(s), _) => bad.push(format!("exit {s}, expected {}", case.exit)),
            (None, Some(sig)) => bad.push(format!("killed by signal {sig}, expected exit {}", case.exit)),
            _ => bad.push(format!("no exit status, expected exit {}", case.exit)),
        }
    }
    if o.escaped {
        bad.push("left a process outside its process group holding stdout or stderr open".to_owned());
    }
    for s in &case.stderr {
        if !o.stderr.contains(s.as_str()) {
            bad.push(format!("stderr lacks {s:?}"));
        }
    }
    for s in &case.stdout {
        if !o.stdout.contains(s.as_str()) {
            bad.push(format!("stdout lacks {s:?}"));
        }
    }
    for s in case.not_stderr.iter().map(String::as_str).chain(["panicked"]) {
        if o.stderr.contains(s) {
            bad.push(format!("stderr has {s:?}"));
        }
    }
    for s in &case.not_stdout {
        if o.stdout.contains(s.as_str()) {
            bad.push(format!("stdout has {s:?}"));
        }
    }
    bad
}

fn excerpt(s: &str) -> String {
    const MAX: usize = 1500;
    let s = s.trim_end();
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &s[..end], s.len())
}

/// The failure report, printed as is by the harness (a test returning `Err` prints its Debug).
struct Report(String);

impl fmt::Debug for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn selected(id: &str, filter: &Option<Vec<String>>) -> bool {
    let Some(pats) = filter else { return true };
    pats.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => id.starts_with(prefix),
        None => id == p,
    })
}

fn case_files() -> Result<Vec<PathBuf>, Report> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| Report(format!("{}: {e}", dir.display())))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "tk"))
        .collect();
    files.sort();
    Ok(files)
}

#[test]
fn bad_input_table() -> Result<(), Report> {
    if !common::require_root("bad_input_table") {
        return Ok(());
    }
    let mut cases = Vec::new();
    let mut problems = Vec::new();
    let files = case_files()?;
    for file in &files {
        match std::fs::read_to_string(file) {
            Ok(text) => {
                let (c, e) = parse(file, &text);
                cases.extend(c);
                problems.extend(e);
            }
            Err(e) => problems.push(format!("{}: {e}", file.display())),
        }
    }
    let mut seen = HashSet::new();
    for c in &cases {
        if !seen.insert(c.id.clone()) {
            problems.push(format!("{}: duplicate id {}", c.at, c.id));
        }
    }
    let filter = std::env::var("TRACEKIT_CASES")
        .ok()
        .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect::<Vec<_>>());
    cases.retain(|c| selected(&c.id, &filter));
    if cases.is_empty() && problems.is_empty() {
        return Err(Report(format!("no case selected (TRACEKIT_CASES={filter:?})")));
    }

    let fx = tempfile::Builder::new()
        .prefix("tracekit-fx-")
        .tempdir()
        .map_err(|e| Report(format!("cannot make the fixtures dir: {e}")))?;
    make_fixtures(fx.path()).map_err(|e| Report(format!("making fixtures in {}: {e}", fx.path().display())))?;
    let env: Vec<(&str, String)> = vec![
        ("TK", common::BIN.to_string()),
        ("FX", fx.path().display().to_string()),
        ("NOBODY", "setpriv --reuid=65534 --regid=65534 --clear-groups".to_string()),
        ("DEADPID", dead_pid().to_string()),
        ("LONG", "a".repeat(100_000)),
    ];

    // A few at a time: most cases are short and mostly wait (-d 0.3), but the host is shared.
    let jobs: usize = std::env::var("TRACEKIT_CASES_JOBS").ok().and_then(|j| j.parse().ok()).unwrap_or(4).max(1);
    let queue = Mutex::new(cases.iter().collect::<Vec<_>>().into_iter());
    let results = Mutex::new(Vec::new());
    thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                loop {
                    let Some(case) = queue.lock().unwrap().next() else { break };
                    let o = run_case(case, &env);
                    let bad = check(case, &o);
                    results.lock().unwrap().push((case, o, bad));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by(|a, b| a.0.at.cmp(&b.0.at));

    let mut report = String::new();
    let mut failed = 0;
    for (case, o, bad) in &results {
        if bad.is_empty() {
            continue;
        }
        failed += 1;
        report.push_str(&format!(
            "\n--- {} ({}): {}\n    run: {}\n    took {:.2} s, exit {}\n",
            case.id,
            case.at,
            bad.join("; "),
            case.run,
            o.elapsed.as_secs_f64(),
            o.status.map_or_else(|| format!("signal {:?}", o.signal), |s| s.to_string()),
        ));
        for (name, text) in [("stderr", &o.stderr), ("stdout", &o.stdout)] {
            if !text.trim().is_empty() {
                report.push_str(&format!("    {name}:\n"));
                for line in excerpt(text).lines() {
                    report.push_str(&format!("      | {line}\n"));
                }
            }
        }
    }
    let slowest = results.iter().max_by(|a, b| a.1.elapsed.cmp(&b.1.elapsed));
    let summary = format!(
        "{} cases from {} files: {} passed, {} failed{}{}",
        results.len(),
        files.len(),
        results.len() - failed,
        failed,
        if problems.is_empty() { String::new() } else { format!(", {} table errors", problems.len()) },
        slowest.map_or_else(String::new, |(c, o, _)| format!("; slowest {} {:.2} s", c.id, o.elapsed.as_secs_f64())),
    );
    // Passing runs also say what they covered (the harness hides eprintln! of passing tests).
    let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("cases: {summary}\n").as_bytes());
    if failed == 0 && problems.is_empty() {
        return Ok(());
    }
    let mut text = String::new();
    for p in &problems {
        text.push_str(&format!("table error: {p}\n"));
    }
    text.push_str(&report);
    text.push_str(&format!("\n{summary}\n"));
    Err(Report(text))
}
