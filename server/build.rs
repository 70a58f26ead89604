//! Build script: names the commit a `pop` binary was built from, for `pop --version` (every
//! build of one release printed the same `pop 0.1.0`, newcomer56 M3). `POP_BUILD_COMMIT` in
//! the build's environment wins (a build from a source archive); without git, "unknown".

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=POP_BUILD_COMMIT");
    let commit =
        std::env::var("POP_BUILD_COMMIT").ok().filter(|c| !c.trim().is_empty()).or_else(git_commit);
    println!("cargo:rustc-env=POP_BUILD_COMMIT={}", commit.as_deref().unwrap_or("unknown"));
    // Built again when the checkout moves: HEAD, and the branch it names (a file named that
    // does not exist would run this every build, so only those that do).
    let git = Path::new("../.git");
    let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    if let Ok(head) = std::fs::read_to_string(git.join("HEAD"))
        && let Some(branch) = head.trim().strip_prefix("ref: ")
    {
        watched.push(branch.to_owned());
    }
    for file in watched {
        if git.join(&file).is_file() {
            println!("cargo:rerun-if-changed=../.git/{file}");
        }
    }
}

fn git_commit() -> Option<String> {
    let out = Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output().ok()?;
    let commit = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !commit.is_empty()).then_some(commit)
}
