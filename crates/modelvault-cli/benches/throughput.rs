//! Throughput and memory bench (not a timed test). Every figure is a ratio
//! against a baseline measured in the same run, best of three:
//!
//! 1. format seal/open of 1 GiB vs raw `ring` AES-256-GCM over the same
//!    buffer and segment size, one thread (goal ≥ 0.85);
//! 2. `GET` of a 1 GiB file over loopback HTTP from the local store vs
//!    reading and decrypting the blob directly in one thread (goal ≥ 0.8);
//! 3. `modelvault push` of 1 GiB vs SHA-256 of the same bytes (goal ≥ 0.8),
//!    and vs a plain write+fsync copy of them (the disk's floor);
//! 4. the server's peak RSS during a 4 GiB push and pull (goal ≤ 64 MiB).
//!
//! Run: `cargo bench -p modelvault-cli --bench throughput`. Sizes:
//! `MV_BENCH_BYTES` (default 1 GiB), `MV_BENCH_RSS_BYTES` (default 4 GiB),
//! scratch space under `MV_BENCH_DIR` (default the system temp dir; needs
//! about 2.5x the RSS size free). Points 2 and 3 run twice: with the store
//! on disk and on tmpfs (`/dev/shm`, if present; `MV_BENCH_TMPFS=0` skips
//! the tmpfs run).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use modelvault_format::{
    Decryptor, FileIdentity, FileKey, HEADER_LEN, Header, SegmentSize, TAG_LEN,
};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

const BIN: &str = env!("CARGO_BIN_EXE_modelvault");
const GIB: f64 = (1u64 << 30) as f64;

fn env_bytes(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fill(buf: &mut [u8], seed: u64) {
    let mut x = seed | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

fn best_of<F: FnMut() -> Duration>(n: usize, mut f: F) -> Duration {
    (0..n).map(|_| f()).min().unwrap()
}

fn gbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / GIB / d.as_secs_f64()
}

fn report(
    name: &str,
    bytes: u64,
    subject: Duration,
    baseline_name: &str,
    baseline: Duration,
    goal: &str,
) {
    println!(
        "{name}: {:.2} GiB/s vs {baseline_name} {:.2} GiB/s -> ratio {:.2} (goal {goal})",
        gbps(bytes, subject),
        gbps(bytes, baseline),
        baseline.as_secs_f64() / subject.as_secs_f64()
    );
}

// ------------------------------------------------------------ 1. format

fn bench_format(size: u64) {
    let seg = SegmentSize::M1;
    let s = seg.bytes();
    let mut buf = vec![0u8; size as usize];
    fill(&mut buf, 1);
    let key_bytes = [9u8; 32];
    let raw = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key_bytes).unwrap());
    let header = Header {
        dek_generation: 1,
        segment_size: seg,
        salt: [3; 32],
    };
    let hb = header.to_bytes();
    let key = FileKey::from_bytes(&key_bytes).unwrap();
    let n = buf.len().div_ceil(s);
    let mut tags = vec![[0u8; TAG_LEN]; n];

    // Sealing changes the buffer, but AES-GCM costs the same whatever the
    // bytes are, so each round simply seals the previous round's output.
    let raw_seal = best_of(3, || {
        let t = Instant::now();
        for (i, chunk) in buf.chunks_mut(s).enumerate() {
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&(i as u64).to_be_bytes());
            let tag = raw
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::empty(),
                    chunk,
                )
                .unwrap();
            tags[i].copy_from_slice(tag.as_ref());
        }
        t.elapsed()
    });
    let fmt_seal = best_of(3, || {
        let t = Instant::now();
        for (i, chunk) in buf.chunks_mut(s).enumerate() {
            tags[i] =
                modelvault_format::seal_segment_in_place(&key, &hb, i as u64, i + 1 == n, chunk)
                    .unwrap();
        }
        t.elapsed()
    });
    report(
        "format seal (1 thread)",
        size,
        fmt_seal,
        "raw ring AES-256-GCM seal",
        raw_seal,
        ">= 0.85",
    );

    // Open: build the real ciphertext once, then open it in place.
    let mut ct = Vec::with_capacity(HEADER_LEN + buf.len() + n * TAG_LEN);
    ct.extend_from_slice(&hb);
    for (i, chunk) in buf.chunks(s).enumerate() {
        let start = ct.len();
        ct.extend_from_slice(chunk);
        let tag = modelvault_format::seal_segment_in_place(
            &key,
            &hb,
            i as u64,
            i + 1 == n,
            &mut ct[start..],
        )
        .unwrap();
        ct.extend_from_slice(&tag);
    }
    drop(buf);
    let dec = Decryptor::new(&key, header, ct.len() as u64).unwrap();
    let pristine = ct.clone();
    let fmt_open = best_of(3, || {
        ct.copy_from_slice(&pristine);
        let t = Instant::now();
        for i in 0..dec.segment_count() {
            let r = dec.segment_ciphertext_range(i);
            dec.open_segment(i, &mut ct[r.start as usize..r.end as usize])
                .unwrap();
        }
        t.elapsed()
    });
    // Raw ring open of the same bytes and segment size (its own tags).
    let mut raw_ct = pristine[HEADER_LEN..].to_vec();
    for (i, chunk) in raw_ct.chunks_mut(s + TAG_LEN).enumerate() {
        let body = chunk.len() - TAG_LEN;
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&(i as u64).to_be_bytes());
        let tag = raw
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut chunk[..body],
            )
            .unwrap();
        chunk[body..].copy_from_slice(tag.as_ref());
    }
    let raw_pristine = raw_ct.clone();
    let raw_open = best_of(3, || {
        raw_ct.copy_from_slice(&raw_pristine);
        let t = Instant::now();
        for (i, chunk) in raw_ct.chunks_mut(s + TAG_LEN).enumerate() {
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&(i as u64).to_be_bytes());
            raw.open_in_place(Nonce::assume_unique_for_key(nonce), Aad::empty(), chunk)
                .unwrap();
        }
        t.elapsed()
    });
    report(
        "format open (1 thread)",
        size,
        fmt_open,
        "raw ring AES-256-GCM open",
        raw_open,
        ">= 0.85",
    );
}

