//! The handler registry file (TOML): which handler runs each operation type.
//!
//! ```toml
//! [handlers.encode]
//! kind = "local"                        # a local process per operation
//! command = ["handlers/encode.sh", "--fast"]   # relative paths: from this file's folder
//! timeout_seconds = 600                 # no output for this long fails the operation
//! env = { LEVEL = "3" }
//!
//! [handlers.log]
//! kind = "builtin"                      # log | sample | agendaUpdate (registered anyway),
//!                                       # or sampleWithExternalExecute (runs payload commands)
//! builtin = "log"
//! ```
//!
//! The built-in types `log`, `sample` and `agendaUpdate` are registered unless the file maps
//! the same type to something else.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::builtin;
use crate::handler::Registry;
use crate::local::LocalProcess;

/// Default no-output timeout of a local process.
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 600;
/// Largest registry file read.
const MAX_FILE_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} is larger than {MAX_FILE_BYTES} bytes")]
    TooLarge { path: String },
    #[error("{path}: {source}")]
    Parse { path: String, source: toml::de::Error },
    #[error("{path}: handler {op_type:?}: {message}")]
    Invalid { path: String, op_type: String, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    /// Each handler's table with where it starts: a handler is read from its table in a second
    /// step, so that an error in it names the handler and its line (operator58 L3: serde reads
    /// an internally tagged enum from a buffered copy without places, and every unknown field
    /// was reported at line 1, column 1).
    #[serde(default)]
    handlers: BTreeMap<String, toml::Spanned<toml::Table>>,
}

/// The file's handlers, each read from its table; an error names the handler and the line and
/// column where its table starts.
fn handlers(text: &str, shown: &str) -> Result<Vec<(String, HandlerConfig)>, ConfigError> {
    let file: File = toml::from_str(text)
        .map_err(|source| ConfigError::Parse { path: shown.to_string(), source })?;
    file.handlers
        .into_iter()
        .map(|(op_type, table)| {
            let at = table.span().start;
            match HandlerConfig::deserialize(toml::Value::Table(table.into_inner())) {
                Ok(config) => Ok((op_type, config)),
                Err(e) => {
                    let before = &text[..at.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let column = before.chars().rev().take_while(|c| *c != '\n').count() + 1;
                    Err(ConfigError::Invalid {
                        path: shown.to_string(),
                        op_type,
                        message: format!(
                            "{} (in its table at line {line}, column {column})",
                            e.message().trim_end()
                        ),
                    })
                }
            }
        })
        .collect()
}

/// One operation type's handler, as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum HandlerConfig {
    Local {
        command: Vec<String>,
        #[serde(default)]
        env: BTreeMap<String, String>,
        #[serde(default)]
        working_dir: Option<PathBuf>,
        #[serde(default = "default_timeout")]
        timeout_seconds: u64,
    },
    Builtin {
        builtin: String,
    },
    Kubernetes {
        image: String,
        #[serde(default)]
        command: Vec<String>,
        #[serde(default)]
        namespace: Option<String>,
        /// The pods' service account (the namespace's `default` when absent): the one given
        /// the rights to annotate themselves.
        #[serde(default)]
        service_account: Option<String>,
        #[serde(default = "default_timeout")]
        timeout_seconds: u64,
    },
}

fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_SECONDS
}

/// Checks that every local handler's program can be started: a path must be an executable
/// file, a bare name must be found on `PATH`. Answers one line per program that cannot.
pub fn missing_programs(registry_file: &Path) -> Result<Vec<String>, ConfigError> {
    let shown = registry_file.display().to_string();
    let text = std::fs::read_to_string(registry_file)
        .map_err(|source| ConfigError::Read { path: shown.clone(), source })?;
    let handlers = handlers(&text, &shown)?;
    let base = registry_file.parent().map(Path::to_path_buf).unwrap_or_default();
    let shown_base = shown_folder(&base);
    let mut missing = Vec::new();
    for (op_type, config) in handlers {
        let HandlerConfig::Local { command, .. } = config else { continue };
        let Some(program) = command.first() else { continue };
        let found = if program.contains('/') || base.join(program).is_file() {
            let path =
                if Path::new(program).is_relative() { base.join(program) } else { program.into() };
            // Not there and not executable call for different fixes (ops3am18: both read
            // "is not an executable file").
            if executable(&path) {
                None
            } else if !path.exists() {
                Some(format!("handler {op_type:?}: {} does not exist", path.display()))
            } else if path.is_dir() {
                Some(format!("handler {op_type:?}: {} is a directory", path.display()))
            } else {
                Some(format!(
                    "handler {op_type:?}: {} is not executable (chmod +x it)",
                    path.display()
                ))
            }
        } else {
            let on_path = std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).any(|dir| executable(&dir.join(program))))
                .unwrap_or(false);
            (!on_path).then(|| {
                format!(
                    "handler {op_type:?}: {program:?} is neither in {} (the handlers file's \
                     folder) nor on PATH",
                    shown_base.display()
                )
            })
        };
        missing.extend(found);
    }
    Ok(missing)
}

