//! Files the runs leave behind (summary.json, study.json, the bench's
//! report, the figures' PNG bytes): written atomically, so an interrupted or
//! failed write (a full disk) never leaves half a file where a reader (the
//! report, a script, an image viewer) expects a whole one; and the
//! temporary files that a killed writer leaves, cleared by the next run.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value};

/// Writes `value` as pretty-printed JSON (newline-terminated; a struct's
/// fields in their declared order, a map's keys sorted) through
/// [`write_text_atomic`].
pub fn write_atomic<T: Serialize + ?Sized>(
    path: &Path,
    value: &T,
) -> Result<(), (PathBuf, io::Error)> {
    let text = serde_json::to_string_pretty(value).expect("the project's JSON always serialises");
    write_text_atomic(path, &(text + "\n"))
}

/// Where a write to a path goes.
#[derive(Debug, PartialEq, Eq)]
pub enum WriteTarget {
    /// `/dev/stdout` and its aliases: this process's standard output, written
    /// through its handle (opened again by name, a redirected file would be
    /// written from its start, over what the process printed before).
    Stdout,
    /// `/dev/stderr` and its aliases.
    Stderr,
    /// A device, a pipe, a socket, or a descriptor's name (`/dev/fd/N`,
    /// `/proc/...`, as a process substitution's `/dev/fd/63`): opened and
    /// appended to, as a shell's `>>` would; renaming a file over it would
    /// replace it.
    Through(PathBuf),
    /// A file (or a new one), replaced atomically; a symbolic link is
    /// followed, so the link stays a link.
    Replace(PathBuf),
}

/// `path` with `suffix` appended to its file name (`a.json` -> `a.json.tmp-7`).
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Where a write to `path` goes ([`WriteTarget`]).
pub fn write_target(path: &Path) -> WriteTarget {
    match path.to_str() {
        Some("/dev/stdout" | "/dev/fd/1" | "/proc/self/fd/1") => return WriteTarget::Stdout,
        Some("/dev/stderr" | "/dev/fd/2" | "/proc/self/fd/2") => return WriteTarget::Stderr,
        _ => {}
    }
    let target = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    // A descriptor's name stands for an open file, written as the shell
    // opened it; a file in /dev/shm is a file like any other.
    let descriptor = path.starts_with("/dev/fd") || path.starts_with("/proc");
    let special = fs::metadata(&target).is_ok_and(|m| !m.is_file() && !m.is_dir());
    if special || descriptor {
        WriteTarget::Through(path.to_path_buf())
    } else {
        WriteTarget::Replace(target)
    }
}

/// Writes `text` to a temporary file of this process beside `path` (beside
/// what it names, if a symbolic link) and renames it into place, so that a
/// reader sees the old file or the new one, and two processes writing the
/// same file (a `vcortex report` beside a finishing run) each replace it
/// whole; standard output, a device or a pipe is written through instead
/// ([`write_target`]). On failure nothing of the temporary file is left,
/// and `path` comes with the error.
pub fn write_text_atomic(path: &Path, text: &str) -> Result<(), (PathBuf, io::Error)> {
    write_bytes_atomic(path, text.as_bytes())
}

/// [`write_text_atomic`] for bytes.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<(), (PathBuf, io::Error)> {
    let fail = |e| (path.to_path_buf(), e);
    let through = |out: &mut dyn Write| out.write_all(bytes).and_then(|()| out.flush());
    let target = match write_target(path) {
        WriteTarget::Stdout => return through(&mut io::stdout().lock()).map_err(fail),
        WriteTarget::Stderr => return through(&mut io::stderr().lock()).map_err(fail),
        WriteTarget::Through(path) => {
            let mut file = fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(fail)?;
            return through(&mut file).map_err(fail);
        }
        WriteTarget::Replace(target) => target,
    };
    let tmp = with_suffix(&target, &format!(".tmp-{}", std::process::id()));
    fs::write(&tmp, bytes)
        .and_then(|()| fs::rename(&tmp, &target))
        .map_err(|e| {
            let _ = fs::remove_file(&tmp);
            fail(e)
        })
}

/// A temporary file untouched for this long is not being written: a live
/// write (a decompression of at most tens of MB, a JSON file, a figure)
/// finishes within seconds.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(120);

