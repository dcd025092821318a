//! `tollgate route` golden outputs: every case in tests/fixtures/route/cases.txt runs the
//! real binary and must print exactly `<case>.out`. `UPDATE_GOLDEN=1 cargo test --test
//! route_cli` rewrites the files (review the diff before committing).

use std::path::Path;
use std::process::Command;

#[test]
fn route_command_matches_golden_outputs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/route");
    let cases = std::fs::read_to_string(dir.join("cases.txt")).expect("cases.txt");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut n = 0;
    let mut failures = Vec::new();
    for line in cases
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        let parts: Vec<&str> = line.split('|').map(str::trim).collect();
        let [name, request, extra] = parts[..] else {
            panic!("bad case line {line:?}")
        };
        let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .current_dir(&dir)
            .args(["route", "--config", "config.yaml", "--request", request])
            .args(extra.split_whitespace())
            .env_remove("TOLLGATE_API_KEY")
            .output()
            .expect("run tollgate route");
        let text = String::from_utf8(out.stdout).expect("utf-8");
        let golden = dir.join(format!("{name}.out"));
        if update {
            std::fs::write(&golden, &text).expect("write golden");
        } else {
            let want = std::fs::read_to_string(&golden).unwrap_or_default();
            if text != want {
                failures.push(format!("{name}:\n--- want\n{want}--- got\n{text}"));
            }
        }
        n += 1;
    }
    assert!(n >= 10, "only {n} cases");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
