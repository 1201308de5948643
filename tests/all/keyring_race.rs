//! Two servers over one data directory (the documented way to run two on
//! one host) race KEK rotation, retirement and keyring backups while pushes
//! run on both. No keyring update is lost: a KEK reported retired is
//! destroyed in the file, a KEK version reported created is in it, no
//! version number names two keys; a fresh server then pulls everything.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::common::*;

fn kek_status(url: &str, admin: &str) -> Value {
    serde_json::from_str(&ok(cli(
        url,
        Some(admin),
        &["keys", "status", "--output", "json"],
    )))
    .unwrap()
}

#[test]
fn two_servers_racing_rotate_retire_and_backup_lose_no_key() {
    const ROUNDS: usize = 6;
    let app = TestApp::start();
    let peer = app.start_peer();
    let ds = app.token("dana", &["data-scientist"], &["nlp"]);
    ok(app.cli(Some(&ds), &["model", "create", "nlp/race"]));
    let urls = [app.url.clone(), peer.url.clone()];
    let stop = Arc::new(AtomicBool::new(false));
    type Pushed = Vec<(String, Vec<u8>)>;
    let pushed: Arc<Mutex<Pushed>> = Arc::default();

    std::thread::scope(|s| {
        let _stop_on_drop = StopOnDrop(&stop);
        // Pushes on both servers, all along.
        for (i, url) in urls.iter().enumerate() {
            let (stop, pushed, ds) = (stop.clone(), pushed.clone(), ds.clone());
            s.spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let target = format!("nlp/race@s{i}-{n}");
                    let src = tempfile::tempdir().unwrap();
                    let data =
                        modelvault_test_utils::pseudo_random(20_000 + n, (i * 1000 + n) as u64);
                    std::fs::write(src.path().join("w"), &data).unwrap();
                    ok(cli(
                        url,
                        Some(&ds),
                        &["push", &target, src.path().to_str().unwrap()],
                    ));
                    pushed.lock().unwrap().push((target, data));
                    n += 1;
                }
            });
        }
        // Backups of the shared keyring, all along: each must be a whole
        // keyring (old or new, never half of one).
        {
            let (stop, data_dir) = (stop.clone(), app.data_dir());
            s.spawn(move || {
                let out = tempfile::tempdir().unwrap();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let file = out.path().join(format!("b{n}"));
                    let o = Command::new(BIN)
                        .args(["keys", "backup", "--data-dir"])
                        .arg(&data_dir)
                        .arg("-o")
                        .arg(&file)
                        .env("MODELVAULT_BACKUP_PASSPHRASE", "a long enough passphrase")
                        .output()
                        .unwrap();
                    ok(o);
                    n += 1;
                }
            });
        }
        // One server rotates, the other retires what is not current.
        let retired: Arc<Mutex<Vec<u64>>> = Arc::default();
        let retirer = {
            let (stop, retired, url, admin) = (
                stop.clone(),
                retired.clone(),
                urls[1].clone(),
                app.admin.clone(),
            );
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let st = kek_status(&url, &admin);
                    let current = st["current_kek_version"].as_u64().unwrap();
                    for k in st["kek_versions"].as_array().unwrap() {
                        let v = k["version"].as_u64().unwrap();
                        if k["state"] == "active" && v != current {
                            let o =
                                cli(&url, Some(&admin), &["keys", "retire-kek", &v.to_string()]);
                            if o.status.success() {
                                retired.lock().unwrap().push(v);
                            } else {
                                // Refused while still in use: never lost.
                                let e = stderr(&o);
                                assert!(
                                    e.contains("use")
                                        || e.contains("current")
                                        || e.contains("conflict"),
                                    "retire-kek {v}: {e}"
                                );
                            }
                        }
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            })
        };
        for _ in 0..ROUNDS {
            ok(cli(&urls[0], Some(&app.admin), &["keys", "rotate-kek"]));
        }
        // Let the retirer catch up with the last rotation, then stop all.
        std::thread::sleep(std::time::Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
        retirer.join().unwrap();

        // The keyring file: 1 + ROUNDS versions, each number once, every
        // version reported retired destroyed.
        let file: Value =
            serde_json::from_slice(&std::fs::read(app.data_dir().join("keyring.json")).unwrap())
                .unwrap();
        let keks = file["keks"].as_array().unwrap();
        let mut numbers: Vec<u64> = keks
            .iter()
            .map(|k| k["version"].as_u64().unwrap())
            .collect();
        numbers.sort_unstable();
        assert_eq!(
            numbers,
            (1..=1 + ROUNDS as u64).collect::<Vec<_>>(),
            "{file}"
        );
        for v in retired.lock().unwrap().iter() {
            let k = keks.iter().find(|k| k["version"] == *v).unwrap();
            assert_eq!(
                k["state"], "destroyed",
                "KEK {v} reported retired is active"
            );
            assert!(k.get("key").is_none());
        }
    });

    // A fresh server over the same data dir pulls every version pushed.
    drop(peer);
    let fresh = app.start_peer();
    let pushed = pushed.lock().unwrap();
    assert!(pushed.len() >= 4, "too few pushes raced: {}", pushed.len());
    for (target, data) in pushed.iter() {
        let out = tempfile::tempdir().unwrap();
        ok(cli(
            &fresh.url,
            Some(&ds),
            &["pull", target, "-o", out.path().to_str().unwrap()],
        ));
        assert_eq!(
            &std::fs::read(out.path().join("w")).unwrap(),
            data,
            "{target}"
        );
    }
}
