//! Compiling a component under bounds: its code is measured before the
//! compiler sees it, and the compile itself runs on a thread of its own
//! under a time budget.
//!
//! Cranelift's cost grows with a function's size and, much faster, with its
//! locals times its control instructions (every block join can carry a value
//! per local): one function of 1,000 locals and 10,000 `if`s (165 KB) took
//! 31 s to compile on a 2-core machine, three times that many `if`s 292 s.
//! The largest function of the componentize-py example has 271 locals and
//! 427 KB; of the componentize-js one, 118 locals and 426,334 for locals
//! times control instructions. The defaults of [`crate::Limits`] leave
//! room for those and refuse the pathological shapes at once.
//!
//! Where the process's executable can compile (`modelvault serve`, which
//! calls [`compile_out_of_process`]) and a cache directory is set, each
//! compile runs in a child process ([`COMPILE_SUBCOMMAND`]) that writes
//! the compiled component to the cache, where the host maps it from: the
//! hundreds of MiB a compile allocates never enter the server, and a
//! compile over its budget is killed. Otherwise (`policy eval`, benches,
//! no cache directory) it runs on a thread; a compile cannot be
//! interrupted there, so one that outlives its budget is abandoned (the
//! caller gets [`PolicyError::CompileTimeout`]) and its thread finishes in
//! the background, holding one of [`MAX_CONCURRENT_COMPILES`] slots, so
//! abandoned compiles never pile up.

use std::ffi::OsString;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use wasmparser::{Encoding, Operator, Parser, Payload};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::{Limits, PolicyError};

/// Compiles that run at once (each uses every core; more would only share
/// them). An abandoned compile keeps its slot until it ends.
pub const MAX_CONCURRENT_COMPILES: usize = 2;

/// Default compile budget: the componentize-py and componentize-js
/// examples take about 23 s each on a busy 2-core machine.
pub const DEFAULT_COMPILE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default largest function body, in bytes.
pub const DEFAULT_MAX_FUNCTION_BYTES: usize = 1 << 20;
/// Default most locals in one function.
pub const DEFAULT_MAX_FUNCTION_LOCALS: u32 = 2048;
/// Default bound on locals × control instructions of one function.
pub const DEFAULT_MAX_FUNCTION_COMPLEXITY: u64 = 2_000_000;
/// Default bound on locals × control instructions summed over every
/// function of a component.
pub const DEFAULT_MAX_COMPONENT_COMPLEXITY: u64 = 32_000_000;

