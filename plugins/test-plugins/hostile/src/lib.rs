//! A policy that misbehaves on demand (tag `hostile=<kind>`), for the host's
//! sandbox tests. Benign otherwise, so it passes install validation.

use modelvault_policy_sdk::*;

struct Hostile;

// Recursing without end is the point: it must overflow the wasm stack.
#[allow(unconditional_recursion)]
#[inline(never)]
fn recurse(depth: u64, buf: &mut [u8; 256]) -> u64 {
    buf[(depth % 256) as usize] = depth as u8;
    let mut next = [0u8; 256];
    next.copy_from_slice(buf);
    recurse(depth + 1, &mut next) + next[0] as u64
}

impl Guest for Hostile {
    fn evaluate(req: Request, config: Config) -> Decision {
        // The tag picks the misbehaviour for one request; the config key
        // `hostile` for every request (the install's smoke call included),
        // or with `hostile_action` only for requests of that action.
        let action = match req.action {
            Action::Read => "read",
            Action::Write => "write",
            Action::Download => "download",
            Action::KeyRelease => "key-release",
            Action::Approve => "approve",
            Action::Deploy => "deploy",
            Action::Delete => "delete",
            Action::EditMetadata => "edit-metadata",
        };
        let configured = config_value(&config, "hostile")
            .filter(|_| config_value(&config, "hostile_action").is_none_or(|a| a == action));
        let kind = req
            .resource
            .tags
            .iter()
            .find(|(k, _)| k == "hostile")
            .map(|(_, v)| v.clone())
            .or_else(|| configured.map(str::to_string))
            .unwrap_or_default();
        match kind.as_str() {
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "trap" => panic!("hostile plugin traps on purpose"),
            "sleep" => {
                // Wait an hour by the monotonic clock. A host-side wait must
                // never outlive the time limit: the host's sleeps return at
                // once and its clock stands still, so this spins in wasm
                // until the epoch deadline stops it.
                let start = std::time::Instant::now();
                while start.elapsed() < std::time::Duration::from_secs(3600) {
                    std::thread::sleep(std::time::Duration::from_secs(60));
                }
                allow("hostile.escaped", "slept through the time limit")
            }
            "stack" => {
                let mut buf = [0u8; 256];
                let n = recurse(0, &mut buf);
                allow("hostile.escaped", format!("recursion ended at {n}"))
            }
            "big-reason" => allow("hostile.big", "x".repeat(10 << 20)),
            // Text meant to forge operator log lines and drive the terminal
            // of whoever reads the deny: newlines, an OSC title change, a
            // colour, a bell, a bidi override.
            "forge" => {
                use std::io::Write as _;
                let _ = write!(
                    std::io::stdout(),
                    "out\nFORGED-STDOUT INFO modelvault: admin token rotated\r\n"
                );
                let _ = std::io::stdout().flush();
                deny(
                    "hostile.forged",
                    "denied\nFORGED-REASON INFO modelvault: all good\u{1b}]0;pwned\u{7}\u{1b}[31mred\u{202e}",
                )
            }
            "forge-code" => deny("hostile.forged\nFORGED-CODE INFO", "code with a newline"),
            "fs" => match std::fs::read("/etc/passwd") {
                Ok(_) => allow("hostile.escaped", "read a host file"),
                Err(e) => deny("hostile.sandbox-held", format!("no filesystem: {e}")),
            },
            "net" => match std::net::TcpStream::connect("127.0.0.1:80") {
                Ok(_) => allow("hostile.escaped", "opened a socket"),
                Err(e) => deny("hostile.sandbox-held", format!("no network: {e}")),
            },
            "env" => {
                let vars: Vec<_> = std::env::vars().collect();
                if vars.is_empty() && std::env::args().count() == 0 {
                    deny("hostile.sandbox-held", "no environment, no arguments")
                } else {
                    allow("hostile.escaped", format!("saw {} variables", vars.len()))
                }
            }
            _ => allow("hostile.benign", "no trigger in the request"),
        }
    }
}

export_policy!(Hostile with_types_in modelvault_policy_sdk::bindings);
