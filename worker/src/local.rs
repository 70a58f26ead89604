//! The local process handler: one command per operation type.
//!
//! Contract with the process:
//! - stdin: the resolved payload as one JSON document, then end of file; the same JSON is in
//!   the file named by `POP_PAYLOAD_FILE`; `POP_AGENDA_ID`, `POP_OPERATION_NAME` and
//!   `POP_OPERATION_TYPE` name the work;
//! - stdout: progress as JSON lines — an object whose keys are only `percent` and/or
//!   `message` — and the result as a final JSON document (see [`StdoutResult`]): a line
//!   `{"result": …}` (the last one wins; `percent`/`message` may sit beside `result`), else
//!   the stdout after the last progress line when it ends with one JSON document (a
//!   pretty-printed one may span lines; log lines may come before it), else the last stdout
//!   line that parses as JSON and is not a progress line, else `null`. Every line that is not
//!   progress or a `{"result": …}` line is also log text;
//! - exit status 0 is success; a non-zero exit, a signal, or no output on stdout/stderr for
//!   `timeout` (the process is then killed) is a failure whose diagnostic payload holds the
//!   last log lines (stdout and stderr).

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;

use crate::handler::{Failure, Handler, OperationContext, Progress, ProgressSink};

/// How many log lines a failure carries.
pub const LOG_TAIL_LINES: usize = 20;
/// Longest log line kept (in bytes); longer lines are cut.
const MAX_LINE: usize = 4096;
/// Most stdout kept after the last progress line to find a multi-line final document (bytes);
/// past it only `{"result": …}` lines and single JSON lines count.
const MAX_DOCUMENT: usize = 8 << 20;

/// One operation type's command.
#[derive(Debug, Clone)]
pub struct LocalProcess {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub working_dir: Option<PathBuf>,
    /// A process that prints nothing for this long is killed and fails.
    pub timeout: Duration,
}

enum Line {
    Out(ReadLine),
    Err(ReadLine),
}

/// Removes the payload file when the run ends, however it ends.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes a payload file only its owner may read (payloads carry customers' data, often
/// credentials; the temporary directory is shared), failing rather than reusing a file
/// someone else placed at that name.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)
}