/// Checks every function of every core module in `bytes` against the
/// code bounds of `limits`, before anything is compiled.
pub(crate) fn check_code(bytes: &[u8], limits: &Limits) -> Result<(), PolicyError> {
    let invalid = |e: wasmparser::BinaryReaderError| PolicyError::Invalid(e.to_string());
    let mut module = 0usize;
    let mut function = 0usize;
    let mut total: u64 = 0;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(invalid)? {
            Payload::Version {
                encoding: Encoding::Module,
                ..
            } => {
                module += 1;
                function = 0;
            }
            Payload::CodeSectionEntry(body) => {
                function += 1;
                let at = || format!("function {function} of core module {module}");
                let size = body.range().len();
                if size > limits.max_function_bytes {
                    return Err(PolicyError::TooComplex(format!(
                        "{} has {size} bytes of code, more than the limit of {} (policy.limits.max_function_bytes)",
                        at(),
                        limits.max_function_bytes
                    )));
                }
                let mut locals: u64 = 0;
                for decl in body.get_locals_reader().map_err(invalid)? {
                    let (count, _) = decl.map_err(invalid)?;
                    locals = locals.saturating_add(u64::from(count));
                }
                if locals > u64::from(limits.max_function_locals) {
                    return Err(PolicyError::TooComplex(format!(
                        "{} has {locals} locals, more than the limit of {} (policy.limits.max_function_locals)",
                        at(),
                        limits.max_function_locals
                    )));
                }
                let mut control: u64 = 0;
                let mut ops = body.get_operators_reader().map_err(invalid)?;
                while !ops.eof() {
                    if matches!(
                        ops.read().map_err(invalid)?,
                        Operator::Block { .. }
                            | Operator::Loop { .. }
                            | Operator::If { .. }
                            | Operator::Else
                            | Operator::Br { .. }
                            | Operator::BrIf { .. }
                            | Operator::BrTable { .. }
                            | Operator::TryTable { .. }
                    ) {
                        control += 1;
                    }
                }
                let complexity = locals.max(1).saturating_mul(control);
                if complexity > limits.max_function_complexity {
                    return Err(PolicyError::TooComplex(format!(
                        "{} has {locals} locals and {control} control instructions, {complexity} together, more than the limit of {} (policy.limits.max_function_complexity)",
                        at(),
                        limits.max_function_complexity
                    )));
                }
                total = total.saturating_add(complexity);
                if total > limits.max_component_complexity {
                    return Err(PolicyError::TooComplex(format!(
                        "its functions have more than {} locals × control instructions together (policy.limits.max_component_complexity)",
                        limits.max_component_complexity
                    )));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// A counting semaphore for compile threads.
#[derive(Debug)]
pub(crate) struct CompileSlots {
    free: Mutex<usize>,
    freed: Condvar,
}

/// A held compile slot, given back on drop.
struct Slot(Arc<CompileSlots>);

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut free) = self.0.free.lock() {
            *free += 1;
        }
        self.0.freed.notify_one();
    }
}

impl CompileSlots {
    pub(crate) fn new(n: usize) -> Arc<Self> {
        Arc::new(Self {
            free: Mutex::new(n.max(1)),
            freed: Condvar::new(),
        })
    }

    /// A slot, waiting up to `wait`; `None` if none came free (or the lock
    /// is poisoned).
    fn acquire(self: &Arc<Self>, wait: Duration) -> Option<Slot> {
        let deadline = Instant::now() + wait;
        let mut free = self.free.lock().ok()?;
        while *free == 0 {
            let left = deadline.checked_duration_since(Instant::now())?;
            let (guard, _) = self.freed.wait_timeout(free, left).ok()?;
            free = guard;
        }
        *free -= 1;
        Some(Slot(self.clone()))
    }
}

/// The hidden `modelvault` subcommand that compiles one component in a
/// process of its own: `modelvault __compile-policy LIMITS_JSON INPUT
/// OUTPUT` ([`compile_child_main`]).
pub const COMPILE_SUBCOMMAND: &str = "__compile-policy";

static COMPILER: OnceLock<PathBuf> = OnceLock::new();

/// Compiles components in child processes of `exe`, which must dispatch
/// [`COMPILE_SUBCOMMAND`] to [`compile_child_main`]; for hosts with a
/// cache directory. Called once, at start, by `modelvault serve`.
pub fn compile_out_of_process(exe: PathBuf) {
    let _ = COMPILER.set(exe);
}

pub(crate) fn compiler_executable() -> Option<&'static Path> {
    COMPILER.get().map(PathBuf::as_path)
}

/// Exit status of the child for a component that does not compile.
const EXIT_INVALID: u8 = 2;

/// The child's side of [`COMPILE_SUBCOMMAND`]: compiles INPUT for an engine
/// configured from LIMITS_JSON (the parent's: the compiled code must match
/// its engine) and writes the serialized component to OUTPUT.
/// Environment variable naming the server process a compile child belongs to.
const PARENT_PID_ENV: &str = "MODELVAULT_COMPILE_PARENT";

/// Makes the kernel kill this compile child when the server that started it
/// dies (Linux `PR_SET_PDEATHSIG`), then exits at once if the server died
/// before that was set (the parent is no longer the one named by
/// [`PARENT_PID_ENV`]). Elsewhere, a no-op: the server's timeout still
/// kills a child it waits for.
fn die_with_parent() {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{Signal, getppid, set_parent_process_death_signal};
        let expected = std::env::var(PARENT_PID_ENV)
            .ok()
            .and_then(|v| v.parse::<i32>().ok());
        if set_parent_process_death_signal(Some(Signal::KILL)).is_err() {
            return;
        }
        if let Some(expected) = expected
            && getppid().map(|p| p.as_raw_nonzero().get()) != Some(expected)
        {
            std::process::exit(1);
        }
    }
}

