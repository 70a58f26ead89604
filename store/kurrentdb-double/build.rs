//! Generates the double's gRPC server code from the `.proto` files that ship inside the
//! `kurrentdb` crate, with protox (a protobuf compiler in Rust: no `protoc` on the machine).
//!
//! Where those files are: `cargo metadata` names the `kurrentdb` package this workspace
//! resolved (registry, vendored or git: wherever it is), and its `protos/` folder is next to
//! its manifest. `POP_KURRENTDB_PROTOS` overrides the folder.

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// The services the double serves, and the files they import.
const PROTOS: &[&str] = &["streams.proto", "serverfeatures.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-env-changed=POP_KURRENTDB_PROTOS");
    println!("cargo:rerun-if-changed=build.rs");
    let dir = match env::var_os("POP_KURRENTDB_PROTOS") {
        Some(dir) => PathBuf::from(dir),
        None => kurrentdb_protos()?,
    };
    for file in PROTOS.iter().chain(&["shared.proto", "status.proto", "code.proto"]) {
        println!("cargo:rerun-if-changed={}", dir.join(file).display());
    }
    let descriptors = protox::compile(PROTOS, [&dir])?;
    tonic_build::configure()
        .build_client(false)
        .build_server(true)
        // Event data are shared between the log and every read, not copied per reader.
        .bytes(["."])
        // As the client does: the protocol's empty message is Rust's unit.
        .extern_path(".event_store.client.Empty", "()")
        .compile_fds(descriptors)?;
    Ok(())
}

/// The `protos/` folder of the `kurrentdb` package in this workspace's resolution.
fn kurrentdb_protos() -> Result<PathBuf, Box<dyn std::error::Error>> {
    let cargo = env::var("CARGO")?;
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("Cargo.toml");
    let target = env::var("TARGET")?;
    let metadata = |offline: bool| {
        let mut command = Command::new(&cargo);
        command
            .args(["metadata", "--format-version", "1", "--filter-platform", &target])
            .arg("--manifest-path")
            .arg(&manifest);
        if offline {
            // Everything this build needs is downloaded already; only fall back to the
            // network when a package of the wider workspace is not.
            command.arg("--offline");
        }
        command.output()
    };
    let output = match metadata(true)? {
        out if out.status.success() => out,
        _ => metadata(false)?,
    };
    if !output.status.success() {
        return Err(
            format!("cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr)).into()
        );
    }
    let json: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let packages = json["packages"].as_array().ok_or("cargo metadata: no packages")?;
    let manifest_path = packages
        .iter()
        .find(|p| p["name"] == "kurrentdb")
        .and_then(|p| p["manifest_path"].as_str())
        .ok_or("cargo metadata: the kurrentdb package is not in this workspace")?;
    let dir = PathBuf::from(manifest_path)
        .parent()
        .ok_or("cargo metadata: a manifest without a folder")?
        .join("protos");
    Ok(dir)
}