/// The operation's payload in a new private file of the temporary directory ([`write_private`]).
/// Its name is random, so a file left by a killed worker whose process id came round again, or
/// one placed there on purpose, never fails the operation (`create_new` refuses the name: a
/// new one is drawn); only a directory that refuses every name does.
fn payload_file(payload: &[u8]) -> Result<TempFile, Failure> {
    let mut last = None;
    for _ in 0..PAYLOAD_FILE_TRIES {
        let path = std::env::temp_dir().join(format!(
            "pop-payload-{}-{}.json",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        match write_private(&path, payload) {
            Ok(()) => return Ok(TempFile(path)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some((path, e)),
            Err(e) => {
                // A file half written is removed (`create_new` made it ours).
                drop(TempFile(path.clone()));
                return Err(Failure::new(format!("writing {}: {e}", path.display())));
            }
        }
    }
    Err(match last {
        Some((path, e)) => Failure::new(format!("writing {}: {e}", path.display())),
        None => Failure::new("writing the payload file: no name was tried"),
    })
}

/// New names [`payload_file`] draws before it gives up.
const PAYLOAD_FILE_TRIES: usize = 8;

/// Most characters of a handler's stderr line a failure's message quotes.
const MAX_REASON_CHARS: usize = 300;

/// `text`, at most `max` characters (an ellipsis marks a cut).
fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

fn cut(line: String) -> String {
    cut_at(line, MAX_LINE)
}

/// `line`, at most `max` bytes, cut back to a character's boundary.
fn cut_at(mut line: String, max: usize) -> String {
    if line.len() > max {
        let mut end = max;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
    }
    line
}

/// What one stdout line was, for [`StdoutResult::line`].
#[derive(Debug, Clone, PartialEq)]
pub enum StdoutLine {
    /// A progress report.
    Progress(Progress),
    /// A `{"result": …}` line.
    Result,
    /// Anything else: log text (possibly part of, or all of, the final document).
    Log,
}

/// Finds an operation's output in a local process's stdout (the contract in the module docs).
#[derive(Debug, Default)]
pub struct StdoutResult {
    /// The value of the last `{"result": …}` line.
    explicit: Option<Value>,
    /// The last line that parsed as JSON and was neither progress nor a result line.
    last_json: Option<Value>,
    /// The lines since the last progress line (while they fit in [`MAX_DOCUMENT`]).
    trailing: Vec<String>,
    trailing_bytes: usize,
    overflowed: bool,
    /// The size of a JSON-looking line cut by the reader since the last progress or result
    /// line: the result the handler meant, too large to take.
    cut_json: Option<usize>,
    /// The last stdout line, when it was a progress line with a `message` (a handler that
    /// meant `{"message": "done"}` as its result: read as progress, and the result is null).
    last_progress_message: Option<String>,
}

fn is_progress_key(key: &str) -> bool {
    key == "percent" || key == "message"
}

impl StdoutResult {
    /// Takes one stdout line and says what it was.
    pub fn line(&mut self, line: &str) -> StdoutLine {
        if !line.trim().is_empty() {
            self.last_progress_message = None;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(mut object)) if object.contains_key("result") => {
                if object.keys().all(|k| k == "result" || is_progress_key(k)) {
                    self.explicit = object.remove("result");
                    return StdoutLine::Result;
                }
                self.last_json = Some(Value::Object(object));
            }
            Ok(Value::Object(object))
                if !object.is_empty() && object.keys().all(|k| is_progress_key(k)) =>
            {
                self.last_progress_message =
                    object.contains_key("message").then(|| line.trim().to_string());
                self.trailing.clear();
                self.trailing_bytes = 0;
                self.overflowed = false;
                self.cut_json = None;
                return StdoutLine::Progress(Progress {
                    percent: object.get("percent").and_then(Value::as_f64),
                    message: object.get("message").and_then(Value::as_str).map(str::to_string),
                });
            }
            Ok(value) => {
                self.last_json = Some(value);
                self.cut_json = None;
            }
            Err(_) => {}
        }
        if !self.overflowed {
            self.trailing_bytes += line.len() + 1;
            if self.trailing_bytes > MAX_DOCUMENT {
                self.overflowed = true;
                self.trailing = Vec::new();
            } else {
                self.trailing.push(line.to_string());
            }
        }
        StdoutLine::Log
    }

    /// Takes a line the reader cut (`text`: its start and a note; `size`: its bytes): log
    /// text, and when it looked like JSON, the result the handler meant, too large to take.
    fn cut(&mut self, text: &str, size: usize) {
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).take(12).collect();
        if compact.starts_with("{\"result\"") {
            // A result line, the last: no earlier one stands for it.
            self.explicit = None;
            self.cut_json = Some(size);
        } else if text.starts_with('{') || text.starts_with('[') {
            self.cut_json = Some(size);
        }
        self.overflowed = true;
        self.trailing = Vec::new();
    }

    /// The output, once stdout has ended; `Err(size)` when the last thing that looked like
    /// the result was a JSON line too large to read.
    pub fn finish(mut self) -> Result<Value, usize> {
        let last_progress_message = self.last_progress_message.take();
        let result = self.result()?;
        if result.is_null()
            && let Some(line) = last_progress_message
        {
            // Said, not guessed at: the contract reads it as progress (newcomer20: the result
            // was dropped without a word, and a later `@<op.out::/message>` failed).
            tracing::info!(
                last_line = %pop_domain::text::log_field(&line),
                "the handler ended without a result: its last stdout line has only \
                 percent/message keys, which is a progress line; print {{\"result\": …}} to \
                 return it as the result"
            );
        }
        Ok(result)
    }

    fn result(self) -> Result<Value, usize> {
        if let Some(result) = self.explicit {
            return Ok(result);
        }
        if let Some(size) = self.cut_json {
            return Err(size);
        }
        if !self.overflowed {
            // The earliest unindented `{` / `[` line from which the rest parses as one document.
            for start in 0..self.trailing.len() {
                let first = &self.trailing[start];
                if !(first.starts_with('{') || first.starts_with('[')) {
                    continue;
                }
                if let Ok(value) = serde_json::from_str::<Value>(&self.trailing[start..].join("\n"))
                {
                    return Ok(value);
                }
            }
        }
        Ok(self.last_json.unwrap_or(Value::Null))
    }
}

/// A line a handler printed, as read.
#[derive(Debug, PartialEq)]
struct ReadLine {
    text: String,
    /// The line's whole size in bytes when it was longer than the reader takes: `text` is
    /// then its start and a note.
    cut: Option<usize>,
}

/// A handler's next output line, its bytes that are not UTF-8 replaced (U+FFFD); `None` at the
/// end of the stream. Not `lines()`, which ends at the first line that is not UTF-8 (ops3am18:
/// a Latin-1 file name in a log line stopped the reading, and the handler died of SIGPIPE at
/// its next write, its real failure lost). At most `max` bytes of a line (its end of line not
/// counted) are kept: the rest, up to its end, is read and dropped, and the line is said to be
/// cut (ops3am23: one 1 GB line, a handler printing a binary file, took the worker to 2.5 GB
/// resident; in a pod with a memory limit it would have been killed with every agenda it ran).
/// A CR ends a line too, as on a terminal (ops3am24: a progress bar redrawn with `\r` every
/// half second was killed as silent, its output never a whole line); CR LF is one end, also
/// split across two reads (`after_cr`, kept by the caller between lines).
async fn next_line<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
    after_cr: &mut bool,
) -> Option<ReadLine> {
    let mut bytes = Vec::new();
    // `read`: the line's own bytes (without its newline); `any`: whether there was a line.
    let (mut read, mut over, mut any) = (0usize, false, false);
    loop {
        let Ok(buf) = reader.fill_buf().await else { return None };
        if buf.is_empty() {
            break;
        }
        if std::mem::take(after_cr) && buf[0] == b'\n' {
            // The LF of a CR LF whose CR ended the last line.
            reader.consume(1);
            continue;
        }
        let end = buf.iter().position(|b| *b == b'\n' || *b == b'\r');
        // The line's own bytes in this chunk (without its end), and what its end takes.
        let (own, taken) = match end {
            Some(i) if buf[i] == b'\r' && buf.get(i + 1) == Some(&b'\n') => (&buf[..i], i + 2),
            Some(i) => {
                *after_cr = buf[i] == b'\r' && i + 1 == buf.len();
                (&buf[..i], i + 1)
            }
            None => (buf, buf.len()),
        };
        let room = max.saturating_sub(bytes.len());
        if own.len() > room {
            over = true;
        }
        bytes.extend_from_slice(&own[..own.len().min(room)]);
        read += own.len();
        any = true;
        reader.consume(taken);
        if end.is_some() {
            break;
        }
    }
    if !any {
        return None;
    }
    if over {
        // Too long to be a result or progress line: log text, its start and its size.
        let start = cut_at(String::from_utf8_lossy(&bytes).into_owned(), CUT_LINE_START.min(max));
        let text = format!("{start}… [a line of {read} bytes, cut: at most {max} are read]");
        return Some(ReadLine { text, cut: Some(read) });
    }
    Some(ReadLine { text: String::from_utf8_lossy(&bytes).into_owned(), cut: None })
}