/// A folder as said to a person: a file named bare (`--handlers handlers.toml`) has "" for
/// its folder, said as "." (newcomer54: "is neither in  nor on PATH").
fn shown_folder(folder: &Path) -> &Path {
    match folder.as_os_str().is_empty() {
        true => Path::new("."),
        false => folder,
    }
}

fn executable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        path.is_file()
    }
}

/// Kubernetes handlers found in the file, for the binary to build (it owns the kube client
/// and the Kubernetes version choice).
#[derive(Debug, Clone)]
pub struct KubeHandlerSpec {
    pub op_type: String,
    pub image: String,
    pub command: Vec<String>,
    pub namespace: Option<String>,
    pub service_account: Option<String>,
    pub timeout: Duration,
}

/// Reads the registry file: the registry (built-ins + local processes) and the Kubernetes
/// handlers still to be attached.
pub fn load(path: &Path) -> Result<(Registry, Vec<KubeHandlerSpec>), ConfigError> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path)
        .map_err(|source| ConfigError::Read { path: shown.clone(), source })?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(ConfigError::TooLarge { path: shown });
    }
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Read { path: shown.clone(), source })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    parse(&text, &base, &shown)
}

/// [`load`] on text; relative command paths and working dirs are taken from `base`.
pub fn parse(
    text: &str,
    base: &Path,
    shown: &str,
) -> Result<(Registry, Vec<KubeHandlerSpec>), ConfigError> {
    let handlers = handlers(text, shown)?;
    let mut registry = Registry::with_builtins();
    let mut kube = Vec::new();
    let invalid = |op_type: &str, message: &str| ConfigError::Invalid {
        path: shown.to_string(),
        op_type: op_type.to_string(),
        message: message.to_string(),
    };
    let relative = |p: &Path| if p.is_relative() { base.join(p) } else { p.to_path_buf() };
    for (op_type, config) in handlers {
        match config {
            HandlerConfig::Local { command, env, working_dir, timeout_seconds } => {
                let Some((program, args)) = command.split_first() else {
                    return Err(invalid(&op_type, "command must name a program"));
                };
                if timeout_seconds == 0 {
                    return Err(invalid(&op_type, "timeout_seconds must be at least 1"));
                }
                // Relative commands come from the file's folder, as the file's own comments
                // say: a path (`handlers/x.sh`) always, a bare name (`fail.sh`) when the folder
                // has it; any other bare name (`python3`) is looked up on PATH.
                let program = if program.contains('/') || base.join(program).is_file() {
                    relative(Path::new(program))
                } else {
                    PathBuf::from(program)
                };
                registry.insert(
                    op_type,
                    Arc::new(LocalProcess {
                        program,
                        args: args.to_vec(),
                        env,
                        working_dir: working_dir.as_deref().map(relative),
                        timeout: Duration::from_secs(timeout_seconds),
                    }),
                );
            }
            HandlerConfig::Builtin { builtin } => {
                let mut builtins = Registry::default();
                builtin::register(&mut builtins);
                builtins.insert(
                    builtin::SAMPLE_WITH_EXTERNAL_EXECUTE,
                    Arc::new(builtin::SampleHandler { external_execute: true }),
                );
                let Some(handler) = builtins.get(&builtin) else {
                    return Err(invalid(
                        &op_type,
                        &format!(
                            "no built-in {builtin:?} (log, sample, sampleWithExternalExecute, agendaUpdate)"
                        ),
                    ));
                };
                registry.insert(op_type, handler);
            }
            HandlerConfig::Kubernetes {
                image,
                command,
                namespace,
                service_account,
                timeout_seconds,
            } => {
                if image.trim().is_empty() {
                    return Err(invalid(&op_type, "image is required"));
                }
                // As for a local handler (newcomer7: 0, meant as "none", became 1 s, and every
                // pod was deleted a second after it was made).
                if timeout_seconds == 0 {
                    return Err(invalid(&op_type, "timeout_seconds must be at least 1"));
                }
                kube.push(KubeHandlerSpec {
                    op_type,
                    image,
                    command,
                    namespace,
                    service_account,
                    timeout: Duration::from_secs(timeout_seconds),
                });
            }
        }
    }
    Ok((registry, kube))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_in_a_handler_names_it_and_its_line() {
        let text = "[handlers.ok]\nkind = \"builtin\"\nbuiltin = \"log\"\n\n[handlers.render]\nkind = \"local\"\ncomand = [\"x\"]\n";
        let refused = parse(text, Path::new("/etc/pop"), "x.toml").unwrap_err().to_string();
        assert!(refused.starts_with("x.toml: handler \"render\": "), "{refused}");
        assert!(refused.contains("unknown field `comand`"), "{refused}");
        let line = refused.split("line ").nth(1).and_then(|l| l.split(',').next());
        let line: usize = line.and_then(|l| l.parse().ok()).unwrap_or(0);
        assert!((5..=7).contains(&line), "the render table is at lines 5-7: {refused}");
        // An unknown kind names it too.
        let text = "[handlers.a]\nkind = \"lokal\"\n";
        let refused = parse(text, Path::new("/etc/pop"), "x.toml").unwrap_err().to_string();
        assert!(refused.contains("handler \"a\"") && refused.contains("lokal"), "{refused}");
        // A file that is not TOML is still said with its place.
        let refused = parse("[handlers.a\n", Path::new("/etc/pop"), "x.toml").unwrap_err();
        assert!(refused.to_string().contains("line 1"), "{refused}");
    }

    #[test]
    fn reads_local_builtin_and_kubernetes_handlers() {
        let text = r#"
            [handlers.encode]
            kind = "local"
            command = ["handlers/encode.sh", "--fast"]
            timeout_seconds = 5
            [handlers.say]
            kind = "builtin"
            builtin = "log"
            [handlers.transcode]
            kind = "kubernetes"
            image = "ffmpeg:7"
        "#;
        let (registry, kube) = parse(text, Path::new("/etc/pop"), "x.toml").unwrap();
        let types: Vec<&str> = registry.types().collect();
        assert_eq!(types, vec!["agendaUpdate", "encode", "log", "sample", "say"]);
        assert_eq!(kube.len(), 1);
        assert_eq!(kube[0].image, "ffmpeg:7");
        assert_eq!(kube[0].timeout, Duration::from_secs(DEFAULT_TIMEOUT_SECONDS));
        assert_eq!(kube[0].service_account, None);
        // Its service account, and a timeout of 0 refused as for a local handler.
        let text = "[handlers.t]\nkind = \"kubernetes\"\nimage = \"i\"\nservice_account = \"h\"\n";
        let (_, kube) = parse(text, Path::new("/etc/pop"), "x.toml").unwrap();
        assert_eq!(kube[0].service_account.as_deref(), Some("h"));
        let zero = "[handlers.t]\nkind = \"kubernetes\"\nimage = \"i\"\ntimeout_seconds = 0\n";
        let refused = parse(zero, Path::new("/etc/pop"), "x.toml").unwrap_err().to_string();
        assert!(refused.contains("timeout_seconds must be at least 1"), "{refused}");
    }

    #[test]
    fn a_bare_command_in_the_files_folder_is_taken_from_there_and_others_from_path() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("fail.sh");
        std::fs::write(&script, "#!/bin/sh\nexit 1\n").unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let file = dir.path().join("h.toml");
        std::fs::write(
            &file,
            "[handlers.x]\nkind = \"local\"\ncommand = [\"fail.sh\"]\n\
             [handlers.y]\nkind = \"local\"\ncommand = [\"sh\", \"-c\", \"true\"]\n\
             [handlers.z]\nkind = \"local\"\ncommand = [\"no-such-program-here\"]\n",
        )
        .unwrap();
        let missing = missing_programs(&file).unwrap();
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert!(missing[0].starts_with("handler \"z\""), "{missing:?}");
    }

    #[test]
    fn the_folder_of_a_file_named_bare_is_said_as_the_current_one() {
        let bare = Path::new("handlers.toml").parent().unwrap();
        assert_eq!(shown_folder(bare), Path::new("."));
        assert_eq!(shown_folder(Path::new("/etc/pop")), Path::new("/etc/pop"));
    }

    #[test]
    fn mistakes_are_named() {
        let err = parse("[handlers.x]\nkind = \"local\"\ncommand = []\n", Path::new("."), "h.toml")
            .unwrap_err();
        assert_eq!(err.to_string(), "h.toml: handler \"x\": command must name a program");
        assert!(parse("[handlers.x]\nkind = \"ftp\"\n", Path::new("."), "h.toml").is_err());
        let err = parse(
            "[handlers.x]\nkind = \"builtin\"\nbuiltin = \"nope\"\n",
            Path::new("."),
            "h.toml",
        )
        .unwrap_err();
        assert!(err.to_string().contains("no built-in \"nope\""));
    }
}