pub fn compile_child_main(mut args: impl Iterator<Item = OsString>) -> ExitCode {
    let (Some(limits), Some(input), Some(output)) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: modelvault {COMPILE_SUBCOMMAND} LIMITS_JSON INPUT OUTPUT");
        return ExitCode::FAILURE;
    };
    let limits: Limits = match serde_json::from_str(&limits.to_string_lossy()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("limits: {e}");
            return ExitCode::FAILURE;
        }
    };
    die_with_parent();
    let engine = match Engine::new(&crate::engine_config(&limits)) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("policy engine: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let bytes = match std::fs::read(&input) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{}: {e}", Path::new(&input).display());
            return ExitCode::FAILURE;
        }
    };
    let serialized = match Component::new(&engine, &bytes).and_then(|c| c.serialize()) {
        Ok(s) => s,
        Err(e) => {
            eprint!("{e:#}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    match std::fs::write(&output, &serialized) {
        Ok(()) => {
            // The parent checks the file against this digest before it
            // loads it (stdout is a pipe only the parent reads).
            println!("{}", blake3::hash(&serialized).to_hex());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {e}", Path::new(&output).display());
            ExitCode::FAILURE
        }
    }
}

/// Compiles `bytes` in a child process of `exe` and returns the serialized
/// component, checked against the digest the child reports on its stdout
/// (the file it writes beside `path` is only a transport): waits up to
/// `budget` for a compile slot, then kills the child if it is not done
/// within `budget`.
pub(crate) fn compile_in_child(
    exe: &Path,
    limits: &Limits,
    bytes: &[u8],
    path: &Path,
    slots: &Arc<CompileSlots>,
    budget: Duration,
) -> Result<Vec<u8>, PolicyError> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let limit_ms = budget.as_millis() as u64;
    let engine_err =
        |what: &str, e: &dyn std::fmt::Display| PolicyError::Engine(format!("{what}: {e}"));
    let _slot = slots
        .acquire(budget)
        .ok_or(PolicyError::CompileBusy { limit_ms })?;
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let tag = format!("{}-{n}", std::process::id());
    let input = path.with_extension(format!("in-{tag}"));
    let output = path.with_extension(format!("out-{tag}"));
    let limits_json = serde_json::to_string(limits).map_err(|e| engine_err("limits", &e))?;
    std::fs::write(&input, bytes)
        .map_err(|e| engine_err("writing the component to compile", &e))?;
    let cleanup = || {
        let _ = std::fs::remove_file(&input);
        let _ = std::fs::remove_file(&output);
    };
    let mut command = Command::new(exe);
    command
        .arg(COMPILE_SUBCOMMAND)
        .arg(&limits_json)
        .arg(&input)
        .arg(&output)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The child asks the kernel to kill it if this process dies first
    // (see `die_with_parent`); it needs to know which process that is.
    command.env(PARENT_PID_ENV, std::process::id().to_string());
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            cleanup();
            return Err(engine_err("starting the compiler process", &e));
        }
    };
    // What the child says (an error message), read as it comes.
    let stderr = child.stderr.take().map(|mut pipe| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = (&mut pipe).take(8 << 10).read_to_string(&mut text);
            // Drain the rest so the child never blocks on a full pipe.
            let _ = std::io::copy(&mut pipe, &mut std::io::sink());
            text
        })
    });
    // The digest of what the child wrote (one line), read as it comes.
    let digest = child.stdout.take().map(|mut pipe| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = (&mut pipe).take(256).read_to_string(&mut text);
            let _ = std::io::copy(&mut pipe, &mut std::io::sink());
            text
        })
    });
    let deadline = Instant::now() + budget;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                cleanup();
                return Err(PolicyError::CompileTimeout { limit_ms });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                cleanup();
                return Err(engine_err("waiting for the compiler process", &e));
            }
        }
    };
    let said = stderr
        .and_then(|t| t.join().ok())
        .unwrap_or_default()
        .trim()
        .to_string();
    let _ = std::fs::remove_file(&input);
    if status.success() {
        let reported = digest
            .and_then(|t| t.join().ok())
            .and_then(|t| blake3::Hash::from_hex(t.trim()).ok());
        let artifact = std::fs::read(&output);
        cleanup();
        let artifact = artifact.map_err(|e| engine_err("reading the compiled component", &e))?;
        return match reported {
            Some(d) if blake3::hash(&artifact) == d => Ok(artifact),
            _ => Err(PolicyError::Engine(
                "the compiled component does not match what the compiler process reported".into(),
            )),
        };
    }
    cleanup();
    match status.code() {
        Some(c) if c == i32::from(EXIT_INVALID) => Err(PolicyError::Invalid(said)),
        Some(_) => Err(PolicyError::Engine(format!("compiler process: {said}"))),
        None => Err(PolicyError::Invalid(format!(
            "the compiler process was killed ({status}){}",
            if said.is_empty() {
                String::new()
            } else {
                format!(": {said}")
            }
        ))),
    }
}