/// Bytes of handler output lines waiting to be read by the run at most (per handler run).
const QUEUED_BYTES: usize = 2 * MAX_DOCUMENT;

/// A line on its way to the run, holding its bytes' room in the queue until taken off.
type Queued = (Line, tokio::sync::OwnedSemaphorePermit);

/// Puts `line` on the run's queue once it has room for its bytes; `false` when the run is gone.
async fn queue(tx: &mpsc::Sender<Queued>, room: &Arc<tokio::sync::Semaphore>, line: Line) -> bool {
    let bytes = match &line {
        Line::Out(l) | Line::Err(l) => l.text.len().clamp(1, QUEUED_BYTES),
    };
    let Ok(permit) = Arc::clone(room).acquire_many_owned(u32::try_from(bytes).unwrap_or(1)).await
    else {
        return false;
    };
    tx.send((line, permit)).await.is_ok()
}

/// Bytes of an over-long line's start said in its place (within [`MAX_LINE`] with the note:
/// a log line keeps at most that).
const CUT_LINE_START: usize = MAX_LINE - 128;

#[async_trait]
impl Handler for LocalProcess {
    async fn run(&self, ctx: OperationContext, progress: ProgressSink) -> Result<Value, Failure> {
        let payload = serde_json::to_vec(&ctx.payload)
            .map_err(|e| Failure::new(format!("encoding the payload: {e}")))?;
        let file = payload_file(&payload)?;

        let mark = uuid::Uuid::new_v4().simple().to_string();
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .envs(&self.env)
            .env("POP_PAYLOAD_FILE", &file.0)
            .env("POP_AGENDA_ID", &ctx.agenda_id)
            .env("POP_OPERATION_NAME", &ctx.operation_name)
            .env("POP_OPERATION_TYPE", &ctx.operation_type)
            // Inherited by whatever the handler starts, in whatever group or session: how its
            // processes are found once the handler is gone (ops3am21: `nohup`, `setsid` and
            // `set -m` children outlived a worker stopped by its group's signal).
            .env(RUN_MARK, &mark)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // In the worker's own process group, on purpose: a signal to the whole group (ctrl-c,
        // `kill -- -PGID`, a supervisor's group kill) reaches the handlers too, so none
        // outlives its worker to run work already handed to the next one (ops3am8: in groups
        // of their own they did, as orphans). A handler stopped that way counts as handed
        // back, not failed (`Failure::interrupted`).
        if let Some(dir) = &self.working_dir {
            cmd.current_dir(dir);
        }
        let mut child = cmd.spawn().map_err(|e| {
            let failure = Failure::new(format!("starting {}: {e}", self.program.display()));
            // A program that is not there (or may not run) is not there on a retry either.
            match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                    failure.not_retryable()
                }
                _ => failure,
            }
        })?;
        // Dropped before `child` (declared after it): a cancel or a stop that drops this
        // future kills the handler's own children first, then `kill_on_drop` the handler.
        let mut descendants = KillDescendants(child.id(), Some(mark.clone()));
        let program = self.program.display().to_string();
        // Lines of both streams arrive on one channel, so the no-output timer sees either.
        // The lines waiting in it hold at most QUEUED_BYTES between them (ops3am24: 64 queued
        // lines of 8 MiB took a worker to 280 MB per handler).
        let (tx, mut rx) = mpsc::channel::<Queued>(64);
        let room = Arc::new(tokio::sync::Semaphore::new(QUEUED_BYTES));
        if let Some(stdout) = child.stdout.take() {
            let (tx, room) = (tx.clone(), Arc::clone(&room));
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout);
                let mut after_cr = false;
                // A result line may be as long as a multi-line result document.
                while let Some(line) = next_line(&mut lines, MAX_DOCUMENT, &mut after_cr).await {
                    if !queue(&tx, &room, Line::Out(line)).await {
                        break;
                    }
                }
            });
        }
        if let Some(stderr) = child.stderr.take() {
            let (tx, room) = (tx.clone(), Arc::clone(&room));
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr);
                let mut after_cr = false;
                while let Some(line) = next_line(&mut lines, MAX_LINE, &mut after_cr).await {
                    if !queue(&tx, &room, Line::Err(line)).await {
                        break;
                    }
                }
            });
        }
        drop(tx);
        if let Some(mut stdin) = child.stdin.take() {
            // A process that does not read stdin closes it early: not an error.
            let _ = stdin.write_all(&payload).await;
            let _ = stdin.shutdown().await;
        }

        let mut tail: VecDeque<String> = VecDeque::with_capacity(LOG_TAIL_LINES);
        // The last non-blank stderr line, kept apart (a stdout line may start "stderr: " too).
        let mut last_stderr: Option<String> = None;
        let mut keep = |line: String| {
            if tail.len() == LOG_TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(cut(line));
        };
        let mut stdout = StdoutResult::default();
        loop {
            // Taken off the queue: its room is free again.
            let next = async { rx.recv().await.map(|(line, _room)| line) };
            match tokio::time::timeout(self.timeout, next).await {
                Ok(Some(Line::Out(ReadLine { text, cut: Some(size) }))) => {
                    stdout.cut(&text, size);
                    keep(text);
                }
                Ok(Some(Line::Out(ReadLine { text: line, cut: None }))) => match stdout.line(&line)
                {
                    StdoutLine::Progress(p) => progress(p),
                    StdoutLine::Result => {}
                    StdoutLine::Log => keep(line),
                },
                Ok(Some(Line::Err(ReadLine { text: line, .. }))) => {
                    let text = format!("stderr: {line}");
                    if !line.trim().is_empty() {
                        // Shortened once, when it is quoted; not per line of a chatty handler.
                        last_stderr = Some(line);
                    }
                    keep(text)
                }
                Ok(None) => break,
                Err(_) => {
                    descendants.kill_now();
                    let _ = child.kill().await;
                    let lines: Vec<String> = tail.into_iter().collect();
                    return Err(Failure::with_payload(
                        format!("{program} printed nothing for {:?} and was killed", self.timeout),
                        json!({"log": lines}),
                    ));
                }
            }
        }
        // Both streams closed: the process is exiting (or handed them to a child of its own).
        let status = match tokio::time::timeout(self.timeout, child.wait()).await {
            Ok(Ok(status)) => {
                descendants.disarm();
                status
            }
            Ok(Err(e)) => return Err(Failure::new(format!("waiting for {program}: {e}"))),
            Err(_) => {
                descendants.kill_now();
                let _ = child.kill().await;
                return Err(Failure::new(format!(
                    "{program} closed its output but did not exit within {:?}",
                    self.timeout
                )));
            }
        };
        if status.success() {
            stdout.finish().map_err(|size| {
                // (review-s45: cut to log text, it left the result null and the run succeeded.)
                Failure::with_payload(
                    format!(
                        "{program} printed a JSON line of {size} bytes and no result line after \
                         it: a line is read at most {MAX_DOCUMENT} bytes deep, so a result that \
                         large is not taken (the server keeps at most its --max-payload-bytes)"
                    ),
                    json!({"log": tail.into_iter().collect::<Vec<_>>()}),
                )
                .not_retryable()
            })
        } else {
            let lines: Vec<String> = tail.into_iter().collect();
            // The handler's own last word on stderr is usually the reason: said in the message
            // itself, which `pop watch`, `pop progress` and the worker's log show (it was only
            // in the payload's log, seen with --json or on the dashboard).
            let why = last_stderr
                .map(|l| format!(": {}", shorten(l.trim(), MAX_REASON_CHARS)))
                .unwrap_or_default();
            let failure = Failure::with_payload(
                format!("{program} failed: {status}{why}"),
                json!({"log": lines, "exitCode": status.code()}),
            );
            // Stopped from outside (a service manager stops the worker's whole control group).
            #[cfg(unix)]
            {
                use std::os::unix::process::ExitStatusExt;
                // By the signal itself, or by a handler that exits 128 + the signal (a shell's
                // trap, the JVM).
                if matches!(status.signal(), Some(1 | 2 | 15))
                    || matches!(status.code(), Some(129 | 130 | 143))
                {
                    // What it started and the signal did not stop goes with it.
                    kill_run(None, Some(&mark));
                    return Err(failure.interrupted());
                }
            }
            Err(failure)
        }
    }
}

