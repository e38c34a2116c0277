//! `wshub serve --config FILE`: serve options from a TOML file.
//!
//! The keys are the long flag names without `--`, so a file and a command
//! line read the same and share one parser ([`crate::cli`]'s clap flags):
//! each key becomes `--key=value` arguments, checked exactly as the flag's
//! would be. Switches take `true`/`false`, repeatable flags take arrays of
//! strings, durations and sizes take strings (`"30s"`, `"64KiB"`) or plain
//! numbers (seconds, bytes).
//!
//! Errors name the file and the key. They never quote the file's lines:
//! toml's own rendering shows the offending line, which may hold a key or a
//! secret.

use std::path::{Path, PathBuf};

use clap::ArgAction;

use crate::cli::{what, CliError};

/// A loaded config file.
#[derive(Debug)]
pub(crate) struct File {
    /// As given, for errors.
    pub path: PathBuf,
    /// Its directory, against which relative paths (jwt-public-key) resolve.
    pub base: PathBuf,
    /// Its keys, in key order.
    pub settings: Vec<Setting>,
}

/// One key of the file and the arguments it stands for.
#[derive(Debug, PartialEq)]
pub(crate) struct Setting {
    pub key: String,
    /// `--key=value` (once per array item), `--key` for `true`, nothing for
    /// `false`.
    pub args: Vec<String>,
}

/// How a flag takes its value in the file.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// One string.
    Text,
    /// A duration, size or count: a string, or also a number.
    Number,
    /// A flag without a value: `true`/`false`.
    Switch,
    /// A repeatable flag: an array of strings.
    List,
}

/// The file at `path`, its keys checked against `serve`'s flags (types
/// here; values when the caller parses the arguments).
pub(crate) fn load(path: &Path, serve: &clap::Command) -> Result<File, CliError> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError(format!("--config: cannot read {shown}: {e}")))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| syntax_error(path, &text, &e))?;
    let base = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    for pair in [
        ["admin-key", "admin-key-env"],
        ["jwt-secret", "jwt-secret-env"],
    ] {
        if pair.iter().all(|k| table.contains_key(*k)) {
            return Err(CliError(format!(
                "{shown}: keys `{}` and `{}` both set the same thing; keep one",
                pair[0], pair[1]
            )));
        }
    }
    let mut settings = Vec::new();
    for (key, value) in &table {
        let label = format!("{shown}: key `{key}`");
        let arg = serve
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()) && key != "config")
            .ok_or_else(|| {
                CliError(format!(
                    "{shown}: unknown key `{key}` (the keys are `wshub serve` flag names without --)"
                ))
            })?;
        let value_name = arg
            .get_value_names()
            .and_then(|v| v.first())
            .map_or("", |v| v.as_str());
        let what = what(value_name);
        let kind = match arg.get_action() {
            ArgAction::SetTrue => Kind::Switch,
            ArgAction::Append => Kind::List,
            _ if matches!(value_name, "DURATION" | "SIZE" | "N" | "RATE") => Kind::Number,
            _ => Kind::Text,
        };
        let wrong = |expected: &str, found: &toml::Value| {
            CliError(format!(
                "{label}: expected {expected}, found {} {}",
                article(found.type_str()),
                found.type_str()
            ))
        };
        let flag = |v: &str| format!("--{key}={v}");
        let args = match (kind, value) {
            (Kind::Text | Kind::Number, toml::Value::String(s)) => vec![flag(s)],
            (Kind::Number, toml::Value::Integer(n)) => vec![flag(&n.to_string())],
            (Kind::Number, toml::Value::Float(x)) => vec![flag(&x.to_string())],
            (Kind::Switch, toml::Value::Boolean(b)) => {
                b.then(|| format!("--{key}")).into_iter().collect()
            }
            (Kind::List, toml::Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    toml::Value::String(s) => Ok(flag(s)),
                    other => Err(wrong(&format!("an array of strings ({what})"), other)),
                })
                .collect::<Result<_, _>>()?,
            (Kind::List, other) => {
                return Err(wrong(&format!("an array of strings ({what})"), other))
            }
            (Kind::Switch, other) => return Err(wrong("true or false", other)),
            (Kind::Number, other) => return Err(wrong(&format!("{what} (a string)"), other)),
            (Kind::Text, other) => return Err(wrong(&format!("a string ({what})"), other)),
        };
        settings.push(Setting {
            key: key.clone(),
            args,
        });
    }
    Ok(File {
        path: path.to_path_buf(),
        base,
        settings,
    })
}