enum Progress {
    Started,
    Done(Result<Component, String>),
}

/// Compiles `bytes` on a thread of its own: waits up to `budget` for a
/// compile slot, then up to `budget` for the compile.
pub(crate) fn compile_bounded(
    engine: &Engine,
    bytes: &[u8],
    slots: &Arc<CompileSlots>,
    budget: Duration,
) -> Result<Component, PolicyError> {
    let (tx, rx) = mpsc::channel();
    let abandoned = Arc::new(AtomicBool::new(false));
    let thread_abandoned = abandoned.clone();
    let engine = engine.clone();
    let bytes = bytes.to_vec();
    let slots = slots.clone();
    std::thread::Builder::new()
        .name("policy-compile".into())
        .spawn(move || {
            let Some(_slot) = slots.acquire(budget) else {
                return;
            };
            if thread_abandoned.load(Ordering::Relaxed) || tx.send(Progress::Started).is_err() {
                return;
            }
            let started = Instant::now();
            let result = Component::new(&engine, &bytes).map_err(|e| format!("{e:#}"));
            drop(bytes);
            if thread_abandoned.load(Ordering::Relaxed) {
                tracing::warn!(
                    secs = started.elapsed().as_secs(),
                    "an abandoned policy compile ended; its result is dropped"
                );
            }
            let _ = tx.send(Progress::Done(result));
            release_freed_memory();
        })
        .map_err(|e| PolicyError::Engine(format!("compile thread: {e}")))?;
    let limit_ms = budget.as_millis() as u64;
    match rx.recv_timeout(budget) {
        Ok(Progress::Started) => {}
        Ok(Progress::Done(_)) | Err(RecvTimeoutError::Disconnected) => {
            return Err(PolicyError::CompileBusy { limit_ms });
        }
        Err(RecvTimeoutError::Timeout) => {
            abandoned.store(true, Ordering::Relaxed);
            return Err(PolicyError::CompileBusy { limit_ms });
        }
    }
    match rx.recv_timeout(budget) {
        Ok(Progress::Done(r)) => r.map_err(PolicyError::Invalid),
        Ok(Progress::Started) | Err(RecvTimeoutError::Disconnected) => Err(PolicyError::Engine(
            "the compile thread ended without a result".into(),
        )),
        Err(RecvTimeoutError::Timeout) => {
            abandoned.store(true, Ordering::Relaxed);
            Err(PolicyError::CompileTimeout { limit_ms })
        }
    }
}