/// Removes the `NAME.tmp-PID` and `NAME.tmp-PID-N` files in `dir` (only
/// those of `NAME == stem`, if given) that a killed process left: those
/// whose process no longer runs and that nobody wrote for [`STALE_AFTER`].
/// The age test keeps the file of a writer in another PID namespace (a
/// container sharing the folder), whose PID this process cannot see. Only
/// where the process table can be read (Linux's /proc); best effort.
pub fn remove_stale_temp_files(dir: &Path, stem: Option<&str>) {
    let proc_dir = Path::new("/proc");
    if !proc_dir.join("self").exists() {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some((base, rest)) = name.to_str().and_then(|n| n.rsplit_once(".tmp-")) else {
            continue;
        };
        if stem.is_some_and(|stem| stem != base) {
            continue;
        }
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            let idle = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= STALE_AFTER);
            if idle && pid != std::process::id() && !proc_dir.join(pid.to_string()).exists() {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// The JSON object stored at `path`, or an empty one if the file is missing,
/// is not a regular file (a named pipe would block the read) or is not a
/// JSON object.
pub fn read_object(path: &Path) -> Map<String, Value> {
    if !path.is_file() {
        return Map::new();
    }
    fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| match v {
            Value::Object(m) => Some(m),
            _ => None,
        })
        .unwrap_or_default()
}

/// Sets `fields` in the object at `path` (keeping its other keys), writes it
/// back atomically and returns the merged object.
pub fn merge_object(
    path: &Path,
    fields: Map<String, Value>,
) -> Result<Map<String, Value>, (PathBuf, io::Error)> {
    let mut merged = read_object(path);
    for (k, v) in fields {
        merged.insert(k, v);
    }
    write_atomic(path, &merged)?;
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_keeps_other_keys_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("summary.json");
        let mut first = Map::new();
        first.insert("a".into(), json!(1));
        first.insert("b".into(), json!("x"));
        merge_object(&path, first).unwrap();
        let mut second = Map::new();
        second.insert("b".into(), json!("y"));
        let merged = merge_object(&path, second).unwrap();
        assert_eq!(merged.get("a"), Some(&json!(1)));
        assert_eq!(merged.get("b"), Some(&json!("y")));
        assert_eq!(read_object(&path), merged);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["summary.json"]);
    }

    #[test]
    fn unwritable_target_names_the_failing_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("out.json");
        let (failed, _) = write_atomic(&path, &json!({})).unwrap_err();
        assert!(failed.starts_with(dir.path().join("missing-dir")));
    }

    /// A symbolic link stays a link to the new file; a device is written
    /// through, not replaced by a file; a failed write leaves no temporary
    /// file and names the path asked for.
    #[cfg(unix)]
    #[test]
    fn links_and_devices_are_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.json");
        let link = dir.path().join("link.json");
        fs::write(&real, "old").unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        write_text_atomic(&link, "new").unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read_to_string(&real).unwrap(), "new");
        let null = Path::new("/dev/null");
        if null.exists() {
            write_text_atomic(null, "discarded").unwrap();
            assert!(!fs::metadata(null).unwrap().is_file());
        }
        let full = Path::new("/dev/full");
        if full.exists() {
            let (failed, e) = write_text_atomic(full, "x").unwrap_err();
            assert_eq!(failed, full);
            assert_eq!(e.raw_os_error(), Some(28), "{e}");
            assert!(!fs::metadata(full).unwrap().is_file());
        }
        // Where writes go: this process's own streams by handle, system
        // paths through, files (links followed) replaced.
        assert_eq!(write_target(Path::new("/dev/stdout")), WriteTarget::Stdout);
        assert_eq!(
            write_target(Path::new("/proc/self/fd/2")),
            WriteTarget::Stderr
        );
        assert_eq!(
            write_target(Path::new("/dev/fd/63")),
            WriteTarget::Through("/dev/fd/63".into())
        );
        assert_eq!(
            write_target(&link),
            WriteTarget::Replace(fs::canonicalize(&real).unwrap())
        );
        let shm = Path::new("/dev/shm");
        if shm.is_dir() {
            let file = tempfile::NamedTempFile::new_in(shm).unwrap();
            assert_eq!(
                write_target(file.path()),
                WriteTarget::Replace(fs::canonicalize(file.path()).unwrap())
            );
        }
        // Renaming onto a directory fails: the temporary file goes too.
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        let (failed, _) = write_text_atomic(&sub, "x").unwrap_err();
        assert_eq!(failed, sub);
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["link.json", "real.json", "sub"]);
    }

    #[test]
    fn a_file_that_is_not_an_object_reads_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        fs::write(&path, "[1, 2]").unwrap();
        assert!(read_object(&path).is_empty());
        assert!(read_object(&dir.path().join("none.json")).is_empty());
    }
}