fn article(type_name: &str) -> &'static str {
    if type_name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// `FILE:LINE:COLUMN: key `k`: what toml says`, without the line's text.
fn syntax_error(path: &Path, text: &str, e: &toml::de::Error) -> CliError {
    let shown = path.display();
    let message = e.message().trim_end();
    let Some(at) = e.span().map(|s| s.start.min(text.len())) else {
        return CliError(format!("{shown}: {message}"));
    };
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    let line_text = text[line_start..].lines().next().unwrap_or("");
    match key_of(line_text) {
        Some(key) => CliError(format!("{shown}:{line}:{column}: key `{key}`: {message}")),
        None => CliError(format!("{shown}:{line}:{column}: {message}")),
    }
}

/// The bare key a `key = value` line starts with: only flag-like names, so
/// nothing else of the line (a value, perhaps a secret) is ever shown.
fn key_of(line: &str) -> Option<&str> {
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    let flag_like = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    flag_like.then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wshub-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn load(path: &Path) -> Result<File, CliError> {
        super::load(path, &crate::cli::serve_command())
    }

    fn error(name: &str, text: &str) -> String {
        load(&write(name, text)).unwrap_err().0
    }

    #[test]
    fn values_become_arguments_by_key() {
        let path = write(
            "ok.toml",
            "listen = \"127.0.0.1:0\"\npublish = [\"a*\", \"b\"]\necho = true\nno-auth = false\nmax-message-size = 4096\n",
        );
        let f = load(&path).unwrap();
        let got: Vec<(&str, Vec<&str>)> = f
            .settings
            .iter()
            .map(|s| (s.key.as_str(), s.args.iter().map(String::as_str).collect()))
            .collect();
        let want: Vec<(&str, Vec<&str>)> = vec![
            ("echo", vec!["--echo"]),
            ("listen", vec!["--listen=127.0.0.1:0"]),
            ("max-message-size", vec!["--max-message-size=4096"]),
            ("no-auth", vec![]),
            ("publish", vec!["--publish=a*", "--publish=b"]),
        ];
        assert_eq!(got, want);
        assert_eq!(Some(f.base.as_path()), path.parent());
        assert_eq!(f.path, path);
    }

    #[test]
    fn wrong_types_and_unknown_keys_name_the_key() {
        for (text, says) in [
            (
                "ping-interval = true",
                "key `ping-interval`: expected a duration",
            ),
            (
                "echo = \"yes\"",
                "key `echo`: expected true or false, found a string",
            ),
            (
                "publish = \"a\"",
                "key `publish`: expected an array of strings",
            ),
            (
                "publish = [1]",
                "key `publish`: expected an array of strings",
            ),
            (
                "jwt-audience = \"hub\"",
                "key `jwt-audience`: expected an array of strings (an accepted JWT `aud` value), found a string",
            ),
            (
                "jwt-issuer = [true]",
                "key `jwt-issuer`: expected an array of strings (an accepted JWT `iss` value), found a boolean",
            ),
            ("listen = 8080", "key `listen`: expected a string"),
            ("pingpong = 1", "unknown key `pingpong`"),
            ("[server]\nlisten = \"x\"", "unknown key `server`"),
            ("config = \"other.toml\"", "unknown key `config`"),
            (
                "admin-key = \"a\"\nadmin-key-env = \"B\"",
                "`admin-key` and `admin-key-env`",
            ),
        ] {
            let e = error("types.toml", text);
            assert!(
                e.contains("types.toml: ") && e.contains(says),
                "{text}: {e}"
            );
        }
    }

    #[test]
    fn syntax_errors_give_the_place_and_key_but_not_the_line() {
        let e = error("syntax.toml", "listen = \"x\"\nadmin-key = s3cr3t-value\n");
        assert!(
            e.starts_with("syntax.toml") || e.contains("/syntax.toml:2:"),
            "{e}"
        );
        assert!(e.contains(":2:13: key `admin-key`: "), "{e}");
        assert!(!e.contains("s3cr3t"), "{e}");
        let e = error("dup.toml", "echo = true\necho = false\n");
        assert!(e.contains(":2:") && e.contains("key `echo`"), "{e}");
    }

    #[test]
    fn a_missing_file_names_the_flag_and_the_path() {
        let e = load(Path::new("/no/such/wshub.toml")).unwrap_err().0;
        assert!(
            e.starts_with("--config: cannot read /no/such/wshub.toml"),
            "{e}"
        );
    }
}