/// The environment variable that marks every process of one handler's run.
pub(crate) const RUN_MARK: &str = "POP_HANDLER_RUN";

/// On drop, [`kill_run`] of the handler whose pid it holds (and the processes that
/// carry its run's mark), unless it was disarmed: once the handler was reaped its pid may
/// name another process.
pub(crate) struct KillDescendants(pub(crate) Option<u32>, pub(crate) Option<String>);

impl KillDescendants {
    /// Kills them now (the handler is about to be killed) and disarms.
    pub(crate) fn kill_now(&mut self) {
        kill_run(self.0.take(), self.1.take().as_deref());
    }

    /// The program was reaped (its pid may name another process now) but its output may
    /// still be held open: only what carries the run's mark is looked for on drop.
    pub(crate) fn reaped(&mut self) {
        self.0 = None;
    }

    /// The handler exited and was reaped: nothing to do on drop.
    pub(crate) fn disarm(&mut self) {
        self.0 = None;
        self.1 = None;
    }
}

impl Drop for KillDescendants {
    fn drop(&mut self) {
        kill_run(self.0.take(), self.1.take().as_deref());
    }
}

/// Sends `sig` to process `p`, if it still is there.
fn signal(p: u32, sig: rustix::process::Signal) {
    if let Some(p) = i32::try_from(p).ok().and_then(rustix::process::Pid::from_raw) {
        let _ = rustix::process::kill_process(p, sig);
    }
}

