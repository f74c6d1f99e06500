//! `tandem log append|dump|check` as a user runs them: the real binary on real files.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn tandem(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(args)
        .env("TANDEM_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tandem");
    // A command that fails fast may exit before reading its input: a broken pipe is fine.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

#[test]
fn append_then_dump_and_check_a_sound_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let p = path.to_str().unwrap();
    let lines: String = (1..=250).map(|i| format!("line {i}\n")).collect();
    let out = tandem(
        &["log", "append", p, "--batch-records", "100", "--epoch", "2"],
        lines.as_bytes(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("appended 250 records at offsets 0..250"),
        "{}",
        text(&out.stdout)
    );

    let out = tandem(&["log", "dump", p, "--records"], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dump = text(&out.stdout);
    assert!(dump.contains("offset 0..99 epoch 2 count 100"), "{dump}");
    assert!(dump.contains("offset 200..249 epoch 2 count 50"), "{dump}");
    assert!(dump.contains("crc ok"), "{dump}");
    assert!(dump.contains("value \"line 250\""), "{dump}");
    assert!(dump.contains("leader epochs: 2@0"), "{dump}");

    let out = tandem(&["log", "check", p], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("ok:"));
}

#[test]
fn check_fails_on_corruption_and_dump_shows_the_bad_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let p = path.to_str().unwrap();
    let lines: String = (1..=30).map(|i| format!("{i}\n")).collect();
    assert!(tandem(
        &["log", "append", p, "--batch-records", "10"],
        lines.as_bytes()
    )
    .status
    .success());
    let segment = path.join("00000000000000000000.log");
    let mut bytes = std::fs::read(&segment).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0xff;
    std::fs::write(&segment, &bytes).unwrap();

    let out = tandem(&["log", "check", p], b"");
    assert_eq!(out.status.code(), Some(1));
    let report = text(&out.stdout);
    assert!(
        report.contains("CORRUPT") && report.contains("CRC32C mismatch"),
        "{report}"
    );
    let out = tandem(&["log", "dump", p], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("offset 20..29 epoch 0 count 10"),
        "{}",
        text(&out.stdout)
    );
    assert!(text(&out.stdout).contains("crc BAD"));
    // Checking changed nothing: the damage is still there for the operator to see.
    assert_eq!(std::fs::read(&segment).unwrap(), bytes);
}

#[test]
fn bad_directories_and_flags_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("photo.jpg"), b"x").unwrap();
    let p = dir.path().to_str().unwrap();
    let out = tandem(&["log", "check", p], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("is not a Tandem log directory"),
        "{}",
        text(&out.stderr)
    );
    let out = tandem(&["log", "append", p], b"a\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("photo.jpg"),
        "{}",
        text(&out.stderr)
    );
    let out = tandem(&["log", "append", p, "--batch-records", "0"], b"");
    assert_eq!(out.status.code(), Some(2));
    let out = tandem(&["log", "append", p, "--segment-bytes", "5"], b"");
    assert!(
        text(&out.stderr).contains("segment_bytes"),
        "{}",
        text(&out.stderr)
    );
    let out = tandem(&["log", "frobnicate"], b"");
    assert!(!out.status.success());
}