// ------------------------------------------------------------ the server

struct Server {
    child: Child,
    url: String,
    data: PathBuf,
    token: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(work: &Path) -> Self {
        let data = work.join("data");
        let out = Command::new(BIN)
            .args(["init", "--data-dir", data.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let admin = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let mut child = Command::new(BIN)
            .args([
                "serve",
                "--data-dir",
                data.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ])
            .env("MODELVAULT_LOG", "warn")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let url = loop {
            let line = lines.next().unwrap().unwrap();
            if let Some(rest) = line.split("listening on ").nth(1) {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        let mut s = Self {
            child,
            url,
            data,
            token: admin,
        };
        let ds = s.cli(&[
            "token",
            "create",
            "--name",
            "bench",
            "--role",
            "data-scientist",
            "--namespace",
            "bench",
        ]);
        s.token = ds.trim().to_string();
        s.cli(&["model", "create", "bench/m"]);
        s
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(BIN)
            .args(args)
            .env("MODELVAULT_URL", &self.url)
            .env("MODELVAULT_TOKEN", &self.token)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Streams a GET to nowhere; returns the bytes received.
    fn get_discard(&self, path: &str) -> u64 {
        let addr = self.url.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            self.token
        )
        .unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        total
    }
}

fn write_file(path: &Path, size: u64, seed: u64) {
    let mut f = std::fs::File::create(path).unwrap();
    let mut buf = vec![0u8; 8 << 20];
    let mut left = size;
    let mut s = seed;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        fill(&mut buf[..n], s);
        s += 1;
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.sync_all().unwrap();
}

fn sha256_file(path: &Path) -> Duration {
    let t = Instant::now();
    let mut f = std::fs::File::open(path).unwrap();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    std::hint::black_box(ctx.finish());
    t.elapsed()
}

/// Reads and decrypts the stored blob directly, in one thread.
fn direct_decrypt(server: &Server, version: &str, path: &str) -> Duration {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let config = modelvault_server::Config::load(&server.data.join("modelvault.toml")).unwrap();
    let state = rt
        .block_on(modelvault_server::AppState::open(config))
        .unwrap();
    let v = modelvault_storage::VersionRef {
        namespace: "bench",
        model: "m",
        version,
    };
    let manifest = rt.block_on(state.store.get_manifest(&v)).unwrap().unwrap();
    let vk = rt
        .block_on(
            state
                .store
                .version_key(&v, modelvault_storage::KeyWant::Newest),
        )
        .unwrap();
    let (dek, generation) = (vk.dek(), vk.generation());
    let blob = server.data.join("store").join(&manifest.files[0].blob);
    let t = Instant::now();
    let file = std::fs::File::open(&blob).unwrap();
    let len = file.metadata().unwrap().len();
    let mut head = [0u8; HEADER_LEN];
    file.read_exact_at(&mut head, 0).unwrap();
    let header = Header::parse(&head).unwrap();
    let identity = FileIdentity {
        namespace: "bench",
        model: "m",
        version,
        path,
        dek_generation: generation,
    };
    let key = FileKey::derive(dek, &header, &identity).unwrap();
    let dec = Decryptor::new(&key, header, len).unwrap();
    let mut buf = vec![0u8; dec.segment_len() as usize + TAG_LEN];
    for i in 0..dec.segment_count() {
        let r = dec.segment_ciphertext_range(i);
        let b = &mut buf[..(r.end - r.start) as usize];
        file.read_exact_at(b, r.start).unwrap();
        std::hint::black_box(dec.open_segment(i, b).unwrap());
    }
    t.elapsed()
}

/// Writes and deletes `bytes` under `dir`. In a VM the first touch of
/// guest memory is several times slower than reuse; without this the first
/// run's page-cache allocations would be charged to whoever runs first.
fn warm_up(dir: &Path, bytes: u64) {
    let f = dir.join("warm-up.bin");
    write_file(&f, bytes, 1);
    std::fs::remove_file(&f).unwrap();
}

/// Writes the file's bytes to a new file on the same file system and
/// fsyncs it: the floor for any durable push. Copies are kept until the
/// caller removes `dir`, as pushed blobs are, so both pay for fresh pages.
fn durable_copy(src: &Path, dir: &Path, round: usize) -> Duration {
    let dst = dir.join(format!("durable-copy-{round}.bin"));
    let t = Instant::now();
    let mut from = std::fs::File::open(src).unwrap();
    let mut to = std::fs::File::create(&dst).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = from.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        to.write_all(&buf[..n]).unwrap();
    }
    to.sync_all().unwrap();
    t.elapsed()
}

/// Push and GET ratios with the store under `work`.
fn bench_transfer(label: &str, work: &Path, size: u64) {
    warm_up(work, 3 * size);
    let server = Server::start(work);
    let src = work.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let file = src.join("w.bin");
    write_file(&file, size, 7);

    // 3. push vs SHA-256 of the same bytes (page cache warm for both), and
    //    vs a plain durable copy of them to the same file system.
    let sha = best_of(3, || sha256_file(&file));
    let copies = work.join("copies");
    std::fs::create_dir_all(&copies).unwrap();
    let mut copy_round = 0;
    let copy = best_of(3, || {
        copy_round += 1;
        durable_copy(&file, &copies, copy_round)
    });
    let mut round = 0;
    let push = best_of(3, || {
        round += 1;
        let t = Instant::now();
        server.cli(&["push", &format!("bench/m@p{round}"), file.to_str().unwrap()]);
        t.elapsed()
    });
    report(
        &format!("[{label}] push via CLI"),
        size,
        push,
        "SHA-256 of the file",
        sha,
        ">= 0.8",
    );
    report(
        &format!("[{label}] push via CLI"),
        size,
        push,
        "write+fsync copy of the file",
        copy,
        "-",
    );

    // 2. GET over loopback vs direct read + decrypt in one thread.
    let direct = best_of(3, || direct_decrypt(&server, "p1", "w.bin"));
    let get = best_of(3, || {
        let t = Instant::now();
        let n = server.get_discard("/v1/models/bench/m/versions/p1/files/w.bin");
        assert!(n >= size);
        t.elapsed()
    });
    report(
        &format!("[{label}] GET over loopback HTTP"),
        size,
        get,
        "direct read+decrypt (1 thread)",
        direct,
        ">= 0.8",
    );
    println!(
        "[{label}] server peak RSS over these runs: {} MiB",
        server.peak_rss_kib() / 1024
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&src);
    let _ = std::fs::remove_dir_all(&copies);
    let _ = std::fs::remove_dir_all(work.join("data"));
}

/// 4. Peak RSS during a big push and pull.
fn bench_rss(work: &Path, rss_size: u64) {
    let server = Server::start(work);
    let src = work.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let big = src.join("big.bin");
    write_file(&big, rss_size, 11);
    server.cli(&["push", "bench/m@big", big.to_str().unwrap()]);
    std::fs::remove_file(&big).unwrap();
    let out = work.join("pulled");
    server.cli(&["pull", "bench/m@big", "-o", out.to_str().unwrap()]);
    let pulled = std::fs::metadata(out.join("big.bin")).unwrap().len();
    assert_eq!(pulled, rss_size);
    println!(
        "server peak RSS during a {:.1} GiB push and pull: {} MiB (goal <= 64 MiB)",
        rss_size as f64 / GIB,
        server.peak_rss_kib() / 1024
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_dir_all(work.join("data"));
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing
    // useful. Only run when asked to bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!("throughput bench: run with `cargo bench -p modelvault-cli --bench throughput`");
        return;
    }
    let size = env_bytes("MV_BENCH_BYTES", 1 << 30);
    let rss_size = env_bytes("MV_BENCH_RSS_BYTES", 4 << 30);
    let base = std::env::var_os("MV_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let work = tempfile::tempdir_in(base).unwrap();
    println!(
        "modelvault throughput bench: {:.2} GiB, RSS run {:.2} GiB",
        size as f64 / GIB,
        rss_size as f64 / GIB
    );
    bench_format(size);
    bench_transfer("disk", work.path(), size);
    // The same on tmpfs, where no disk bounds the durable write: this shows
    // the software path alone.
    if Path::new("/dev/shm").is_dir() && std::env::var("MV_BENCH_TMPFS").as_deref() != Ok("0") {
        let shm = tempfile::tempdir_in("/dev/shm").unwrap();
        bench_transfer("tmpfs", shm.path(), size);
    }
    bench_rss(work.path(), rss_size);
}