/// Kills a handler's run: every process descended from `pid` (a handler's own children: a
/// wrapper script's encoder), found through `/proc` while they are still its descendants, i.e.
/// before the handler itself is killed (by the caller), and every process that carries the
/// run's `mark` (what left the tree: a double fork, `setsid`, an orphan; with no `pid`, the
/// handler is gone and the mark alone finds them). Killed alone, a handler's children went on
/// as orphans and did their side effects after the operation was failed for silence,
/// cancelled, or retried (ops3am20, ops3am21). The handler and every process found are stopped
/// first, and looked for again until a look finds no new one: a stopped process starts
/// nothing, so a script cannot start its next step between the kills (review-s43: 6 of 12
/// did). Nothing where there is no `/proc`; a process that exited meanwhile is skipped.
pub(crate) fn kill_run(pid: Option<u32>, mark: Option<&str>) {
    use rustix::process::Signal;
    if pid.is_none() && mark.is_none() {
        return;
    }
    if let Some(pid) = pid {
        signal(pid, Signal::STOP);
    }
    let mut found: Vec<u32> = Vec::new();
    for _ in 0..MAX_FREEZE_ROUNDS {
        let new: Vec<u32> = run_processes(pid, mark)
            .into_iter()
            .filter(|p| Some(*p) != pid && !found.contains(p))
            .collect();
        if new.is_empty() {
            break;
        }
        for &p in &new {
            signal(p, Signal::STOP);
        }
        found.extend(new);
    }
    for p in found {
        signal(p, Signal::KILL);
    }
}

/// Looks for new processes of a run at most this many times while freezing it.
const MAX_FREEZE_ROUNDS: usize = 16;

