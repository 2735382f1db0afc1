//! Child processes of the crash tests: this test binary run again on one test, whose data
//! directory an environment variable names, killed with SIGKILL at a random moment.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A number below `bound`, different at each call.
pub fn random_below(bound: u64) -> u64 {
    RandomState::new().hash_one(std::time::Instant::now()) % bound
}

/// Runs the test `test` (`module::name`) in a child with `env` set to `dir`, kills it after
/// `delay`, counted from the first line holding `after` when given (so that a loaded machine,
/// where starting the child takes longer than the delay, still sees its work cut), and
/// returns the lines it finished printing. A line cut off by the kill has no newline and was
/// never acknowledged, so it is not returned.
pub fn run_until_killed(
    test: &str,
    env: &str,
    dir: &Path,
    after: Option<&'static str>,
    delay: Duration,
) -> Vec<String> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(env, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (started, start) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        let mut stdout = BufReader::new(stdout);
        let (mut line, mut told) = (String::new(), false);
        while stdout.read_line(&mut line).unwrap_or(0) > 0 {
            if line.ends_with('\n') {
                if !told && after.is_some_and(|after| line.contains(after)) {
                    told = true;
                    let _ = started.send(());
                }
                lines.push(line.trim_end().to_owned());
            }
            line.clear();
        }
        lines
    });
    if after.is_some() {
        // Not a speed assertion: a bound on waiting for a child that never gets there.
        let _ = start.recv_timeout(Duration::from_secs(60));
    }
    std::thread::sleep(delay);
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap()
}