/// Returns freed heap memory to the system. A compile allocates hundreds
/// of MiB (a componentize-py component: about 350 MiB) and the allocator
/// keeps what was freed for reuse; called after a compile ends and after
/// compiled components are dropped.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: malloc_trim only returns free pages of glibc's arenas to the
    // kernel; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A core module of `funcs` functions, each with `locals` i64 locals
    /// and `ifs` `if` blocks.
    fn module(funcs: u32, locals: u32, ifs: u32) -> Vec<u8> {
        fn leb(mut v: u64, out: &mut Vec<u8>) {
            loop {
                let b = (v & 0x7f) as u8;
                v >>= 7;
                if v == 0 {
                    out.push(b);
                    return;
                }
                out.push(b | 0x80);
            }
        }
        fn section(id: u8, body: &[u8], out: &mut Vec<u8>) {
            out.push(id);
            leb(body.len() as u64, out);
            out.extend_from_slice(body);
        }
        let mut out = b"\0asm\x01\0\0\0".to_vec();
        section(1, &[1, 0x60, 0, 0], &mut out);
        let mut f = Vec::new();
        leb(u64::from(funcs), &mut f);
        f.extend(std::iter::repeat_n(0, funcs as usize));
        section(3, &f, &mut out);
        let mut code = Vec::new();
        leb(u64::from(funcs), &mut code);
        for _ in 0..funcs {
            let mut body = vec![1];
            leb(u64::from(locals), &mut body);
            body.push(0x7e);
            let l = u64::from(locals.max(1));
            for i in 0..u64::from(ifs) {
                // if (local a) { local d = local b + local c }: a value
                // per local at every join is what costs the compiler.
                body.push(0x20);
                leb((i * 5 + 2) % l, &mut body);
                body.extend([0xa7, 0x04, 0x40, 0x20]);
                leb((i * 7) % l, &mut body);
                body.push(0x20);
                leb((i * 13 + 1) % l, &mut body);
                body.extend([0x7c, 0x21]);
                leb((i * 31 + 3) % l, &mut body);
                body.push(0x0b);
            }
            body.push(0x0b);
            leb(body.len() as u64, &mut code);
            code.extend(body);
        }
        section(10, &code, &mut out);
        out
    }

    /// A component holding `module` (defined, never instantiated: it is
    /// compiled all the same).
    fn component(module: &[u8]) -> Vec<u8> {
        let mut out = b"\0asm\x0d\0\x01\0".to_vec();
        out.push(1);
        let mut n = module.len() as u64;
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        }
        out.extend_from_slice(module);
        out
    }

    #[test]
    fn bounds_refuse_big_functions_and_accept_small_ones() {
        let limits = Limits::default();
        check_code(&component(&module(3, 50, 100)), &limits).unwrap();
        let err = check_code(&module(1, 5000, 1), &limits).unwrap_err();
        assert!(err.to_string().contains("5000 locals"), "{err}");
        let err = check_code(&module(1, 1000, 10_000), &limits).unwrap_err();
        assert!(err.to_string().contains("max_function_complexity"), "{err}");
        let small = Limits {
            max_function_bytes: 100,
            ..Limits::default()
        };
        let err = check_code(&module(1, 1, 100), &small).unwrap_err();
        assert!(err.to_string().contains("bytes of code"), "{err}");
        let total = Limits {
            max_component_complexity: 1000,
            ..Limits::default()
        };
        let err = check_code(&module(20, 10, 10), &total).unwrap_err();
        assert!(err.to_string().contains("together"), "{err}");
        // Not wasm at all: an error, not a panic.
        assert!(check_code(b"\0asm\x01\0\0\0\x0a\xff", &limits).is_err());
    }

    #[test]
    fn a_compile_over_budget_is_abandoned_and_keeps_its_slot() {
        let engine = Engine::default();
        let slots = CompileSlots::new(1);
        // Seconds of work for cranelift (1000 locals x 3000 ifs).
        let slow = component(&module(2, 1000, 3000));
        let started = Instant::now();
        let err = match compile_bounded(&engine, &slow, &slots, Duration::from_millis(200)) {
            Err(e) => e,
            Ok(_) => panic!("compiled within 200 ms"),
        };
        assert!(
            matches!(err, PolicyError::CompileTimeout { limit_ms: 200 }),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        // Its thread still holds the only slot: the next compile waits for
        // it, within its own budget, and says so.
        let err = match compile_bounded(
            &engine,
            &component(&module(1, 1, 1)),
            &slots,
            Duration::from_millis(50),
        ) {
            Err(e) => e,
            Ok(_) => panic!("got the busy slot"),
        };
        assert!(matches!(err, PolicyError::CompileBusy { .. }), "{err}");
    }
}