/// The processes of a run, in one pass over `/proc`: those descended from `pid`, by the
/// parent each one's `stat` names, and those whose environment carries `RUN_MARK=<mark>`
/// (readable for this user's own).
fn run_processes(pid: Option<u32>, mark: Option<&str>) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let wanted = mark.map(|mark| format!("{RUN_MARK}={mark}"));
    let mut parents: Vec<(u32, u32)> = Vec::new();
    let mut marked: Vec<u32> = Vec::new();
    for entry in entries.flatten() {
        let Some(p) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid.is_some() {
            // `pid (comm) state ppid …`: the name may hold spaces and parentheses.
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            let parent = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1));
            if let Some(parent) = parent.and_then(|p| p.parse::<u32>().ok()) {
                parents.push((p, parent));
            }
        }
        if let Some(wanted) = &wanted
            && let Ok(environ) = std::fs::read(entry.path().join("environ"))
            && environ.split(|b| *b == 0).any(|var| var == wanted.as_bytes())
        {
            marked.push(p);
        }
    }
    let mut tree: Vec<u32> = pid.into_iter().collect();
    let mut i = 0;
    while let Some(&parent) = tree.get(i) {
        for &(p, of) in &parents {
            if of == parent && !tree.contains(&p) {
                tree.push(p);
            }
        }
        i += 1;
    }
    for p in marked {
        if !tree.contains(&p) {
            tree.push(p);
        }
    }
    tree
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[cfg(unix)]
    #[test]
    fn payload_files_are_private_and_never_reuse_anothers_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        write_private(&path, b"{}").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(write_private(&path, b"{}").is_err(), "an existing file is not written through");

        // Each operation's file has a name of its own that nobody can foresee (a killed
        // worker's leftover of the same process id failed operations), and goes with it.
        let (a, b) = (payload_file(b"{\"a\":1}").unwrap(), payload_file(b"{}").unwrap());
        assert_ne!(a.0, b.0);
        assert_eq!(std::fs::read(&a.0).unwrap(), b"{\"a\":1}");
        let mode = std::fs::metadata(&a.0).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let gone = a.0.clone();
        drop(a);
        assert!(!gone.exists());
    }

    fn ctx(payload: Value) -> OperationContext {
        OperationContext {
            agenda_id: "ag-1".into(),
            customer_id: "c".into(),
            insight_id: "i".into(),
            resource_pool_id: "p".into(),
            operation_name: "op-1".into(),
            operation_type: "sh".into(),
            payload,
            params: Default::default(),
        }
    }

    fn sh(script: &str, timeout: Duration) -> LocalProcess {
        LocalProcess {
            program: "sh".into(),
            args: vec!["-c".into(), script.into()],
            env: BTreeMap::new(),
            working_dir: None,
            timeout,
        }
    }

    fn recorder() -> (ProgressSink, Arc<Mutex<Vec<Progress>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        (Arc::new(move |p| s.lock().unwrap().push(p)), seen)
    }

    #[tokio::test]
    async fn payload_in_result_and_progress_out() {
        let script = r#"
            read -r payload
            echo "log line"
            echo '{"percent": 50, "message": "half"}'
            echo "{\"result\": {\"got\": $payload, \"file\": $(cat "$POP_PAYLOAD_FILE"), \"name\": \"$POP_OPERATION_NAME\", \"agenda\": \"$POP_AGENDA_ID\"}}"
        "#;
        let (sink, seen) = recorder();
        let out =
            sh(script, Duration::from_secs(10)).run(ctx(json!({"a": 1})), sink).await.unwrap();
        assert_eq!(
            out,
            json!({"got": {"a": 1}, "file": {"a": 1}, "name": "op-1", "agenda": "ag-1"})
        );
        assert_eq!(
            seen.lock().unwrap().clone(),
            vec![Progress { percent: Some(50.0), message: Some("half".into()) }]
        );
    }

    /// A line is read at most `max` bytes deep (its end of line not counted): the rest to its
    /// end is dropped, the line said cut with its size, and the next line is whole (ops3am23:
    /// a 1 GB line was held whole).
    #[tokio::test]
    async fn an_over_long_line_is_cut_and_the_next_one_is_whole() {
        let text =
            format!("{}\n{{\"result\": 1}}\r\n{}\r\nlast", "x".repeat(10_000), "y".repeat(100));
        let mut reader = tokio::io::BufReader::with_capacity(64, text.as_bytes());
        let mut cr = false;
        let first = next_line(&mut reader, 100, &mut cr).await.unwrap();
        assert_eq!(first.cut, Some(10_000));
        assert!(first.text.starts_with(&"x".repeat(100)), "{}", first.text);
        assert!(first.text.ends_with("… [a line of 10000 bytes, cut: at most 100 are read]"));
        let line = |t: &str| Some(ReadLine { text: t.into(), cut: None });
        assert_eq!(next_line(&mut reader, 100, &mut cr).await, line(r#"{"result": 1}"#));
        // Exactly the limit, before its CR LF: whole.
        assert_eq!(next_line(&mut reader, 100, &mut cr).await, line(&"y".repeat(100)));
        assert_eq!(next_line(&mut reader, 100, &mut cr).await, line("last"));
        assert_eq!(next_line(&mut reader, 100, &mut cr).await, None);
        // A cut line keeps its start up to a character's boundary, within a log line's bound.
        let wide = format!("{}\n", "é".repeat(5_000));
        let cut = next_line(&mut wide.as_bytes(), 8_000, &mut cr).await.unwrap();
        assert!(cut.text.starts_with(&"é".repeat(100)) && !cut.text.contains('\u{fffd}'));
        assert!(cut.text.len() <= MAX_LINE, "{}", cut.text.len());
        // A CR ends a line, CR LF once, also split across two reads (ops3am24).
        let mut reader = tokio::io::BufReader::with_capacity(4, &b"a\rb\r\nabc\r\ndef\r"[..]);
        let mut lines = Vec::new();
        while let Some(l) = next_line(&mut reader, 100, &mut cr).await {
            lines.push(l.text);
        }
        assert_eq!(lines, ["a", "b", "abc", "def"]);
        // Through a handler: a 20 MB line before the result line does not hide the result.
        let script =
            r#"head -c 20000000 /dev/zero | tr '\0' x; echo; echo '{"result": {"ok": 1}}'"#;
        let out = sh(script, Duration::from_secs(30)).run(ctx(json!(null)), recorder().0).await;
        assert_eq!(out, Ok(json!({"ok": 1})));
        // A result line too large to read fails the run, for good (review-s45: it succeeded
        // with a null result).
        let script = r#"echo '{"result": 0}'; printf '{"result": "'; head -c 9000000 /dev/zero | tr '\0' x; echo '"}'"#;
        let failed = sh(script, Duration::from_secs(30))
            .run(ctx(json!(null)), recorder().0)
            .await
            .unwrap_err();
        assert!(
            failed.message.contains("printed a JSON line of 9000014 bytes"),
            "{}",
            failed.message
        );
        assert!(failed.not_retryable, "{failed:?}");
        // A progress bar redrawn with CR, never a whole line, is output: not killed as silent.
        let script = r#"for i in 1 2 3 4 5 6; do printf '%s%%\r' "$i"; sleep 0.2; done; echo '{"result": 2}'"#;
        let out = sh(script, Duration::from_millis(700)).run(ctx(json!(null)), recorder().0).await;
        assert_eq!(out, Ok(json!(2)));
    }

    /// Output that is not UTF-8 is read on, lossily (ops3am18: the reading stopped at it, and
    /// the handler died of SIGPIPE at its next write, its result and reason lost).
    #[tokio::test]
    async fn output_that_is_not_utf8_is_read_on() {
        let (sink, seen) = recorder();
        let script = r#"
            printf 'ffmpeg: input caf\351.mov\n'
            printf 'warning: tag caf\351\n' >&2
            sleep 0.2
            echo '{"percent": 90, "message": "nearly"}'
            echo '{"result": {"ok": true}}'
        "#;
        let out = sh(script, Duration::from_secs(10)).run(ctx(json!(null)), sink).await;
        assert_eq!(out, Ok(json!({"ok": true})));
        assert_eq!(
            seen.lock().unwrap().clone(),
            vec![Progress { percent: Some(90.0), message: Some("nearly".into()) }]
        );
        let failed = sh(
            r"printf 'caf\351\n' >&2; sleep 0.2; echo 'no such input' >&2; exit 3",
            Duration::from_secs(10),
        )
        .run(ctx(json!(null)), recorder().0)
        .await
        .unwrap_err();
        assert!(failed.message.contains("no such input"), "{}", failed.message);
    }

    #[tokio::test]
    async fn the_last_result_line_wins_and_no_result_is_null() {
        let (sink, _) = recorder();
        let out = sh("echo '{\"result\": 1}'; echo '{\"result\": 2}'", Duration::from_secs(10))
            .run(ctx(json!(null)), sink.clone())
            .await;
        assert_eq!(out, Ok(json!(2)));
        assert_eq!(
            sh("true", Duration::from_secs(10)).run(ctx(json!(null)), sink).await,
            Ok(Value::Null)
        );
    }

    fn output(lines: &[&str]) -> Value {
        let mut out = StdoutResult::default();
        for line in lines {
            out.line(line);
        }
        out.finish().unwrap()
    }

    #[test]
    fn a_result_line_wins_over_any_other_document() {
        assert_eq!(output(&[r#"{"result": {"a": 1}}"#, r#"{"b": 2}"#, "done"]), json!({"a": 1}));
        // `percent`/`message` beside `result` still make a result line.
        assert_eq!(output(&[r#"{"result": 3, "percent": 100}"#]), json!(3));
    }

    #[test]
    fn a_plain_final_json_line_is_the_result() {
        let out = output(&[
            "starting",
            r#"{"percent": 50, "message": "half"}"#,
            r#"{"file": "out.bin", "size": 3}"#,
        ]);
        assert_eq!(out, json!({"file": "out.bin", "size": 3}));
        // Scalars and arrays are documents too; an object with other keys is no progress line.
        assert_eq!(output(&["42"]), json!(42));
        assert_eq!(output(&[r#"[1, 2]"#]), json!([1, 2]));
        assert_eq!(
            output(&[r#"{"message": "m", "level": "info"}"#]),
            json!({"message": "m", "level": "info"})
        );
        // A document with a `result` key among others is taken whole.
        assert_eq!(
            output(&[r#"{"result": "ok", "file": "x"}"#]),
            json!({"result": "ok", "file": "x"})
        );
    }

    /// A last line of only `message` (and `percent`) is progress, never the result; that it
    /// was is remembered for the line the worker logs (newcomer20: dropped without a word).
    #[test]
    fn a_last_message_only_line_is_progress_and_noted() {
        let note = |lines: &[&str]| {
            let mut out = StdoutResult::default();
            for line in lines {
                out.line(line);
            }
            out.last_progress_message.clone()
        };
        assert_eq!(output(&[r#"{"message": "done"}"#]), Value::Null);
        assert_eq!(note(&[r#"{"message": "done"}"#]).as_deref(), Some(r#"{"message": "done"}"#));
        assert_eq!(
            note(&[r#"{"message": "done"}"#, ""]).as_deref(),
            Some(r#"{"message": "done"}"#)
        );
        assert_eq!(note(&[r#"{"percent": 100}"#]), None, "a percent alone is plainly progress");
        assert_eq!(note(&[r#"{"message": "half"}"#, "log"]), None, "not the last line");
    }

    #[test]
    fn the_last_json_line_that_is_not_progress_counts_even_with_log_after_it() {
        let out =
            output(&[r#"{"first": 1}"#, r#"{"second": 2}"#, r#"{"percent": 90}"#, "cleaning up"]);
        assert_eq!(out, json!({"second": 2}));
    }

    #[test]
    fn a_pretty_printed_final_document_is_the_result() {
        let doc = serde_json::to_string_pretty(
            &json!({"file": "out.bin", "streams": [{"codec": "h264"}, {"codec": "aac"}]}),
        )
        .unwrap();
        let mut lines =
            vec!["starting", r#"{"percent": 10}"#, "log after progress", r#"{"stray": 1}"#];
        lines.extend(doc.lines());
        assert_eq!(
            output(&lines),
            json!({"file": "out.bin", "streams": [{"codec": "h264"}, {"codec": "aac"}]})
        );
        // Progress after the document: its lines no longer trail, and no single line parses.
        let mut lines: Vec<&str> = doc.lines().collect();
        lines.push(r#"{"percent": 100}"#);
        assert_eq!(output(&lines), Value::Null);
    }

    #[test]
    fn only_progress_and_log_is_null() {
        assert_eq!(output(&[]), Value::Null);
        assert_eq!(
            output(&["hello", r#"{"percent": 5, "message": "m"}"#, "{not json"]),
            Value::Null
        );
    }

    #[tokio::test]
    async fn a_process_printing_a_pretty_document_outputs_it() {
        let (sink, seen) = recorder();
        let script = r#"
            echo "log line"
            echo '{"percent": 50, "message": "half"}'
            printf '{\n  "file": "out.bin",\n  "input": %s\n}\n' "$(cat)"
        "#;
        let out = sh(script, Duration::from_secs(10)).run(ctx(json!({"a": 1})), sink).await;
        assert_eq!(out, Ok(json!({"file": "out.bin", "input": {"a": 1}})));
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    /// A handler stopped by SIGTERM (or SIGINT, SIGHUP) is marked interrupted; one that
    /// failed by itself, or was killed otherwise, is not.
    #[cfg(unix)]
    #[tokio::test]
    async fn a_handler_stopped_by_a_signal_is_interrupted() {
        let (sink, _) = recorder();
        let err = sh("kill -TERM $$", Duration::from_secs(10))
            .run(ctx(json!(null)), sink.clone())
            .await
            .unwrap_err();
        assert!(err.interrupted, "{err:?}");
        let err = sh("kill -KILL $$", Duration::from_secs(10))
            .run(ctx(json!(null)), sink.clone())
            .await
            .unwrap_err();
        assert!(!err.interrupted, "{err:?}");
        let err = sh("exit 3", Duration::from_secs(10))
            .run(ctx(json!(null)), sink.clone())
            .await
            .unwrap_err();
        assert!(!err.interrupted, "{err:?}");
    }

    #[tokio::test]
    async fn a_non_zero_exit_fails_with_the_log_tail() {
        let (sink, _) = recorder();
        let err = sh(
            "for i in $(seq 1 30); do echo line $i; done; echo oops >&2; exit 4",
            Duration::from_secs(10),
        )
        .run(ctx(json!(null)), sink)
        .await
        .unwrap_err();
        assert!(err.message.contains("exit status: 4"), "{}", err.message);
        assert!(err.message.ends_with(": oops"), "the handler's reason: {}", err.message);
        let log = err.payload["log"].as_array().unwrap();
        assert_eq!(log.len(), LOG_TAIL_LINES);
        assert_eq!(log.last().unwrap(), "stderr: oops");
        assert_eq!(err.payload["exitCode"], 4);
    }

    #[tokio::test]
    async fn silence_longer_than_the_timeout_kills_the_process() {
        let (sink, _) = recorder();
        let started = std::time::Instant::now();
        let err = sh("echo started; sleep 30", Duration::from_millis(300))
            .run(ctx(json!(null)), sink)
            .await
            .unwrap_err();
        assert!(err.message.contains("printed nothing"), "{}", err.message);
        assert_eq!(err.payload["log"], json!(["started"]));
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    /// Whether process `pid` is still running (a zombie counts as gone).
    fn alive(pid: &str) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit_once(')').is_some_and(|(_, r)| !r.trim().starts_with('Z'))
        })
    }

    /// A handler's own children die with it, when it is killed for silence and when its run is
    /// dropped (a cancel, a stop): they went on as orphans and did their side effects after
    /// (ops3am20).
    #[tokio::test]
    async fn a_killed_handlers_own_children_are_killed_too() {
        let dir = tempfile::tempdir().unwrap();
        for dropped in [false, true] {
            let pids = dir.path().join(format!("pids-{dropped}"));
            let script = format!(
                "sh -c 'sleep 60' & echo $! > {p}; (sleep 60; true) & echo $! >> {p}; sleep 60",
                p = pids.display()
            );
            let (sink, _) = recorder();
            let handler = sh(&script, Duration::from_millis(500));
            let run = handler.run(ctx(json!(null)), sink);
            if dropped {
                let _ = tokio::time::timeout(Duration::from_millis(300), run).await;
            } else {
                let err = run.await.unwrap_err();
                assert!(err.message.contains("printed nothing"), "{}", err.message);
            }
            let text = std::fs::read_to_string(&pids).unwrap();
            let children: Vec<&str> = text.split_whitespace().collect();
            assert_eq!(children.len(), 2, "{text}");
            assert_all_gone(&children, dropped).await;
        }
        // A script that starts a child every 20 ms: frozen before its children are killed, it
        // starts none in between (review-s43: 6 of 12 started their next step).
        let pids = dir.path().join("pids-loop");
        let script = format!(
            "while true; do sleep 60 & echo $! >> {p}; sleep 0.02; done",
            p = pids.display()
        );
        let (sink, _) = recorder();
        let err = sh(&script, Duration::from_millis(400)).run(ctx(json!(null)), sink).await;
        assert!(err.unwrap_err().message.contains("printed nothing"));
        let text = std::fs::read_to_string(&pids).unwrap();
        let children: Vec<&str> = text.split_whitespace().collect();
        assert!(children.len() >= 5, "{text}");
        assert_all_gone(&children, false).await;
        // Processes that left the tree (a double fork; a new session) are found by the run's
        // mark: on a kill for silence, and when a signal stopped the handler itself
        // (ops3am21: a group's Ctrl-C left `setsid` and `nohup` children running).
        for (name, tail, timeout) in
            [("double", "sleep 60", 400), ("signalled", "kill -TERM $$; sleep 60", 5000)]
        {
            let p = dir.path().join(format!("pids-{name}"));
            let script = format!(
                "(sh -c 'echo $$ >> {p}; exec sleep 60' &); \
                 setsid sh -c 'echo $$ >> {p}; exec sleep 60' & sleep 0.3; {tail}",
                p = p.display()
            );
            let (sink, _) = recorder();
            let err = sh(&script, Duration::from_millis(timeout)).run(ctx(json!(null)), sink).await;
            assert!(err.is_err(), "{name}");
            let text = std::fs::read_to_string(&p).unwrap();
            let children: Vec<&str> = text.split_whitespace().collect();
            assert_eq!(children.len(), 2, "{name}: {text}");
            assert_all_gone(&children, false).await;
        }
    }

    /// Waits (bounded) until none of `children` runs; fails naming those still running.
    async fn assert_all_gone(children: &[&str], dropped: bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while children.iter().any(|p| alive(p)) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left: Vec<&&str> = children.iter().filter(|p| alive(p)).collect();
        assert!(left.is_empty(), "dropped {dropped}: {left:?} live on");
    }
}
